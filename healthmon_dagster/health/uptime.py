"""Uptime, MTBF and MTTR of a component or the system, from ``etl.check_results`` health rows.

A component is *down* while at least one of its critical checks' latest status is CRITICAL; that
state lasts from the critical result until the same check's next non-critical result (the last
reported state persists through gaps). The system is down while any component is down. Time is
counted only inside the window, and only from the first known state (the latest result at most one
window length before the window start, else the first result inside it): ``total_time_ms`` is that
observed time. A *failure* is a transition from up to down inside the window (a component first seen
down has no transition). ``MTBF = uptime / failures``; ``MTTR`` is the mean duration of the failures
that also recovered inside the window: a failure still open at the window end counts as downtime but
not in MTTR, and a down period already open at the window start counts as downtime but is neither a
failure nor a repair.
"""

from collections import defaultdict
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Engine

from healthmon_dagster.enums import HealthStatus, RecordSource
from healthmon_dagster.formatting import InvalidWindow
from healthmon_dagster.store.metrics import as_utc
from healthmon_dagster.store.tables import check_results

SOURCE = RecordSource.HEALTH_CHECK.value


def check_window(start: datetime, end: datetime) -> tuple[datetime, datetime]:
    """``[start, end)`` in UTC; :class:`InvalidWindow` when it is empty."""
    start, end = as_utc(start), as_utc(end)
    if start >= end:
        raise InvalidWindow(
            f"time window starts ({start.isoformat()}) at or after it ends ({end.isoformat()})"
        )
    return start, end


def _ms(delta: timedelta) -> float:
    return delta.total_seconds() * 1000.0


@dataclass(frozen=True)
class Outage:
    """A period in which a component (or the system) was down, clipped to the window."""

    component: str | None
    start: datetime
    end: datetime | None  # None: still down at the window end
    duration_ms: float
    started_before_window: bool
    checks: tuple[str, ...]


@dataclass(frozen=True)
class UptimeStats:
    """Uptime statistics of one component (or the system, ``component=None``)."""

    component: str | None
    window_start: datetime
    window_end: datetime
    total_time_ms: float  # observed time inside the window
    uptime_time_ms: float
    downtime_time_ms: float
    uptime_percentage: float | None  # None when nothing was observed
    failures: int
    recoveries: int
    mean_time_between_failures_ms: float | None
    mean_time_to_recovery_ms: float | None
    incidents: list[Outage] = field(default_factory=list)


def _transitions(engine: Engine, start: datetime, end: datetime) -> list[sa.Row[Any]]:
    """Rows of critical checks where the down/up state changes (plus each check's first row), from
    one window length before ``start`` (to know the state at the start) to ``end``."""
    cr = check_results.c
    is_down = sa.case((cr.status == HealthStatus.CRITICAL.value, 1), else_=0).label("is_down")
    base = (
        sa.select(cr.target, cr.check_name, cr.ts, cr.result_id, is_down)
        .where(
            cr.source == SOURCE,
            cr.critical.is_(True),
            cr.ts >= start - (end - start),
            cr.ts < end,
        )
        .subquery()
    )
    prev = (
        sa.func.lag(base.c.is_down)
        .over(
            partition_by=(base.c.target, base.c.check_name), order_by=(base.c.ts, base.c.result_id)
        )
        .label("prev")
    )
    lagged = sa.select(base, prev).subquery()
    query = (
        sa.select(lagged.c.target, lagged.c.check_name, lagged.c.ts, lagged.c.is_down)
        .where(sa.or_(lagged.c.prev.is_(None), lagged.c.prev != lagged.c.is_down))
        .order_by(lagged.c.target, lagged.c.check_name, lagged.c.ts, lagged.c.result_id)
    )
    with engine.connect() as conn:
        return list(conn.execute(query))


@dataclass
class _Interval:
    start: datetime
    end: datetime | None
    checks: set[str]


