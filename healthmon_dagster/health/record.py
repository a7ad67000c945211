"""Health check and benchmark results in the health store: ``etl.check_results`` rows and
``etl.metrics`` points.

One row per result (``source='health_check'``, ``check_name`` = check_id, ``target`` = component,
``critical`` = the check's criticality, ``severity`` = :func:`severity_of` the result, the same
severity its Dagster asset check evaluation carries), and one metric per number
(``metric_name`` = ``<check_id>.<metric>``), written in one transaction.

A *skipped* result (the check had nothing to check, e.g. the S3 check in local mode: its
``details["skipped"]`` says why) measured nothing: it is stored with status ``unknown``, message
``skipped: <why>`` and ``details["skipped"]``, and :func:`counted` keeps it out of the status, uptime
and history, so its component is "not monitored" rather than HEALTHY with 100% uptime.

Benchmarks are stored the same way under ``source='benchmark'`` (never critical), so health-check
rollups do not count them.
"""

from collections.abc import Iterable, Mapping, Sequence
from datetime import UTC

import sqlalchemy as sa
from sqlalchemy.engine import Engine

from healthmon_dagster.enums import CheckSeverity, HealthStatus, RecordSource
from healthmon_dagster.health.benchmark import PerformanceBenchmark
from healthmon_dagster.health.result import HealthCheck, HealthCheckResult
from healthmon_dagster.store.connection import write_transaction
from healthmon_dagster.store.metrics import MetricPoint, write_metrics
from healthmon_dagster.store.tables import check_results

SOURCE = RecordSource.HEALTH_CHECK.value


def severity_of(status: HealthStatus, critical: bool) -> CheckSeverity | None:
    """The severity of a result, stored in ``etl.check_results`` and reported to Dagster alike.

    None for HEALTHY. ERROR for CRITICAL from a critical check. WARN otherwise: a warning, a
    non-critical check's CRITICAL (it warns at most, as in the component status), and UNKNOWN (the
    check could not judge, e.g. its dependency failed: "cannot tell" is never green).
    """
    if status == HealthStatus.HEALTHY:
        return None
    if status == HealthStatus.CRITICAL and critical:
        return CheckSeverity.ERROR
    return CheckSeverity.WARN


def skipped_reason(result: HealthCheckResult) -> str | None:
    """Why the check skipped (its ``details["skipped"]``), or None when it measured something."""
    reason = result.details.get("skipped")
    return str(reason) if reason else None


def learning_reason(result: HealthCheckResult) -> str | None:
    """Why the check cannot judge yet (its ``details["learning"]``, e.g. a forecast without
    enough history), or None. A learning result is UNKNOWN with no severity: it never alerts."""
    reason = result.details.get("learning")
    return str(reason) if reason else None


def counted() -> sa.ColumnElement[bool]:
    """The health rows that measured something: not skipped (see the module docstring)."""
    skipped: sa.ColumnElement[str] = check_results.c.details["skipped"].as_string()
    return skipped.is_(None)


def result_row(
    check: HealthCheck, result: HealthCheckResult, run_id: str | None = None
) -> dict[str, object]:
    """The ``etl.check_results`` row of one result (a skipped one as described above)."""
    skipped = skipped_reason(result)
    status = HealthStatus.UNKNOWN if skipped else result.status
    return {
        "ts": result.timestamp,
        "source": SOURCE,
        "check_name": result.check_id,
        "target": check.component.value,
        "status": status.value,
        "severity": None
        if skipped
        or learning_reason(result)
        or (severity := severity_of(status, check.critical)) is None
        else severity.value,
        "critical": check.critical,
        "response_time_ms": result.response_time_ms,
        "message": f"skipped: {skipped}" if skipped else result.message,
        "details": {
            **({"skipped": skipped} if skipped else {}),
            "details": result.details,
            "errors": result.errors,
            "warnings": result.warnings,
            "metrics": result.metrics,
            "check_type": check.check_type.value,
            "attempts": result.attempts,
        },
        "dagster_run_id": run_id,
    }


