"""The metrics repository: batched writes (COPY on Postgres), history and aggregates over a window."""

import csv
import io
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime

import sqlalchemy as sa
from sqlalchemy.engine import Connection, Engine

from healthmon_dagster.enums import Aggregation
from healthmon_dagster.store.connection import is_sqlite, write_transaction
from healthmon_dagster.store.tables import metrics

AGGREGATIONS = tuple(a.value for a in Aggregation)


@dataclass(frozen=True)
class MetricPoint:
    """One observation of a metric (metadata lives in tags; values are numbers)."""

    component: str
    metric_name: str
    value: float
    unit: str = ""
    tags: Mapping[str, str] = field(default_factory=dict)
    ts: datetime | None = None


def utcnow() -> datetime:
    return datetime.now(UTC)


def as_utc(ts: datetime) -> datetime:
    """``ts`` in UTC; a naive value (SQLite returns them) is taken to be UTC already."""
    return ts.replace(tzinfo=UTC) if ts.tzinfo is None else ts.astimezone(UTC)


def _copy_rows(conn: Connection, points: Sequence[MetricPoint], now: datetime) -> None:
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    for p in points:
        writer.writerow(
            [
                (p.ts or now).isoformat(),
                p.component,
                p.metric_name,
                repr(float(p.value)),
                p.unit,
                json.dumps(dict(p.tags), sort_keys=True),
            ]
        )
    buf.seek(0)
    # A pooled connection always has its DBAPI connection; the stubs allow None.
    cursor = conn.connection.dbapi_connection.cursor()  # type: ignore[union-attr]
    try:
        cursor.copy_expert(
            "COPY etl.metrics (ts, component, metric_name, value, unit, tags) "
            "FROM STDIN WITH (FORMAT csv, FORCE_NOT_NULL (component, metric_name, unit))",
            buf,
        )
    finally:
        cursor.close()


def write_metrics(
    engine: Engine, points: Sequence[MetricPoint], conn: Connection | None = None
) -> int:
    """Write ``points`` in one transaction (or in ``conn``'s); returns how many were written."""
    if not points:
        return 0
    now = utcnow()
    for p in points:
        if p.value != p.value or p.value in (float("inf"), float("-inf")):
            raise ValueError(f"metric {p.component}/{p.metric_name} is not a finite number")

    def _write(c: Connection) -> None:
        if is_sqlite(engine):
            c.execute(
                metrics.insert(),
                [
                    {
                        "ts": as_utc(p.ts or now),
                        "component": p.component,
                        "metric_name": p.metric_name,
                        "value": float(p.value),
                        "unit": p.unit,
                        "tags": dict(p.tags),
                    }
                    for p in points
                ],
            )
        else:
            _copy_rows(c, points, now)

    if conn is not None:
        _write(conn)
    else:
        with write_transaction(engine) as c:
            _write(c)
    return len(points)


def _window(
    component: str,
    metric_name: str,
    start: datetime,
    end: datetime,
    tags: Mapping[str, str] | None,
) -> list[sa.ColumnElement[bool]]:
    if start > end:
        raise ValueError(
            f"time window starts ({start.isoformat()}) after it ends ({end.isoformat()})"
        )
    conds = [
        metrics.c.component == component,
        metrics.c.metric_name == metric_name,
        metrics.c.ts >= as_utc(start),
        metrics.c.ts <= as_utc(end),
    ]
    for key, value in (tags or {}).items():
        conds.append(metrics.c.tags[key].as_string() == value)
    return conds


def metric_history(
    engine: Engine,
    component: str,
    metric_name: str,
    start: datetime,
    end: datetime,
    tags: Mapping[str, str] | None = None,
    limit: int = 10_000,
) -> list[MetricPoint]:
    """Observations of one metric in ``[start, end]``, oldest first (at most ``limit``)."""
    query = (
        sa.select(metrics.c.ts, metrics.c.value, metrics.c.unit, metrics.c.tags)
        .where(*_window(component, metric_name, start, end, tags))
        .order_by(metrics.c.ts, metrics.c.metric_id)
        .limit(limit)
    )
    with engine.connect() as conn:
        return [
            MetricPoint(component, metric_name, row.value, row.unit, row.tags, as_utc(row.ts))
            for row in conn.execute(query)
        ]


def metric_aggregate(
    engine: Engine,
    component: str,
    metric_name: str,
    start: datetime,
    end: datetime,
    aggregation: str = "avg",
    tags: Mapping[str, str] | None = None,
) -> float | None:
    """``aggregation`` (avg/min/max/sum/count) of one metric in ``[start, end]``, computed in SQL.

    None when the window holds no observation (count returns 0).
    """
    if aggregation not in AGGREGATIONS:
        raise ValueError(f"aggregation {aggregation!r} is not one of {', '.join(AGGREGATIONS)}")
    func = getattr(sa.func, aggregation)  # avg, min, max, sum or count
    query = sa.select(func(metrics.c.value)).where(
        *_window(component, metric_name, start, end, tags)
    )
    with engine.connect() as conn:
        value = conn.execute(query).scalar()
    return None if value is None else float(value)
