"""Schedules of the health domain: one per health-check cadence, and the hourly benchmark."""

from collections.abc import Mapping
from typing import TYPE_CHECKING

import dagster as dg

if TYPE_CHECKING:  # what dg.define_asset_job returns; dagster does not export the class
    from dagster._core.definitions.unresolved_asset_job_definition import (
        UnresolvedAssetJobDefinition,
    )

BENCHMARK_CRON = "15 * * * *"


def cron_for_interval(seconds: int) -> str:
    """The cron schedule closest to every ``seconds`` (cron cannot go below one minute).

    Minutes that do not divide the hour restart at each full hour (``*/7`` runs at :56 then :00).
    """
    minutes = max(1, round(seconds / 60))
    if minutes < 60:
        return "* * * * *" if minutes == 1 else f"*/{minutes} * * * *"
    hours = max(1, round(minutes / 60))
    if hours < 24:
        return "0 * * * *" if hours == 1 else f"0 */{hours} * * *"
    return "0 0 * * *"


def build_health_schedules(
    check_jobs: Mapping[int, "UnresolvedAssetJobDefinition"], benchmark_job: dg.JobDefinition
) -> list[dg.ScheduleDefinition]:
    """A running schedule per health-check job (``check_jobs`` by interval in seconds), and the
    benchmark's."""
    schedules = [
        dg.ScheduleDefinition(
            name=f"{job.name.removesuffix('_job')}_schedule",
            job=job,
            cron_schedule=cron_for_interval(seconds),
            default_status=dg.DefaultScheduleStatus.RUNNING,
            description=f"Every {seconds}s as cron '{cron_for_interval(seconds)}'.",
        )
        for seconds, job in check_jobs.items()
    ]
    schedules.append(
        dg.ScheduleDefinition(
            name="health_benchmark_schedule",
            job=benchmark_job,
            cron_schedule=BENCHMARK_CRON,
            default_status=dg.DefaultScheduleStatus.RUNNING,
        )
    )
    return schedules