def _merge(intervals: list[_Interval]) -> list[_Interval]:
    merged: list[_Interval] = []
    for iv in sorted(intervals, key=lambda i: i.start):
        if merged and (merged[-1].end is None or iv.start <= merged[-1].end):
            last = merged[-1]
            last.end = None if last.end is None or iv.end is None else max(last.end, iv.end)
            last.checks |= iv.checks
        else:
            merged.append(_Interval(iv.start, iv.end, set(iv.checks)))
    return merged


def _stats(
    component: str | None,
    observed_from: datetime | None,
    intervals: list[_Interval],
    start: datetime,
    end: datetime,
) -> UptimeStats:
    if observed_from is None:
        return UptimeStats(component, start, end, 0.0, 0.0, 0.0, None, 0, 0, None, None, [])
    obs_start = max(observed_from, start)
    total = _ms(end - obs_start)
    down = 0.0
    failures = 0
    repairs: list[float] = []
    outages: list[Outage] = []
    for iv in _merge(intervals):
        iv_end = end if iv.end is None or iv.end > end else iv.end
        iv_start = max(iv.start, obs_start)
        if iv_end <= iv_start:
            continue
        down += _ms(iv_end - iv_start)
        # A transition into down after the first known state; not a period already open then.
        began_inside = iv.start > obs_start
        open_at_end = iv.end is None or iv.end > end
        if began_inside:
            failures += 1
            if not open_at_end:
                repairs.append(_ms(iv_end - iv_start))
        outages.append(
            Outage(
                component,
                iv_start,
                None if open_at_end else iv_end,
                _ms(iv_end - iv_start),
                not began_inside,
                tuple(sorted(iv.checks)),
            )
        )
    up = total - down
    return UptimeStats(
        component=component,
        window_start=start,
        window_end=end,
        total_time_ms=total,
        uptime_time_ms=up,
        downtime_time_ms=down,
        uptime_percentage=100.0 * up / total if total > 0 else None,
        failures=failures,
        recoveries=len(repairs),
        mean_time_between_failures_ms=up / failures if failures else None,
        mean_time_to_recovery_ms=sum(repairs) / len(repairs) if repairs else None,
        incidents=outages,
    )


def uptime_all(
    engine: Engine, start: datetime, end: datetime
) -> tuple[dict[str, UptimeStats], UptimeStats]:
    """Uptime per component that reported a critical check, and of the system, in ``[start, end)``."""
    rows = _transitions(engine, start, end)
    observed: dict[str, datetime] = {}
    intervals: dict[str, list[_Interval]] = defaultdict(list)
    open_since: dict[tuple[str, str], datetime] = {}
    for r in rows:
        ts = as_utc(r.ts)
        key = (r.target, r.check_name)
        observed[r.target] = min(observed.get(r.target, ts), ts)
        if r.is_down:
            open_since.setdefault(key, ts)
        elif key in open_since:
            intervals[r.target].append(_Interval(open_since.pop(key), ts, {r.check_name}))
    for (target, check), since in open_since.items():
        intervals[target].append(_Interval(since, None, {check}))

    per_component = {
        target: _stats(target, first, intervals.get(target, []), start, end)
        for target, first in observed.items()
    }
    all_intervals = [
        _Interval(iv.start, iv.end, {f"{t}/{c}" for c in iv.checks})
        for t, ivs in intervals.items()
        for iv in ivs
    ]
    system = _stats(None, min(observed.values(), default=None), all_intervals, start, end)
    return per_component, system


def get_uptime(
    engine: Engine, start: datetime, end: datetime, component: str | None = None
) -> UptimeStats:
    """Uptime, downtime, failures, MTBF and MTTR of ``component`` (None: the system) in
    ``[start, end)``, as defined in the module docstring."""
    start, end = check_window(start, end)
    per_component, system = uptime_all(engine, start, end)
    if component is None:
        return system
    return per_component.get(component) or _stats(component, None, [], start, end)


def get_uptime_by_component(
    engine: Engine, start: datetime, end: datetime
) -> dict[str, UptimeStats]:
    """:func:`get_uptime` for every component that reported a critical check."""
    start, end = check_window(start, end)
    return uptime_all(engine, start, end)[0]
