"""Quality checks from config, evaluated as SQL in the warehouse.

:func:`evaluate` takes the check specs of one asset (``quality.assets.<key>.checks``) and returns one
:class:`CheckResult` per spec, in order. Each spec is planned by the planner registered for its
class (:mod:`healthmon_dagster.quality.kinds`). Cost model:

- The expressions of every row-level check of the table (not_null, accepted_values, range, regex,
  row_count, freshness) are fused into ONE aggregate query of ``count(*) FILTER (WHERE <row breaks
  rule>)`` expressions, which Postgres runs with parallel workers.
- Checks that need more (unique, scd2_integrity, reconciliation, ...) run their own queries in their
  ``finish`` step; their module documents their cost.

Modes: ``incremental`` (default for runs that load a file) evaluates row-level checks and
per-file checks on the batch only: the files the run loaded, staged or merged (``run_file_ids``,
from the pipeline's steps), else the latest file in ``etl.files`` for the bundled tables and
``max(batch_column)`` for others; cost grows with the batch, not with the table. ``full``
evaluates every check over the whole table (the scheduled sweep), except the per-file kinds,
which judge the files loaded in their ``window_hours`` (:func:`~.context.windowed`).

:func:`evaluate_last_load` is the generated last-load freshness check of every asset with a
``freshness:`` entry.

A check that cannot be evaluated (missing table or column, SQL error) returns status ``error`` with a
message that names the table/column and what to do; it never passes.
"""

import time
from collections.abc import Sequence
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Engine
from sqlalchemy.sql.elements import ColumnElement

import healthmon_dagster.quality.kinds  # noqa: F401 - registers every kind's planner
from healthmon_dagster.config.models import QualityCheckSpec
from healthmon_dagster.etl import catalog
from healthmon_dagster.quality.context import (
    FULL,
    INCREMENTAL,
    MODES,
    Batch,
    CheckError,
    EvalContext,
    known_names,
    resolve_batch,
    resolve_table,
)
from healthmon_dagster.quality.grading import age_result, error_result
from healthmon_dagster.quality.plan import Plan, plan_for
from healthmon_dagster.quality.result import CheckResult
from healthmon_dagster.quality.sql import timestamp_utc
from healthmon_dagster.store.errors import error_text

LAST_LOAD_IS_FRESH = "last_load_is_fresh"
"""Name of the generated last-load freshness check of every asset with a ``freshness:`` entry."""


def safe_error_message(exc: BaseException, known: set[str]) -> str:
    """A database error as text with no data value in it (``store.errors.error_text``)."""
    if isinstance(exc, CheckError):
        return str(exc)
    return error_text(exc, known)


def evaluate(
    engine: Engine,
    asset: str,
    specs: Sequence[QualityCheckSpec],
    *,
    health_engine: Engine | None = None,
    mode: str = INCREMENTAL,
    rejection_rate: tuple[float, float] = (0.01, 0.05),
    batch_column: str | None = None,
    now: datetime | None = None,
    run_file_ids: Sequence[int] | None = None,
) -> list[CheckResult]:
    """Evaluate ``specs`` on ``asset``'s table; one result per spec, in order, never raising for a
    check's own failure (status ``error``).

    ``run_file_ids``: the files the run loaded, staged or merged into a bundled asset (its ETL
    result); in incremental mode they are the batch, every one of them judged (an empty list: the
    run brought no rows, and the checks say so). None: the latest file."""
    if mode not in MODES:
        raise ValueError(f"mode {mode!r} is not one of {', '.join(MODES)}")
    t0 = time.perf_counter()
    try:
        table = resolve_table(engine, asset)
        if run_file_ids is not None and batch_column is None and catalog.asset(asset) is not None:
            batch: Batch | None = Batch("_file_id", tuple(sorted(run_file_ids)), of_run=True)
        else:
            batch = resolve_batch(engine, asset, table, batch_column)
    except Exception as exc:  # the whole asset is unreadable: every check is an error
        msg = safe_error_message(exc, known_names(None, asset))
        return [error_result(asset, s, msg) for s in specs]
    ctx = EvalContext(
        engine,
        health_engine or engine,
        asset,
        table,
        mode,
        batch,
        now or datetime.now(UTC),
        rejection_rate,
        batch_column,
    )
    known = known_names(table, asset)
    plans: list[Plan | CheckResult] = []
    for spec in specs:
        try:
            plans.append(plan_for(ctx, spec))
        except Exception as exc:
            plans.append(error_result(asset, spec, safe_error_message(exc, known)))
    plan_ms = (time.perf_counter() - t0) * 1000

    # One aggregate for every fused expression of the table (and the row count).
    values: dict[int, dict[str, Any]] = {}
    total = 0
    fused = [(i, p) for i, p in enumerate(plans) if isinstance(p, Plan) and p.fused]
    row_errors: dict[int, CheckResult] = {}
    row_ms = 0.0
    if fused:
        t1 = time.perf_counter()
        try:
            values, total = _run_fused(ctx, fused)
        except Exception:
            # Evaluate each plan alone so that one bad expression does not take the others down.
            for i, one in fused:
                try:
                    v, total = _run_fused(ctx, [(i, one)])
                    values.update(v)
                except Exception as exc:
                    row_errors[i] = error_result(asset, specs[i], safe_error_message(exc, known))
        row_ms = (time.perf_counter() - t1) * 1000 / len(fused)

    results: list[CheckResult] = []
    for i, (spec, planned) in enumerate(zip(specs, plans, strict=True)):
        if isinstance(planned, CheckResult):
            results.append(planned)
            continue
        if i in row_errors:
            results.append(row_errors[i])
            continue
        t2 = time.perf_counter()
        try:
            if planned.finish is None:
                raise CheckError(f"the plan of {spec.check_name} has no finish step")
            result = planned.finish(values.get(i, {}), total)
        except Exception as exc:
            result = error_result(asset, spec, safe_error_message(exc, known))
        ms = (time.perf_counter() - t2) * 1000 + plan_ms / len(specs)
        if planned.fused:
            ms += row_ms
        results.append(replace(result, duration_ms=ms))
    return results


