"""identity_stability: a new SCD2 version keeps the identity of the version it replaced.

A version transition is a pair (replaced version ``p``, new version ``n``) of one key with
``p.valid_to = n.valid_from``: the SCD2 merge closes ``p`` and opens ``n`` at the same instant. A
transition changes identity when an identity column has a value in both versions and the values
differ. One aggregate over the transitions counts them, the changed ones, the keys affected and the
changes per column; no key or value leaves the database.

Cost:

- incremental (runs that load a file): only the versions opened by the latest batch
  (``batch_column = <latest value>``) and the versions that end where one of them starts: a first
  statement reads the batch's earliest and latest ``valid_from``, the second joins the batch's
  versions with the versions whose ``valid_to`` lies in that window. On the bundled
  ``core/dim_patient`` both sides are index ranges (``ix_dim_patient_file_id``,
  ``ix_dim_patient_valid_to``): the versions the file opened and the ones its merge closed, however
  large the table. On another table, indexes on the batch column and on the valid_to column do the
  same; without them the table is read.
- full (the daily sweep): every transition of the table, one join of the table with its closed
  versions (a hash join on Postgres).
"""

from collections.abc import Mapping
from typing import Any

import sqlalchemy as sa
from sqlalchemy.sql.elements import ColumnElement

from healthmon_dagster.config.models import IdentityStabilityCheck
from healthmon_dagster.quality.context import INCREMENTAL, EvalContext
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
    batch = ctx.batch if ctx.mode == INCREMENTAL else None
    batch_col = ctx.col(batch.column).name if batch is not None else None

    def finish(_v: Mapping[str, Any], _total: int) -> CheckResult:
        new, old = ctx.table.alias("n"), ctx.table.alias("p")
        changed = {c: new.c[c] != old.c[c] for c in identity}  # NULL on either side: not a change
        any_changed = sa.or_(*changed.values())
        where: list[ColumnElement[bool]] = []
        with ctx.engine.connect() as conn:
            if batch is not None and batch_col is not None:
                in_batch = ctx.table.c[batch_col] == batch.value
                starts = ctx.table.c[valid_from]
                first, last = conn.execute(
                    sa.select(sa.func.min(starts), sa.func.max(starts)).where(in_batch)
                ).one()
                # A replaced version ends where a version of the batch starts: within the
                # batch's window, found by the valid_to index instead of probing every key.
                where += [
                    new.c[batch_col] == batch.value,
                    old.c[valid_to].between(first, last),
                ]
            query = (
                sa.select(
                    sa.func.count().label("transitions"),
                    count_if(any_changed).label("changed"),
                    sa.func.count(sa.distinct(sa.case((any_changed, new.c[key])))).label("keys"),
                    *(count_if(cond).label(f"col{i}") for i, cond in enumerate(changed.values())),
                )
                .select_from(
                    new.join(
                        old,
                        sa.and_(old.c[key] == new.c[key], old.c[valid_to] == new.c[valid_from]),
                    )
                )
                .where(*where)
            )
            row = conn.execute(query).one()._mapping
        transitions, failing, keys = (int(row[n] or 0) for n in ("transitions", "changed", "keys"))
        per_column = {f"changed__{c}": int(row[f"col{i}"] or 0) for i, c in enumerate(identity)}
        scope = "latest batch" if batch is not None else "table"
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
