"""Capacity planning: growth of tables, database size and disk use, and when a limit will be hit.

A forecast is only made from a trend that is statistically there: the Mann-Kendall test (Kendall's
tau between time and value, ``scipy.stats.kendalltau``) must reject "no monotonic trend" at
``alpha``; the growth rate is the Theil-Sen slope (``scipy.stats.theilslopes``: the median of pairwise
slopes, robust to outliers and to a noisy sample or two; both from
:mod:`healthmon_dagster.analytics.trend`). Noise alone gives no days-until-full and the status says
"no significant trend".

Definitions (all rates per day):
    trend_direction: UPWARD / DOWNWARD with a significant trend; otherwise VOLATILE when the spread of
        the values around their robust line (1.4826 x MAD of the residuals) exceeds
        ``volatility_ratio`` of the median level, else STABLE.
    trend_strength: ``|tau|`` (0 = no monotonic relation with time, 1 = strictly monotonic).
    confidence: ``1 - p`` of the Mann-Kendall test.
    current level: the Theil-Sen line at ``now``, or the latest observation when that is higher (the
        line lags a recent jump; capacity errs on the full side).
    days_until_full: ``(limit - current) / slope`` when the trend is significant and upward;
        ``days_until_full_earliest`` uses the upper end of the slope's 95% interval.
    status: CRITICAL when the level is at the limit or full within ``fail_days``; WARNING within
        ``warn_days``; HEALTHY otherwise (including no significant trend); UNKNOWN with fewer than
        ``min_points`` observations.
"""

import math
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import numpy as np
from sqlalchemy.engine import Engine

from healthmon_dagster.analytics.trend import (
    DEFAULT_ALPHA,
    DEFAULT_MIN_POINTS,
    SECONDS_PER_DAY,
    TrendAnalysis,
    analyze_trend,
    days_since,
)
from healthmon_dagster.enums import HealthStatus
from healthmon_dagster.store.metrics import as_utc, metric_history

DEFAULT_WARN_DAYS = 30.0
DEFAULT_FAIL_DAYS = 7.0
DEFAULT_HISTORY = timedelta(days=30)


class CapacityError(ValueError):
    """Capacity settings that cannot be used (thresholds, limits); the message says which and why."""


@dataclass(frozen=True)
class CapacityForecast:
    """How full a resource is, how fast it grows, and when it will be full."""

    resource: str
    unit: str
    n_points: int
    current_value: float | None
    limit: float | None
    utilization: float | None  # current / limit, 0-1
    growth_per_day: float | None  # significant trends only
    days_until_full: float | None
    days_until_full_earliest: float | None
    full_at: datetime | None
    status: HealthStatus
    message: str
    trend: TrendAnalysis | None

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["full_at"] = self.full_at.isoformat() if self.full_at else None
        return data


def _check_thresholds(warn_days: float, fail_days: float) -> None:
    if fail_days < 0 or warn_days < 0:
        raise CapacityError("warn_days and fail_days must not be negative")
    if fail_days > warn_days:
        raise CapacityError(
            f"fail_days ({fail_days:g}) must be <= warn_days ({warn_days:g}): a resource full "
            "sooner is worse"
        )


def forecast_capacity(
    times: Sequence[datetime],
    values: Sequence[float],
    resource: str,
    limit: float | None = None,
    now: datetime | None = None,
    unit: str = "",
    warn_days: float = DEFAULT_WARN_DAYS,
    fail_days: float = DEFAULT_FAIL_DAYS,
    alpha: float = DEFAULT_ALPHA,
    min_points: int = DEFAULT_MIN_POINTS,
) -> CapacityForecast:
    """Growth and, given ``limit``, days until the series reaches it (see the module docstring)."""
    _check_thresholds(warn_days, fail_days)
    if limit is not None and not math.isfinite(limit):
        raise CapacityError(f"the limit of {resource} must be a finite number")
    if len(times) != len(values):
        raise CapacityError(f"{len(times)} times but {len(values)} values")
    now = as_utc(now) if now is not None else datetime.now(UTC)
    n = len(values)
    trend = analyze_trend(times, values, resource, alpha=alpha, min_points=min_points)
    if trend is None:
        return CapacityForecast(
            resource,
            unit,
            n,
            float(values[-1]) if n else None,
            limit,
            None,
            None,
            None,
            None,
            None,
            HealthStatus.UNKNOWN,
            f"{resource}: insufficient history ({n} observation(s), at least {min_points} needed "
            "for a trend)",
            None,
        )
    order = sorted(range(n), key=lambda i: as_utc(times[i]))
    origin = as_utc(times[order[0]])
    latest = float(values[order[-1]])
    x_now = (now - origin).total_seconds() / SECONDS_PER_DAY
    x = days_since(times, origin)
    y = np.asarray(values, dtype=float)
    intercept = float(np.median(y - trend.change_rate * x))  # the line through the median residual
    current = max(latest, intercept + trend.change_rate * x_now) if trend.significant else latest
    utilization = current / limit if limit else None
    growth = trend.change_rate if trend.significant else None

    days = earliest = None
    full_at = None
    if limit is not None and current >= limit:
        status = HealthStatus.CRITICAL
        message = f"{resource} is at its limit ({current:.4g} of {limit:.4g}{unit})"
        days = earliest = 0.0
        full_at = now
    elif not trend.significant:
        status = HealthStatus.HEALTHY
        message = f"{resource}: no significant trend ({trend.analysis}); no forecast"
    elif trend.change_rate <= 0:
        status = HealthStatus.HEALTHY
        message = f"{resource} is shrinking by {-trend.change_rate:.4g}{unit}/day"
    elif limit is None:
        status = HealthStatus.HEALTHY
        message = f"{resource} grows by {trend.change_rate:.4g}{unit}/day (no limit configured)"
    else:
        days = (limit - current) / trend.change_rate
        high = max(trend.change_rate_high, trend.change_rate)
        earliest = (limit - current) / high
        full_at = now + timedelta(days=days)
        when = f"full in {days:.1f} days (at {full_at:%Y-%m-%d %H:%M} UTC; earliest {earliest:.1f})"
        growth_text = f"grows by {trend.change_rate:.4g}{unit}/day"
        if days <= fail_days:
            status = HealthStatus.CRITICAL
            message = f"{resource} {growth_text}: {when}, within {fail_days:g} days"
        elif days <= warn_days:
            status = HealthStatus.WARNING
            message = f"{resource} {growth_text}: {when}, within {warn_days:g} days"
        else:
            status = HealthStatus.HEALTHY
            message = f"{resource} {growth_text}: {when}"
    return CapacityForecast(
        resource=resource,
        unit=unit,
        n_points=n,
        current_value=current,
        limit=limit,
        utilization=utilization,
        growth_per_day=growth,
        days_until_full=days,
        days_until_full_earliest=earliest,
        full_at=full_at,
        status=status,
        message=message,
        trend=trend,
    )


