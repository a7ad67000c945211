"""What staging did with the rows of a file, per reason code: rejection_reasons (rows moved to
``stg.patients_rejected`` for given reasons) and staging_flags (rows kept in ``stg.patients`` with
flags). Checks on ``stg.patients`` itself cannot see the rows staging moved away; these can.

Both report counts per reason and the first :data:`ROW_NUMBERS_SHOWN` ``_row_number``s of the
rows found (row numbers of the landing file, never values). Reason codes are matched whole in the
``;``-separated lists (``';' || reasons || ';' LIKE '%;code;%'``).

Cost: rejection_reasons runs one aggregate over the batch's rejected rows (few) and two counts
through the primary keys; staging_flags is fused into the table's row query. Row numbers are read
only when rows were found (``LIMIT`` through the primary key).
"""

from collections.abc import Mapping, Sequence
from dataclasses import replace
from typing import Any

import sqlalchemy as sa
from sqlalchemy.sql.elements import ColumnElement

from healthmon_dagster.config.models import (
    FLAGGABLE_RULES,
    RejectionReasonsCheck,
    StagingFlagsCheck,
)
from healthmon_dagster.etl import catalog
from healthmon_dagster.quality.context import INCREMENTAL, CheckError, EvalContext, windowed
from healthmon_dagster.quality.grading import count_result, fraction_result
from healthmon_dagster.quality.plan import Plan, planner
from healthmon_dagster.quality.result import CheckResult
from healthmon_dagster.quality.sql import count_if
from healthmon_dagster.store.tables import files

ROW_NUMBERS_SHOWN = 20
"""How many row numbers a result names at most (the first ones, in file order)."""

_STAGING_ASSETS = (catalog.STG_PATIENTS.key, catalog.STG_PATIENTS_REJECTED.key)


def has_code(codes: ColumnElement[str], code: str) -> ColumnElement[bool]:
    """True when the ``;``-separated ``codes`` hold ``code`` (whole, not as a prefix)."""
    literal = code.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
    return (sa.literal(";") + codes + sa.literal(";")).like(f"%;{literal};%", escape="\\")


def _require_staging(ctx: EvalContext, kind: str) -> None:
    if ctx.asset not in _STAGING_ASSETS:
        raise CheckError(
            f"{kind} reads the reason codes of the bundled staging tables; configure it on "
            f"{' or '.join(_STAGING_ASSETS)}, not on {ctx.asset}"
        )


def _batch_filter(ctx: EvalContext, table: sa.Table) -> list[ColumnElement[bool]]:
    if ctx.mode == INCREMENTAL and ctx.batch is not None:
        return [ctx.batch.where(table.c._file_id)]
    return []


def _row_numbers(ctx: EvalContext, table: sa.Table, where: Sequence[ColumnElement[bool]]) -> str:
    """``'; row numbers: 3, 57 in patients_0002.csv; 4 in patients_0003.csv'``: the first row
    numbers of the rows found, by file (a run may stage several files)."""
    first = (
        sa.select(table.c._file_id, table.c._row_number)
        .where(*where)
        .order_by(table.c._file_id, table.c._row_number)
        .limit(ROW_NUMBERS_SHOWN)
        .subquery("first_rows")
    )
    with ctx.engine.connect() as conn:
        rows = conn.execute(
            sa.select(files.c.file_key, first.c._row_number)
            .join(files, files.c.file_id == first.c._file_id)
            .order_by(first.c._file_id, first.c._row_number)
        ).all()
    by_file: dict[str, list[str]] = {}
    for key, number in rows:
        by_file.setdefault(key, []).append(str(int(number)))
    text = "; ".join(f"{', '.join(n)} in {key}" for key, n in by_file.items())
    return f"; row numbers: {text}"


def _with_rows(result: CheckResult, rows: str, failing: int) -> CheckResult:
    more = f" (the first {ROW_NUMBERS_SHOWN} of {failing})" if failing > ROW_NUMBERS_SHOWN else ""
    return replace(result, message=result.message + rows + more)


