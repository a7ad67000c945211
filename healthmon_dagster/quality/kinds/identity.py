"""identity_stability: a new SCD2 version keeps the identity of the version it replaced.

A version transition is a pair (replaced version ``p``, new version ``n``) of one key with
``p.valid_to = n.valid_from``: the SCD2 merge closes ``p`` and opens ``n`` at the same instant. A
transition changes identity when an identity column has a value in both versions and the values
differ. One aggregate over the transitions counts them, the changed ones, the keys affected and the
changes per column; no key or value leaves the database.

Cost:

- incremental (runs that load a file): only the versions opened by the latest batch
  (``batch_column = <latest value>``) and the versions that end where one of them starts: a first
  statement reads the batch's earliest and latest ``valid_from`` (``ix_dim_patient_file_id`` on
  the bundled ``core/dim_patient``), the second sets apart the versions whose ``valid_to`` lies in
  that window (a materialized CTE, an ``ix_dim_patient_valid_to`` range: the versions the file's
  merge closed), finds the version that replaced each through ``uq_dim_patient_version`` and
  counts those of the batch: work in proportion to the file, however large the table. On another
  table, indexes on the batch column, on valid_to and on (key, valid_from) do the same; without
  them the table is read.
- full (the daily sweep): every transition of the table, one join of the table with its closed
  versions (a hash join on Postgres).
"""

from collections.abc import Mapping
from typing import Any

import sqlalchemy as sa
from sqlalchemy.sql.elements import ColumnElement

from healthmon_dagster.config.models import IdentityStabilityCheck
from healthmon_dagster.quality.context import INCREMENTAL, EvalContext, windowed
from healthmon_dagster.quality.grading import count_result
from healthmon_dagster.quality.plan import Plan, planner
from healthmon_dagster.quality.result import CheckResult
from healthmon_dagster.quality.sql import count_if


@planner(IdentityStabilityCheck)
def plan_identity_stability(ctx: EvalContext, spec: IdentityStabilityCheck) -> Plan:
    key, valid_from, valid_to = (
        ctx.col(n).name for n in (spec.key, spec.valid_from, spec.valid_to)
    )
    identity = [ctx.col(c).name for c in spec.identity_columns]
    ctx = windowed(ctx, spec.window_hours)
    batch = ctx.batch if ctx.mode == INCREMENTAL else None
    batch_col = ctx.col(batch.column).name if batch is not None else None

    def finish(_v: Mapping[str, Any], _total: int) -> CheckResult:
        new, table = ctx.table.alias("n"), ctx.table
        counted: ColumnElement[bool] = sa.true()
        with ctx.engine.connect() as conn:
            if batch is not None and batch_col is not None:
                first, last = conn.execute(
                    sa.select(
                        sa.func.min(table.c[valid_from]), sa.func.max(table.c[valid_from])
                    ).where(batch.where(table.c[batch_col]))
                ).one()
                # The versions that end where a version of the batch starts: within the batch's
                # window (an index range on valid_to), set apart first, so that each finds the
                # version that replaced it by key (uq_dim_patient_version), and no version of
                # the batch probes that range (every version of a merged file starts at the
                # same instant). The batch is counted, not filtered: a filter on the batch
                # column would let the planner start from it with an estimate made before the
                # batch existed.
                replaced = table.alias("p")
                old: sa.FromClause = (
                    sa.select(*(replaced.c[c] for c in dict.fromkeys([key, valid_to, *identity])))
                    .where(replaced.c[valid_to].between(first, last))
                    .cte("replaced")
                    .prefix_with("MATERIALIZED")
                )
                counted = batch.where(new.c[batch_col])
            else:
                old = table.alias("p")
            changed = {c: new.c[c] != old.c[c] for c in identity}  # NULL on a side: no change
            any_changed = sa.and_(counted, sa.or_(*changed.values()))
            query = sa.select(
                count_if(counted).label("transitions"),
                count_if(any_changed).label("changed"),
                sa.func.count(sa.distinct(sa.case((any_changed, new.c[key])))).label("keys"),
                *(
                    count_if(sa.and_(counted, cond)).label(f"col{i}")
                    for i, cond in enumerate(changed.values())
                ),
            ).select_from(
                old.join(
                    new, sa.and_(new.c[key] == old.c[key], new.c[valid_from] == old.c[valid_to])
                )
            )
            row = conn.execute(query).one()._mapping
        transitions, failing, keys = (int(row[n] or 0) for n in ("transitions", "changed", "keys"))
        per_column = {f"changed__{c}": int(row[f"col{i}"] or 0) for i, c in enumerate(identity)}
        scope = ctx.scope_name
        return count_result(
            ctx,
            spec,
            failing,
            f"of {transitions} version changes in the {scope} keep the {key} but change its "
            f"{' or '.join(identity)} ({keys} distinct {key} affected; changed: "
            + ", ".join(f"{c} {n}" for c, n in zip(identity, per_column.values(), strict=True))
            + ")",
            {"version_changes": transitions, "keys_affected": keys, **per_column},
            total=transitions,
        )

    return Plan({}, finish)
