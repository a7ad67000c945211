"""Health checks as Dagster asset checks on the component assets (``assets.py``).

Each enabled health check of ``healthmon.yaml`` is an asset check named by its ``check_id`` on
``health/<component>``. The checks of one cadence are one ``@multi_asset_check``
(``run_health_checks_every_<N>s``) that runs them concurrently in-process through
:class:`HealthCheckRunner` (timeouts, retries, dependencies), writes the results to
``etl.check_results`` and ``etl.metrics`` as before, and reports one evaluation per check:

- CRITICAL -> failed, severity ERROR; WARNING -> failed, severity WARN; HEALTHY -> passed.
- A check with ``critical: false`` fails with WARN at most, as it counts for its component in
  ``healthmon status``; its metadata still says ``health_status: critical``. The severity is
  :func:`healthmon_dagster.health.record.severity_of`, the one ``etl.check_results`` stores.
- UNKNOWN (a dependency failed, so the check was not run) -> failed, severity WARN: "we cannot
  tell" must not look green, and it ranks below a confirmed problem as in ``HealthStatus``.
- Skipped by configuration (``details.skipped``, e.g. the S3 check when landing is the local
  folder) -> no evaluation. The check was planned in the run, so Dagster records it as SKIPPED
  ("not monitored"), never as passed; the run log says why.

The evaluation's description is the result's message (value-free by construction); its metadata
is numbers Dagster plots (``response_time_ms``, each of the check's metrics, ``attempts``,
``status_rank`` = :attr:`HealthStatus.rank`) plus ``health_status`` and ``critical``, never details.
Evaluations are reported before the results are written to the health store: when that write fails
(the store is down) the step fails, and Dagster already shows what the checks found.

Why the op owns real check specs (selected by an asset job) rather than an op job reporting
``AssetCheckEvaluation`` through ``context.log_event`` on checks declared elsewhere (both verified
with a real ``DagsterInstance``, dagster 1.13): both store rows that the UI's check history and
``event_log_storage.get_latest_asset_check_execution_by_key`` read, but

- a check that is shown in the UI needs an executable definition anyway (every way dagster 1.13
  offers to declare an asset check takes an op: there is no spec-only check); owned by this op,
  "Execute" in the UI runs the real health check (the op is ``can_subset``: only the selected
  checks run, dependencies outside the selection are judged by their latest stored result, as for
  dependencies on another cadence);
- only a planned check gets Dagster's run-bound states: ``ASSET_CHECK_EVALUATION_PLANNED`` makes a
  check "in progress" while its run goes, SKIPPED when the run succeeded without evaluating it
  (the "not monitored" case above) and EXECUTION_FAILED when the run failed before it was reported
  (``AssetCheckExecutionRecord.resolve_status``). A logged evaluation without a plan is stored as a
  bare row, and a crashed health-check run would leave the previous (possibly green) result as the
  latest.
"""

from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import dagster as dg
from sqlalchemy import exc as sa_exc

from healthmon_dagster.config.models import ThresholdConfiguration
from healthmon_dagster.defs.health.assets import component_asset_key
from healthmon_dagster.defs.health.instance_facts import InstanceFacts
from healthmon_dagster.defs.resources import LandingResource, WarehouseResource, s3_client
from healthmon_dagster.enums import CheckSeverity, HealthStatus, QualityStatus
from healthmon_dagster.formatting import metadata_number
from healthmon_dagster.health.context import CheckEnvironment
from healthmon_dagster.health.record import (
    latest_results,
    learning_reason,
    severity_of,
    skipped_reason,
    write_results,
)
from healthmon_dagster.health.result import HealthCheck, HealthCheckResult
from healthmon_dagster.health.runner import HealthCheckRunner
from healthmon_dagster.settings import get_settings, redact_url
from healthmon_dagster.store.db import describe_unavailable
from healthmon_dagster.store.errors import error_text


def checks_op_name(interval_seconds: int) -> str:
    return f"run_health_checks_every_{interval_seconds}s"


def check_key(check: HealthCheck) -> dg.AssetCheckKey:
    """The asset check of ``check``: its ``check_id`` on its component's asset."""
    return dg.AssetCheckKey(component_asset_key(check.component), check.check_id)


def check_spec(check: HealthCheck) -> dg.AssetCheckSpec:
    what = (check.description or f"{check.kind} health check '{check.name}'").rstrip(".")
    return dg.AssetCheckSpec(
        check.check_id,
        asset=component_asset_key(check.component),
        description=(
            f"{what} ({check.check_type.value}, {'critical' if check.critical else 'not critical'}"
            f", every {check.interval_seconds}s)."
        ),
        metadata={
            "kind": check.kind,
            "check_type": check.check_type.value,
            "critical": check.critical,
            "interval_seconds": check.interval_seconds,
        },
    )


