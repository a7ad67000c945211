"""Health-check and benchmark jobs, generated from the ``health_checks`` of ``healthmon.yaml``.

One asset job per cadence (checks grouped by ``interval_seconds``) selecting the asset checks of
that cadence (``checks.py``: one op runs them concurrently in-process and reports one evaluation per
check on its component asset, ``assets.py``); the schedule of each job is built from its interval in
``schedules.py``. Results also go to ``etl.check_results`` and ``etl.metrics``.
A benchmark job runs one op per component and records its performance score.
"""

from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import dagster as dg
from sqlalchemy import exc as sa_exc

from healthmon_dagster.config.models import HealthConfiguration
from healthmon_dagster.defs.alerting.hooks import ALERT_HOOKS
from healthmon_dagster.defs.health.assets import build_component_assets
from healthmon_dagster.defs.health.checks import build_health_checks, store_failure
from healthmon_dagster.defs.resources import WarehouseResource
from healthmon_dagster.enums import HealthComponent
from healthmon_dagster.etl.catalog import COMPONENT_LAYERS
from healthmon_dagster.health.benchmark import run_benchmark
from healthmon_dagster.health.record import benchmark_numbers, write_benchmark
from healthmon_dagster.health.registry import checks_from_config
from healthmon_dagster.health.result import HealthCheck

if TYPE_CHECKING:  # what dg.define_asset_job returns; dagster does not export the class
    from dagster._core.definitions.unresolved_asset_job_definition import (
        UnresolvedAssetJobDefinition,
    )

BENCHMARK_JOB = "health_benchmark_job"


def job_name_for_interval(seconds: int) -> str:
    return f"health_checks_every_{seconds}s_job"


def build_health_check_job(
    interval_seconds: int, health_checks: dg.AssetChecksDefinition
) -> "UnresolvedAssetJobDefinition":
    """The job that runs ``health_checks`` (the asset checks of one cadence, ``checks.py``)."""
    names = ", ".join(sorted(k.name for k in health_checks.check_keys))
    return dg.define_asset_job(
        name=job_name_for_interval(interval_seconds),
        selection=dg.AssetSelection.checks(health_checks),
        executor_def=dg.in_process_executor,
        description=f"Health checks every {interval_seconds}s: {names}.",
        tags={"healthmon/kind": "health_check"},
        hooks=ALERT_HOOKS,  # a critical result alerts from the run itself (the alert fast path)
    )


def _benchmark_op(component: HealthComponent) -> dg.OpDefinition:
    @dg.op(
        name=f"benchmark_{component.value}",
        description=(
            f"Performance benchmark of {component.value}: the last hour against the 7 days "
            "before it (response time, throughput, error rate, resource use), a 0-100 score and "
            "recommendations."
        ),
        tags={"kind": "benchmark"},
    )
    def _bench(
        context: dg.OpExecutionContext, warehouse: WarehouseResource
    ) -> dg.Output[dict[str, Any]]:
        try:
            engine = warehouse.health_engine()
            # A pipeline component's load runs are in the warehouse (its own database by default).
            runs = warehouse.engine() if component in COMPONENT_LAYERS else None
            bench = run_benchmark(engine, component, warehouse=runs)
            write_benchmark(engine, bench, context.run_id)
        except sa_exc.DBAPIError as exc:
            raise store_failure(warehouse, exc, "the run log") from None
        for rec in bench.recommendations:
            context.log.info(f"{component.value}: {rec.message}")
        meta: dict[str, Any] = {
            "performance_score": bench.performance_score
            if bench.performance_score is not None
            else dg.MetadataValue.null(),
            "status": bench.status.value,
            "recommendations": len(bench.recommendations),
        }
        for name, value in benchmark_numbers(bench).items():
            meta[name] = value
        return dg.Output(bench.to_dict(), metadata=meta)

    return _bench


def build_benchmark_job(
    components: Sequence[HealthComponent] = tuple(HealthComponent),
) -> dg.JobDefinition:
    """One op per component, in-process."""
    ops = [_benchmark_op(c) for c in components]

    @dg.job(
        name=BENCHMARK_JOB,
        executor_def=dg.in_process_executor,
        description="Performance benchmark of every component from the health store's history.",
        tags={"healthmon/kind": "benchmark"},
    )
    def _job() -> None:
        for op in ops:
            op()

    return _job


@dataclass(frozen=True)
class HealthCheckJobs:
    """What the ``health_checks`` of healthmon.yaml become: the component assets, the asset checks
    and the job of each cadence (by interval in seconds, ascending)."""

    assets: list[dg.AssetSpec]
    checks: dict[int, dg.AssetChecksDefinition]
    jobs: dict[int, "UnresolvedAssetJobDefinition"]


def build_health_check_jobs(config: HealthConfiguration) -> HealthCheckJobs:
    """One asset per component and one job per cadence of the enabled health checks."""
    enabled = [c for c in checks_from_config(config) if c.enabled]
    groups: dict[int, list[HealthCheck]] = defaultdict(list)
    for check in enabled:
        groups[check.interval_seconds].append(check)
    checks = {
        seconds: build_health_checks(seconds, group, config.landing.file_pattern, config.thresholds)
        for seconds, group in sorted(groups.items())
    }
    return HealthCheckJobs(
        assets=build_component_assets(enabled),
        checks=checks,
        jobs={seconds: build_health_check_job(seconds, c) for seconds, c in checks.items()},
    )
