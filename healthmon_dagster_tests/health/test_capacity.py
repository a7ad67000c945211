"""Capacity: trend test on synthetic series, days-until-full accuracy and thresholds, metrics-backed."""

from datetime import timedelta

import numpy as np
import pytest
from sqlalchemy.engine import Engine

from healthmon_dagster.enums import HealthStatus, TrendDirection
from healthmon_dagster.health.capacity import (
    CapacityError,
    database_size_growth,
    disk_forecast,
    forecast_capacity,
    table_row_growth,
)
from healthmon_dagster_tests.health.fixtures import T0, insert_metrics

HOURS = [T0 + timedelta(hours=6 * i) for i in range(120)]  # 30 days, every 6 hours
NOW = HOURS[-1]


def _days(i: int) -> float:
    return i * 0.25


def test_clear_linear_growth_forecasts_within_a_few_percent() -> None:
    rng = np.random.default_rng(7)
    # 40% used, +0.5 percentage points a day, noise sd 0.8: truth = (100 - 54.875) / 0.5 days
    values = [40 + 0.5 * _days(i) + rng.normal(0, 0.8) for i in range(120)]
    truth = (100 - (40 + 0.5 * _days(119))) / 0.5
    f = forecast_capacity(HOURS, values, "disk /data", limit=100.0, now=NOW, unit="%")
    assert f.trend is not None and f.trend.significant
    assert f.trend.trend_direction == TrendDirection.UPWARD
    assert f.trend.trend_strength > 0.8 and f.trend.confidence > 0.99
    assert f.growth_per_day == pytest.approx(0.5, rel=0.03)
    assert f.days_until_full == pytest.approx(truth, rel=0.05)
    assert f.days_until_full_earliest is not None and f.days_until_full_earliest < f.days_until_full
    assert f.status == HealthStatus.HEALTHY  # ~90 days away: beyond the 30-day warning
    assert "full in" in f.message


def test_pure_noise_gives_no_forecast() -> None:
    for seed in range(20):
        rng = np.random.default_rng(seed)
        values = list(60 + rng.normal(0, 5, size=120))
        f = forecast_capacity(HOURS, values, "disk /data", limit=100.0, now=NOW, alpha=0.01)
        assert f.days_until_full is None, seed
        assert f.status == HealthStatus.HEALTHY
        assert "no significant trend" in f.message
        assert f.trend is not None
        assert f.trend.trend_direction in (TrendDirection.STABLE, TrendDirection.VOLATILE)


def test_downward_trend_is_shrinking_not_full() -> None:
    values = [80 - 0.3 * _days(i) for i in range(120)]
    f = forecast_capacity(HOURS, values, "disk", limit=100.0, now=NOW)
    assert f.trend is not None and f.trend.trend_direction == TrendDirection.DOWNWARD
    assert f.days_until_full is None and f.status == HealthStatus.HEALTHY
    assert "shrinking" in f.message


@pytest.mark.parametrize(
    ("growth_per_day", "expected"),
    [(0.5, HealthStatus.HEALTHY), (2.0, HealthStatus.WARNING), (8.0, HealthStatus.CRITICAL)],
)
def test_disk_full_soon_warns_and_fails_at_thresholds(
    growth_per_day: float, expected: HealthStatus
) -> None:
    # level at NOW = 30%: 70 points left -> 140, 35 and 8.75 days; warn 40, fail 10
    values = [30 - growth_per_day * (_days(119) - _days(i)) for i in range(120)]
    f = forecast_capacity(HOURS, values, "disk", 100.0, NOW, "%", warn_days=40, fail_days=10)
    assert f.days_until_full == pytest.approx(70 / growth_per_day, rel=0.01)
    assert f.status == expected


def test_at_the_limit_is_critical_and_short_history_unknown() -> None:
    values = [90 + 0.1 * i for i in range(120)]
    full = forecast_capacity(HOURS, values, "disk", 100.0, NOW)
    assert full.status == HealthStatus.CRITICAL and full.days_until_full == 0.0
    short = forecast_capacity(HOURS[:5], values[:5], "disk", 100.0, NOW)
    assert short.status == HealthStatus.UNKNOWN and "insufficient history" in short.message


def test_bad_thresholds_are_rejected() -> None:
    with pytest.raises(CapacityError, match="fail_days .* must be <= warn_days"):
        forecast_capacity(HOURS, [1.0] * 120, "disk", 100.0, NOW, warn_days=5, fail_days=10)


def test_disk_database_and_table_growth_from_metrics(engine: Engine) -> None:
    rng = np.random.default_rng(11)
    insert_metrics(
        engine,
        "system_resources",
        "sys.disk_percent",
        [(t, 20 + 2.0 * _days(i) + rng.normal(0, 0.5)) for i, t in enumerate(HOURS)],
        "%",
    )
    insert_metrics(
        engine,
        "database",
        "db.database_size_bytes",
        [(t, 1e9 + 5e7 * _days(i)) for i, t in enumerate(HOURS)],
        "bytes",
    )
    insert_metrics(
        engine,
        "raw_loader",
        "rows_loaded",
        [(t, 1000.0) for t in HOURS],
        "rows",
        {"asset": "raw/patients"},
    )
    insert_metrics(
        engine,
        "raw_loader",
        "rows_loaded",
        [(t, 5.0) for t in HOURS],
        "rows",
        {"asset": "raw/other"},
    )

    disk = disk_forecast(
        engine, "system_resources", "sys.disk_percent", now=NOW, warn_days=30, fail_days=7
    )
    # 20 + 2 * 29.75 = 79.5% used, +2 points a day: full in ~10.25 days -> warning (30 / 7)
    assert disk.days_until_full == pytest.approx(10.25, rel=0.05)
    assert disk.status == HealthStatus.WARNING
    assert disk.unit == "%" and disk.limit == 100.0

    size = database_size_growth(
        engine, "database", "db.database_size_bytes", max_bytes=4e9, now=NOW
    )
    assert size.growth_per_day == pytest.approx(5e7, rel=0.001)
    assert size.days_until_full == pytest.approx((4e9 - (1e9 + 5e7 * _days(119))) / 5e7, rel=0.01)

    rows = table_row_growth(
        engine,
        {"raw.patients": ("raw_loader", "rows_loaded", {"asset": "raw/patients"}, True)},
        now=NOW,
    )
    assert rows["raw.patients"].growth_per_day == pytest.approx(4000, rel=0.001)  # 4 loads a day
    assert rows["raw.patients"].current_value == pytest.approx(120_000)
