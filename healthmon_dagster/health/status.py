"""System status: component and overall health, uptime, MTBF/MTTR and a status timeline.

Everything here is read from the health store (``etl.check_results`` rows with
``source='health_check'``, ``etl.load_runs``), one code path for SQLite and Postgres; scans over many
rows (latest result per check, per-component aggregates, status transitions, history buckets) run in
SQL, Python only sees one row per check, per component, per transition or per bucket.

Component status (now):
    Each health check's latest result counts; a result older than ``stale_after`` counts as UNKNOWN
    (the check stopped reporting). Results of checks with ``severity='critical'`` count as they are;
    results of non-critical checks are capped at WARNING (a failing non-critical check warns, it never
    makes the component critical) and their UNKNOWN is ignored. The component's status is the worst of
    those, ordered CRITICAL > WARNING > UNKNOWN > HEALTHY. A component with no result at all in the
    lookback is UNKNOWN and not *monitored*.

Overall status:
    Worst of the monitored components, where a monitored component that is UNKNOWN (its checks went
    silent) makes the whole WARNING: a monitoring gap is a warning, not a clean bill of health. UNKNOWN
    when nothing is monitored or every monitored component is UNKNOWN.

Uptime, MTBF, MTTR (see :func:`get_uptime`):
    A component is *down* while at least one of its critical checks' latest status is CRITICAL; that
    state lasts from the critical result until the same check's next non-critical result (the last
    reported state persists through gaps). The system is down while any component is down. Time is
    counted only inside the window, and only from the first known state (the latest result at most one
    window length before the window start, else the first result inside it): ``total_time_ms`` is that
    observed time. A *failure* is a transition from up to down inside the window (a component first
    seen down has no transition). ``MTBF = uptime / failures``; ``MTTR`` is the mean duration of the
    failures that also recovered inside the window: a failure still open at the window end counts as
    downtime but not in MTTR, and a down period already open at the window start counts as downtime but
    is neither a failure nor a repair.
"""

import re
from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime, timedelta
from enum import Enum
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Engine
from sqlalchemy.ext.compiler import compiles
from sqlalchemy.sql.functions import FunctionElement

from healthmon_dagster.enums import HealthComponent, HealthStatus
from healthmon_dagster.store.metrics import as_utc
from healthmon_dagster.store.tables import check_results, load_runs

SOURCE = "health_check"
CRITICAL_SEVERITY = "critical"
DEFAULT_WINDOW = timedelta(hours=24)
DEFAULT_STALE_AFTER = timedelta(minutes=15)
# Latest results are looked for at most this far back (or one window, when longer): a check silent for
# longer than that is no longer monitored.
DEFAULT_LOOKBACK = timedelta(days=7)
DEFAULT_HISTORY_BUCKETS = 48

# The layer of etl.load_runs each pipeline component processes (throughput = rows out per hour).
COMPONENT_LAYERS: dict[str, str] = {
    HealthComponent.RAW_LOADER: "raw",
    HealthComponent.STAGING_TRANSFORMER: "stg",
    HealthComponent.CORE_MERGER: "core",
}

_RANK = {
    HealthStatus.HEALTHY: 0,
    HealthStatus.UNKNOWN: 1,
    HealthStatus.WARNING: 2,
    HealthStatus.CRITICAL: 3,
}
_BY_RANK = {rank: status for status, rank in _RANK.items()}
_DURATION = re.compile(r"^\s*(\d+)\s*(s|m|min|h|d|w)\s*$", re.IGNORECASE)
_UNIT_SECONDS = {"s": 1, "m": 60, "min": 60, "h": 3600, "d": 86400, "w": 604800}


class InvalidWindow(ValueError):
    """A time window or duration the user gave cannot be used; the message says why and what works."""


