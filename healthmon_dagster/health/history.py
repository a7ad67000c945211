"""A status timeline of every component and of the system, in time buckets."""

from collections import defaultdict
from collections.abc import Iterable
from dataclasses import asdict, dataclass
from datetime import datetime, timedelta
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Engine

from healthmon_dagster.enums import HealthStatus
from healthmon_dagster.formatting import InvalidWindow, jsonable
from healthmon_dagster.health.record import SOURCE, counted
from healthmon_dagster.health.status import DEFAULT_STALE_AFTER, overall_status
from healthmon_dagster.health.uptime import Outage, check_window, uptime_all
from healthmon_dagster.store.dialect import epoch, floor_int
from healthmon_dagster.store.metrics import as_utc
from healthmon_dagster.store.tables import check_results

DEFAULT_HISTORY_BUCKETS = 48


@dataclass(frozen=True)
class HealthHistory:
    """One status per bucket (its start) per component and overall."""

    timestamps: list[datetime]
    bucket_seconds: float
    overall_health: list[HealthStatus]
    component_health: dict[str, list[HealthStatus]]
    incidents: list[Outage]

    def to_dict(self) -> dict[str, Any]:
        data: dict[str, Any] = jsonable(asdict(self))
        return data


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
    start, end = check_window(start, end)
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
    critical = cr.critical.is_(True)
    # The rank of each result's effective status (see status.effective_status), in SQL.
    rank = sa.case(
        (sa.and_(critical, cr.status == HealthStatus.CRITICAL.value), HealthStatus.CRITICAL.rank),
        (
            cr.status.in_([HealthStatus.CRITICAL.value, HealthStatus.WARNING.value]),
            HealthStatus.WARNING.rank,
        ),
        (sa.and_(critical, cr.status != HealthStatus.HEALTHY.value), HealthStatus.UNKNOWN.rank),
        else_=HealthStatus.HEALTHY.rank,
    )
    start_epoch = start.timestamp()
    idx = floor_int((epoch(cr.ts) - start_epoch) / bucket_s).label("idx")
    inner = (
        sa.select(cr.target.label("target"), idx, rank.label("rank"), cr.ts)
        .where(cr.source == SOURCE, counted(), cr.ts >= start, cr.ts < end)
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
                series.append(HealthStatus.from_rank(cell[0]))
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
    _, system = uptime_all(engine, start, end, stale_after)
    return HealthHistory(timestamps, bucket_s, overall, component_health, system.incidents)
