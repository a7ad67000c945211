"""What one evaluation works on: the asset's table, its latest batch, the mode and the clock.

:func:`resolve_table` finds an asset's warehouse table (a bundled table of :mod:`etl.catalog
<healthmon_dagster.etl.catalog>`, else ``schema.table`` reflected for ``schema/table``);
:func:`resolve_batch` finds the rows of its latest load. :class:`EvalContext` carries both, with the
row filter of row-level checks (:attr:`EvalContext.scope`), to every planner.
"""

from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from typing import Any, Final

import sqlalchemy as sa
from sqlalchemy import exc as sa_exc
from sqlalchemy.engine import Engine
from sqlalchemy.sql.elements import ColumnElement

from healthmon_dagster.etl import catalog
from healthmon_dagster.store.metrics import as_utc
from healthmon_dagster.store.tables import files

FULL: Final = "full"
"""Every check over the whole table (the scheduled sweep)."""
INCREMENTAL: Final = "incremental"
"""Row-level and per-file checks over the latest batch only (runs that load a file)."""
MODES = (FULL, INCREMENTAL)


class CheckError(Exception):
    """A check cannot be evaluated; the message says what is missing and what to do."""


@dataclass(frozen=True)
class Batch:
    """The rows of the loads a check judges: ``column IN values``. By default ``_file_id`` of the
    latest file; in a run that loaded, staged or merged files, the ids of every file it did (the
    run's ETL result), so no file of the run goes unjudged. No values: the run had no rows."""

    column: str
    values: tuple[Any, ...]
    of_run: bool = False  # the values are the files of this run (not the latest file)
    window_hours: int | None = None  # the values are the files loaded in the last window_hours

    def where(self, col: ColumnElement[Any]) -> ColumnElement[bool]:
        """``col`` holds one of the batch's values (an index probe per value)."""
        if not self.values:
            return sa.false()
        if len(self.values) == 1:
            one: ColumnElement[bool] = col == self.values[0]
            return one
        return col.in_(self.values)

    @property
    def value(self) -> Any:
        """The newest value (custom SQL's ``:batch``); None for an empty batch."""
        return max(self.values) if self.values else None


@dataclass
class EvalContext:
    """The table, batch and settings shared by the checks of one asset in one evaluation."""

    engine: Engine
    health: Engine
    asset: str
    table: sa.Table
    mode: str
    batch: Batch | None
    now: datetime
    rejection_rate: tuple[float, float]
    batch_column: str | None

    @property
    def qualified(self) -> str:
        return f"{self.table.schema}.{self.table.name}" if self.table.schema else self.table.name

    def col(self, name: str) -> sa.Column[Any]:
        """The table's column ``name`` (case-insensitive); a :class:`CheckError` naming the table's
        columns when there is none."""
        for column in self.table.c:
            if column.name == name or column.name.lower() == name.lower():
                return column
        raise CheckError(
            f"column {name} does not exist in {self.qualified} "
            f"(columns: {', '.join(c.name for c in self.table.c)}); fix the check's column in "
            "healthmon.yaml or the table"
        )

    @property
    def scope(self) -> list[ColumnElement[bool]]:
        """The row filter of row-level checks: the batch in incremental mode, else nothing."""
        if self.mode == INCREMENTAL and self.batch is not None:
            return [self.batch.where(self.col(self.batch.column))]
        return []

    @property
    def scope_name(self) -> str:
        if not self.scope or self.batch is None:
            return "table"
        if self.batch.window_hours is not None:
            return f"files loaded in the last {self.batch.window_hours} h"
        if not self.batch.values:
            return "run (no rows in this run)"
        if len(self.batch.values) > 1:
            return f"{len(self.batch.values)} files of this run"
        return "latest batch"


def windowed(ctx: EvalContext, window_hours: int | None) -> EvalContext:
    """The context a per-file check judges in: unchanged in runs that load files; in the full
    sweep of a bundled asset, the files loaded in the last ``window_hours`` (None: the whole
    table), so that one bad file fails the sweeps of its window, not every sweep after it."""
    if ctx.mode != FULL or window_hours is None or catalog.asset(ctx.asset) is None:
        return ctx
    since = as_utc(ctx.now) - timedelta(hours=window_hours)
    with ctx.engine.connect() as conn:
        ids = conn.execute(
            sa.select(files.c.file_id).where(files.c.loaded_at >= since).order_by(files.c.file_id)
        ).scalars()
        batch = Batch("_file_id", tuple(ids), window_hours=window_hours)
    return replace(ctx, mode=INCREMENTAL, batch=batch)


def resolve_table(engine: Engine, asset: str) -> sa.Table:
    """The warehouse table of an asset: a bundled table, or ``schema.table`` for ``schema/table``."""
    bundled = catalog.asset(asset)
    if bundled is not None:
        return bundled.table
    parts = asset.split("/")
    if len(parts) != 2:
        raise CheckError(f"asset key {asset} does not name a warehouse table; use 'schema/table'")
    schema, name = parts
    try:
        return sa.Table(name, sa.MetaData(), schema=schema, autoload_with=engine)
    except sa_exc.NoSuchTableError:
        raise CheckError(
            f"table {schema}.{name} (asset {asset}) does not exist in the warehouse"
        ) from None


def resolve_batch(
    engine: Engine, asset: str, table: sa.Table, batch_column: str | None = None
) -> Batch | None:
    """The latest batch of an asset's table; None when it has no batch column or no rows.

    For a bundled asset the batch is the newest landing file that has arrived in it (``etl.files``),
    unless ``batch_column`` names another column."""
    bundled = catalog.asset(asset)
    with engine.connect() as conn:
        if bundled is not None and batch_column is None:
            value = conn.execute(
                sa.select(sa.func.max(files.c.file_id)).where(bundled.arrived)
            ).scalar()
            return None if value is None else Batch("_file_id", (value,))
        column = batch_column or ("_file_id" if "_file_id" in table.c else None)
        if column is None:
            return None
        if column not in table.c:
            raise CheckError(f"batch column {column} does not exist in {table.schema}.{table.name}")
        value = conn.execute(sa.select(sa.func.max(table.c[column]))).scalar()
    return None if value is None else Batch(column, (value,))


def known_names(table: sa.Table | None, asset: str) -> set[str]:
    """Names an error message may show: schemas, the bundled tables and ``table``, their columns."""
    names = set(asset.split("/")) | set(catalog.BY_KEY) | {"raw", "stg", "core", "etl"}
    tables = [a.table for a in catalog.ASSETS]
    for t in (*tables, *([table] if table is not None else [])):
        names |= {t.name, f"{t.schema}.{t.name}", *(c.name for c in t.c)}
    return names
