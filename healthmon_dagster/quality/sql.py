"""SQL building blocks shared by the planners."""

from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.sql.elements import ColumnElement

from healthmon_dagster.etl import catalog
from healthmon_dagster.quality.context import INCREMENTAL, EvalContext
from healthmon_dagster.store.dialect import byte_order, probe_in
from healthmon_dagster.store.metrics import as_utc


def count_if(cond: ColumnElement[bool]) -> ColumnElement[int]:
    """``count(*) FILTER (WHERE cond)``: the rows that meet ``cond``."""
    return sa.func.count().filter(cond)


def group_key(column: ColumnElement[Any]) -> ColumnElement[Any]:
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


def in_latest_batch(ctx: EvalContext, key: sa.Column[Any]) -> ColumnElement[Any] | None:
    """``key`` is one of the keys of the latest batch (incremental mode); None in full mode or
    when the asset has no batch.

    On the bundled ``core/dim_patient`` (batch ``_file_id``) they are the patient ids of the latest
    file, read from ``stg.patients`` through its primary key (``_file_id``, ``_row_number``), and
    each is probed in the table's index on the key (:class:`~healthmon_dagster.store.dialect.
    probe_in`). Elsewhere, the keys of the rows with ``batch_column = <latest value>`` (indexes on
    the batch column and the key keep it O(batch))."""
    batch = ctx.batch
    if ctx.mode != INCREMENTAL or batch is None:
        return None
    if catalog.asset(ctx.asset) is catalog.CORE_DIM_PATIENT and batch.column == "_file_id":
        stg = catalog.STG_PATIENTS.table
        return probe_in(key, sa.select(stg.c.id).where(batch.where(stg.c._file_id)))
    rows = ctx.table.alias("batch_rows")
    keys = sa.select(rows.c[key.name]).where(batch.where(rows.c[ctx.col(batch.column).name]))
    return key.in_(keys)
