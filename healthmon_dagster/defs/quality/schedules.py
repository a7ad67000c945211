"""Schedules of the quality domain."""

import dagster as dg

from healthmon_dagster.defs.quality.jobs import quality_full_sweep_job

# ETL runs check each new file's rows; once a day every check also runs over the whole tables, so
# a problem that no single file shows (a slow drift, rows edited outside the pipeline) is found.
quality_full_sweep_schedule = dg.ScheduleDefinition(
    name="quality_full_sweep_schedule",
    job=quality_full_sweep_job,
    cron_schedule="30 3 * * *",
    default_status=dg.DefaultScheduleStatus.RUNNING,
    description="Every configured quality check over the whole tables, daily at 03:30.",
)

SCHEDULES = [quality_full_sweep_schedule]
