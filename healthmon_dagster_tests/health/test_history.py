"""The status timeline in buckets: per component, overall, and across sparse results."""

from sqlalchemy.engine import Engine

from healthmon_dagster.enums import HealthStatus
from healthmon_dagster.health.history import get_health_history
from healthmon_dagster_tests.health.fixtures import (
    NOW,
    T0,
    H,
    M,
    database_timeline,
    insert_results,
    series,
)


def test_history_buckets_per_component_and_overall(engine: Engine) -> None:
    insert_results(engine, database_timeline())
    insert_results(
        engine,
        series(
            "network",
            "dns",
            T0,
            T0 + 5 * H,
            10 * M,
            lambda ts: "warning" if ts >= T0 + 4 * H else "healthy",
        ),
    )
    history = get_health_history(engine, T0, NOW, bucket=H)
    assert len(history.timestamps) == 10 and history.bucket_seconds == 3600
    db = history.component_health["database"]
    # db_size (non-critical, always critical) makes every bucket at least WARNING
    assert db == [HealthStatus.WARNING] * 2 + [HealthStatus.CRITICAL] + [
        HealthStatus.WARNING
    ] * 3 + [HealthStatus.CRITICAL] + [HealthStatus.WARNING] * 2 + [HealthStatus.CRITICAL]
    net = history.component_health["network"]
    assert net[:4] == [HealthStatus.HEALTHY] * 4 and net[4] == HealthStatus.WARNING
    assert net[5:] == [HealthStatus.UNKNOWN] * 5  # silent after 5:00
    assert history.overall_health[0] == HealthStatus.WARNING
    assert history.overall_health[2] == HealthStatus.CRITICAL
    assert len(history.incidents) == 3


def test_history_carries_state_between_sparse_results(engine: Engine) -> None:
    insert_results(engine, series("network", "dns", T0, NOW, 20 * M, lambda ts: "healthy"))
    history = get_health_history(engine, T0, T0 + 2 * H, bucket=10 * M, stale_after=30 * M)
    assert set(history.component_health["network"]) == {HealthStatus.HEALTHY}
