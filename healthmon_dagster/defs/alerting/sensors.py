"""The alert-evaluation sensor: every tick it evaluates every rule (``alerting/engine.py``) against
the health store's new check results and metrics, the Dagster instance's finished runs and the
freshness daemon's state of every asset with a FreshnessPolicy, then
escalates and repeats what nobody acknowledged. It launches no run: its tick log says what fired,
resolved or was suppressed, and the outbox it fills is drained by the dispatcher.

The cursor holds the last ``etl.check_results.result_id`` seen (results are read from a little
before it too, so a result committed late is not skipped; see ``alerting/signals.py``), when
the newest finished run it saw ended, and the last Dagster check execution record it saw; the
alerts themselves are deduplicated by the store's unique index. Runs are read from the instance
(every code location), so a run that failed before reaching a step (a launch failure, a killed
worker) alerts too, and a failed run is an event: it fires even when a later run of its job
succeeded before the tick, and resolves on the next.

A run whose failed steps all found one dependency unavailable (their failure metadata, see
``etl/failures.py``) failed because of it: its alert carries that dependency's ``dependency``
label, so the dependency's alert mutes it, and the failure is evidence that raises (or refreshes)
the dependency's alert itself when its connectivity check has not reported since the last of those
steps failed (not since the run ended: a check that found the dependency back in between has the
last word).

Checks whose step failed before recording a result (Dagster's EXECUTION_FAILED: the latest
execution record is still PLANNED and its run failed) are read from Dagster's check execution
records (``get_latest_asset_check_execution_by_key``, records newer than the cursor): they raise
the check-failed rules that take execution errors, under the labels of the check's own results,
until the check is evaluated again (a run that only planned it changes nothing).

The intervals come from ``sensor_intervals`` in healthmon.yaml (30 s and 15 s by default). A
health store that cannot be reached (SQLAlchemy's errors and ``DatabaseUnavailable``) skips the
tick with a reason naming it.
"""

import json
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from itertools import takewhile
from typing import TYPE_CHECKING, Any

import dagster as dg
import sqlalchemy as sa
from sqlalchemy import exc as sa_exc

from healthmon_dagster.alerting.actions import maintain
from healthmon_dagster.alerting.engine import evaluate
from healthmon_dagster.alerting.lineage import Lineage
from healthmon_dagster.alerting.signals import (
    FAILURE_DEPENDENCY_COMPONENT,
    EventContext,
    Evidence,
    Signal,
    effective_rules,
    evidence_signals,
    execution_failed_signal,
    freshness_state_signal,
    latest_health_results,
    rules_of,
    run_failure_signal,
)
from healthmon_dagster.config import HealthConfiguration
from healthmon_dagster.config.loader import ConfigError
from healthmon_dagster.config.models import SensorIntervals
from healthmon_dagster.defs.alerting.jobs import alert_dispatch_job
from healthmon_dagster.defs.health.assets import component_asset_key
from healthmon_dagster.defs.resources import HealthmonConfigResource, WarehouseResource
from healthmon_dagster.enums import EventKind, HealthComponent, NotificationStatus, RecordSource
from healthmon_dagster.etl.failures import DEPENDENCY_METADATA
from healthmon_dagster.incidents.alerts import open_for_critical_alerts
from healthmon_dagster.incidents.announce import (
    incident_signals,
    queue_updates,
    record_sent,
    with_incident_rules,
)
from healthmon_dagster.incidents.correlation import link_open_incidents
from healthmon_dagster.settings import get_settings
from healthmon_dagster.store.db import DatabaseUnavailable
from healthmon_dagster.store.errors import error_text
from healthmon_dagster.store.metrics import utcnow
from healthmon_dagster.store.tables import check_results, notifications

if TYPE_CHECKING:  # what the event log storage returns; dagster does not export the class
    from dagster._core.storage.asset_check_execution_record import AssetCheckExecutionRecord

RUNS_LOOKED_AT = 200  # the newest finished runs: the latest of each job decides its alert
STORE_ERRORS = (sa_exc.SQLAlchemyError, DatabaseUnavailable)


