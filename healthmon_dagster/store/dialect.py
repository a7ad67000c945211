"""SQL functions that differ between SQLite and Postgres, compiled per dialect.

Staging validation (:class:`is_iso_date`, :class:`is_uuid`, :class:`as_date`), the status history
buckets (:class:`epoch`, :class:`floor_int`) and the quality checks' grouping keys
(:class:`byte_order`) use them so that one query runs on both databases.
"""

from datetime import date
from typing import Any

import sqlalchemy as sa
from sqlalchemy.ext.compiler import compiles
from sqlalchemy.sql.functions import FunctionElement


class is_iso_date(FunctionElement[bool]):
    """True when the text is a real calendar date in ``YYYY-MM-DD`` form."""

    type = sa.Boolean()
    inherit_cache = True


@compiles(is_iso_date, "postgresql")
def _is_iso_date_pg(
    element: is_iso_date, compiler: sa.sql.compiler.SQLCompiler, **kw: object
) -> str:
    x = compiler.process(list(element.clauses)[0], **kw)
    # The regex admits months 01-12 and days 01-31; the arithmetic rejects 02-30, 04-31, ...
    return (
        f"(CASE WHEN {x} ~ '^[12][0-9]{{3}}-(0[1-9]|1[0-2])-(0[1-9]|[12][0-9]|3[01])$' "
        f"THEN extract(month FROM make_date(substr({x},1,4)::int, substr({x},6,2)::int, 1) "
        f"+ (substr({x},9,2)::int - 1)) = substr({x},6,2)::int ELSE false END)"
    )


@compiles(is_iso_date, "sqlite")
def _is_iso_date_sqlite(
    element: is_iso_date, compiler: sa.sql.compiler.SQLCompiler, **kw: object
) -> str:
    x = compiler.process(list(element.clauses)[0], **kw)
    # date(x, '+0 days') normalises impossible days (2021-02-30 -> 2021-03-02), so it must round-trip.
    return (
        f"coalesce({x} GLOB '[12][0-9][0-9][0-9]-[0-9][0-9]-[0-9][0-9]' "
        f"AND date({x}, '+0 days') = {x}, 0)"
    )


class is_uuid(FunctionElement[bool]):
    """True when the text is a UUID in its 8-4-4-4-12 hex form (either case)."""

    type = sa.Boolean()
    inherit_cache = True


@compiles(is_uuid, "postgresql")
def _is_uuid_pg(element: is_uuid, compiler: sa.sql.compiler.SQLCompiler, **kw: object) -> str:
    x = compiler.process(list(element.clauses)[0], **kw)
    # LIKE fixes the shape and ltrim the alphabet: several times cheaper than a regex per row.
    return (
        f"({x} LIKE '________-____-____-____-____________' "
        f"AND ltrim({x}, '0123456789abcdefABCDEF-') = '' "
        f"AND substr({x}, 9, 1) || substr({x}, 14, 1) || substr({x}, 19, 1) "
        f"|| substr({x}, 24, 1) = '----')"
    )


@compiles(is_uuid)
def _is_uuid_default(element: is_uuid, compiler: sa.sql.compiler.SQLCompiler, **kw: object) -> str:
    x = compiler.process(list(element.clauses)[0], **kw)
    h = "[0-9a-fA-F]"
    return f"coalesce({x} GLOB '{h * 8}-{h * 4}-{h * 4}-{h * 4}-{h * 12}', 0)"


class as_date(FunctionElement[date]):
    """Cast validated ISO text to a date (SQLite keeps dates as ISO text already)."""

    type = sa.Date()
    inherit_cache = True


@compiles(as_date, "postgresql")
def _as_date_pg(element: as_date, compiler: sa.sql.compiler.SQLCompiler, **kw: object) -> str:
    return f"CAST({compiler.process(list(element.clauses)[0], **kw)} AS DATE)"


@compiles(as_date, "sqlite")
def _as_date_sqlite(element: as_date, compiler: sa.sql.compiler.SQLCompiler, **kw: object) -> str:
    return compiler.process(list(element.clauses)[0], **kw)


class epoch(FunctionElement[float]):
    """Seconds since 1970 of a timestamp column (UTC)."""

    type = sa.Float()
    inherit_cache = True
    name = "epoch"


