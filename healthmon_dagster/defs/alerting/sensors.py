"""The alert-evaluation sensor: every tick it evaluates every rule (``alerting/engine.py``) against
the health store's new check results and metrics, the Dagster instance's finished runs and the
freshness daemon's state of every asset with a FreshnessPolicy, then
escalates and repeats what nobody acknowledged. It launches no run: its tick log says what fired,
resolved or was suppressed, and the outbox it fills is drained by the dispatcher.

The cursor is the last ``etl.check_results.result_id`` seen, so a check result is judged once
even when ticks overlap; the alerts themselves are deduplicated by the store's unique index.
Runs are read from the instance (every code location), so a run that failed before reaching a
step (a launch failure, a killed worker) alerts too.
"""

from collections.abc import Sequence
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
from healthmon_dagster.incidents.announce import incident_signals, record_sent, with_incident_rules
from healthmon_dagster.settings import get_settings
from healthmon_dagster.store.errors import error_text
from healthmon_dagster.store.metrics import utcnow
from healthmon_dagster.store.tables import notifications

RUNS_LOOKED_AT = 200  # the newest finished runs: the latest of each job decides its alert


def run_signals(instance: dg.DagsterInstance, config: HealthConfiguration) -> list[Signal]:
    """One signal per (run-failure rule, job): active while the job's latest finished run
    failed. The reason names the run and its failed steps, never an error text (which may quote
    a value)."""
    rules = rules_of(effective_rules(config), EventKind.RUN_FAILURE)
    if not rules:
        return []
    finished = instance.get_run_records(
        filters=dg.RunsFilter(statuses=[dg.DagsterRunStatus.SUCCESS, dg.DagsterRunStatus.FAILURE]),
        limit=RUNS_LOOKED_AT,
    )
    latest: dict[str, dg.DagsterRun] = {}
    for record in finished:  # newest first
        latest.setdefault(record.dagster_run.job_name, record.dagster_run)
    out = []
    for rule in rules:
        jobs = set(rule.event.jobs) if rule.event is not None and rule.event.jobs else None
        for job, run in sorted(latest.items()):
            if jobs is not None and job not in jobs:
                continue
            failed = run.status == dg.DagsterRunStatus.FAILURE
            reason = (
                f"run {run.run_id[:8]} of {job} failed"
                + (f" (tags: {', '.join(sorted(_safe_tags(run)))})" if _safe_tags(run) else "")
                if failed
                else f"run {run.run_id[:8]} of {job} succeeded"
            )
            out.append(run_failure_signal(rule, job, run.run_id, failed, reason))
    return out


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
    if repository is None:
        return Lineage.bundled()
    graph = repository.asset_graph
    parents: dict[str, Sequence[str]] = {}
    for key in graph.get_all_asset_keys():
        parents[key.to_user_string()] = [p.to_user_string() for p in graph.get(key).parent_keys]
    return Lineage.from_parents(parents)


def alert_evaluation(
    context: dg.SensorEvaluationContext,
    warehouse: WarehouseResource,
    healthmon_config: HealthmonConfigResource,
) -> dg.SkipReason:
    """Evaluates the alert rules, escalates and repeats; names what fired and resolved."""
    try:
        config = healthmon_config.load()
    except ConfigError as exc:
        return dg.SkipReason(f"healthmon.yaml is invalid, no alert evaluated: {exc}")
    cursor = int(context.cursor) if context.cursor else None
    config = with_incident_rules(config)  # open incidents are announced as alerts
    try:
        engine = warehouse.health_engine()
        report = evaluate(
            engine,
            config,
            cursor=cursor,
            extra_signals=[
                *run_signals(context.instance, config),
                *freshness_signals(context.instance, context.repository_def, config),
                *incident_signals(engine, config),
            ],
            lineage=lineage_of(context.repository_def),
        )
        escalations = maintain(engine, config)
        linked = open_for_critical_alerts(engine, get_settings().s3_bucket)  # incidents
        record_sent(engine)  # notifications of incident alerts on the incidents' timelines
    except sa_exc.SQLAlchemyError as exc:
        return dg.SkipReason(f"health store unavailable, no alert evaluated: {error_text(exc)}")
    if report.cursor is not None and report.cursor != cursor:
        context.update_cursor(str(report.cursor))
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


def alert_dispatch(
    context: dg.SensorEvaluationContext, warehouse: WarehouseResource
) -> dg.SensorResult | dg.SkipReason:
    """Starts alert_dispatch_job when the outbox holds notifications that are due and no dispatch
    run is queued or running (dispatchers share the work safely; one at a time is enough)."""
    try:
        due = _due(warehouse.health_engine())
    except sa_exc.SQLAlchemyError as exc:
        return dg.SkipReason(f"health store unavailable: {error_text(exc)}")
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
    )(alert_evaluation)


def alert_dispatch_sensor_every(seconds: int) -> dg.SensorDefinition:
    """The alert-dispatch sensor, run by dagster-daemon every ``seconds`` (``sensor_intervals``)."""
    return dg.sensor(
        name="alert_dispatch_sensor",
        job=alert_dispatch_job,
        minimum_interval_seconds=seconds,
        default_status=dg.DefaultSensorStatus.RUNNING,
    )(alert_dispatch)


alert_evaluation_sensor = alert_evaluation_sensor_every(SensorIntervals().alert_evaluation_sensor)
alert_dispatch_sensor = alert_dispatch_sensor_every(SensorIntervals().alert_dispatch_sensor)


def sensor_definitions(config: HealthConfiguration) -> list[dg.SensorDefinition]:
    every = config.sensor_intervals
    return [
        alert_evaluation_sensor_every(every.alert_evaluation_sensor),
        alert_dispatch_sensor_every(every.alert_dispatch_sensor),
    ]
