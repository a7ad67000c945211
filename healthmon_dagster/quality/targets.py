"""What ``healthmon.yaml`` names exists: asset keys and the columns their checks read.

A quality or freshness entry names either an asset of this code location (the bundled pipeline,
:mod:`etl.catalog <healthmon_dagster.etl.catalog>`) or a warehouse table as ``schema/table``. A typo
(``stg/patient``, column ``idd``) would otherwise become a new external asset whose checks can only
error. :func:`check_targets` finds those before anything is built:

- a key that is neither a bundled asset nor ``schema/table`` is always an error;
- a ``schema/table`` key is looked up in the warehouse (SQLAlchemy ``inspect``); when the warehouse
  cannot be reached, the report says so (:attr:`TargetReport.unchecked`) instead of guessing;
- the columns a check names (fields called :data:`COLUMN_FIELDS`, ``batch_column``, a freshness
  ``timestamp_column``) must exist in the table, case-insensitively as the checks resolve them:
  bundled tables from :mod:`store.tables <healthmon_dagster.store.tables>` without a connection,
  other tables from the warehouse.

Used by ``healthmon config validate`` (errors exit 1, an unreachable warehouse is a warning) and by
the code location's load (errors stop it). No Dagster import. Messages name keys, tables and columns,
never data.
"""

import difflib
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import sqlalchemy as sa
from sqlalchemy import exc as sa_exc
from sqlalchemy.engine import Engine, Inspector
from sqlalchemy.pool import NullPool

from healthmon_dagster.config.models import CheckSpec, HealthConfiguration, Loc
from healthmon_dagster.enums import Layer
from healthmon_dagster.etl import catalog
from healthmon_dagster.settings import redact_url
from healthmon_dagster.store.db import (
    DatabaseUnavailable,
    InvalidDatabaseUrl,
    check_url,
    create_db_engine,
)
from healthmon_dagster.store.errors import error_text

COLUMN_FIELDS: tuple[str, ...] = (
    "column",
    "columns",
    "key",
    "valid_from",
    "valid_to",
    "is_current",
    "identity_columns",
)
"""Check-spec fields that name columns of the checked table (a string or a list of strings).
``schema.required_columns`` is not among them: reporting a missing column is that check's job."""

CONNECT_TIMEOUT_SECONDS = 5
"""How long a load or ``config validate`` waits for the warehouse before saying it could not check."""

_SYSTEM_SCHEMAS = frozenset({"information_schema", "pg_catalog", "pg_toast", "main", "temp"})


class WarehouseUnreachable(Exception):
    """The warehouse could not be inspected; the message names it (no password) and why."""


@dataclass
class TargetReport:
    """``problems``: (location in healthmon.yaml, message) per unknown key or column;
    ``unchecked``: what could not be checked, and why (the warehouse was unreachable)."""

    problems: list[tuple[Loc, str]] = field(default_factory=list)
    unchecked: list[str] = field(default_factory=list)


@contextmanager
def inspect_warehouse(url: str) -> Iterator[Inspector]:
    """An inspector on the warehouse at ``url`` that creates nothing (no file, no table, no
    migration) and gives up after :data:`CONNECT_TIMEOUT_SECONDS`; :class:`WarehouseUnreachable`
    when it cannot connect."""
    try:
        parsed = check_url(url)
    except InvalidDatabaseUrl as exc:
        raise WarehouseUnreachable(str(exc)) from None
    shown = redact_url(url)
    engine: Engine
    if parsed.get_backend_name() == "sqlite":
        database = parsed.database or ""
        if not Path(database).exists():
            raise WarehouseUnreachable(f"no warehouse at {database} yet (nothing has been loaded)")
        try:
            engine = create_db_engine(url)  # attaches the raw/stg/core/etl schema files
        except DatabaseUnavailable as exc:
            raise WarehouseUnreachable(str(exc)) from None
    else:
        connect_args = (
            {"connect_timeout": CONNECT_TIMEOUT_SECONDS}
            if parsed.get_backend_name() == "postgresql"
            else {}
        )
        engine = sa.create_engine(
            parsed, poolclass=NullPool, connect_args=connect_args, hide_parameters=True
        )
    try:
        try:
            conn = engine.connect()
        except sa_exc.DBAPIError as exc:
            raise WarehouseUnreachable(f"warehouse {shown}: {error_text(exc)}") from None
        with conn:
            yield sa.inspect(conn)
    finally:
        engine.dispose()


def column_fields(spec: CheckSpec) -> list[tuple[Loc, str]]:
    """The columns ``spec`` names, each with its location inside the spec."""
    found: list[tuple[Loc, str]] = []
    for name in COLUMN_FIELDS:
        if name not in type(spec).model_fields:
            continue
        value = getattr(spec, name)
        if isinstance(value, str):
            found.append(((name,), value))
        elif isinstance(value, list):
            found.extend(((name, i), v) for i, v in enumerate(value) if isinstance(v, str))
    return found


def _did_you_mean(name: str, known: list[str], what: str) -> str:
    close = difflib.get_close_matches(name, known, n=1, cutoff=0.6)
    if close:
        return f"; did you mean '{close[0]}'?"
    if not known:
        return ""
    shown = ", ".join(known[:12]) + (f" and {len(known) - 12} more" if len(known) > 12 else "")
    return f"; {what}: {shown}"


def _bundled_typo(key: str, bundled: list[str]) -> str | None:
    """The bundled asset ``key`` was probably meant to be, when it is in one of the pipeline's
    schemas (raw, stg, core) and close to one of its assets; else None."""
    if key.split("/", 1)[0] not in {layer.value for layer in Layer}:
        return None
    close = difflib.get_close_matches(key, bundled, n=1, cutoff=0.8)
    return close[0] if close else None


