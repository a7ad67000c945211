"""Configured thresholds judged on a result's metrics."""

from datetime import UTC, datetime

from healthmon_dagster.config.models import ThresholdConfiguration
from healthmon_dagster.enums import HealthComponent, HealthStatus
from healthmon_dagster.health.result import HealthCheckResult
from healthmon_dagster.health.thresholds import apply_thresholds


def test_configured_thresholds_raise_the_status_and_name_the_threshold() -> None:
    def result() -> HealthCheckResult:
        return HealthCheckResult(
            "db", datetime.now(UTC), HealthStatus.HEALTHY, 3.0, metrics={"query_time_ms": 700.0}
        )

    t = ThresholdConfiguration(
        threshold_id="db_latency",
        component="database",
        metric_name="query_time_ms",
        warning_threshold=500,
        critical_threshold=2000,
    )
    warned = apply_thresholds(result(), HealthComponent.DATABASE, [t])
    assert warned.status == HealthStatus.WARNING
    assert warned.warnings == [
        "query_time_ms is 700, above the warning threshold 500 (threshold db_latency)"
    ]
    failed = apply_thresholds(
        result(), HealthComponent.DATABASE, [t.model_copy(update={"critical_threshold": 600})]
    )
    assert failed.status == HealthStatus.CRITICAL and "critical threshold 600" in failed.errors[0]
    # Another component's threshold, or a disabled one, does not apply.
    assert apply_thresholds(result(), HealthComponent.NETWORK, [t]).status == HealthStatus.HEALTHY
    off = t.model_copy(update={"enabled": False})
    assert (
        apply_thresholds(result(), HealthComponent.DATABASE, [off]).status == HealthStatus.HEALTHY
    )