def parse_duration(text: str, what: str = "window") -> timedelta:
    """``"90s"``, ``"15m"``, ``"24h"``, ``"7d"``, ``"2w"`` as a timedelta.

    Raises:
        InvalidWindow: not of that form, or zero.
    """
    match = _DURATION.match(text or "")
    if not match:
        raise InvalidWindow(
            f"{what} {text!r} is not a duration: use a whole number and a unit, "
            "e.g. 30m, 24h, 7d or 2w (units: s, m, h, d, w)"
        )
    seconds = int(match.group(1)) * _UNIT_SECONDS[match.group(2).lower()]
    if seconds <= 0:
        raise InvalidWindow(f"{what} {text!r} must be longer than zero")
    return timedelta(seconds=seconds)


def worst(statuses: Iterable[HealthStatus]) -> HealthStatus:
    """The worst status (CRITICAL > WARNING > UNKNOWN > HEALTHY); HEALTHY for none."""
    return _BY_RANK[max((_RANK[HealthStatus(s)] for s in statuses), default=0)]


def effective_status(status: str, critical: bool) -> HealthStatus:
    """What one check result contributes to its component: non-critical checks warn at most and
    their UNKNOWN does not count."""
    try:
        s = HealthStatus(status)
    except ValueError:
        s = HealthStatus.UNKNOWN
    if critical:
        return s
    if s in (HealthStatus.CRITICAL, HealthStatus.WARNING):
        return HealthStatus.WARNING
    return HealthStatus.HEALTHY


def overall_status(statuses: Iterable[HealthStatus]) -> HealthStatus:
    """The system's status from its monitored components' statuses (see the module docstring)."""
    statuses = list(statuses)
    if not statuses or all(s == HealthStatus.UNKNOWN for s in statuses):
        return HealthStatus.UNKNOWN
    if HealthStatus.CRITICAL in statuses:
        return HealthStatus.CRITICAL
    if HealthStatus.WARNING in statuses or HealthStatus.UNKNOWN in statuses:
        return HealthStatus.WARNING
    return HealthStatus.HEALTHY


# --- portable SQL helpers ----------------------------------------------------------------------


class _epoch(FunctionElement[float]):
    """Seconds since 1970 of a timestamp column (UTC)."""

    type = sa.Float()
    inherit_cache = True
    name = "epoch"


@compiles(_epoch)
def _epoch_default(element: _epoch, compiler: Any, **kw: Any) -> str:
    return f"EXTRACT(EPOCH FROM {compiler.process(element.clauses, **kw)})"


@compiles(_epoch, "sqlite")
def _epoch_sqlite(element: _epoch, compiler: Any, **kw: Any) -> str:
    # SQLAlchemy stores UTC timestamps as ISO text on SQLite; julianday parses it. A double holds
    # julian days to ~50 microseconds: rounding to the millisecond keeps 04:00:00 out of 03:00's bucket.
    return f"ROUND((julianday({compiler.process(element.clauses, **kw)}) - 2440587.5) * 86400.0, 3)"


class _floor_int(FunctionElement[int]):
    """floor() of a non-negative number as an integer (Postgres CAST rounds, SQLite's truncates)."""

    type = sa.Integer()
    inherit_cache = True
    name = "floor_int"


@compiles(_floor_int)
def _floor_int_default(element: _floor_int, compiler: Any, **kw: Any) -> str:
    return f"CAST(FLOOR({compiler.process(element.clauses, **kw)}) AS INTEGER)"


@compiles(_floor_int, "sqlite")
def _floor_int_sqlite(element: _floor_int, compiler: Any, **kw: Any) -> str:
    return f"CAST({compiler.process(element.clauses, **kw)} AS INTEGER)"


def _now(now: datetime | None) -> datetime:
    return as_utc(now) if now is not None else datetime.now(UTC)


def _check_window(start: datetime, end: datetime) -> tuple[datetime, datetime]:
    start, end = as_utc(start), as_utc(end)
    if start >= end:
        raise InvalidWindow(
            f"time window starts ({start.isoformat()}) at or after it ends ({end.isoformat()})"
        )
    return start, end


