"""Health checks and benchmarks as Dagster jobs, generated from the ``health_checks`` of
healthmon.yaml, with their schedules."""

import dagster as dg

from healthmon_dagster.config import HealthConfiguration
from healthmon_dagster.defs.health.jobs import build_benchmark_job, build_health_check_jobs
from healthmon_dagster.defs.health.schedules import build_health_schedules


def definitions(config: HealthConfiguration) -> dg.Definitions:
    """Jobs and schedules for ``config``: one health-check job per cadence, plus the benchmark."""
    check_jobs = build_health_check_jobs(config)
    benchmark = build_benchmark_job()
    return dg.Definitions(
        jobs=[*check_jobs.values(), benchmark],
        schedules=build_health_schedules(check_jobs, benchmark),
    )
