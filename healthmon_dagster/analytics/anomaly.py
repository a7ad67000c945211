"""Volume anomaly detection: is the latest value of a metric (e.g. a load's row count) unusual?

Pure functions on numbers: no Dagster, no database. The check factory reads the history from
``etl.metrics`` and calls :func:`detect_volume_anomaly`; the API and CLI can call it the same way.

Choices, and why they differ from a plain mean/stddev z-score (Elementary's default):

* **Robust centre and scale.** The expected value is a median and the scale is the median absolute
  deviation (MAD) times 1.4826 (the factor that makes it equal the standard deviation for normal
  noise). Past anomalies that stayed in the history (an outage day, a double load) barely move a
  median, whereas they inflate a standard deviation and hide the next incident. The non-seasonal
  model (``mad``) is the seasonal one below with all days in one group. On data with a weekly
  pattern it is the wrong model (a median/MAD treats the low weekend days as outliers: 16% false
  positives in ``benchmarks/anomaly_eval.py``); use ``seasonality=True``, which falls back by itself
  while the history is short.
* **Scale floor.** The scale is at least ``max(1% of |expected|, 1)``. A perfectly flat history has a
  MAD of 0; without a floor any change of one row would be infinitely many SDs away. With
  ``sensitivity=3`` a change must exceed 3% of the expected value (and 3 units) to be flagged.
* **Day-of-week seasonality** (``seasonality=True``). Used when the training data holds at least 3
  observations of the current value's weekday in at least 3 distinct ISO weeks; otherwise the
  detector falls back to the non-seasonal model and says so with method ``mad_seasonal_fallback``
  and in the message. The expected value is the median of the same weekday. The scale is pooled
  over all weekdays with at least 3 observations, from leave-one-out residuals: each point is
  compared with the median of its weekday *without itself*. Pooling keeps the scale stable (a MAD
  of only 3-8 same-weekday points is very noisy), and leave-one-out residuals measure the error of
  predicting an unseen point from a few others, which is what the band is for (in-sample residuals
  are biased low: one point of each odd-sized group is its own median). When every training value
  is positive the model works on log values, so residuals are relative: row-count noise grows with
  the level, and a weekend at 30% of the weekday volume also has about 30% of its noise. With a
  zero or negative value it works on the values as they are.
* **Trend.** A robust Theil-Sen slope (median of pairwise slopes) of the deseasonalized values is
  removed before the level is taken, and the level is read at the current timestamp. Without it, a
  median over 8 weeks of a source growing 0.3% a day lags ~8% behind and flags normal days (in the
  evaluation this halved the false-positive rate). Needs >= 21 days of history, else flat. A slow
  decline is therefore followed, not flagged: volume checks are for sudden changes.
* **Detection window excluded from training.** The ``detection_window`` most recent history points
  before ``current`` (and ``current`` itself) are not used to estimate the expected value or the
  scale, so the start of an ongoing incident does not teach the detector that the incident is
  normal. ``detection_window=0`` excludes only ``current``.
* **Training window** (``training_days``, default 56 = 8 weeks): only history within that many days
  before ``current`` is used. This is the level-shift guard: after a real, permanent change of
  volume the baseline follows within about half the window (a median needs half its points at the
  new level), and the trend is estimated from recent behaviour only. ``None`` uses all history.
* **Minimum history.** Fewer than ``min_history`` training observations (after the exclusions above)
  gives status ``insufficient_history``: a distinct result the caller shows as learning (the quality
  check passes while it learns, and says how many more loads it needs).
* **Direction.** ``up`` flags only values above the band (spikes, duplicate loads), ``down`` only
  values below it (missing data), ``both`` either. The side that is not tested is ``None`` in the
  result.

The value is an anomaly when it lies strictly outside ``expected +/- sensitivity * scale``; the
signed score is ``(value - expected) / scale``. Messages contain numbers only (PHI rule).
"""

import math
import numbers
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from enum import StrEnum

import numpy as np

from healthmon_dagster.analytics.trend import robust_slope