def _ms(delta: timedelta) -> float:
    return delta.total_seconds() * 1000.0


# --- result types ------------------------------------------------------------------------------


@dataclass(frozen=True)
class CheckState:
    """The latest result of one health check and what it contributes to its component."""

    check_name: str
    status: HealthStatus
    effective_status: HealthStatus
    critical: bool
    ts: datetime
    stale: bool
    response_time_ms: float | None
    message: str | None


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
    """The seed plan's UptimeStats for one component (or the system, ``component=None``)."""

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


@dataclass(frozen=True)
class ComponentStatus:
    """The seed plan's ComponentStatus, plus the evidence behind it."""

    component: str
    status: HealthStatus
    monitored: bool
    last_check: datetime | None
    last_check_age_seconds: float | None
    response_time_ms: float | None  # mean over the window's results
    error_rate: float | None  # share of the window's results that were critical
    throughput: float | None  # rows out per hour (etl.load_runs) for pipeline components
    active_alerts: int | None  # None until an alert store exists
    description: str
    checks: list[CheckState]
    results_in_window: int
    uptime: UptimeStats | None


@dataclass(frozen=True)
class SystemStatus:
    """The seed plan's SystemStatus."""

    overall_health: HealthStatus
    last_updated: datetime
    window_start: datetime
    window_end: datetime
    components: list[ComponentStatus]
    active_alerts: int | None  # None until an alert store exists
    recent_incidents: int  # outages of the system that started inside the window
    uptime_percentage: float | None
    average_response_time: float | None
    throughput: float | None  # rows out per hour over all pipeline layers
    uptime: UptimeStats
    description: str

    def component(self, component: str) -> ComponentStatus:
        for c in self.components:
            if c.component == component:
                return c
        raise KeyError(component)

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict (timestamps as ISO strings, statuses as their values)."""
        return jsonable(asdict(self))


@dataclass(frozen=True)
class HealthHistory:
    """The seed plan's HealthHistory: one status per bucket (its start) per component and overall."""

    timestamps: list[datetime]
    bucket_seconds: float
    overall_health: list[HealthStatus]
    component_health: dict[str, list[HealthStatus]]
    incidents: list[Outage]

    def to_dict(self) -> dict[str, Any]:
        return jsonable(asdict(self))