class _Warehouse:
    """The warehouse's tables and columns, inspected on first need and once."""

    def __init__(self, inspector: Inspector) -> None:
        self._inspector = inspector
        self._schemas: list[str] | None = None
        self._tables: dict[str, list[str]] = {}

    def _schema_names(self) -> list[str]:
        if self._schemas is None:
            self._schemas = list(self._inspector.get_schema_names())
        return self._schemas

    def tables(self, schema: str) -> list[str]:
        """Tables of ``schema`` (empty when the schema does not exist)."""
        if schema not in self._tables:
            self._tables[schema] = (
                sorted(self._inspector.get_table_names(schema=schema))
                if schema in self._schema_names()
                else []
            )
        return self._tables[schema]

    def keys(self) -> list[str]:
        """Every ``schema/table`` of the warehouse's own schemas."""
        schemas = [s for s in self._schema_names() if s not in _SYSTEM_SCHEMAS and s != "etl"]
        return [f"{s}/{t}" for s in schemas for t in self.tables(s)]

    def columns(self, schema: str, table: str) -> list[str]:
        return [str(c["name"]) for c in self._inspector.get_columns(table, schema=schema)]


def check_targets(config: HealthConfiguration, warehouse_url: str | None) -> TargetReport:
    """Check every asset key of ``quality.assets`` and ``freshness`` and the columns their checks
    name; the warehouse at ``warehouse_url`` is contacted only for keys outside the bundled pipeline.
    """
    report = TargetReport()
    entries: dict[str, list[tuple[Loc, str]]] = {}  # key -> [(loc of a column, column)]
    key_locs: dict[str, Loc] = {}
    for key, quality in config.quality.assets.items():
        base: Loc = ("quality", "assets", key)
        key_locs.setdefault(key, base)
        cols = entries.setdefault(key, [])
        if quality.batch_column is not None:
            cols.append(((*base, "batch_column"), quality.batch_column))
        for i, spec in enumerate(quality.checks):
            cols.extend(((*base, "checks", i, *loc), c) for loc, c in column_fields(spec))
    for key, fresh in config.freshness.items():
        key_locs.setdefault(key, ("freshness", key))
        cols = entries.setdefault(key, [])
        if fresh.timestamp_column is not None:
            cols.append((("freshness", key, "timestamp_column"), fresh.timestamp_column))

    bundled = sorted(catalog.BY_KEY)
    outside: list[str] = []
    for key in entries:
        asset = catalog.asset(key)
        if asset is not None:
            t = asset.table
            columns = [c.name for c in t.c]
            _check_columns(report, entries[key], f"{t.schema}.{t.name}", columns, key)
        elif len(key.split("/")) != 2:
            report.problems.append(
                (
                    key_locs[key],
                    f"asset key '{key}' names neither an asset of this code location nor a "
                    f"warehouse table (schema/table){_did_you_mean(key, bundled, 'assets')}",
                )
            )
        elif (close := _bundled_typo(key, bundled)) is not None:
            # The pipeline's own schemas: a near-miss of one of its assets is a typo, known
            # without the warehouse (which a fresh install does not have yet).
            report.problems.append(
                (
                    key_locs[key],
                    f"asset key '{key}' is not an asset of this code location; did you mean "
                    f"'{close}'?",
                )
            )
        else:
            outside.append(key)
    if not outside:
        return report
    if warehouse_url is None:
        report.unchecked.append(_unchecked(outside, "no warehouse URL is set"))
        return report
    try:
        with inspect_warehouse(warehouse_url) as inspector:
            _check_outside(report, _Warehouse(inspector), outside, entries, key_locs, bundled)
    except WarehouseUnreachable as exc:
        report.unchecked.append(_unchecked(outside, str(exc)))
    except sa_exc.DBAPIError as exc:  # reachable, but the inspection itself failed
        report.unchecked.append(_unchecked(outside, error_text(exc)))
    return report


def _unchecked(keys: list[str], why: str) -> str:
    one = len(keys) == 1
    return (
        f"could not check that {', '.join(keys)} exist{'s' if one else ''} in the warehouse, nor "
        f"{'its' if one else 'their'} columns: {why}"
    )


def _check_outside(
    report: TargetReport,
    wh: _Warehouse,
    keys: list[str],
    entries: dict[str, list[tuple[Loc, str]]],
    key_locs: dict[str, Loc],
    bundled: list[str],
) -> None:
    for key in keys:
        schema, name = key.split("/")
        if name not in wh.tables(schema):
            known = sorted({*bundled, *wh.keys()})
            report.problems.append(
                (
                    key_locs[key],
                    f"asset key '{key}' is neither an asset of this code location nor a table of "
                    f"the warehouse (no table {schema}.{name})"
                    f"{_did_you_mean(key, known, 'known')}",
                )
            )
            continue
        columns = wh.columns(schema, name)
        _check_columns(report, entries[key], f"{schema}.{name}", columns, key)


def _check_columns(
    report: TargetReport, named: list[tuple[Loc, str]], qualified: str, columns: list[str], key: str
) -> None:
    lower = {c.lower() for c in columns}
    for loc, column in named:
        if column.lower() not in lower:
            report.problems.append(
                (
                    loc,
                    f"column '{column}' does not exist in {qualified} (asset {key})"
                    f"{_did_you_mean(column, columns, 'columns')}",
                )
            )