class AnomalyStatus(StrEnum):
    """What the detector says of the latest value."""

    OK = "ok"
    ANOMALY = "anomaly"
    INSUFFICIENT_HISTORY = "insufficient_history"  # too little history to judge (yet)


METHOD_MAD = "mad"
METHOD_SEASONAL_DOW = "mad_seasonal_dow"
METHOD_SEASONAL_FALLBACK = "mad_seasonal_fallback"

DIRECTIONS = ("up", "down", "both")
DEFAULT_TRAINING_DAYS = 56

# 1.4826 * MAD estimates the standard deviation of normally distributed noise.
MAD_TO_SD = 1.4826
MIN_SCALE_FRACTION = 0.01
MIN_SCALE_ABSOLUTE = 1.0
# Seasonal model: observations of a weekday needed, in as many distinct ISO weeks.
SEASONAL_MIN_PER_WEEKDAY = 3
# Trend: estimated only from at least this much history (else the level is taken as flat).
TREND_MIN_POINTS = 7
TREND_MIN_SPAN_DAYS = 21
TREND_MAX_POINTS = 200

_WEEKDAYS = ("Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday", "Sunday")


class InvalidAnomalyInput(ValueError):
    """The history, the current value or a parameter cannot be used; the message says which."""


@dataclass(frozen=True)
class AnomalyResult:
    status: AnomalyStatus
    score: float | None  # robust score of the current value (signed: + above expected)
    expected: float | None
    lower: float | None  # band the current value was tested against
    upper: float | None
    n_history: int  # observations used for training
    method: str  # 'mad' | 'mad_seasonal_dow' | 'mad_seasonal_fallback'
    message: str  # numbers only