def _history(
    engine: Engine,
    component: str,
    metric_name: str,
    now: datetime,
    history: timedelta,
    tags: Mapping[str, str] | None,
) -> tuple[list[datetime], list[float], str]:
    points = metric_history(engine, component, metric_name, now - history, now, tags)
    unit = points[-1].unit if points else ""
    return [p.ts for p in points if p.ts], [p.value for p in points], unit


def metric_forecast(
    engine: Engine,
    component: str,
    metric_name: str,
    limit: float | None = None,
    now: datetime | None = None,
    history: timedelta = DEFAULT_HISTORY,
    tags: Mapping[str, str] | None = None,
    cumulative: bool = False,
    resource: str | None = None,
    **options: Any,
) -> CapacityForecast:
    """:func:`forecast_capacity` of one ``etl.metrics`` series over the last ``history``.

    Args:
        cumulative: the metric records increments (e.g. ``raw_loader`` ``rows_loaded`` per load);
            its running sum is the level (rows in the table since the start of the history).
        options: ``warn_days``, ``fail_days``, ``alpha``, ``min_points``.
    """
    now = as_utc(now) if now is not None else datetime.now(UTC)
    times, values, unit = _history(engine, component, metric_name, now, history, tags)
    if cumulative:
        values = list(np.cumsum(values)) if values else []
    name = resource or f"{component}/{metric_name}" + (
        "".join(f"[{k}={v}]" for k, v in sorted((tags or {}).items()))
    )
    return forecast_capacity(times, values, name, limit, now, unit, **options)


def disk_forecast(
    engine: Engine,
    component: str,
    percent_metric: str,
    now: datetime | None = None,
    history: timedelta = DEFAULT_HISTORY,
    warn_days: float = DEFAULT_WARN_DAYS,
    fail_days: float = DEFAULT_FAIL_DAYS,
    tags: Mapping[str, str] | None = None,
) -> CapacityForecast:
    """Days until a disk is full from its used-percent metric (e.g. the system check's
    ``<check_id>.disk_percent``): the limit is 100%."""
    return metric_forecast(
        engine,
        component,
        percent_metric,
        100.0,
        now,
        history,
        tags,
        resource=f"disk ({component}/{percent_metric})",
        warn_days=warn_days,
        fail_days=fail_days,
    )


def database_size_growth(
    engine: Engine,
    component: str,
    size_metric: str,
    max_bytes: float | None = None,
    now: datetime | None = None,
    history: timedelta = DEFAULT_HISTORY,
    **options: Any,
) -> CapacityForecast:
    """Database size growth per day from a size metric (e.g. the database check's
    ``<check_id>.database_size_bytes``); with ``max_bytes``, days until that size."""
    return metric_forecast(
        engine,
        component,
        size_metric,
        max_bytes,
        now,
        history,
        resource=f"database size ({component}/{size_metric})",
        **options,
    )


def table_row_growth(
    engine: Engine,
    tables: Mapping[str, tuple[str, str, Mapping[str, str] | None, bool]],
    now: datetime | None = None,
    history: timedelta = DEFAULT_HISTORY,
    max_rows: Mapping[str, float] | None = None,
    **options: Any,
) -> dict[str, CapacityForecast]:
    """Row growth per day of each table.

    Args:
        tables: table name -> (component, metric_name, tags, cumulative); e.g.
            ``{"raw.patients": ("raw_loader", "rows_loaded", {"asset": "raw/patients"}, True)}``
            reads the rows each load added and sums them.
        max_rows: optional row limits per table, for days-until-limit.
    """
    return {
        table: metric_forecast(
            engine,
            component,
            metric,
            (max_rows or {}).get(table),
            now,
            history,
            tags,
            cumulative,
            resource=f"rows of {table}",
            **options,
        )
        for table, (component, metric, tags, cumulative) in tables.items()
    }
