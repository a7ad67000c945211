"""Health-check and benchmark jobs, generated from the ``health_checks`` of ``healthmon.yaml``.

One job per cadence (checks grouped by ``interval_seconds``), each one op that runs its checks
concurrently in-process through :class:`HealthCheckRunner` (timeouts, retries, dependencies); the
schedule of each job is built from its interval in ``schedules.py``. Results go to
``etl.check_results`` and ``etl.metrics``; the op's output metadata carries each check's status code
and response time so Dagster plots them.
A benchmark job runs one op per component and records its performance score.
"""

from collections import defaultdict
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import dagster as dg
from sqlalchemy import exc as sa_exc

from healthmon_dagster.config.models import HealthConfiguration, ThresholdConfiguration
from healthmon_dagster.defs.health.instance_facts import InstanceFacts
from healthmon_dagster.defs.resources import LandingResource, WarehouseResource, s3_client
from healthmon_dagster.enums import HealthComponent, HealthStatus
from healthmon_dagster.health.benchmark import run_benchmark
from healthmon_dagster.health.context import CheckEnvironment
from healthmon_dagster.health.record import (
    benchmark_numbers,
    latest_results,
    write_benchmark,
    write_results,
)
from healthmon_dagster.health.registry import checks_from_config
from healthmon_dagster.health.result import HealthCheck, HealthCheckResult
from healthmon_dagster.health.runner import HealthCheckRunner
from healthmon_dagster.settings import get_settings, redact_url
from healthmon_dagster.store.db import describe_unavailable
from healthmon_dagster.store.errors import error_text

BENCHMARK_JOB = "health_benchmark_job"


def job_name_for_interval(seconds: int) -> str:
    return f"health_checks_every_{seconds}s_job"


def _environment(
    warehouse: WarehouseResource, landing: LandingResource, instance: Any, pattern: str
) -> CheckEnvironment:
    s = get_settings()
    return CheckEnvironment(
        database_url=warehouse.url(),
        health_database_url=warehouse.health_url(),
        s3_bucket=landing.s3_bucket or s.s3_bucket,
        s3_prefix=landing.s3_prefix if landing.s3_prefix is not None else s.s3_prefix,
        aws_endpoint_url=landing.endpoint_url or s.aws_endpoint_url,
        aws_region=landing.region_name or s.aws_region,
        landing_dir=Path(landing.local_dir) if landing.local_dir else s.landing_dir,
        landing_pattern=pattern,
        dagster=InstanceFacts(instance),
        s3_client=s3_client,
    )


def _store_failure(warehouse: WarehouseResource, exc: Exception) -> dg.Failure:
    return dg.Failure(
        description=str(describe_unavailable(redact_url(warehouse.health_url()), exc))
        + " The check results of this run are in the run log only."
    )


def _result_metadata(results: Sequence[HealthCheckResult]) -> dict[str, Any]:
    meta: dict[str, Any] = {}
    for r in results:
        # HealthStatus.rank (0 healthy, 1 unknown, 2 warning, 3 critical): a plot shows a step up
        # as a change for the worse. Named status_rank, not the former status_code, whose numbers
        # ranked unknown above warning: the two series must not be read as one.
        meta[f"{r.check_id}.status_rank"] = r.status.rank
        meta[f"{r.check_id}.response_time_ms"] = float(r.response_time_ms)
        meta[f"{r.check_id}.attempts"] = r.attempts
    for status in HealthStatus:
        meta[f"checks_{status.value}"] = sum(r.status == status for r in results)
    return meta


def build_health_check_job(
    interval_seconds: int,
    checks: Sequence[HealthCheck],
    landing_pattern: str = "patients*.csv",
    thresholds: Sequence[ThresholdConfiguration] = (),
) -> dg.JobDefinition:
    """The job that runs ``checks`` (all of one cadence) in one in-process op."""
    by_id = {c.check_id: c for c in checks}
    external = sorted({d for c in checks for d in c.dependencies if d not in by_id})
    op_name = f"run_health_checks_every_{interval_seconds}s"

    @dg.op(
        name=op_name,
        description=(
            f"Runs {len(checks)} health check(s) every {interval_seconds}s concurrently, each "
            f"with its own timeout and retries: {', '.join(by_id)}. Results go to "
            "etl.check_results and etl.metrics."
        ),
        tags={"kind": "health_check"},
    )
    def _run(
        context: dg.OpExecutionContext, warehouse: WarehouseResource, landing: LandingResource
    ) -> dg.Output[dict[str, str]]:
        engine = None
        known: dict[str, HealthCheckResult] = {}
        if external:
            # Dependencies on another cadence are judged by their latest stored result.
            try:
                engine = warehouse.health_engine()
                known = latest_results(engine, external)
            except sa_exc.DBAPIError as exc:
                context.log.warning(f"could not read dependency results: {error_text(exc)}")
        env = _environment(warehouse, landing, context.instance, landing_pattern)
        runner = HealthCheckRunner(env, thresholds=thresholds)

        def log(result: HealthCheckResult) -> None:
            line = f"{result.check_id}: {result.status.value} ({result.message})"
            if result.status == HealthStatus.HEALTHY:
                context.log.info(line)
            else:
                context.log.warning(line)

        report = runner.run(list(checks), known_results=known, on_result=log)
        try:
            write_results(
                engine or warehouse.health_engine(), by_id, report.results, context.run_id
            )
        except sa_exc.DBAPIError as exc:
            raise _store_failure(warehouse, exc) from None
        return dg.Output(
            {r.check_id: r.status.value for r in report.results},
            metadata=_result_metadata(report.results),
        )

    @dg.job(
        name=job_name_for_interval(interval_seconds),
        executor_def=dg.in_process_executor,
        description=f"Health checks every {interval_seconds}s: {', '.join(by_id)}.",
        tags={"healthmon/kind": "health_check"},
    )
    def _job() -> None:
        _run()

    return _job


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
            bench = run_benchmark(engine, component)
            write_benchmark(engine, bench, context.run_id)
        except sa_exc.DBAPIError as exc:
            raise _store_failure(warehouse, exc) from None
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


def build_health_check_jobs(config: HealthConfiguration) -> dict[int, dg.JobDefinition]:
    """One job per cadence of the enabled health checks, by interval in seconds (ascending)."""
    groups: dict[int, list[HealthCheck]] = defaultdict(list)
    for check in checks_from_config(config):
        if check.enabled:
            groups[check.interval_seconds].append(check)
    return {
        seconds: build_health_check_job(
            seconds, checks, config.landing.file_pattern, config.thresholds
        )
        for seconds, checks in sorted(groups.items())
    }
