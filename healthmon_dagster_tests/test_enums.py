"""The shared vocabulary: one order of health, and stored values that never change by accident."""

import pytest

from healthmon_dagster.enums import (
    CheckSeverity,
    HealthStatus,
    QualityStatus,
    RecordSource,
)
from healthmon_dagster.health.asset_health import AssetHealthStatus


def test_one_status_order_healthy_unknown_warning_critical() -> None:
    order = [
        HealthStatus.HEALTHY,
        HealthStatus.UNKNOWN,
        HealthStatus.WARNING,
        HealthStatus.CRITICAL,
    ]
    assert sorted(HealthStatus, key=lambda s: s.rank) == order
    assert [HealthStatus.from_rank(i) for i in range(4)] == order
    assert HealthStatus.worst([HealthStatus.UNKNOWN, HealthStatus.WARNING]) == HealthStatus.WARNING
    assert HealthStatus.worst([]) == HealthStatus.HEALTHY
    # Unknown values are refused, not ranked: a typo never sorts as healthy.
    with pytest.raises(ValueError):
        HealthStatus.worst(["healthy", "fine"])


def test_the_asset_rollup_ranks_as_its_component_level_equivalents() -> None:
    assert sorted(AssetHealthStatus, key=lambda s: s.rank) == [
        AssetHealthStatus.HEALTHY,
        AssetHealthStatus.UNKNOWN,
        AssetHealthStatus.WARNING,
        AssetHealthStatus.DEGRADED,
    ]
    assert all(s.rank == s.as_health_status().rank for s in AssetHealthStatus)


def test_stored_values_are_stable() -> None:
    # These strings are in etl.check_results rows already written: renaming one needs a migration.
    assert [s.value for s in CheckSeverity] == ["WARN", "ERROR"]
    assert {s.value for s in RecordSource} == {"asset_check", "health_check", "benchmark"}
    assert {s.value for s in QualityStatus} == {
        "passed",
        "warn",
        "failed",
        "error",
        "insufficient_history",
    }
    assert {s.value for s in HealthStatus} == {"healthy", "warning", "critical", "unknown"}