def detect_volume_anomaly(
    history: Sequence[tuple[datetime, float]],
    current: tuple[datetime, float],
    *,
    direction: str = "both",
    sensitivity: float = 3.0,
    min_history: int = 7,
    seasonality: bool = False,
    detection_window: int = 1,
    training_days: int | None = DEFAULT_TRAINING_DAYS,
) -> AnomalyResult:
    """Tests ``current`` against a robust band learned from ``history``.

    Args:
        history: Earlier observations ``(timestamp, value)``, in any order, all strictly before
            ``current``'s timestamp. Timestamps must be all naive or all timezone-aware.
        current: The observation under test.
        direction: ``'up'``, ``'down'`` or ``'both'``: which side of the band is an anomaly.
        sensitivity: Half-width of the band in robust standard deviations (> 0).
        min_history: Training observations needed for a verdict (>= 2).
        seasonality: Model the day of week when the history allows it.
        detection_window: Most recent history points excluded from training (>= 0).
        training_days: Only history this many days before ``current`` is used; ``None`` for all.

    Raises:
        InvalidAnomalyInput: (a ``ValueError``) for an unknown direction, a non-positive or
            non-finite sensitivity, out-of-range counts, malformed points, non-finite values,
            mixed naive/aware timestamps, or history not strictly before ``current``.
    """
    _validate_parameters(direction, sensitivity, min_history, detection_window, training_days)
    current_ts, current_value = _validate_point(current, "current")
    points = [_validate_point(p, f"history[{i}]") for i, p in enumerate(history)]
    try:
        points.sort(key=lambda p: p[0])
        late = [p for p in points if p[0] >= current_ts]
    except TypeError as exc:
        raise InvalidAnomalyInput(
            "history and current mix naive and timezone-aware timestamps; use one kind for all"
        ) from exc
    if late:
        raise InvalidAnomalyInput(
            f"history holds {len(late)} point(s) at or after the current timestamp "
            f"{current_ts.isoformat()} (first: {late[0][0].isoformat()}); pass only earlier "
            "observations as history and the one under test as current"
        )

    training = points[: len(points) - detection_window] if detection_window else points
    if training_days is not None:
        start = current_ts - timedelta(days=training_days)
        training = [p for p in training if p[0] >= start]

    requested = METHOD_SEASONAL_DOW if seasonality else METHOD_MAD
    if len(training) < min_history:
        excluded = f"the {detection_window} most recent point(s) and " if detection_window else ""
        window = f" within {training_days} days" if training_days is not None else ""
        return AnomalyResult(
            status=AnomalyStatus.INSUFFICIENT_HISTORY,
            score=None,
            expected=None,
            lower=None,
            upper=None,
            n_history=len(training),
            method=requested,
            message=(
                f"insufficient history: {len(training)} training observation(s){window}, "
                f"{min_history} required ({excluded}the current value excluded)"
            ),
        )

    weekday = current_ts.weekday()
    method = METHOD_MAD
    fallback = ""
    if seasonality:
        n_same, n_weeks = _weekday_weeks(training, weekday)
        if min(n_same, n_weeks) >= SEASONAL_MIN_PER_WEEKDAY:
            method = METHOD_SEASONAL_DOW
        else:
            method = METHOD_SEASONAL_FALLBACK
            fallback = (
                f"; seasonality skipped: {n_same} {_WEEKDAYS[weekday]} observation(s) in "
                f"{n_weeks} week(s), {SEASONAL_MIN_PER_WEEKDAY} of each needed"
            )
    fit = _fit(training, current_ts, seasonal=method == METHOD_SEASONAL_DOW)
    expected, scale = fit.expected, fit.scale
    basis = fit.basis + fallback
    scale = max(scale, MIN_SCALE_FRACTION * abs(expected), MIN_SCALE_ABSOLUTE)
    score = (current_value - expected) / scale
    half_width = sensitivity * scale
    lower = expected - half_width if direction in ("down", "both") else None
    upper = expected + half_width if direction in ("up", "both") else None
    is_anomaly = (lower is not None and current_value < lower) or (
        upper is not None and current_value > upper
    )

    side = "above" if score >= 0 else "below"
    band = f"{_fmt(lower) if lower is not None else '-inf'} to "
    band += _fmt(upper) if upper is not None else "+inf"
    message = (
        f"value {_fmt(current_value)} is {abs(score):.1f} robust SDs {side} expected "
        f"{_fmt(expected)} (band {band}, direction {direction}, {fit.n_used} training "
        f"observations{basis})"
    )
    return AnomalyResult(
        status=AnomalyStatus.ANOMALY if is_anomaly else AnomalyStatus.OK,
        score=score,
        expected=expected,
        lower=lower,
        upper=upper,
        n_history=fit.n_used,
        method=method,
        message=message,
    )


def _validate_parameters(
    direction: str,
    sensitivity: float,
    min_history: int,
    detection_window: int,
    training_days: int | None,
) -> None:
    if direction not in DIRECTIONS:
        raise InvalidAnomalyInput(
            f"direction must be one of {', '.join(DIRECTIONS)}; got {direction!r}"
        )
    if not _is_real(sensitivity) or not math.isfinite(sensitivity) or sensitivity <= 0:
        raise InvalidAnomalyInput(
            f"sensitivity must be a finite number > 0 (robust SDs, e.g. 3.0); got {sensitivity!r}"
        )
    if not _is_int(min_history) or min_history < 2:
        raise InvalidAnomalyInput(f"min_history must be an integer >= 2; got {min_history!r}")
    if not _is_int(detection_window) or detection_window < 0:
        raise InvalidAnomalyInput(
            f"detection_window must be an integer >= 0; got {detection_window!r}"
        )
    if training_days is not None and (not _is_int(training_days) or training_days < 1):
        raise InvalidAnomalyInput(
            f"training_days must be an integer >= 1 or None; got {training_days!r}"
        )


def _validate_point(point: object, where: str) -> tuple[datetime, float]:
    if not isinstance(point, tuple | list) or len(point) != 2:
        raise InvalidAnomalyInput(f"{where} must be a (datetime, number) pair; got {point!r}")
    ts, value = point
    if not isinstance(ts, datetime):
        raise InvalidAnomalyInput(f"{where} timestamp must be a datetime; got {type(ts).__name__}")
    if not _is_real(value):
        raise InvalidAnomalyInput(f"{where} value must be a number; got {type(value).__name__}")
    value = float(value)
    if not math.isfinite(value):
        raise InvalidAnomalyInput(f"{where} value must be finite; got {value}")
    return ts, value