@planner(RejectionReasonsCheck)
def plan_rejection_reasons(ctx: EvalContext, spec: RejectionReasonsCheck) -> Plan:
    _require_staging(ctx, spec.kind)
    ctx = windowed(ctx, spec.window_hours)
    rejected, staged = catalog.STG_PATIENTS_REJECTED.table, catalog.STG_PATIENTS.table
    codes = rejected.c.reasons
    any_reason = sa.or_(*(has_code(codes, code) for code in spec.reasons))

    def finish(_v: Mapping[str, Any], _total: int) -> CheckResult:
        in_rejected = _batch_filter(ctx, rejected)
        with ctx.engine.connect() as conn:
            row = conn.execute(
                sa.select(
                    sa.func.count().label("rejected"),
                    count_if(any_reason).label("found"),
                    *(
                        count_if(has_code(codes, code)).label(f"r{i}")
                        for i, code in enumerate(spec.reasons)
                    ),
                )
                .select_from(rejected)
                .where(*in_rejected)
            ).one()
            kept = conn.execute(
                sa.select(sa.func.count()).select_from(staged).where(*_batch_filter(ctx, staged))
            ).scalar_one()
        found = int(row.found)
        per_reason = {
            f"rows__{code}": int(row._mapping[f"r{i}"]) for i, code in enumerate(spec.reasons)
        }
        result = fraction_result(
            ctx,
            spec,
            found,
            int(kept) + int(row.rejected),
            f"were rejected for {', '.join(spec.reasons)}",
            per_reason,
        )
        if not found:
            return result
        return _with_rows(result, _row_numbers(ctx, rejected, [*in_rejected, any_reason]), found)

    return Plan({}, finish)


@planner(StagingFlagsCheck)
def plan_staging_flags(ctx: EvalContext, spec: StagingFlagsCheck) -> Plan:
    _require_staging(ctx, spec.kind)
    if ctx.asset != catalog.STG_PATIENTS.key:
        raise CheckError(
            f"flagged rows are in {catalog.STG_PATIENTS.key}: configure {spec.kind} there, "
            f"not on {ctx.asset}"
        )
    flags = ctx.col("_flags")
    wanted = list(spec.flags) or sorted(FLAGGABLE_RULES)
    found_expr = (
        sa.or_(*(has_code(flags, code) for code in spec.flags))
        if spec.flags
        else flags.is_not(None)
    )
    exprs: dict[str, ColumnElement[Any]] = {"found": count_if(found_expr)}
    exprs.update({f"f{i}": count_if(has_code(flags, code)) for i, code in enumerate(wanted)})
    swept = ctx
    ctx = windowed(ctx, spec.window_hours)

    def finish(v: Mapping[str, Any], total: int) -> CheckResult:
        found = int(v["found"])
        result = count_result(
            ctx,
            spec,
            found,
            f"of {total} staged rows of the {ctx.scope_name} were kept with a flag "
            f"({', '.join(wanted)})",
            {f"rows__{code}": int(v[f"f{i}"]) for i, code in enumerate(wanted)},
            total=total,
        )
        if not found:
            return result
        rows = _row_numbers(ctx, ctx.table, [*ctx.scope, found_expr])
        return _with_rows(result, rows, found)

    if ctx is swept:  # fused into the table's one row query
        return Plan(exprs, finish)

    def finish_in_window(_v: Mapping[str, Any], _total: int) -> CheckResult:
        labelled = [e.label(name) for name, e in exprs.items()]
        query = sa.select(sa.func.count().label("total"), *labelled).where(*ctx.scope)
        with ctx.engine.connect() as conn:
            row = conn.execute(query.select_from(ctx.table)).one()._mapping
        return finish(dict(row), int(row["total"]))

    return Plan({}, finish_in_window)