def _ended(record: dg.RunRecord) -> float:
    """When a finished run ended (its last update when Dagster recorded no end time)."""
    if record.end_time is not None:
        return float(record.end_time)
    return record.update_timestamp.timestamp()


def run_signals(instance: dg.DagsterInstance, config: HealthConfiguration) -> list[Signal]:
    """One signal per (run-failure rule, job): active while the job's latest finished run
    failed (no earlier evaluation to compare with; see :func:`run_events`)."""
    return run_events(instance, config, None).signals


@dataclass(frozen=True)
class RunEvents:
    """What the finished runs say: one signal per (run-failure rule, job) and its variants (see
    :func:`run_events`), the end time of the newest finished run seen (the next call's ``since``),
    and the failures since ``since`` that blame a dependency (evidence of its outage)."""

    signals: list[Signal]
    ended: float | None
    evidence: list[tuple[Evidence, float]]  # (evidence, when the run found the dependency down)


# The values of a run-failure alert's ``dependency`` label ("": none blamed).
_BLAMED = ("", *sorted(set(FAILURE_DEPENDENCY_COMPONENT.values())))


@dataclass(frozen=True)
class Blame:
    """The dependency every failed step of a run found unavailable (``component``: ``database``,
    ``s3_discovery``) and when the last of those steps failed (``found_at``, a POSIX time)."""

    component: str
    found_at: float


def blamed_dependency(instance: dg.DagsterInstance, run_id: str) -> Blame | None:
    """What every failed step of the run found unavailable, by the failure metadata of its steps,
    and when the last of them failed; None when a step names none or they disagree, or the run
    has no failed step (it died before or outside its steps)."""
    found: set[str | None] = set()
    found_at = 0.0
    for entry in instance.all_logs(run_id, of_type=dg.DagsterEventType.STEP_FAILURE):
        event = entry.dagster_event
        if event is None:
            continue
        user = event.step_failure_data.user_failure_data
        value = user.metadata.get(DEPENDENCY_METADATA) if user is not None else None
        dependency = getattr(value, "value", None)
        component = FAILURE_DEPENDENCY_COMPONENT.get(str(dependency)) if dependency else None
        found.add(None if component is None else str(component))
        found_at = max(found_at, entry.timestamp)
    component = found.pop() if len(found) == 1 else None
    return None if component is None else Blame(component, found_at)