def evaluation_metadata(check: HealthCheck, result: HealthCheckResult) -> dict[str, Any]:
    """Numbers Dagster plots, the status word and the check's criticality; never a detail."""
    meta: dict[str, Any] = {
        "health_status": result.status.value,
        # HealthStatus.rank: a plot shows a step up as a change for the worse
        "status_rank": result.status.rank,
        "critical": check.critical,
        "attempts": result.attempts,
        "response_time_ms": metadata_number("response_time_ms", result.response_time_ms),
    }
    if learning_reason(result) is not None:
        meta["status"] = QualityStatus.INSUFFICIENT_HISTORY.value  # as a learning quality check
    for name, value in sorted(result.metrics.items()):
        meta.setdefault(name, metadata_number(name, value))
    return meta


def to_evaluation(check: HealthCheck, result: HealthCheckResult) -> dg.AssetCheckResult | None:
    """The Dagster evaluation of one result; None for a skipped check (Dagster: SKIPPED)."""
    if skipped_reason(result) is not None:
        return None
    return dg.AssetCheckResult(
        asset_key=component_asset_key(check.component),
        check_name=check.check_id,
        # A check still learning (e.g. a forecast without history) passes, as quality checks do.
        passed=result.status == HealthStatus.HEALTHY or learning_reason(result) is not None,
        severity=dg.AssetCheckSeverity.ERROR
        if severity_of(result.status, check.critical) == CheckSeverity.ERROR
        else dg.AssetCheckSeverity.WARN,
        description=result.message,
        metadata=evaluation_metadata(check, result),
    )


def check_environment(
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


def store_failure(warehouse: WarehouseResource, exc: Exception, where: str) -> dg.Failure:
    return dg.Failure(
        description=str(describe_unavailable(redact_url(warehouse.health_url()), exc))
        + f" The results of this run are in {where} only."
    )


def build_health_checks(
    interval_seconds: int,
    checks: Sequence[HealthCheck],
    landing_pattern: str = "patients*.csv",
    thresholds: Sequence[ThresholdConfiguration] = (),
) -> dg.AssetChecksDefinition:
    """The asset checks of ``checks`` (all enabled, of one cadence), run by one in-process op."""
    by_id = {c.check_id: c for c in checks}

    @dg.multi_asset_check(
        specs=[check_spec(c) for c in checks],
        name=checks_op_name(interval_seconds),
        description=(
            f"Runs the health checks of every {interval_seconds}s concurrently, each with its own "
            f"timeout and retries: {', '.join(by_id)}. Results go to etl.check_results and "
            "etl.metrics."
        ),
        can_subset=True,
        op_tags={"kind": "health_check"},
    )
    def _run(
        context: dg.AssetCheckExecutionContext,
        warehouse: WarehouseResource,
        landing: LandingResource,
    ) -> Iterator[dg.AssetCheckResult]:
        selected = {k.name for k in context.selected_asset_check_keys}
        to_run = [c for c in checks if c.check_id in selected]
        # Dependencies outside this run (another cadence, or not selected) are judged by their
        # latest stored result.
        ids = {c.check_id for c in to_run}
        external = sorted({d for c in to_run for d in c.dependencies if d not in ids})
        engine = None
        known: dict[str, HealthCheckResult] = {}
        if external:
            try:
                engine = warehouse.health_engine()
                known = latest_results(engine, external)
            except sa_exc.DBAPIError as exc:
                context.log.warning(f"could not read dependency results: {error_text(exc)}")
        env = check_environment(warehouse, landing, context.instance, landing_pattern)
        runner = HealthCheckRunner(env, thresholds=thresholds)

        def log(result: HealthCheckResult) -> None:
            reason = skipped_reason(result)
            if reason is not None:
                context.log.info(f"{result.check_id}: not monitored ({reason})")
            elif result.status == HealthStatus.HEALTHY:
                context.log.info(f"{result.check_id}: healthy ({result.message})")
            else:
                context.log.warning(f"{result.check_id}: {result.status.value} ({result.message})")

        report = runner.run(to_run, known_results=known, on_result=log)
        # Dagster first: the UI shows component health even when the health store is down.
        for result in report.results:
            evaluation = to_evaluation(by_id[result.check_id], result)
            if evaluation is not None:
                yield evaluation
        try:
            write_results(
                engine or warehouse.health_engine(), by_id, report.results, context.run.run_id
            )
        except sa_exc.DBAPIError as exc:
            raise store_failure(warehouse, exc, "Dagster and the run log") from None

    return _run