def _run_fused(
    ctx: EvalContext, plans: Sequence[tuple[int, Plan]]
) -> tuple[dict[int, dict[str, Any]], int]:
    """Run the fused aggregate of ``plans`` over the scope: (values per plan index, row count)."""
    labels: list[tuple[int, str, str]] = []
    columns: list[ColumnElement[Any]] = [sa.func.count().label("total")]
    for i, one in plans:
        for name, expr in one.exprs.items():
            label = f"c{i}_{name}"
            labels.append((i, name, label))
            columns.append(expr.label(label))
    query = sa.select(*columns).select_from(ctx.table).where(*ctx.scope)
    with ctx.engine.connect() as conn:
        row = conn.execute(query).one()._mapping
    values: dict[int, dict[str, Any]] = {i: {} for i, _ in plans}
    for i, name, label in labels:
        values[i][name] = row[label]
    return values, int(row["total"])


@dataclass(frozen=True)
class _LastLoadCheck:
    """The identity of the generated last-load check (it has no spec in config)."""

    check_name: str = LAST_LOAD_IS_FRESH
    kind: str = "last_load_freshness"
    blocking: bool = False


def evaluate_last_load(
    engine: Engine,
    asset: str,
    warn_minutes: float | None,
    fail_minutes: float,
    *,
    timestamp_column: str | None = None,
    now: datetime | None = None,
) -> CheckResult:
    """Age of the asset's last load: ``etl.files`` audit times for the bundled tables, else the
    newest ``timestamp_column`` (default ``_loaded_at``) of the table. Works for data loaded
    outside Dagster, unlike a FreshnessPolicy (which only sees materializations)."""
    check = _LastLoadCheck()
    t0 = time.perf_counter()
    table: sa.Table | None = None
    try:
        table = resolve_table(engine, asset)
        ctx = EvalContext(
            engine, engine, asset, table, FULL, None, now or datetime.now(UTC), (0.01, 0.05), None
        )
        bundled = catalog.asset(asset)
        with engine.connect() as conn:
            if bundled is not None and timestamp_column is None:
                newest = conn.execute(
                    sa.select(sa.func.max(bundled.loaded_at)).where(bundled.arrived)
                ).scalar()
                what = "the last load recorded in etl.files"
            else:
                col = ctx.col(timestamp_column or "_loaded_at")
                newest = conn.execute(sa.select(sa.func.max(col))).scalar()
                what = f"the newest {col.name}"
        result = age_result(ctx, check, timestamp_utc(newest), warn_minutes, fail_minutes, what)
    except Exception as exc:
        result = error_result(asset, check, safe_error_message(exc, known_names(table, asset)))
    return replace(result, duration_ms=(time.perf_counter() - t0) * 1000)
