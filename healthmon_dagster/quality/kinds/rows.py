"""Row-level checks, fused into the table's one aggregate query: a ``count(*) FILTER (WHERE <row
breaks rule>)`` per rule (not_null, accepted_values, range, regex) and the row count (row_count)."""

from collections.abc import Mapping
from typing import Any

import sqlalchemy as sa

from healthmon_dagster.config.models import (
    AcceptedValuesCheck,
    NotNullCheck,
    RangeCheck,
    RegexCheck,
    RowCountCheck,
)
from healthmon_dagster.enums import QualityStatus
from healthmon_dagster.quality.context import CheckError, EvalContext
from healthmon_dagster.quality.grading import fraction_result, make_result
from healthmon_dagster.quality.plan import Plan, planner
from healthmon_dagster.quality.result import CheckResult
from healthmon_dagster.quality.sql import count_if


@planner(NotNullCheck)
def plan_not_null(ctx: EvalContext, spec: NotNullCheck) -> Plan:
    cols = [ctx.col(c) for c in spec.columns]
    exprs = {f"null_{i}": count_if(c.is_(None)) for i, c in enumerate(cols)}
    if len(cols) > 1:
        exprs["any"] = count_if(sa.or_(*(c.is_(None) for c in cols)))

    def finish(v: Mapping[str, Any], total: int) -> CheckResult:
        failing = int(v["any"] if len(cols) > 1 else v["null_0"])
        per_column = {f"null_rows__{c.name}": int(v[f"null_{i}"]) for i, c in enumerate(cols)}
        names = ", ".join(c.name for c in cols)
        return fraction_result(ctx, spec, failing, total, f"have NULL in {names}", per_column)

    return Plan(exprs, finish)


@planner(AcceptedValuesCheck)
def plan_accepted_values(ctx: EvalContext, spec: AcceptedValuesCheck) -> Plan:
    col = ctx.col(spec.column)

    def finish(v: Mapping[str, Any], total: int) -> CheckResult:
        return fraction_result(
            ctx,
            spec,
            int(v["bad"]),
            total,
            f"have a {col.name} outside the {len(spec.values)} accepted values",
            {},
        )

    # NULL is not judged here (not_null is its own check), as in dbt and Great Expectations.
    return Plan({"bad": count_if(col.not_in(spec.values))}, finish)


@planner(RangeCheck)
def plan_range(ctx: EvalContext, spec: RangeCheck) -> Plan:
    col = ctx.col(spec.column)
    conds = []
    if spec.min is not None:
        conds.append(col < spec.min)
    if spec.max is not None:
        conds.append(col > spec.max)
    exprs = {"bad": count_if(sa.or_(*conds))}
    if spec.min is not None:
        exprs["below"] = count_if(col < spec.min)

    def finish(v: Mapping[str, Any], total: int) -> CheckResult:
        bad = int(v["bad"])
        below = int(v.get("below", 0))
        bounds = f"[{'-inf' if spec.min is None else f'{spec.min:g}'}, "
        bounds += f"{'+inf' if spec.max is None else f'{spec.max:g}'}]"
        return fraction_result(
            ctx,
            spec,
            bad,
            total,
            f"have {col.name} outside {bounds}",
            {"rows_below_min": below, "rows_above_max": bad - below},
        )

    return Plan(exprs, finish)


@planner(RegexCheck)
def plan_regex(ctx: EvalContext, spec: RegexCheck) -> Plan:
    col = ctx.col(spec.column)
    text = col if isinstance(col.type, sa.String) else sa.cast(col, sa.Text)
    expr = count_if(sa.and_(col.is_not(None), sa.not_(text.regexp_match(spec.pattern))))

    def finish(v: Mapping[str, Any], total: int) -> CheckResult:
        return fraction_result(
            ctx, spec, int(v["bad"]), total, f"have a {col.name} not matching the pattern", {}
        )

    return Plan({"bad": expr}, finish)


@planner(RowCountCheck)
def plan_row_count(ctx: EvalContext, spec: RowCountCheck) -> Plan:
    def finish(_v: Mapping[str, Any], total: int) -> CheckResult:
        low = spec.min is not None and total < spec.min
        high = spec.max is not None and total > spec.max
        bounds = f"[{spec.min if spec.min is not None else 0}, "
        bounds += f"{spec.max if spec.max is not None else 'inf'}]"
        status = QualityStatus.FAILED if low or high else QualityStatus.PASSED
        if spec.warn is not None and spec.fail is None and status == QualityStatus.FAILED:
            status = QualityStatus.WARN  # only a warning level was given
        bound = spec.min if low or spec.max is None else spec.max
        if bound is None:
            raise CheckError("a row_count check needs min, max or both")
        return make_result(
            ctx,
            spec,
            status,
            f"{total} rows in the {ctx.scope_name}; expected {bounds}",
            observed_value=float(total),
            threshold=float(bound),
            total_rows=total,
            details={"row_count": total, "min": spec.min, "max": spec.max},
        )

    return Plan({}, finish, needs_total=True)
