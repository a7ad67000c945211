"""Trend statistics: one Theil-Sen estimator, the Mann-Kendall test and the trend analysis."""

from datetime import UTC, datetime, timedelta

import numpy as np
import pytest

from healthmon_dagster.analytics.trend import (
    TrendError,
    analyze_trend,
    mann_kendall,
    robust_slope,
    theil_sen,
)
from healthmon_dagster.enums import TrendDirection

T0 = datetime(2026, 3, 2, tzinfo=UTC)
HOURS = [T0 + timedelta(hours=6 * i) for i in range(120)]  # 30 days, every 6 hours


def _median_pairwise_slope(x: np.ndarray, y: np.ndarray) -> float:
    i, j = np.triu_indices(len(x), k=1)
    dx = x[j] - x[i]
    ok = dx != 0
    return float(np.median((y[j][ok] - y[i][ok]) / dx[ok]))


def test_theil_sen_is_the_median_of_pairwise_slopes_and_ignores_outliers() -> None:
    rng = np.random.default_rng(5)
    x = np.arange(60, dtype=float)
    y = 3.0 + 0.5 * x + rng.normal(0, 1, size=60)
    y[[5, 17, 40]] += 500.0
    fit = theil_sen(x, y)
    assert fit.slope == pytest.approx(_median_pairwise_slope(x, y), abs=1e-12)
    assert fit.slope == pytest.approx(0.5, abs=0.05)
    assert fit.low <= fit.slope <= fit.high


def test_robust_slope_needs_points_and_span_and_thins_long_series() -> None:
    x = np.arange(30, dtype=float)
    assert robust_slope(x[:5], 2 * x[:5], 7, 0.0, 200) == 0.0  # too few points
    assert robust_slope(x, 2 * x, 7, 40.0, 200) == 0.0  # too short a span
    assert robust_slope(x, 2 * x, 7, 21.0, 200) == pytest.approx(2.0)
    long_x = np.linspace(0, 100, 1000)
    assert robust_slope(long_x, -long_x, 7, 21.0, 200) == pytest.approx(-1.0)


def test_mann_kendall_of_a_constant_series_is_no_trend() -> None:
    x = np.arange(10, dtype=float)
    assert mann_kendall(x, np.ones(10)) == (0.0, 1.0)
    tau, p = mann_kendall(x, x)
    assert tau == pytest.approx(1.0) and p < 0.001


def test_noise_with_outliers_is_volatile_and_flat_is_stable() -> None:
    rng = np.random.default_rng(3)
    volatile = analyze_trend(HOURS, list(50 + rng.normal(0, 20, size=120)), "latency")
    assert volatile is not None and not volatile.significant
    assert volatile.trend_direction == TrendDirection.VOLATILE
    assert volatile.predicted_value is None
    flat = analyze_trend(HOURS, [50.0] * 120, "latency")
    assert flat is not None and flat.trend_direction == TrendDirection.STABLE
    assert flat.trend_strength == 0.0


def test_times_and_values_of_different_lengths_are_rejected() -> None:
    with pytest.raises(TrendError, match="3 times but 2 values"):
        analyze_trend(HOURS[:3], [1.0, 2.0])