def run_events(
    instance: dg.DagsterInstance, config: HealthConfiguration, since: float | None
) -> RunEvents:
    """One signal per (run-failure rule, job), the newest end time seen, and the evidence.

    A signal is active while the job's latest finished run failed, and also when a run of the job
    that ended after ``since`` failed, though a later one succeeded: a failed run is an event, it
    fires; the next evaluation, which sees only the success, resolves it. A failed run that blames
    a dependency (:func:`blamed_dependency`) carries its ``dependency`` label; the job's signals
    under the other values of that label are inactive (the cause changed, or the job recovered:
    the alert of the earlier cause resolves). The reason names the run, never an error text
    (which may quote a value). Such a run that ended after ``since`` is evidence, stamped with
    when its steps found the dependency down (:class:`Blame`)."""
    rules = rules_of(effective_rules(config), EventKind.RUN_FAILURE)
    wants_evidence = bool(rules_of(effective_rules(config), EventKind.DEPENDENCY_UNREACHABLE))
    if not rules and not wants_evidence:
        return RunEvents([], since, [])
    statuses = [dg.DagsterRunStatus.SUCCESS, dg.DagsterRunStatus.FAILURE]
    records = {
        r.dagster_run.run_id: r
        for r in instance.get_run_records(
            filters=dg.RunsFilter(statuses=statuses), limit=RUNS_LOOKED_AT
        )
    }
    if since is not None:  # every run that finished since the last evaluation, however many
        after = datetime.fromtimestamp(since, UTC)
        for r in instance.get_run_records(
            filters=dg.RunsFilter(statuses=statuses, updated_after=after)
        ):
            records.setdefault(r.dagster_run.run_id, r)
    latest: dict[str, dg.RunRecord] = {}
    new_failure: dict[str, dg.RunRecord] = {}
    evidence: list[tuple[Evidence, float]] = []
    blamed: dict[str, Blame | None] = {}

    def blame(run_id: str) -> Blame | None:
        if run_id not in blamed:
            blamed[run_id] = blamed_dependency(instance, run_id)
        return blamed[run_id]

    for record in sorted(records.values(), key=_ended):  # oldest first: the last one wins
        job = record.dagster_run.job_name
        latest[job] = record
        if (
            since is not None
            and _ended(record) > since
            and record.dagster_run.status == dg.DagsterRunStatus.FAILURE
        ):
            new_failure[job] = record
            found = blame(record.dagster_run.run_id) if wants_evidence else None
            if found is not None:
                run = record.dagster_run
                seen_by = f"run {run.run_id[:8]} of {job}"
                reason = f"every failed step of {seen_by} found {found.component} unavailable"
                evidence.append((Evidence(found.component, seen_by, reason), found.found_at))
    # Nothing finished yet: from now on, so that the first failure is an event too.
    ends = [_ended(r) for r in records.values()] or [time.time()]
    watermark = max([since or 0.0, *ends])
    out = []
    for rule in rules:
        jobs = set(rule.event.jobs) if rule.event is not None and rule.event.jobs else None
        for job, record in sorted(latest.items()):
            if jobs is not None and job not in jobs:
                continue
            run = record.dagster_run
            failed = run.status == dg.DagsterRunStatus.FAILURE
            if failed:
                reason = _failed_text(run)
            elif job in new_failure:
                failed, failed_run = True, new_failure[job].dagster_run
                reason = f"{_failed_text(failed_run)}; run {run.run_id[:8]} succeeded since"
                run = failed_run
            else:
                reason = f"run {run.run_id[:8]} of {job} succeeded"
            found = blame(run.run_id) if failed else None
            dependency = found.component if found is not None else None
            for value in _BLAMED:
                out.append(
                    run_failure_signal(
                        rule,
                        job,
                        run.run_id,
                        failed and value == (dependency or ""),
                        reason,
                        dependency=value or None,
                    )
                )
    return RunEvents(out, watermark, evidence)


def _failed_text(run: dg.DagsterRun) -> str:
    tags = _safe_tags(run)
    return f"run {run.run_id[:8]} of {run.job_name} failed" + (
        f" (tags: {', '.join(sorted(tags))})" if tags else ""
    )


@dataclass(frozen=True)
class AlertCursor:
    """The alert-evaluation sensor's cursor: the last check result seen, when the newest
    finished run seen ended (a POSIX time) and the last Dagster check execution record seen (its
    storage id). An older cursor, a bare result id or one without ``checks``, still reads."""

    results: int | None = None
    runs_ended: float | None = None
    checks: int | None = None

    @classmethod
    def parse(cls, text: str | None) -> "AlertCursor":
        if not text:
            return cls()
        if text.strip().lstrip("-").isdigit():
            return cls(results=int(text))
        data = json.loads(text)
        results, runs, checks = data.get("results"), data.get("runs_ended"), data.get("checks")
        return cls(
            None if results is None else int(results),
            None if runs is None else float(runs),
            None if checks is None else int(checks),
        )

    def dump(self) -> str:
        return json.dumps(
            {"results": self.results, "runs_ended": self.runs_ended, "checks": self.checks}
        )


_HEALTH_ASSETS = frozenset(component_asset_key(c) for c in HealthComponent)


