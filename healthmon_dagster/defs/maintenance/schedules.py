"""Schedules of the maintenance domain."""

import dagster as dg

from healthmon_dagster.defs.maintenance.jobs import retention_job

retention_schedule = dg.ScheduleDefinition(
    name="retention_schedule",
    job=retention_job,
    cron_schedule="15 4 * * *",
    default_status=dg.DefaultScheduleStatus.RUNNING,
    description="Prune expired metrics, check results and load runs daily at 04:15.",
)

SCHEDULES = [retention_schedule]
