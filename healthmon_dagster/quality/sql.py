"""SQL building blocks shared by the planners."""

from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.sql.elements import ColumnElement

from healthmon_dagster.quality.context import EvalContext
from healthmon_dagster.store.dialect import byte_order
from healthmon_dagster.store.metrics import as_utc


def count_if(cond: ColumnElement[bool]) -> ColumnElement[int]:
    """``count(*) FILTER (WHERE cond)``: the rows that meet ``cond``."""
    return sa.func.count().filter(cond)


def group_key(column: sa.Column[Any]) -> ColumnElement[Any]:
    """The key as grouped: text in byte order (:class:`~healthmon_dagster.store.dialect.byte_order`),
    other types as they are."""
    return byte_order(column) if isinstance(column.type, sa.String) else column


def scalar(ctx: EvalContext, query: sa.Select[Any]) -> Any:
    """The first column of the first row of ``query`` on the warehouse."""
    with ctx.engine.connect() as conn:
        return conn.execute(query).scalar()


def table_count(ctx: EvalContext) -> int:
    """Rows in the whole table, whatever the mode."""
    return int(scalar(ctx, sa.select(sa.func.count()).select_from(ctx.table)) or 0)


def timestamp_utc(ts: Any) -> datetime | None:
    """A timestamp as read from any database (ISO text on SQLite, a DATE column) as aware UTC."""
    if ts is None:
        return None
    if isinstance(ts, str):
        ts = datetime.fromisoformat(ts)
    if not isinstance(ts, datetime):  # a DATE column
        ts = datetime(ts.year, ts.month, ts.day)
    return as_utc(ts)
