"""Uptime, MTBF and MTTR of a component or the system, from ``etl.check_results`` health rows.

Only critical health checks count, and only results that measured something: a skipped result (a
check with nothing to check, e.g. the S3 check in local mode; see ``health.record.counted``) counts
nowhere, and an UNKNOWN result is no data.

Each counted result holds its state, *down* when CRITICAL and *up* otherwise, until the same check's
next result, but at most ``stale_after`` (default 15 minutes, as for the status); after that, and
before a check's first result, the check has *no data*: unknown time, never downtime. A component is
down while at least one of its critical checks is down, up while one is up and none is down, unknown
otherwise; the system is down while any component is down, up while one is up and none is down.

Time is counted only inside the window. ``total_time_ms`` is the time *with data* (up or down) and
``uptime_percentage = uptime / time with data`` (None when there was none): a monitor that stopped
reporting neither lowers nor raises uptime; ``no_data_time_ms`` is the rest of the window. The state at
the window start comes from results at most ``stale_after`` before it.

A *failure* is a transition from up to down inside the window: a down period that starts after
unknown time, or is already open at the window start, is downtime but no failure. ``MTBF`` is the mean
operating time between failures, ``(time with data - downtime) / failures = uptime / failures``
(:func:`mean_time_between_failures`, which incidents' MTBF uses too); ``MTTR`` is the mean
duration of the failures that also recovered (were up again) inside the window: a failure still
open at the window end, or followed by no data, counts as downtime but not in MTTR.
"""

from collections import defaultdict
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Engine

from healthmon_dagster.enums import HealthStatus
from healthmon_dagster.formatting import InvalidWindow
from healthmon_dagster.health.record import SOURCE, counted
from healthmon_dagster.store.dialect import epoch
from healthmon_dagster.store.metrics import as_utc
from healthmon_dagster.store.tables import check_results


def mean_time_between_failures(operating_time: float, failures: int) -> float | None:
    """MTBF, the mean operating time between failures: the time up (the observed time minus the
    downtime) over the failures that began in the window; None without a failure. The health
    checks' status and the incidents' reliability (``incidents.report``) both use it."""
    return operating_time / failures if failures else None


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
    end: datetime | None  # None: still down at the window end (else: up again, or no data)
    duration_ms: float
    started_before_window: bool
    checks: tuple[str, ...]


@dataclass(frozen=True)
class UptimeStats:
    """Uptime statistics of one component (or the system, ``component=None``)."""

    component: str | None
    window_start: datetime
    window_end: datetime
    total_time_ms: float  # time with data (up or down) inside the window
    uptime_time_ms: float
    downtime_time_ms: float
    uptime_percentage: float | None  # uptime / time with data; None when there was no data
    failures: int
    recoveries: int
    mean_time_between_failures_ms: float | None
    mean_time_to_recovery_ms: float | None
    incidents: list[Outage] = field(default_factory=list)
    no_data_time_ms: float = 0.0  # the rest of the window: unknown, neither up nor down


DEFAULT_STALE_AFTER = timedelta(minutes=15)
"""How long a result's state holds without a newer result of its check (then: no data)."""

_UP, _DOWN, _NO_DATA = 0, 1, 2


def _segments(
    engine: Engine, start: datetime, end: datetime, stale_after: timedelta
) -> list[sa.Row[Any]]:
    """Rows of counted critical checks where a check's state starts or ends: a change of state, the
    first row after a gap longer than ``stale_after`` and the last row before one (or the check's
    last row), from ``stale_after`` before ``start`` to ``end``, with the seconds to the check's next
    row (``gap_next``, None for its last)."""
    cr = check_results.c
    state = sa.case(
        (cr.status == HealthStatus.CRITICAL.value, _DOWN),
        (cr.status == HealthStatus.UNKNOWN.value, _NO_DATA),
        else_=_UP,
    ).label("state")
    base = (
        sa.select(cr.target, cr.check_name, cr.ts, cr.result_id, state, epoch(cr.ts).label("t"))
        .where(
            cr.source == SOURCE,
            cr.critical.is_(True),
            counted(),
            cr.ts >= start - stale_after,
            cr.ts < end,
        )
        .subquery()
    )
    part, order = (base.c.target, base.c.check_name), (base.c.ts, base.c.result_id)
    lagged = sa.select(
        base,
        sa.func.lag(base.c.state).over(partition_by=part, order_by=order).label("prev_state"),
        (base.c.t - sa.func.lag(base.c.t).over(partition_by=part, order_by=order)).label(
            "gap_prev"
        ),
        (sa.func.lead(base.c.t).over(partition_by=part, order_by=order) - base.c.t).label(
            "gap_next"
        ),
    ).subquery()
    stale_s = stale_after.total_seconds()
    query = (
        sa.select(
            lagged.c.target, lagged.c.check_name, lagged.c.ts, lagged.c.state, lagged.c.gap_next
        )
        .where(
            sa.or_(
                lagged.c.prev_state.is_(None),
                lagged.c.prev_state != lagged.c.state,
                lagged.c.gap_prev > stale_s,
                lagged.c.gap_next.is_(None),
                lagged.c.gap_next > stale_s,
            )
        )
        .order_by(lagged.c.target, lagged.c.check_name, lagged.c.ts, lagged.c.result_id)
    )
    with engine.connect() as conn:
        return list(conn.execute(query))


