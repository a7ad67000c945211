"""The run-failure sensor: every failed run of every code location opens or joins an incident.

Most failures reach a failure hook inside the run (``hooks.py``); this sensor covers the rest: a run
that failed to launch, whose worker was killed or lost (run monitoring fails it), that crashed
outside its steps, or whose hook could not reach the health store. A failure a hook recorded
already is not recorded twice: the sensor skips the steps on the incident timeline
(:func:`~healthmon_dagster.incidents.detect.recorded_steps`), and the root key would put it in the
same incident anyway. When the health store is unreachable the tick fails, so its cursor does not
move past the run and the next tick reports it.
"""

from collections.abc import Sequence

import dagster as dg

from healthmon_dagster.config import HealthConfiguration
from healthmon_dagster.config.models import SensorIntervals
from healthmon_dagster.defs.incidents.hooks import CHECK_FAILED
from healthmon_dagster.defs.resources import WarehouseResource
from healthmon_dagster.enums import IncidentSource
from healthmon_dagster.etl.failures import (
    Classification,
    classify_run_failure,
    from_step_metadata,
)
from healthmon_dagster.incidents.detect import recorded_steps, run_failure, step_failure
from healthmon_dagster.incidents.records import Actor, Failure, open_or_absorb
from healthmon_dagster.incidents.rootkey import root_key_for
from healthmon_dagster.run_tags import FAILURE_REASON_TAG
from healthmon_dagster.settings import get_settings
from healthmon_dagster.store.metrics import utcnow

ACTOR = Actor("sensor:incident_run_failure", IncidentSource.SENSOR)


def step_classification(event: dg.DagsterEvent) -> tuple[Classification, str]:
    """The classification an ETL step attached to its failure, else the error's type only (its
    text may quote a value)."""
    data = event.step_failure_data
    user = data.user_failure_data
    meta = {k: v.value for k, v in (user.metadata if user else {}).items()}
    found = from_step_metadata(meta, "step_metadata")
    if found is not None:
        lines = ((user.description if user else None) or "").strip().splitlines()
        return found, lines[0][:500] if lines else ""
    kind = data.error.cls_name if data.error else "unknown"
    if kind == "DagsterAssetCheckFailedError":
        return CHECK_FAILED, "a blocking check failed with ERROR severity"
    return Classification("step_error", False, "unclassified_step_error"), f"{kind} in the step"


def _step_assets(
    repository: dg.RepositoryDefinition | None, step_key: str
) -> tuple[list[str], bool]:
    """The asset keys of the step's assets (or checks) definition in this code location, and
    whether it is a check step."""
    if repository is None:
        return [], False
    for assets_def in repository.asset_graph.assets_defs:
        if assets_def.is_executable and assets_def.node_def.name == step_key:
            if isinstance(assets_def, dg.AssetChecksDefinition):
                return sorted({k.asset_key.to_user_string() for k in assets_def.check_keys}), True
            return sorted(k.to_user_string() for k in assets_def.keys), False
    return [], False


def _planned_assets(instance: dg.DagsterInstance, run_id: str) -> list[str]:
    records = instance.get_records_for_run(
        run_id=run_id, of_type=dg.DagsterEventType.ASSET_MATERIALIZATION_PLANNED
    ).records
    keys = {
        r.event_log_entry.dagster_event.asset_key
        for r in records
        if r.event_log_entry.dagster_event
    }
    return sorted(k.to_user_string() for k in keys if k is not None)


def run_failures(context: dg.RunFailureSensorContext, recorded: set[str]) -> list[Failure]:
    """The failures of the run that no hook recorded: one per failed step, or the run's own."""
    run = context.dagster_run
    now = utcnow()
    failures: list[Failure] = []
    step_events: Sequence[dg.DagsterEvent] = context.get_step_failure_events()
    for event in step_events:
        step = event.step_key or "?"
        if step in recorded:
            continue
        found, text = step_classification(event)
        assets, is_check = _step_assets(context.repository_def, step)
        failures.append(
            step_failure(
                job_name=run.job_name,
                run_id=run.run_id,
                step_key=step,
                asset_keys=assets,
                found=found,
                occurred_at=now,
                error=text,
                is_check=is_check or found is CHECK_FAILED,
                s3_bucket=get_settings().s3_bucket,
            )
        )
    if not step_events and "" not in recorded:
        reason = run.tags.get(FAILURE_REASON_TAG)
        found = classify_run_failure(reason)
        failures.append(
            run_failure(
                job_name=run.job_name,
                run_id=run.run_id,
                found=found,
                occurred_at=now,
                asset_keys=_planned_assets(context.instance, run.run_id),
                reason=f"Dagster's failure reason: {reason or 'none recorded'}",
            )
        )
    return failures


def incident_run_failure(context: dg.RunFailureSensorContext, warehouse: WarehouseResource) -> None:
    engine = warehouse.health_engine()  # unreachable: the tick fails and is tried again
    run = context.dagster_run
    failures = run_failures(context, recorded_steps(engine, run.run_id))
    if not failures:
        context.log.info(f"run {run.run_id[:8]} of {run.job_name}: its hooks recorded the failure")
    for failure in failures:
        opened = open_or_absorb(engine, root_key_for(engine, failure), failure, ACTOR)
        verb = "opened" if opened.created else "joined"
        context.log.warning(f"incident {opened.incident_id} {verb}: {failure.title}")


def incident_run_failure_sensor_every(seconds: int) -> dg.SensorDefinition:
    """The run-failure sensor, run by dagster-daemon every ``seconds`` (``sensor_intervals``)."""
    return dg.run_failure_sensor(
        name="incident_run_failure_sensor",
        monitor_all_code_locations=True,
        minimum_interval_seconds=seconds,
        default_status=dg.DefaultSensorStatus.RUNNING,
        description="Opens (or joins) an incident for every failed run that no failure hook "
        "recorded: launch failures, killed or lost workers, crashes outside the steps.",
    )(incident_run_failure)


incident_run_failure_sensor = incident_run_failure_sensor_every(
    SensorIntervals().incident_run_failure_sensor
)


def sensor_definitions(config: HealthConfiguration) -> list[dg.SensorDefinition]:
    return [incident_run_failure_sensor_every(config.sensor_intervals.incident_run_failure_sensor)]