def check_execution_signals(
    instance: dg.DagsterInstance,
    repository: dg.RepositoryDefinition | None,
    config: HealthConfiguration,
    engine: Any,
    after: int | None,
) -> tuple[list[Signal], int | None]:
    """Signals of the checks whose latest Dagster execution record is newer than ``after``, and
    the cursor to pass next time. Active for a check whose step failed before it recorded any
    result: the record is still PLANNED, the step that planned it failed (Dagster calls every
    check planned in a failed run EXECUTION_FAILED, also those whose step never ran because an
    asset upstream failed: those did not fail, they were not run) and ``etl.check_results`` has
    no row of it from that run (a recorded result, ``error`` included, is judged as such).
    Inactive for a check that was evaluated (passed or failed). A record its finished run planned
    but never ran (an asset upstream failed, the run was canceled) says nothing of whether the
    check can run: the check's records before it, newer than ``after`` (at most
    ``_WALK_BACK``), are read back to the newest that says something (an evaluation run between
    two ticks is not hidden by a later run that only planned the check); none: no signal. The
    health components' checks are left to the health rules. A record of a run still going is
    read again next time."""
    rules = [
        r
        for r in rules_of(effective_rules(config), EventKind.CHECK_FAILED)
        if r.event is not None and r.event.execution_errors
    ]
    if repository is None or not rules:
        return [], after
    keys = [k for k in repository.asset_graph.asset_check_keys if k.asset_key not in _HEALTH_ASSETS]
    if not keys:
        return [], after
    records = instance.event_log_storage.get_latest_asset_check_execution_by_key(keys)
    fresh = sorted(
        ((k, r) for k, r in records.items() if after is None or r.id > after),
        key=lambda kr: kr[1].id,
    )
    if not fresh:
        return [], after
    cursor = max([after or 0, *(r.id for _, r in fresh)])
    failed_steps: dict[str, set[str] | None] = {}  # run id -> failed step keys (None: not done)
    candidates: list[tuple[dg.AssetCheckKey, str]] = []  # (key, run id) of failed steps
    out: list[Signal] = []
    for key, latest in fresh:
        for record in _newest_first(instance, key, latest, after):
            if record.status.value != "PLANNED":  # AssetCheckExecutionRecordStatus (not exported)
                out += _execution_signals(rules, key, record.run_id, False)  # evaluated: it ran
                break
            if record.run_id not in failed_steps:
                failed_steps[record.run_id] = _failed_steps(instance, record.run_id)
            steps = failed_steps[record.run_id]
            if steps is None:  # its run is still going: read it again next time
                cursor = min(cursor, record.id - 1)
                break
            step = record.event.step_key if record.event is not None else None
            if step is not None and step in steps:
                candidates.append((key, record.run_id))
                break
            # Otherwise its step never ran: the record before it says, and the cursor passes it.
    recorded = _recorded_checks(engine, {run_id for _, run_id in candidates})
    for key, run_id in candidates:
        asset = key.asset_key.to_user_string()
        out += _execution_signals(rules, key, run_id, (asset, key.name, run_id) not in recorded)
    return out, cursor


_WALK_BACK = 10  # a check's records read back past those its runs planned but never ran


def _newest_first(
    instance: dg.DagsterInstance,
    key: dg.AssetCheckKey,
    latest: "AssetCheckExecutionRecord",
    after: int | None,
) -> Iterator["AssetCheckExecutionRecord"]:
    """``latest``, then the check's records before it that are newer than ``after`` (at most
    ``_WALK_BACK``), newest first; those are read only if asked for."""
    yield latest
    older = instance.event_log_storage.get_asset_check_execution_history(
        key, limit=_WALK_BACK, cursor=latest.id
    )
    yield from takewhile(lambda r: after is None or r.id > after, older)


def _execution_signals(
    rules: list[Any], key: dg.AssetCheckKey, run_id: str, failed: bool
) -> list[Signal]:
    found = (
        execution_failed_signal(rule, key.asset_key.to_user_string(), key.name, run_id, failed)
        for rule in rules
    )
    return [s for s in found if s is not None]


def _recorded_checks(engine: Any, run_ids: set[str]) -> set[tuple[str, str, str]]:
    """(asset, check, run id) of the asset check results the runs recorded in the health store."""
    if not run_ids:
        return set()
    c = check_results.c
    with engine.connect() as conn:
        rows = conn.execute(
            sa.select(c.target, c.check_name, c.dagster_run_id)
            .where(
                c.dagster_run_id.in_(sorted(run_ids)),
                c.source == str(RecordSource.ASSET_CHECK),
            )
            .distinct()
        ).all()
    return {(str(t), str(n), str(r)) for t, n, r in rows}