def _is_real(x: object) -> bool:
    return isinstance(x, numbers.Real) and not isinstance(x, bool)


def _is_int(x: object) -> bool:
    return isinstance(x, numbers.Integral) and not isinstance(x, bool)


@dataclass(frozen=True)
class _Fit:
    expected: float
    scale: float  # before the floor
    n_used: int
    basis: str  # message fragment saying what the expectation rests on


def _weekday_weeks(training: list[tuple[datetime, float]], weekday: int) -> tuple[int, int]:
    """(observations, distinct ISO weeks) of ``weekday`` in the training data."""
    stamps = [ts for ts, _ in training if ts.weekday() == weekday]
    return len(stamps), len({ts.isocalendar()[:2] for ts in stamps})


def _fit(training: list[tuple[datetime, float]], current_ts: datetime, *, seasonal: bool) -> _Fit:
    """Expected value and scale at ``current_ts``: robust level (+ weekday profile) + trend.

    Values are modelled on a log scale when all are positive (noise proportional to the level),
    else as they are. Groups are weekdays (seasonal) or one group of everything.
    """
    if seasonal:
        keys = [ts.weekday() for ts, _ in training]
        counts = {k: keys.count(k) for k in set(keys)}
        # A weekday seen fewer than 3 times has no usable profile or leave-one-out residual.
        keep = [counts[k] >= SEASONAL_MIN_PER_WEEKDAY for k in keys]
    else:
        keys = [0] * len(training)
        keep = [True] * len(training)
    key_arr = np.array([k for k, ok in zip(keys, keep, strict=True) if ok])
    raw = np.array([v for (_, v), ok in zip(training, keep, strict=True) if ok], dtype=float)
    days = np.array(
        [
            (ts - current_ts).total_seconds() / 86400
            for (ts, _), ok in zip(training, keep, strict=True)
            if ok
        ]
    )
    relative = bool(raw.min() > 0)
    y = np.log(raw) if relative else raw
    groups = [key_arr == k for k in np.unique(key_arr)]

    # Profile, then a robust (Theil-Sen) slope on the deseasonalized values, then the profile again
    # on the detrended values; time 0 is the current observation, so the trend term vanishes there.
    deseasonalized = y.copy()
    for g in groups:
        deseasonalized[g] -= np.median(y[g])
    slope = robust_slope(
        days, deseasonalized, TREND_MIN_POINTS, TREND_MIN_SPAN_DAYS, TREND_MAX_POINTS
    )
    z = y - slope * days

    residuals = []
    for g in groups:
        zg = z[g]
        n = len(zg)
        if n < 2:
            continue
        # Median of the group without each point in turn: row i of `others` is zg minus zg[i].
        others = np.tile(zg, (n, 1))[~np.eye(n, dtype=bool)].reshape(n, n - 1)
        residuals.append(zg - np.median(others, axis=1))
    spread = MAD_TO_SD * float(np.median(np.abs(np.concatenate(residuals)))) if residuals else 0.0

    target = current_ts.weekday() if seasonal else 0
    level = float(np.median(z[key_arr == target]))
    expected = math.exp(level) if relative else level
    # On the log scale `spread` is a relative error; as an absolute one it is spread * expected.
    scale = spread * expected if relative else spread

    n_target = int((key_arr == target).sum())
    per_day = (math.exp(slope) - 1) * 100 if relative else slope
    trend = f"{per_day:+.2f}%/day" if relative else f"{_fmt(per_day)}/day"
    basis = f"; trend {trend}"
    if seasonal:
        basis += f"; {_WEEKDAYS[target]} baseline from {n_target} observations"
    return _Fit(expected, scale, len(raw), basis)


def _fmt(x: float) -> str:
    if abs(x) >= 100 or x == int(x):
        return f"{x:,.0f}"
    return f"{x:,.3g}"
