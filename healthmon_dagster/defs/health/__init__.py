"""Health checks and benchmarks, generated from the ``health_checks`` of healthmon.yaml: one asset
per monitored component with its health checks as asset checks, one job and schedule per cadence,
and the benchmark."""

import dagster as dg

from healthmon_dagster.config import HealthConfiguration
from healthmon_dagster.defs.health.jobs import build_benchmark_job, build_health_check_jobs
from healthmon_dagster.defs.health.schedules import build_health_schedules


def definitions(config: HealthConfiguration) -> dg.Definitions:
    """Component assets, their health checks, one health-check job per cadence, the benchmark and
    the schedules for ``config``."""
    health = build_health_check_jobs(config)
    benchmark = build_benchmark_job()
    return dg.Definitions(
        assets=health.assets,
        asset_checks=list(health.checks.values()),
        jobs=[*health.jobs.values(), benchmark],
        schedules=build_health_schedules(health.jobs, benchmark),
    )
