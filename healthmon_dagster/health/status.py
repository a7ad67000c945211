"""System status now: each component's and the overall health, with the evidence behind it.

Everything here is read from the health store (``etl.check_results`` rows with
``source='health_check'``, ``etl.load_runs``), one code path for SQLite and Postgres; scans over many
rows (latest result per check, per-component aggregates, status transitions, history buckets) run in
SQL, Python only sees one row per check, per component, per transition or per bucket.

Component status (now):
    Each health check's latest result counts; a result older than ``stale_after`` counts as UNKNOWN
    (the check stopped reporting). Results of checks with ``critical`` set count as they are;
    results of non-critical checks are capped at WARNING (a failing non-critical check warns, it never
    makes the component critical) and their UNKNOWN is ignored. The component's status is the worst of
    those by :attr:`HealthStatus.rank` (HEALTHY < UNKNOWN < WARNING < CRITICAL). A component with no
    result at all in the lookback, or only skipped ones (a check with nothing to check, e.g. the S3
    check in local mode; see ``health.record``), is UNKNOWN and not *monitored*: never HEALTHY.

Overall status:
    Worst of the monitored components, where a monitored component that is UNKNOWN (its checks went
    silent) makes the whole WARNING: a monitoring gap is a warning, not a clean bill of health. UNKNOWN
    when nothing is monitored or every monitored component is UNKNOWN.

Uptime, MTBF and MTTR are in :mod:`healthmon_dagster.health.uptime`, the status timeline in
:mod:`healthmon_dagster.health.history`.
"""

from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Engine

from healthmon_dagster.enums import HealthComponent, HealthStatus
from healthmon_dagster.etl.catalog import COMPONENT_LAYERS
from healthmon_dagster.formatting import InvalidWindow, jsonable
from healthmon_dagster.health import uptime
from healthmon_dagster.health.record import SOURCE, counted
from healthmon_dagster.health.uptime import UptimeStats, uptime_all
from healthmon_dagster.store.metrics import as_utc
from healthmon_dagster.store.tables import check_results, load_runs

DEFAULT_WINDOW = timedelta(hours=24)
DEFAULT_STALE_AFTER = uptime.DEFAULT_STALE_AFTER
# Latest results are looked for at most this far back (or one window, when longer): a check silent for
# longer than that is no longer monitored.
DEFAULT_LOOKBACK = timedelta(days=7)


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


def now_utc(now: datetime | None) -> datetime:
    """``now`` in UTC, or the current time."""
    return as_utc(now) if now is not None else datetime.now(UTC)


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
    skipped: bool = False  # measured nothing (see health.record); counts nowhere


@dataclass(frozen=True)
class ComponentStatus:
    """One component's status, plus the evidence behind it."""

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
    """The status of every component and of the whole system."""

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
        data: dict[str, Any] = jsonable(asdict(self))
        return data


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
            cr.critical,
            cr.ts,
            cr.response_time_ms,
            cr.message,
            cr.details["skipped"].as_string().label("skipped"),
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
        .where(cr.source == SOURCE, counted(), cr.ts >= start, cr.ts <= end)
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
    skipped = [c for c in checks if c.skipped]
    checks = [c for c in checks if not c.skipped]
    if not checks:
        if skipped:
            return "not monitored: " + "; ".join(f"{c.check_name} {c.message}" for c in skipped)
        return "no health check has reported in the lookback"
    stale = [c.check_name for c in checks if c.stale]
    failing = [c for c in checks if not c.stale and c.status != HealthStatus.HEALTHY]
    parts: list[str] = []
    for c in sorted(failing, key=lambda c: -c.effective_status.rank):
        kind = "critical check" if c.critical else "non-critical check"
        msg = f": {c.message}" if c.message else ""
        parts.append(f"{kind} {c.check_name} is {c.status.value}{msg}")
    if stale:
        parts.append(f"no recent result from {', '.join(stale)}")
    not_monitored = (
        f"; not monitored: {', '.join(c.check_name for c in skipped)}" if skipped else ""
    )
    if not parts:
        return f"all {len(checks)} check(s) healthy{not_monitored}"
    return f"{status.value}: " + "; ".join(parts) + not_monitored


def component_state(
    rows: Sequence[Any], now: datetime, stale_after: timedelta
) -> tuple[HealthStatus, list[CheckState]]:
    """A component's status from the latest result of each of its checks (rows with check_name,
    status, critical, ts, response_time_ms, message and optionally skipped); skipped checks are
    listed but count nowhere."""
    checks: list[CheckState] = []
    for r in rows:
        if getattr(r, "skipped", None):
            ts = as_utc(r.ts)
            checks.append(
                CheckState(
                    r.check_name,
                    HealthStatus.UNKNOWN,
                    HealthStatus.UNKNOWN,
                    bool(r.critical),
                    ts,
                    now - ts > stale_after,
                    r.response_time_ms,
                    r.message,
                    skipped=True,
                )
            )
            continue
        ts = as_utc(r.ts)
        critical = bool(r.critical)
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
    measured = [c for c in checks if not c.skipped]
    if not measured or all(c.stale for c in measured):
        return HealthStatus.UNKNOWN, checks
    return HealthStatus.worst(c.effective_status for c in measured), checks


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
    now = now_utc(now)
    if window <= timedelta(0) or stale_after <= timedelta(0):
        raise InvalidWindow("window and stale_after must be longer than zero")
    start = now - window
    latest = _latest_per_check(engine, now - max(window, DEFAULT_LOOKBACK), now)
    aggregates = _window_aggregates(engine, start, now)
    throughput = _throughput(engine, start, now)
    per_component, system_uptime = uptime_all(engine, start, now, stale_after)

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
        last = max((c.ts for c in checks if not c.skipped), default=None)
        # The layer of etl.load_runs the component processes (throughput = rows out per hour).
        layer = COMPONENT_LAYERS.get(name)
        result.append(
            ComponentStatus(
                component=name,
                status=status,
                monitored=any(not c.skipped for c in checks),
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
