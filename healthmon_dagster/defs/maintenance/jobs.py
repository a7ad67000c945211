"""Schedules of the pipeline side (the health-check schedules are built from config in health.py)."""

import dagster as dg

from healthmon_dagster.config import load_config
from healthmon_dagster.defs.jobs import quality_full_sweep_job
from healthmon_dagster.defs.resources import WarehouseResource
from healthmon_dagster.settings import get_settings
from healthmon_dagster.store.retention import prune

# ETL runs check each new file's rows; once a day every check also runs over the whole tables, so
# a problem that no single file shows (a slow drift, rows edited outside the pipeline) is found.
quality_full_sweep_schedule = dg.ScheduleDefinition(
    name="quality_full_sweep_schedule",
    job=quality_full_sweep_job,
    cron_schedule="30 3 * * *",
    default_status=dg.DefaultScheduleStatus.RUNNING,
    description="Every configured quality check over the whole tables, daily at 03:30.",
)


@dg.op(description="Delete health-store rows older than the retention of healthmon.yaml.")
def prune_health_store(context: dg.OpExecutionContext, warehouse: WarehouseResource) -> None:
    retention = load_config(get_settings().config_path).retention
    deleted = prune(warehouse.health_engine(), retention)
    context.add_output_metadata({f"deleted__{k.split('.')[-1]}": v for k, v in deleted.items()})
    context.log.info(", ".join(f"{k}: {v} row(s) deleted" for k, v in deleted.items()))


@dg.job(executor_def=dg.in_process_executor, description="Apply the retention of healthmon.yaml.")
def retention_job() -> None:
    prune_health_store()


retention_schedule = dg.ScheduleDefinition(
    name="retention_schedule",
    job=retention_job,
    cron_schedule="15 4 * * *",
    default_status=dg.DefaultScheduleStatus.RUNNING,
    description="Prune expired metrics, check results and load runs daily at 04:15.",
)


def definitions() -> dg.Definitions:
    return dg.Definitions(
        jobs=[retention_job], schedules=[quality_full_sweep_schedule, retention_schedule]
    )