@dataclass
class _Interval:
    start: datetime
    end: datetime
    checks: set[str]


def _merge(intervals: list[_Interval]) -> list[_Interval]:
    merged: list[_Interval] = []
    for iv in sorted(intervals, key=lambda i: i.start):
        if merged and iv.start <= merged[-1].end:
            last = merged[-1]
            last.end = max(last.end, iv.end)
            last.checks |= iv.checks
        else:
            merged.append(_Interval(iv.start, iv.end, set(iv.checks)))
    return merged


def _clip(intervals: list[_Interval], start: datetime, end: datetime) -> list[_Interval]:
    return [
        _Interval(max(iv.start, start), min(iv.end, end), iv.checks)
        for iv in _merge(intervals)
        if iv.end > start and iv.start < end
    ]


def _stats(
    component: str | None,
    known: list[_Interval],
    down: list[_Interval],
    start: datetime,
    end: datetime,
) -> UptimeStats:
    """Statistics from the intervals with data (up or down) and the down intervals."""
    window_ms = _ms(end - start)
    known_c = _clip(known, start, end)
    total = sum(_ms(iv.end - iv.start) for iv in known_c)
    if total <= 0:
        return UptimeStats(
            component, start, end, 0.0, 0.0, 0.0, None, 0, 0, None, None, [], window_ms
        )
    down_ms = 0.0
    failures = 0
    repairs: list[float] = []
    outages: list[Outage] = []
    for iv in _clip(down, start, end):
        duration = _ms(iv.end - iv.start)
        down_ms += duration
        # The stretch with data that holds this down period: up just before it, up again after it?
        span = next(k for k in known_c if k.start <= iv.start and iv.end <= k.end)
        began_inside = span.start < iv.start
        open_at_end = iv.end >= end
        if began_inside:
            failures += 1
            if iv.end < span.end:
                repairs.append(duration)
        outages.append(
            Outage(
                component,
                iv.start,
                None if open_at_end else iv.end,
                duration,
                iv.start <= start,
                tuple(sorted(iv.checks)),
            )
        )
    up = total - down_ms
    return UptimeStats(
        component=component,
        window_start=start,
        window_end=end,
        total_time_ms=total,
        uptime_time_ms=up,
        downtime_time_ms=down_ms,
        uptime_percentage=100.0 * up / total,
        failures=failures,
        recoveries=len(repairs),
        mean_time_between_failures_ms=mean_time_between_failures(up, failures),
        mean_time_to_recovery_ms=sum(repairs) / len(repairs) if repairs else None,
        incidents=outages,
        no_data_time_ms=window_ms - total,
    )


def uptime_all(
    engine: Engine, start: datetime, end: datetime, stale_after: timedelta = DEFAULT_STALE_AFTER
) -> tuple[dict[str, UptimeStats], UptimeStats]:
    """Uptime per component that reported a counted critical check, and of the system, in
    ``[start, end)``."""
    rows = _segments(engine, start, end, stale_after)
    known: dict[str, list[_Interval]] = defaultdict(list)
    down: dict[str, list[_Interval]] = defaultdict(list)
    for i, r in enumerate(rows):
        nxt = rows[i + 1] if i + 1 < len(rows) else None
        ts = as_utc(r.ts)
        known.setdefault(r.target, [])
        if r.state == _NO_DATA:
            continue
        if r.gap_next is None or r.gap_next > stale_after.total_seconds() or nxt is None:
            until = ts + stale_after  # no newer result in time: the state lapses
        else:
            until = as_utc(nxt.ts)  # the check's next row where something changes
        interval = _Interval(ts, until, {r.check_name})
        known[r.target].append(interval)
        if r.state == _DOWN:
            down[r.target].append(_Interval(ts, until, {r.check_name}))

    per_component = {
        target: _stats(target, ivs, down.get(target, []), start, end)
        for target, ivs in known.items()
    }
    system_down = [
        _Interval(iv.start, iv.end, {f"{t}/{c}" for c in iv.checks})
        for t, ivs in down.items()
        for iv in ivs
    ]
    system_known = [iv for ivs in known.values() for iv in ivs]
    system = _stats(None, system_known, system_down, start, end)
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
    return per_component.get(component) or _stats(component, [], [], start, end)


def get_uptime_by_component(
    engine: Engine, start: datetime, end: datetime
) -> dict[str, UptimeStats]:
    """:func:`get_uptime` for every component that reported a critical check."""
    start, end = check_window(start, end)
    return uptime_all(engine, start, end)[0]
