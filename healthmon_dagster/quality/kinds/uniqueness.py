"""unique: a ``GROUP BY <key> HAVING count(*) > 1`` subquery (hash aggregate, parallel on Postgres),
not ``count(DISTINCT ...)`` (which disables parallel workers). Text keys group under
``COLLATE "C"`` on Postgres (byte order: the same groups under any deterministic collation, about
2x faster). In incremental mode, uniqueness of the batch against the rest of the table is an
``EXISTS`` probe (fast through an index on the key)."""

from collections.abc import Mapping, Sequence
from typing import Any

import sqlalchemy as sa
from sqlalchemy.sql.elements import ColumnElement

from healthmon_dagster.config.models import UniqueCheck
from healthmon_dagster.quality.context import CheckError, EvalContext
from healthmon_dagster.quality.grading import fraction_result
from healthmon_dagster.quality.plan import Plan, planner
from healthmon_dagster.quality.result import CheckResult
from healthmon_dagster.quality.sql import group_key, scalar


@planner(UniqueCheck)
def plan_unique(ctx: EvalContext, spec: UniqueCheck) -> Plan:
    cols = [ctx.col(c) for c in spec.columns]
    names = ", ".join(c.name for c in cols)
    not_null = [c.is_not(None) for c in cols]
    batch_col = ctx.col(ctx.batch.column) if ctx.batch is not None else None
    if (
        spec.scope == "latest_file"
        and batch_col is None
        and ctx.batch_column is None
        and "_file_id" not in {c.name for c in ctx.table.c}
    ):
        raise CheckError(
            f"scope latest_file needs a batch column in {ctx.qualified}: add _file_id or "
            "set quality.assets.<asset>.batch_column"
        )

    def duplicates(where: Sequence[ColumnElement[bool]], extra_key: Sequence[Any]) -> int:
        keys = [*extra_key, *(group_key(c) for c in cols)]
        groups = (
            sa.select(sa.func.count().label("n"))
            .where(*where)
            .group_by(*keys)
            .having(sa.func.count() > 1)
            .subquery()
        )
        return int(scalar(ctx, sa.select(sa.func.coalesce(sa.func.sum(groups.c.n - 1), 0))) or 0)

    def finish(_v: Mapping[str, Any], total: int) -> CheckResult:
        scope = ctx.scope
        batch = ctx.batch
        if scope:
            failing = duplicates([*scope, *not_null], [])
            if spec.scope == "table" and batch is not None:  # a scope means a batch
                # Batch keys already present outside the batch: one index probe per batch row.
                other = ctx.table.alias("other")
                clash = sa.exists().where(
                    *(other.c[c.name] == c for c in cols),
                    sa.not_(batch.where(other.c[batch.column])),
                )
                failing += int(scalar(ctx, sa.select(sa.func.count()).where(*scope, clash)) or 0)
        elif spec.scope == "latest_file":
            # The full sweep checks every file: uniqueness holds within each file.
            key_col = batch_col if batch_col is not None else ctx.col("_file_id")
            failing = duplicates(not_null, [key_col])
        else:
            failing = duplicates(not_null, [])
        within = "within each file" if spec.scope == "latest_file" and not scope else ""
        return fraction_result(
            ctx, spec, failing, total, f"repeat a key ({names}) {within}".rstrip(), {}
        )

    return Plan({}, finish, needs_total=True)
