"""custom_sql: a query that returns the failing rows; their count is graded. A query that uses
``:batch`` runs on the latest batch, and in the full sweep once for every batch of the table."""

from collections.abc import Mapping
from typing import Any

import sqlalchemy as sa

from healthmon_dagster.config.models import CustomSqlCheck
from healthmon_dagster.quality.context import FULL, CheckError, EvalContext
from healthmon_dagster.quality.grading import count_result
from healthmon_dagster.quality.plan import Plan, planner
from healthmon_dagster.quality.result import CheckResult


@planner(CustomSqlCheck)
def plan_custom_sql(ctx: EvalContext, spec: CustomSqlCheck) -> Plan:
    query = sa.text(spec.sql)
    uses_batch = "batch" in query._bindparams  # noqa: SLF001 - the documented :batch parameter
    batch = ctx.batch
    if uses_batch and batch is None:
        raise CheckError("the custom SQL uses :batch but the asset has no batch yet")

    def finish(_v: Mapping[str, Any], _total: int) -> CheckResult:
        counted = sa.select(sa.func.count()).select_from(query.columns().subquery("custom"))
        with ctx.engine.connect() as conn:
            if not uses_batch or batch is None:
                failing = int(conn.execute(counted).scalar() or 0)
            elif ctx.mode != FULL:  # once for every file of the batch
                failing = sum(
                    int(conn.execute(counted, {"batch": b}).scalar() or 0) for b in batch.values
                )
            else:  # the full sweep runs a per-batch query once for every batch of the table
                column = ctx.table.c[batch.column]
                batches = conn.execute(sa.select(column).distinct()).scalars().all()
                failing = sum(
                    int(conn.execute(counted, {"batch": b}).scalar() or 0) for b in batches
                )
        return count_result(ctx, spec, failing, "failing row(s) returned by the custom SQL", {})

    return Plan({}, finish)