def metric_points(check: HealthCheck, result: HealthCheckResult) -> list[MetricPoint]:
    """The ``etl.metrics`` points of one result (its metrics, response time included)."""
    tags = {"check_id": result.check_id, "status": result.status.value}
    values = {"response_time_ms": result.response_time_ms, **result.metrics}
    return [
        MetricPoint(
            check.component.value,
            f"{result.check_id}.{name}",
            float(value),
            "ms" if name.endswith("_ms") else "",
            tags,
            result.timestamp,
        )
        for name, value in values.items()
    ]


def write_results(
    engine: Engine,
    checks: Mapping[str, HealthCheck],
    results: Sequence[HealthCheckResult],
    run_id: str | None = None,
) -> int:
    """Write ``results`` (rows and metrics) in one transaction; returns the number of rows."""
    if not results:
        return 0
    rows = [result_row(checks[r.check_id], r, run_id) for r in results]
    # A skipped result measured nothing: no metrics (not even a response time).
    points = [
        p for r in results if not skipped_reason(r) for p in metric_points(checks[r.check_id], r)
    ]
    with write_transaction(engine) as conn:
        conn.execute(check_results.insert(), rows)
        write_metrics(engine, points, conn=conn)
    return len(rows)


def latest_results(engine: Engine, check_ids: Iterable[str]) -> dict[str, HealthCheckResult]:
    """The newest stored result of each of ``check_ids`` that has one."""
    ids = sorted(set(check_ids))
    if not ids:
        return {}
    newest = (
        sa.select(check_results.c.check_name, sa.func.max(check_results.c.result_id).label("id"))
        .where(check_results.c.source == SOURCE, check_results.c.check_name.in_(ids))
        .group_by(check_results.c.check_name)
        .subquery()
    )
    query = sa.select(check_results).join(newest, check_results.c.result_id == newest.c.id)
    out: dict[str, HealthCheckResult] = {}
    with engine.connect() as conn:
        for row in conn.execute(query).mappings():
            body = row["details"] or {}
            ts = row["ts"]
            out[row["check_name"]] = HealthCheckResult(
                check_id=row["check_name"],
                timestamp=ts.replace(tzinfo=UTC) if ts.tzinfo is None else ts,
                status=HealthStatus(row["status"]),
                response_time_ms=row["response_time_ms"] or 0.0,
                details=body.get("details", {}),
                errors=body.get("errors", []),
                warnings=body.get("warnings", []),
                metrics=body.get("metrics", {}),
                attempts=body.get("attempts", 1),
            )
    return out


def benchmark_numbers(bench: PerformanceBenchmark) -> dict[str, float]:
    """The figures of a benchmark: current and baseline response time, throughput and error rate,
    and the performance score (those that could be computed)."""
    out: dict[str, float] = {}
    for label, m in (("current", bench.current_metrics), ("baseline", bench.baseline_metrics)):
        for name in ("response_time_ms", "throughput_per_second", "error_rate"):
            value = getattr(m, name)
            if value is not None:
                out[f"{label}_{name}"] = float(value)
    if bench.performance_score is not None:
        out["performance_score"] = float(bench.performance_score)
    return out


def write_benchmark(engine: Engine, bench: PerformanceBenchmark, run_id: str | None = None) -> None:
    """Write a benchmark: its figures to ``etl.metrics`` (``benchmark.<name>``) and one
    ``etl.check_results`` row (``source='benchmark'``), in one transaction."""
    points = [
        MetricPoint(
            bench.component.value,
            f"benchmark.{name}",
            value,
            "ms" if name.endswith("_ms") else "",
            {"benchmark_id": bench.benchmark_id},
            bench.last_run,
        )
        for name, value in benchmark_numbers(bench).items()
    ]
    row = {
        "ts": bench.last_run,
        "source": RecordSource.BENCHMARK.value,
        "check_name": bench.benchmark_id,
        "target": bench.component.value,
        "status": bench.status.value,
        "severity": severity.value if (severity := severity_of(bench.status, False)) else None,
        "critical": False,
        "observed_value": bench.performance_score,
        "message": "; ".join(r.message for r in bench.recommendations) or "ok",
        "details": bench.to_dict(),
        "dagster_run_id": run_id,
    }
    with write_transaction(engine) as conn:
        conn.execute(check_results.insert(), [row])
        write_metrics(engine, points, conn=conn)
