"""Trend statistics of a time series: the Mann-Kendall test and one robust Theil-Sen line.

:func:`theil_sen` (``scipy.stats.theilslopes``: the median of pairwise slopes, robust to outliers,
with its confidence interval) is the one slope estimator; capacity forecasting
(:func:`analyze_trend`) and volume anomaly detection (:func:`robust_slope`, which removes a trend
before judging a value) both use it.

:func:`analyze_trend` definitions (rates per day):
    trend_direction: UPWARD / DOWNWARD with a significant trend (Mann-Kendall rejects "no monotonic
        trend" at ``alpha``); otherwise VOLATILE when the spread of the values around their robust
        line (1.4826 x MAD of the residuals) exceeds ``volatility_ratio`` of the median level, else
        STABLE.
    trend_strength: ``|tau|`` (0 = no monotonic relation with time, 1 = strictly monotonic).
    confidence: ``1 - p`` of the Mann-Kendall test.
"""

import math
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta

import numpy as np
import numpy.typing as npt

from healthmon_dagster.enums import TrendDirection
from healthmon_dagster.store.metrics import as_utc

DEFAULT_ALPHA = 0.05
DEFAULT_MIN_POINTS = 10
DEFAULT_VOLATILITY_RATIO = 0.10
SECONDS_PER_DAY = 86400.0

FloatArray = npt.NDArray[np.float64]


class TrendError(ValueError):
    """Series that cannot be analysed (times and values of different lengths)."""


@dataclass(frozen=True)
class TheilSenFit:
    """A Theil-Sen line ``intercept + slope * x`` and the slope's confidence interval."""

    slope: float
    intercept: float
    low: float
    high: float


def theil_sen(x: FloatArray, y: FloatArray, confidence: float = 0.95) -> TheilSenFit:
    """The Theil-Sen line of ``y`` over ``x`` (pairs with equal ``x`` are left out)."""
    # scipy.stats is imported on first use in this module: it costs ~0.5 s, which every `healthmon`
    # command (the CLI imports quality/ and health/) would otherwise pay at start-up.
    from scipy import stats

    fit = stats.theilslopes(y, x, alpha=confidence)
    return TheilSenFit(
        float(fit.slope), float(fit.intercept), float(fit.low_slope), float(fit.high_slope)
    )


def robust_slope(
    x: FloatArray, y: FloatArray, min_points: int, min_span: float, max_points: int
) -> float:
    """The Theil-Sen slope, or 0 when there are fewer than ``min_points`` points or they span less
    than ``min_span``; a series longer than ``max_points`` is thinned evenly first (pairwise slopes
    are O(n^2))."""
    if len(x) < min_points or float(x.max() - x.min()) < min_span:
        return 0.0
    if len(x) > max_points:
        idx = np.linspace(0, len(x) - 1, max_points).round().astype(int)
        x, y = x[idx], y[idx]
    if float(np.ptp(x)) == 0:
        return 0.0
    return theil_sen(x, y).slope


def mann_kendall(x: FloatArray, y: FloatArray) -> tuple[float, float]:
    """Kendall's tau between ``x`` and ``y`` and its p-value (tau 0, p 1 for a constant series)."""
    from scipy import stats  # on first use: see theil_sen

    tau, p = stats.kendalltau(x, y)
    if math.isnan(tau):  # constant series
        return 0.0, 1.0
    return float(tau), float(p)


@dataclass(frozen=True)
class TrendAnalysis:
    """The trend of one metric series."""

    metric_name: str
    trend_direction: TrendDirection
    trend_strength: float  # |Kendall tau|, 0-1
    change_rate: float  # Theil-Sen slope, units per day
    change_rate_low: float
    change_rate_high: float
    predicted_value: float | None  # the line at the end of the horizon (significant trends only)
    confidence: float  # 1 - p of the Mann-Kendall test
    p_value: float
    significant: bool
    n_points: int
    analysis: str


def days_since(times: Sequence[datetime], origin: datetime) -> npt.NDArray[np.float64]:
    """Days from ``origin`` to each of ``times`` (UTC)."""
    return np.array([(as_utc(t) - origin).total_seconds() / SECONDS_PER_DAY for t in times])


def analyze_trend(
    times: Sequence[datetime],
    values: Sequence[float],
    metric_name: str = "",
    horizon: timedelta = timedelta(days=7),
    alpha: float = DEFAULT_ALPHA,
    min_points: int = DEFAULT_MIN_POINTS,
    volatility_ratio: float = DEFAULT_VOLATILITY_RATIO,
) -> TrendAnalysis | None:
    """Trend of ``values`` over ``times`` (see the module docstring); None with < ``min_points``."""
    if len(times) != len(values):
        raise TrendError(f"{len(times)} times but {len(values)} values")
    if len(values) < max(min_points, 3):
        return None
    origin = as_utc(min(times))
    x = days_since(times, origin)
    y = np.asarray(values, dtype=float)
    if np.ptp(x) == 0:
        return None
    tau, p = mann_kendall(x, y)
    fit = theil_sen(x, y, confidence=1 - alpha)
    slope, intercept, low, high = fit.slope, fit.intercept, fit.low, fit.high
    significant = p < alpha and slope != 0
    residuals = y - (intercept + slope * x)
    spread = 1.4826 * float(np.median(np.abs(residuals - np.median(residuals))))
    level = abs(float(np.median(y)))
    if significant:
        direction = TrendDirection.UPWARD if slope > 0 else TrendDirection.DOWNWARD
    elif spread > (volatility_ratio * level if level else 0.0):
        direction = TrendDirection.VOLATILE
    else:
        direction = TrendDirection.STABLE
    end_day = float(x.max()) + horizon.total_seconds() / SECONDS_PER_DAY
    predicted = float(intercept + slope * end_day) if significant else None
    name = metric_name or "the series"
    if significant:
        analysis = (
            f"{name} is trending {direction.value} by {slope:+.4g}/day "
            f"(Mann-Kendall tau={tau:+.2f}, p={p:.2g}; Theil-Sen 95% interval {low:+.4g} to "
            f"{high:+.4g}/day over {len(y)} points)"
        )
    else:
        analysis = (
            f"no significant trend in {name} (Mann-Kendall p={p:.2g} >= {alpha:g} over {len(y)} "
            f"points); {direction.value}, spread {spread:.4g} around a level of {level:.4g}"
        )
    return TrendAnalysis(
        metric_name=metric_name,
        trend_direction=direction,
        trend_strength=min(1.0, abs(float(tau))),
        change_rate=float(slope),
        change_rate_low=float(low),
        change_rate_high=float(high),
        predicted_value=predicted,
        confidence=1.0 - float(p),
        p_value=float(p),
        significant=bool(significant),
        n_points=len(y),
        analysis=analysis,
    )
