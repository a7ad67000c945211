"""freshness: the age of the newest value of a timestamp column, fused into the row query as
``max(column)``. The last-load check of ``freshness:`` entries is
:func:`~healthmon_dagster.quality.evaluation.evaluate_last_load`."""

from collections.abc import Mapping
from typing import Any

import sqlalchemy as sa

from healthmon_dagster.config.models import FreshnessCheck
from healthmon_dagster.quality.context import EvalContext
from healthmon_dagster.quality.grading import age_result
from healthmon_dagster.quality.plan import Plan, planner
from healthmon_dagster.quality.result import CheckResult
from healthmon_dagster.quality.sql import timestamp_utc


@planner(FreshnessCheck)
def plan_freshness(ctx: EvalContext, spec: FreshnessCheck) -> Plan:
    col = ctx.col(spec.column)

    def finish(v: Mapping[str, Any], _total: int) -> CheckResult:
        return age_result(
            ctx,
            spec,
            timestamp_utc(v["newest"]),
            spec.warn_after_minutes,
            spec.fail_after_minutes,
            f"the newest {col.name}",
        )

    return Plan({"newest": sa.func.max(col)}, finish)