def _failed_steps(instance: dg.DagsterInstance, run_id: str) -> set[str] | None:
    """The keys of the steps that failed in a finished run (empty when it did not fail); None
    while it is not finished."""
    run = instance.get_run_by_id(run_id)
    if run is None:
        return set()
    if not run.is_finished:
        return None
    if run.status != dg.DagsterRunStatus.FAILURE:
        return set()
    return {
        entry.step_key
        for entry in instance.all_logs(run_id, of_type=dg.DagsterEventType.STEP_FAILURE)
        if entry.step_key
    }


def dependency_evidence(
    engine: Any, config: HealthConfiguration, evidence: list[tuple[Evidence, float]]
) -> list[Signal]:
    """The dependency alerts that failed runs are evidence of, for the runs whose steps found the
    dependency down after its connectivity check last reported (a later result is the check's
    own word, though the run ended after it)."""
    if not evidence:
        return []
    ctx = EventContext(config)
    spoken = latest_health_results(engine, set(ctx.evidence_checks.values()))
    newest: dict[str, Evidence] = {}  # per dependency, the run that found it down last
    for found, found_at in sorted(evidence, key=lambda fe: fe[1]):
        check_id = ctx.evidence_checks.get(found.component)
        if check_id is not None and (check_id not in spoken or spoken[check_id] < found_at):
            newest[found.component] = found
    return evidence_signals(effective_rules(config), list(newest.values()), ctx)


def freshness_signals(
    instance: dg.DagsterInstance,
    repository: dg.RepositoryDefinition | None,
    config: HealthConfiguration,
) -> list[Signal]:
    """One signal per (freshness rule, asset with a FreshnessPolicy): the freshness daemon's
    latest state of the asset (its FreshnessStateRecord; none yet: no signal)."""
    rules = rules_of(effective_rules(config), EventKind.FRESHNESS)
    if not rules or repository is None:
        return []
    graph = repository.asset_graph
    keys = [
        key
        for key in graph.get_all_asset_keys()
        if graph.get(key).freshness_policy_or_from_metadata is not None
    ]
    if not keys:
        return []
    out = []
    for key, record in sorted(
        instance.get_freshness_state_records(keys).items(), key=lambda kv: kv[0]
    ):
        state = str(getattr(record.freshness_state, "value", record.freshness_state))
        for rule in rules:
            signal = freshness_state_signal(rule, key.to_user_string(), state)
            if signal is not None:
                out.append(signal)
    return out


def _safe_tags(run: dg.DagsterRun) -> list[str]:
    """Tags worth naming: the landing file a run loaded (a file key, not its content)."""
    return [f"{k}={v}" for k, v in run.tags.items() if k == "healthmon/file_key"]


def lineage_of(repository: dg.RepositoryDefinition | None) -> Lineage:
    return Lineage.of_repository(repository)


def evaluate_alerts(
    context: dg.SensorEvaluationContext,
    warehouse: WarehouseResource,
    healthmon_config: HealthmonConfigResource,
) -> dg.SkipReason:
    """Evaluates the alert rules, escalates and repeats; names what fired and resolved."""
    try:
        config = healthmon_config.load()
    except ConfigError as exc:
        return dg.SkipReason(f"healthmon.yaml is invalid, no alert evaluated: {exc}")
    cursor = AlertCursor.parse(context.cursor)
    config = with_incident_rules(config)  # open incidents are announced as alerts
    try:
        engine = warehouse.health_engine()
        runs = run_events(context.instance, config, cursor.runs_ended)
        checks, checks_seen = check_execution_signals(
            context.instance, context.repository_def, config, engine, cursor.checks
        )
        report = evaluate(
            engine,
            config,
            cursor=cursor.results,
            extra_signals=[
                *runs.signals,
                *dependency_evidence(engine, config, runs.evidence),
                *checks,
                *freshness_signals(context.instance, context.repository_def, config),
                *incident_signals(engine, config),
            ],
            lineage=lineage_of(context.repository_def),
        )
        escalations = maintain(engine, config)
        linked = open_for_critical_alerts(engine, get_settings().s3_bucket)  # incidents
        record_sent(engine)  # notifications of incident alerts on the incidents' timelines
        link_open_incidents(engine, lineage_of(context.repository_def))  # correlations saved
        queue_updates(engine, config)  # incident status, assignment, absorbed failures told
    except STORE_ERRORS as exc:
        return dg.SkipReason(f"health store unavailable, no alert evaluated: {error_text(exc)}")
    # The result cursor only moves forward (a tick that re-read only late results reports less).
    results = cursor.results
    if report.cursor is not None and (results is None or report.cursor > results):
        results = report.cursor
    after = AlertCursor(results, runs.ended, checks_seen)
    if after != cursor:
        context.update_cursor(after.dump())
    for alert_id in report.fired:
        context.log.warning(f"alert {alert_id} fired: {report.titles.get(alert_id, '')}")
    for alert_id, incident_id in linked.items():
        context.log.warning(f"critical alert {alert_id} linked to incident {incident_id}")
    for alert_id in report.resolved:
        context.log.info(f"alert {alert_id} resolved: {report.titles.get(alert_id, '')}")
    return dg.SkipReason(
        report.summary()
        + f"; {len(escalations.escalated)} escalated, {len(escalations.repeated)} repeated"
    )


