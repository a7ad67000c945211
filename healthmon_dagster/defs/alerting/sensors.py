"""The alert-evaluation sensor: every tick it evaluates every rule (``alerting/engine.py``) against
the health store's new check results and metrics, the Dagster instance's finished runs and the
freshness daemon's state of every asset with a FreshnessPolicy, then
escalates and repeats what nobody acknowledged. It launches no run: its tick log says what fired,
resolved or was suppressed, and the outbox it fills is drained by the dispatcher.

The cursor holds the last ``etl.check_results.result_id`` seen (results are read from a little
before it too, so a result committed late is not skipped; see ``alerting/signals.py``) and when
the newest finished run it saw ended; the alerts themselves are deduplicated by the store's unique
index. Runs are read from the instance (every code location), so a run that failed before
reaching a step (a launch failure, a killed worker) alerts too, and a failed run is an event: it
fires even when a later run of its job succeeded before the tick, and resolves on the next.

The intervals come from ``sensor_intervals`` in healthmon.yaml (30 s and 15 s by default). A
health store that cannot be reached (SQLAlchemy's errors and ``DatabaseUnavailable``) skips the
tick with a reason naming it.
"""

import json
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import dagster as dg
import sqlalchemy as sa
from sqlalchemy import exc as sa_exc

from healthmon_dagster.alerting.actions import maintain
from healthmon_dagster.alerting.engine import evaluate
from healthmon_dagster.alerting.lineage import Lineage
from healthmon_dagster.alerting.signals import (
    Signal,
    effective_rules,
    freshness_state_signal,
    rules_of,
    run_failure_signal,
)
from healthmon_dagster.config import HealthConfiguration
from healthmon_dagster.config.loader import ConfigError
from healthmon_dagster.config.models import SensorIntervals
from healthmon_dagster.defs.alerting.jobs import alert_dispatch_job
from healthmon_dagster.defs.resources import HealthmonConfigResource, WarehouseResource
from healthmon_dagster.enums import EventKind, NotificationStatus
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
from healthmon_dagster.store.tables import notifications

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
    return run_events(instance, config, None)[0]


def run_events(
    instance: dg.DagsterInstance, config: HealthConfiguration, since: float | None
) -> tuple[list[Signal], float | None]:
    """One signal per (run-failure rule, job), and the end time of the newest finished run seen
    (the next call's ``since``). A signal is active while the job's latest finished run failed,
    and also when a run of the job that ended after ``since`` failed, though a later one
    succeeded: a failed run is an event, it fires; the next evaluation, which sees only the
    success, resolves it. The reason names the run, never an error text (which may quote a
    value)."""
    rules = rules_of(effective_rules(config), EventKind.RUN_FAILURE)
    if not rules:
        return [], since
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
    for record in sorted(records.values(), key=_ended):  # oldest first: the last one wins
        job = record.dagster_run.job_name
        latest[job] = record
        if (
            since is not None
            and _ended(record) > since
            and record.dagster_run.status == dg.DagsterRunStatus.FAILURE
        ):
            new_failure[job] = record
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
            out.append(run_failure_signal(rule, job, run.run_id, failed, reason))
    return out, watermark


def _failed_text(run: dg.DagsterRun) -> str:
    tags = _safe_tags(run)
    return f"run {run.run_id[:8]} of {run.job_name} failed" + (
        f" (tags: {', '.join(sorted(tags))})" if tags else ""
    )


@dataclass(frozen=True)
class AlertCursor:
    """The alert-evaluation sensor's cursor: the last check result seen and when the newest
    finished run seen ended (a POSIX time). An older cursor, a bare result id, still reads."""

    results: int | None = None
    runs_ended: float | None = None

    @classmethod
    def parse(cls, text: str | None) -> "AlertCursor":
        if not text:
            return cls()
        if text.strip().lstrip("-").isdigit():
            return cls(results=int(text))
        data = json.loads(text)
        results, runs = data.get("results"), data.get("runs_ended")
        return cls(None if results is None else int(results), None if runs is None else float(runs))

    def dump(self) -> str:
        return json.dumps({"results": self.results, "runs_ended": self.runs_ended})


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
        runs, runs_ended = run_events(context.instance, config, cursor.runs_ended)
        report = evaluate(
            engine,
            config,
            cursor=cursor.results,
            extra_signals=[
                *runs,
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
    after = AlertCursor(results, runs_ended)
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
