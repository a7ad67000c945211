"""Health results in the store: one row per result with ``critical`` and a CheckSeverity, metrics,
and the latest result per check read back."""

from datetime import UTC, datetime

import pytest
import sqlalchemy as sa
from sqlalchemy.engine import Engine

from healthmon_dagster.enums import CheckSeverity, HealthComponent, HealthStatus
from healthmon_dagster.health.record import latest_results, severity_of, write_results
from healthmon_dagster.health.result import HealthCheck, HealthCheckResult
from healthmon_dagster.store.tables import check_results, metrics

TS = datetime(2026, 3, 2, 12, 0, tzinfo=UTC)
CHECKS = {
    "ping": HealthCheck("ping", HealthComponent.DATABASE, "database", critical=True),
    "size": HealthCheck("size", HealthComponent.DATABASE, "database"),
    "dns": HealthCheck("dns", HealthComponent.NETWORK, "network"),
}


def _result(
    check_id: str,
    status: HealthStatus,
    errors: list[str] | None = None,
    warnings: list[str] | None = None,
    metrics: dict[str, float] | None = None,
    attempts: int = 1,
) -> HealthCheckResult:
    return HealthCheckResult(
        check_id,
        TS,
        status,
        12.5,
        errors=errors or [],
        warnings=warnings or [],
        metrics=metrics or {},
        attempts=attempts,
    )


def test_rows_carry_critical_and_the_severity_of_their_status(engine: Engine) -> None:
    results = [
        _result("ping", HealthStatus.CRITICAL, errors=["connection refused"]),
        _result("size", HealthStatus.WARNING, warnings=["big"], metrics={"size_gb": 3.0}),
        _result("dns", HealthStatus.HEALTHY),
    ]
    assert write_results(engine, CHECKS, results, run_id="r1") == 3
    c = check_results.c
    with engine.connect() as conn:
        rows = {
            r.check_name: r
            for r in conn.execute(
                sa.select(c.check_name, c.source, c.target, c.severity, c.critical, c.message)
            )
        }
        metric_names = set(conn.execute(sa.select(metrics.c.metric_name)).scalars())
    assert {n: (r.severity, r.critical) for n, r in rows.items()} == {
        "ping": ("ERROR", True),
        "size": ("WARN", False),
        "dns": (None, False),
    }
    assert rows["ping"].source == "health_check" and rows["ping"].target == "database"
    assert rows["ping"].message == "connection refused"
    assert {"size.size_gb", "size.response_time_ms", "dns.response_time_ms"} <= metric_names


def test_latest_results_reads_back_the_newest_result_per_check(engine: Engine) -> None:
    write_results(engine, CHECKS, [_result("ping", HealthStatus.CRITICAL, errors=["down"])])
    write_results(engine, CHECKS, [_result("ping", HealthStatus.HEALTHY, attempts=2)])
    latest = latest_results(engine, ["ping", "dns"])
    assert set(latest) == {"ping"}
    assert latest["ping"].status == HealthStatus.HEALTHY and latest["ping"].attempts == 2
    assert latest["ping"].timestamp == TS
    assert write_results(engine, CHECKS, []) == 0 and latest_results(engine, []) == {}


@pytest.mark.parametrize(
    ("status", "critical", "expected"),
    [
        (HealthStatus.HEALTHY, True, None),
        (HealthStatus.CRITICAL, True, CheckSeverity.ERROR),
        (HealthStatus.CRITICAL, False, CheckSeverity.WARN),  # a non-critical check warns at most
        (HealthStatus.WARNING, True, CheckSeverity.WARN),
        (HealthStatus.UNKNOWN, True, CheckSeverity.WARN),  # could not judge: never green
        (HealthStatus.UNKNOWN, False, CheckSeverity.WARN),
    ],
)
def test_one_severity_for_the_store_and_dagster(
    status: HealthStatus, critical: bool, expected: CheckSeverity | None
) -> None:
    assert severity_of(status, critical) == expected