def _due(engine: Any) -> int:
    n = notifications.c
    with engine.connect() as conn:
        return int(
            conn.execute(
                sa.select(sa.func.count()).where(
                    n.status == str(NotificationStatus.PENDING), n.not_before <= utcnow()
                )
            ).scalar_one()
        )


def start_dispatch(
    context: dg.SensorEvaluationContext, warehouse: WarehouseResource
) -> dg.SensorResult | dg.SkipReason:
    """Starts alert_dispatch_job when the outbox holds notifications that are due and no dispatch
    run is queued or running (dispatchers share the work safely; one at a time is enough)."""
    try:
        due = _due(warehouse.health_engine())
    except STORE_ERRORS as exc:
        return dg.SkipReason(
            f"health store unavailable, no notification dispatched: {error_text(exc)}"
        )
    if not due:
        return dg.SkipReason("no notification due")
    active = context.instance.get_runs_count(
        dg.RunsFilter(
            job_name=alert_dispatch_job.name,
            statuses=[
                dg.DagsterRunStatus.QUEUED,
                dg.DagsterRunStatus.NOT_STARTED,
                dg.DagsterRunStatus.STARTING,
                dg.DagsterRunStatus.STARTED,
            ],
        )
    )
    if active:
        return dg.SkipReason(f"{due} notification(s) due; a dispatch run is already active")
    return dg.SensorResult(run_requests=[dg.RunRequest(tags={"healthmon/due": str(due)})])


def alert_evaluation_sensor_every(seconds: int) -> dg.SensorDefinition:
    """The alert-evaluation sensor, run by dagster-daemon every ``seconds`` (``sensor_intervals``)."""
    return dg.sensor(
        name="alert_evaluation_sensor",
        minimum_interval_seconds=seconds,
        default_status=dg.DefaultSensorStatus.RUNNING,
    )(evaluate_alerts)


def alert_dispatch_sensor_every(seconds: int) -> dg.SensorDefinition:
    """The alert-dispatch sensor, run by dagster-daemon every ``seconds`` (``sensor_intervals``)."""
    return dg.sensor(
        name="alert_dispatch_sensor",
        job=alert_dispatch_job,
        minimum_interval_seconds=seconds,
        default_status=dg.DefaultSensorStatus.RUNNING,
    )(start_dispatch)


alert_evaluation_sensor = alert_evaluation_sensor_every(SensorIntervals().alert_evaluation_sensor)
alert_dispatch_sensor = alert_dispatch_sensor_every(SensorIntervals().alert_dispatch_sensor)


def sensor_definitions(config: HealthConfiguration) -> list[dg.SensorDefinition]:
    every = config.sensor_intervals
    return [
        alert_evaluation_sensor_every(every.alert_evaluation_sensor),
        alert_dispatch_sensor_every(every.alert_dispatch_sensor),
    ]


SENSORS = [alert_evaluation_sensor, alert_dispatch_sensor]
