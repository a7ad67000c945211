"""scd2_integrity: one pass over the table grouped by key (current-row count, bad windows, flag
mismatches), plus a window over the versions of keys that have history only (overlaps)."""

from collections.abc import Mapping
from typing import Any

import sqlalchemy as sa

from healthmon_dagster.config.models import Scd2IntegrityCheck
from healthmon_dagster.quality.context import EvalContext
from healthmon_dagster.quality.grading import count_result
from healthmon_dagster.quality.plan import Plan, planner
from healthmon_dagster.quality.result import CheckResult
from healthmon_dagster.quality.sql import count_if, group_key


@planner(Scd2IntegrityCheck)
def plan_scd2(ctx: EvalContext, spec: Scd2IntegrityCheck) -> Plan:
    key, vf, vt, cur = (
        ctx.col(n) for n in (spec.key, spec.valid_from, spec.valid_to, spec.is_current)
    )
    is_cur, not_cur = cur == sa.true(), cur == sa.false()
    bad_window = sa.and_(vt.is_not(None), vf >= vt)
    bad_flag = sa.or_(sa.and_(is_cur, vt.is_not(None)), sa.and_(not_cur, vt.is_(None)))

    def finish(_v: Mapping[str, Any], _batch_total: int) -> CheckResult:
        # SCD2 integrity is a property of the whole table, so its total is the table's rows, not
        # the batch's. One pass grouped by key; only keys with a problem leave the aggregate.
        nc, bw, bf = (count_if(is_cur), count_if(bad_window), count_if(bad_flag))
        per_key = (
            sa.select(nc.label("nc"), bw.label("bw"), bf.label("bf"))
            .group_by(group_key(key))
            .having(sa.or_(nc != 1, bw > 0, bf > 0))
            .subquery()
        )
        g = per_key.c
        summary = sa.select(
            count_if(g.nc == 0),
            count_if(g.nc > 1),
            sa.func.coalesce(sa.func.sum(g.bw), 0),
            sa.func.coalesce(sa.func.sum(g.bf), 0),
            sa.select(sa.func.count()).select_from(ctx.table).scalar_subquery(),
        )
        # Overlaps: the next version starts before this one ends. Only keys with a closed
        # version have more than one version, so the window sorts those rows only.
        versions = (
            sa.select(
                vt.label("vt"),
                sa.func.lead(vf).over(partition_by=key, order_by=vf).label("nxt"),
            )
            .where(key.in_(sa.select(key).where(not_cur)))
            .subquery()
        )
        overlaps_q = sa.select(sa.func.count()).where(
            versions.c.nxt.is_not(None),
            sa.or_(versions.c.vt.is_(None), versions.c.nxt < versions.c.vt),
        )
        with ctx.engine.connect() as conn:
            no_current, multi_current, windows, flags, total = (
                int(x) for x in conn.execute(summary).one()
            )
            overlaps = int(conn.execute(overlaps_q).scalar() or 0)
        failing = no_current + multi_current + windows + flags + overlaps
        return count_result(
            ctx,
            spec,
            failing,
            f"SCD2 violations in {total} rows ({no_current} keys without a current row, "
            f"{multi_current} keys with several, {overlaps} overlapping versions, {windows} "
            f"windows with {vf.name} >= {vt.name}, {flags} rows whose {cur.name} disagrees with "
            f"{vt.name})",
            {
                "keys_without_current": no_current,
                "keys_with_multiple_current": multi_current,
                "overlapping_versions": overlaps,
                "invalid_windows": windows,
                "current_flag_mismatches": flags,
            },
            total=total,
        )

    return Plan({}, finish, needs_total=True)