@compiles(epoch)
def _epoch_default(element: epoch, compiler: Any, **kw: Any) -> str:
    return f"EXTRACT(EPOCH FROM {compiler.process(element.clauses, **kw)})"


@compiles(epoch, "sqlite")
def _epoch_sqlite(element: epoch, compiler: Any, **kw: Any) -> str:
    # SQLAlchemy stores UTC timestamps as ISO text on SQLite; julianday parses it. A double holds
    # julian days to ~50 microseconds: rounding to the millisecond keeps 04:00:00 out of 03:00's bucket.
    return f"ROUND((julianday({compiler.process(element.clauses, **kw)}) - 2440587.5) * 86400.0, 3)"


class floor_int(FunctionElement[int]):
    """floor() of a non-negative number as an integer (Postgres CAST rounds, SQLite's truncates)."""

    type = sa.Integer()
    inherit_cache = True
    name = "floor_int"


@compiles(floor_int)
def _floor_int_default(element: floor_int, compiler: Any, **kw: Any) -> str:
    return f"CAST(FLOOR({compiler.process(element.clauses, **kw)}) AS INTEGER)"


@compiles(floor_int, "sqlite")
def _floor_int_sqlite(element: floor_int, compiler: Any, **kw: Any) -> str:
    return f"CAST({compiler.process(element.clauses, **kw)} AS INTEGER)"


class byte_order(FunctionElement[Any]):
    """A text value compared and grouped by its bytes: ``x COLLATE "C"`` on Postgres (equality is
    the same as under any deterministic collation, and hashing/comparing bytes is about twice as
    cheap as the database's default collation); SQLite compares bytes already (BINARY)."""

    inherit_cache = True

    def __init__(self, value: Any) -> None:
        super().__init__(value)
        self.type = value.type


@compiles(byte_order, "postgresql")
def _byte_order_pg(element: byte_order, compiler: sa.sql.compiler.SQLCompiler, **kw: object) -> str:
    return f'{compiler.process(list(element.clauses)[0], **kw)} COLLATE "C"'


@compiles(byte_order)
def _byte_order_default(
    element: byte_order, compiler: sa.sql.compiler.SQLCompiler, **kw: object
) -> str:
    return compiler.process(list(element.clauses)[0], **kw)


class probe_in(FunctionElement[Any]):
    """``column IN (subquery)`` evaluated as one index probe per key of the subquery.

    Postgres plans a semi-join with a 1% share of a large table as a scan of the whole table
    (a hash join), probing the index only once the share is far smaller; ``column =
    ANY(ARRAY(subquery))`` is always an index scan with one probe per key (the planner assumes
    a short array, and the scan visits the keys in index order). Only for a column with an
    index: without one, every row would be compared with every key. SQLite already probes the
    index for ``IN (subquery)``."""

    type = sa.types.NullType()  # not Boolean: SQLite would compare the predicate with 1
    inherit_cache = True

    def __init__(self, column: Any, keys: sa.Select[Any]) -> None:
        super().__init__(column, keys.scalar_subquery())


@compiles(probe_in, "postgresql")
def _probe_in_pg(element: probe_in, compiler: sa.sql.compiler.SQLCompiler, **kw: object) -> str:
    column, keys = (compiler.process(c, **kw) for c in element.clauses)
    return f"{column} = ANY(ARRAY{keys})"


@compiles(probe_in)
def _probe_in_default(
    element: probe_in, compiler: sa.sql.compiler.SQLCompiler, **kw: object
) -> str:
    column, keys = (compiler.process(c, **kw) for c in element.clauses)
    return f"{column} IN {keys}"


def insert_ignore(table: sa.Table, bind: sa.engine.Connection | sa.engine.Engine) -> Any:
    """``INSERT ... ON CONFLICT DO NOTHING`` on either database: a row that would break a unique
    constraint or index is skipped (its ``rowcount`` is 0), so a race resolves in the database."""
    if bind.dialect.name == "postgresql":
        from sqlalchemy.dialects.postgresql import insert as pg_insert

        return pg_insert(table).on_conflict_do_nothing()
    from sqlalchemy.dialects.sqlite import insert as sqlite_insert

    return sqlite_insert(table).on_conflict_do_nothing()
