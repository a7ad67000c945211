"""scd2_integrity: per key, exactly one current version, every window with valid_from < valid_to,
the current flag agreeing with valid_to, and no version starting before the one before it ends.

Scope and cost:

- incremental (runs that load a file): every version of the keys of the latest batch, the keys the
  load could have touched (:func:`~healthmon_dagster.quality.sql.in_latest_batch`). On the bundled
  ``core/dim_patient`` they are the patient ids of the latest file, from ``stg.patients`` through
  its primary key, and their versions come through ``uq_dim_patient_version`` (``patient_id``,
  ``valid_from``), one index probe per patient, in key order: the work follows the file, not the
  table (it cannot be less: a patient's versions are only judged together). On another table the
  keys are those with ``batch_column = <latest value>``; indexes on the batch column and on the
  key keep it O(batch). One query: a window over those versions (overlaps), grouped by key.
- full (the daily sweep): the whole table, one pass grouped by key (current-row count, bad windows,
  flag mismatches), plus a window over the versions of keys that have history only (overlaps).

A key outside the batch is judged by the sweep only: the merge writes the versions of the keys of
the file it merges and no others."""

from collections.abc import Mapping
from typing import Any

import sqlalchemy as sa
from sqlalchemy.sql.elements import ColumnElement

from healthmon_dagster.config.models import Scd2IntegrityCheck
from healthmon_dagster.etl import catalog
from healthmon_dagster.quality.context import EvalContext
from healthmon_dagster.quality.grading import count_result
from healthmon_dagster.quality.plan import Plan, planner
from healthmon_dagster.quality.result import CheckResult
from healthmon_dagster.quality.sql import count_if, group_key, in_latest_batch


def _rules(
    vf: ColumnElement[Any], vt: ColumnElement[Any], cur: ColumnElement[Any]
) -> tuple[ColumnElement[bool], ColumnElement[bool], ColumnElement[bool]]:
    """(is current, window with valid_from >= valid_to, current flag disagreeing with valid_to)."""
    is_cur, not_cur = cur == sa.true(), cur == sa.false()
    bad_window = sa.and_(vt.is_not(None), vf >= vt)
    bad_flag = sa.or_(sa.and_(is_cur, vt.is_not(None)), sa.and_(not_cur, vt.is_(None)))
    return is_cur, bad_window, bad_flag


def _overlaps(vt: ColumnElement[Any], nxt: ColumnElement[Any]) -> ColumnElement[bool]:
    """The next version (by valid_from) starts before this one ends."""
    return sa.and_(nxt.is_not(None), sa.or_(vt.is_(None), nxt < vt))


@planner(Scd2IntegrityCheck)
def plan_scd2(ctx: EvalContext, spec: Scd2IntegrityCheck) -> Plan:
    key, vf, vt, cur = (
        ctx.col(n) for n in (spec.key, spec.valid_from, spec.valid_to, spec.is_current)
    )
    in_batch = in_latest_batch(ctx, key)

    def whole_table() -> tuple[int, int, int, int, int, int]:
        # One pass grouped by key; only keys with a problem leave the aggregate.
        is_cur, bad_window, bad_flag = _rules(vf, vt, cur)
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
        # Only keys with a closed version have more than one version, so the window sorts
        # those rows only.
        versions = (
            sa.select(
                vt.label("vt"),
                sa.func.lead(vf).over(partition_by=key, order_by=vf).label("nxt"),
            )
            .where(key.in_(sa.select(key).where(cur == sa.false())))
            .subquery()
        )
        overlaps_q = sa.select(sa.func.count()).where(_overlaps(versions.c.vt, versions.c.nxt))
        with ctx.engine.connect() as conn:
            no_current, multi_current, windows, flags, total = (
                int(x) for x in conn.execute(summary).one()
            )
            overlaps = int(conn.execute(overlaps_q).scalar() or 0)
        return no_current, multi_current, windows, flags, overlaps, total

    def batch(in_scope: ColumnElement[Any]) -> tuple[int, int, int, int, int, int, int]:
        # Every version of the batch's keys, with the start of the next one, grouped by key.
        versions = sa.select(
            key.label("k"),
            vf.label("vf"),
            vt.label("vt"),
            cur.label("cur"),
            sa.func.lead(vf).over(partition_by=key, order_by=vf).label("nxt"),
        ).where(in_scope)
        v = versions.subquery().c
        is_cur, bad_window, bad_flag = _rules(v.vf, v.vt, v.cur)
        per_key = (
            sa.select(
                sa.func.count().label("n"),
                count_if(is_cur).label("nc"),
                count_if(bad_window).label("bw"),
                count_if(bad_flag).label("bf"),
                count_if(_overlaps(v.vt, v.nxt)).label("ov"),
            )
            .group_by(group_key(v.k))
            .subquery()
        )
        g = per_key.c
        summary = sa.select(
            count_if(g.nc == 0),
            count_if(g.nc > 1),
            *(sa.func.coalesce(sa.func.sum(c), 0) for c in (g.bw, g.bf, g.ov, g.n)),
            sa.func.count(),
        )
        with ctx.engine.connect() as conn:
            no_current, multi, windows, flags, overlaps, total, n_keys = (
                int(x) for x in conn.execute(summary).one()
            )
        return no_current, multi, windows, flags, overlaps, total, n_keys

    def finish(_v: Mapping[str, Any], _batch_total: int) -> CheckResult:
        scope: dict[str, int] = {}
        if in_batch is None:
            no_current, multi_current, windows, flags, overlaps, total = whole_table()
            where = f"the {total} rows of the table"
        else:
            no_current, multi_current, windows, flags, overlaps, total, n_keys = batch(in_batch)
            what = "patients" if catalog.asset(ctx.asset) is catalog.CORE_DIM_PATIENT else "keys"
            where = f"the {total} versions of the {n_keys} {what} of the latest batch"
            scope = {"keys_checked": n_keys}
        failing = no_current + multi_current + windows + flags + overlaps
        return count_result(
            ctx,
            spec,
            failing,
            f"SCD2 violations in {where} ({no_current} keys without a current row, "
            f"{multi_current} keys with several, {overlaps} overlapping versions, {windows} "
            f"windows with {vf.name} >= {vt.name}, {flags} rows whose {cur.name} disagrees with "
            f"{vt.name})",
            {
                "keys_without_current": no_current,
                "keys_with_multiple_current": multi_current,
                "overlapping_versions": overlaps,
                "invalid_windows": windows,
                "current_flag_mismatches": flags,
                **scope,
            },
            total=total,
        )

    return Plan({}, finish)