def jsonable(value: Any) -> Any:
    """``value`` with datetimes as ISO strings and enums as their values, for ``json.dumps``."""
    if isinstance(value, dict):
        return {k: jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [jsonable(v) for v in value]
    if isinstance(value, datetime):
        return value.isoformat()
    if isinstance(value, Enum):
        return value.value
    return value


def human_duration(seconds: float | None) -> str:
    """``45s``, ``12m``, ``3.5h``, ``2.0d`` (``-`` for None) for tables and messages."""
    if seconds is None:
        return "-"
    s = max(0.0, seconds)
    if s < 120:
        return f"{s:.0f}s"
    if s < 7200:
        return f"{s // 60:.0f}m"
    if s < 172800:
        return f"{s / 3600:.1f}h"
    return f"{s / 86400:.1f}d"


# --- current status ----------------------------------------------------------------------------


def _latest_per_check(engine: Engine, since: datetime, now: datetime) -> list[sa.Row[Any]]:
    cr = check_results.c
    rn = (
        sa.func.row_number()
        .over(partition_by=(cr.target, cr.check_name), order_by=(cr.ts.desc(), cr.result_id.desc()))
        .label("rn")
    )
    ranked = (
        sa.select(
            cr.target,
            cr.check_name,
            cr.status,
            cr.severity,
            cr.ts,
            cr.response_time_ms,
            cr.message,
            rn,
        )
        .where(cr.source == SOURCE, cr.ts >= since, cr.ts <= now)
        .subquery()
    )
    query = sa.select(ranked).where(ranked.c.rn == 1).order_by(ranked.c.target, ranked.c.check_name)
    with engine.connect() as conn:
        return list(conn.execute(query))


def _window_aggregates(engine: Engine, start: datetime, end: datetime) -> dict[str, sa.Row[Any]]:
    cr = check_results.c
    query = (
        sa.select(
            cr.target,
            sa.func.count().label("n"),
            sa.func.avg(cr.response_time_ms).label("avg_rt"),
            sa.func.sum(sa.case((cr.status == HealthStatus.CRITICAL.value, 1), else_=0)).label(
                "n_critical"
            ),
        )
        .where(cr.source == SOURCE, cr.ts >= start, cr.ts <= end)
        .group_by(cr.target)
    )
    with engine.connect() as conn:
        return {row.target: row for row in conn.execute(query)}


def _throughput(engine: Engine, start: datetime, end: datetime) -> dict[str, float]:
    """Rows out per hour of successful load runs per layer finished inside the window."""
    lr = load_runs.c
    query = (
        sa.select(lr.layer, sa.func.sum(lr.rows_out).label("rows"))
        .where(lr.status == "success", lr.finished_at >= start, lr.finished_at <= end)
        .group_by(lr.layer)
    )
    hours = (end - start).total_seconds() / 3600.0
    with engine.connect() as conn:
        return {row.layer: float(row.rows or 0) / hours for row in conn.execute(query)}


def _describe_component(status: HealthStatus, checks: Sequence[CheckState]) -> str:
    if not checks:
        return "no health check has reported in the lookback"
    stale = [c.check_name for c in checks if c.stale]
    failing = [c for c in checks if not c.stale and c.status != HealthStatus.HEALTHY]
    parts: list[str] = []
    for c in sorted(failing, key=lambda c: -_RANK[c.effective_status]):
        kind = "critical check" if c.critical else "non-critical check"
        msg = f": {c.message}" if c.message else ""
        parts.append(f"{kind} {c.check_name} is {c.status.value}{msg}")
    if stale:
        parts.append(f"no recent result from {', '.join(stale)}")
    if not parts:
        return f"all {len(checks)} check(s) healthy"
    return f"{status.value}: " + "; ".join(parts)


def component_state(
    rows: Sequence[Any], now: datetime, stale_after: timedelta
) -> tuple[HealthStatus, list[CheckState]]:
    """A component's status from the latest result of each of its checks (rows with check_name,
    status, severity, ts, response_time_ms, message)."""
    checks: list[CheckState] = []
    for r in rows:
        ts = as_utc(r.ts)
        critical = (r.severity or "") == CRITICAL_SEVERITY
        stale = now - ts > stale_after
        try:
            status = HealthStatus(r.status)
        except ValueError:
            status = HealthStatus.UNKNOWN
        eff = effective_status(HealthStatus.UNKNOWN if stale else status, critical)
        checks.append(
            CheckState(
                r.check_name, status, eff, critical, ts, stale, r.response_time_ms, r.message
            )
        )
    if not checks or all(c.stale for c in checks):
        return HealthStatus.UNKNOWN, checks
    return worst(c.effective_status for c in checks), checks


def get_system_status(
    engine: Engine,
    now: datetime | None = None,
    window: timedelta = DEFAULT_WINDOW,
    stale_after: timedelta = DEFAULT_STALE_AFTER,
    components: Iterable[str] | None = None,
) -> SystemStatus:
    """The current status of every component and of the system, with uptime over ``window``.

    Args:
        engine: the health store.
        now: the evaluation time (default: the current time).
        window: how far back uptime, MTBF/MTTR, response time, error rate and throughput look.
        stale_after: a check's latest result older than this counts as UNKNOWN.
        components: the components to list (default: every HealthComponent plus any other target
            that reported).
    """
    now = _now(now)
    if window <= timedelta(0) or stale_after <= timedelta(0):
        raise InvalidWindow("window and stale_after must be longer than zero")
    start = now - window
    latest = _latest_per_check(engine, now - max(window, DEFAULT_LOOKBACK), now)
    aggregates = _window_aggregates(engine, start, now)
    throughput = _throughput(engine, start, now)
    per_component, system_uptime = _uptime_all(engine, start, now)

    by_target: dict[str, list[Any]] = defaultdict(list)
    for row in latest:
        by_target[row.target].append(row)
    names = list(components) if components is not None else [c.value for c in HealthComponent]
    if components is None:
        names += sorted(t for t in by_target if t not in names)

    result: list[ComponentStatus] = []
    for name in names:
        status, checks = component_state(by_target.get(name, []), now, stale_after)
        agg = aggregates.get(name)
        last = max((c.ts for c in checks), default=None)
        layer = COMPONENT_LAYERS.get(name)
        result.append(
            ComponentStatus(
                component=name,
                status=status,
                monitored=bool(checks),
                last_check=last,
                last_check_age_seconds=(now - last).total_seconds() if last else None,
                response_time_ms=float(agg.avg_rt) if agg and agg.avg_rt is not None else None,
                error_rate=float(agg.n_critical) / agg.n if agg and agg.n else None,
                throughput=throughput.get(layer, 0.0) if layer else None,
                active_alerts=None,
                description=_describe_component(status, checks),
                checks=checks,
                results_in_window=int(agg.n) if agg else 0,
                uptime=per_component.get(name),
            )
        )

    monitored = [c for c in result if c.monitored]
    overall = overall_status(c.status for c in monitored)
    n = sum(int(a.n) for a in aggregates.values())
    rt_sum = sum(float(a.avg_rt) * int(a.n) for a in aggregates.values() if a.avg_rt is not None)
    rt_n = sum(int(a.n) for a in aggregates.values() if a.avg_rt is not None)
    bad = [c for c in monitored if c.status != HealthStatus.HEALTHY]
    if not monitored:
        description = "no health check results: nothing is monitored yet"
    elif not bad:
        description = f"all {len(monitored)} monitored component(s) healthy"
    else:
        description = "; ".join(f"{c.component} {c.status.value}" for c in bad)
    return SystemStatus(
        overall_health=overall,
        last_updated=now,
        window_start=start,
        window_end=now,
        components=result,
        active_alerts=None,
        recent_incidents=system_uptime.failures,
        uptime_percentage=system_uptime.uptime_percentage,
        average_response_time=rt_sum / rt_n if rt_n else None,
        throughput=sum(throughput.values()) if throughput else (0.0 if n else None),
        uptime=system_uptime,
        description=description,
    )


def get_component_status(
    engine: Engine,
    component: str,
    now: datetime | None = None,
    window: timedelta = DEFAULT_WINDOW,
    stale_after: timedelta = DEFAULT_STALE_AFTER,
) -> ComponentStatus:
    """One component's status (see :func:`get_system_status`)."""
    status = get_system_status(engine, now, window, stale_after, components=[component])
    return status.components[0]


# --- uptime, MTBF, MTTR --------------------------------------------------------------------------


def _transitions(engine: Engine, start: datetime, end: datetime) -> list[sa.Row[Any]]:
    """Rows of critical checks where the down/up state changes (plus each check's first row), from
    one window length before ``start`` (to know the state at the start) to ``end``."""
    cr = check_results.c
    is_down = sa.case((cr.status == HealthStatus.CRITICAL.value, 1), else_=0).label("is_down")
    base = (
        sa.select(cr.target, cr.check_name, cr.ts, cr.result_id, is_down)
        .where(
            cr.source == SOURCE,
            cr.severity == CRITICAL_SEVERITY,
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


def _uptime_all(
    engine: Engine, start: datetime, end: datetime
) -> tuple[dict[str, UptimeStats], UptimeStats]:
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
    start, end = _check_window(start, end)
    per_component, system = _uptime_all(engine, start, end)
    if component is None:
        return system
    return per_component.get(component) or _stats(component, None, [], start, end)


def get_uptime_by_component(
    engine: Engine, start: datetime, end: datetime
) -> dict[str, UptimeStats]:
    """:func:`get_uptime` for every component that reported a critical check."""
    start, end = _check_window(start, end)
    return _uptime_all(engine, start, end)[0]


# --- history ------------------------------------------------------------------------------------


def get_health_history(
    engine: Engine,
    start: datetime,
    end: datetime,
    bucket: timedelta | None = None,
    stale_after: timedelta = DEFAULT_STALE_AFTER,
    components: Iterable[str] | None = None,
) -> HealthHistory:
    """A status timeline in buckets of ``bucket`` (default: the range in 48 buckets).

    A component's status in a bucket is the worst effective status of its checks' results inside
    the bucket (non-critical checks warn at most). A bucket without results repeats the previous
    bucket's status when the last result is still fresh (younger than ``stale_after``) at the bucket's
    end, else it is UNKNOWN. The overall status per bucket follows :func:`overall_status` over
    the components that reported anywhere in the range.
    """
    start, end = _check_window(start, end)
    span = (end - start).total_seconds()
    bucket_s = bucket.total_seconds() if bucket is not None else span / DEFAULT_HISTORY_BUCKETS
    if bucket_s <= 0:
        raise InvalidWindow("the history bucket must be longer than zero")
    n_buckets = int(-(-span // bucket_s))
    if n_buckets > 10_000:
        raise InvalidWindow(
            f"{n_buckets} buckets of {bucket_s:g}s in the range: use a longer bucket (at most 10000)"
        )
    cr = check_results.c
    critical = cr.severity == CRITICAL_SEVERITY
    rank = sa.case(
        (sa.and_(critical, cr.status == HealthStatus.CRITICAL.value), 3),
        (cr.status.in_([HealthStatus.CRITICAL.value, HealthStatus.WARNING.value]), 2),
        (sa.and_(critical, cr.status != HealthStatus.HEALTHY.value), 1),
        else_=0,
    )
    start_epoch = start.timestamp()
    idx = _floor_int((_epoch(cr.ts) - start_epoch) / bucket_s).label("idx")
    inner = (
        sa.select(cr.target.label("target"), idx, rank.label("rank"), cr.ts)
        .where(cr.source == SOURCE, cr.ts >= start, cr.ts < end)
        .subquery()
    )
    query = sa.select(
        inner.c.target,
        inner.c.idx,
        sa.func.max(inner.c.rank).label("rank"),
        sa.func.max(inner.c.ts).label("last_ts"),
    ).group_by(inner.c.target, inner.c.idx)
    with engine.connect() as conn:
        rows = list(conn.execute(query))

    cells: dict[str, dict[int, tuple[int, datetime]]] = defaultdict(dict)
    for r in rows:
        cells[r.target][int(r.idx)] = (int(r.rank), as_utc(r.last_ts))
    names = list(components) if components is not None else sorted(cells)
    timestamps = [start + timedelta(seconds=i * bucket_s) for i in range(n_buckets)]
    component_health: dict[str, list[HealthStatus]] = {}
    for name in names:
        series: list[HealthStatus] = []
        last: tuple[int, datetime] | None = None
        for i in range(n_buckets):
            cell = cells.get(name, {}).get(i)
            if cell is not None:
                last = cell
                series.append(_BY_RANK[cell[0]])
            elif (
                last is not None
                and i > 0
                and (timestamps[i] + timedelta(seconds=bucket_s) - last[1] <= stale_after)
            ):
                series.append(series[-1])
            else:
                series.append(HealthStatus.UNKNOWN)
        component_health[name] = series
    monitored = [n for n in names if cells.get(n)]
    overall = [overall_status(component_health[n][i] for n in monitored) for i in range(n_buckets)]
    _, system = _uptime_all(engine, start, end)
    return HealthHistory(timestamps, bucket_s, overall, component_health, system.incidents)
