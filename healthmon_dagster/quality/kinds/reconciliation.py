"""Rows accounted for between layers: reconciliation (raw vs stg per landing file, stg vs core
current versions) and rejection_rate (the share of a staging table's rows that were rejected).

Cost in incremental mode (runs that load a file): counts of the latest file's rows through each
table's (``_file_id``, ``_row_number``) key; stg vs core reads the versions the file opened through
``ix_dim_patient_file_id`` and probes ``uq_dim_patient_current`` only for the patients the file
re-sent unchanged. The full sweep counts every staged file."""

from collections.abc import Mapping
from typing import Any

import sqlalchemy as sa
from sqlalchemy import exc as sa_exc

from healthmon_dagster.config.models import ReconciliationCheck, RejectionRateCheck
from healthmon_dagster.etl import catalog
from healthmon_dagster.quality.context import INCREMENTAL, CheckError, EvalContext, windowed
from healthmon_dagster.quality.grading import count_result, grade, make_result, rate
from healthmon_dagster.quality.plan import Plan, planner
from healthmon_dagster.quality.result import CheckResult
from healthmon_dagster.quality.sql import scalar
from healthmon_dagster.store.tables import files

_STG = catalog.STG_PATIENTS.table
_STG_REJECTED = catalog.STG_PATIENTS_REJECTED.table


def _reflect(ctx: EvalContext, qualified: str) -> sa.Table:
    schema, _, name = qualified.rpartition(".")
    try:
        return sa.Table(name, sa.MetaData(), schema=schema or None, autoload_with=ctx.engine)
    except sa_exc.NoSuchTableError:
        raise CheckError(f"table {qualified} does not exist in the warehouse") from None


def _rejected_pair(ctx: EvalContext) -> tuple[sa.Table, sa.Table]:
    """(accepted, rejected) tables of a staging asset: ``x`` and ``x_rejected``."""
    if ctx.asset in (catalog.STG_PATIENTS.key, catalog.STG_PATIENTS_REJECTED.key):
        return _STG, _STG_REJECTED
    t = ctx.table
    schema = f"{t.schema}." if t.schema else ""
    if t.name.endswith("_rejected"):
        return _reflect(ctx, schema + t.name[: -len("_rejected")]), t
    return t, _reflect(ctx, f"{schema}{t.name}_rejected")


@planner(RejectionRateCheck)
def plan_rejection_rate(ctx: EvalContext, spec: RejectionRateCheck) -> Plan:
    ctx = windowed(ctx, spec.window_hours)
    accepted, rejected = _rejected_pair(ctx)
    default_warn, default_fail = ctx.rejection_rate
    warn = spec.warn if spec.warn is not None else default_warn
    fail = spec.fail if spec.fail is not None else default_fail

    def finish(_v: Mapping[str, Any], _total: int) -> CheckResult:
        def count(t: sa.Table) -> int:
            where = []
            if ctx.mode == INCREMENTAL and ctx.batch is not None and ctx.batch.column in t.c:
                where.append(ctx.batch.where(t.c[ctx.batch.column]))
            return int(scalar(ctx, sa.select(sa.func.count()).select_from(t).where(*where)) or 0)

        n_rejected, n_accepted = count(rejected), count(accepted)
        total = n_rejected + n_accepted
        fraction = rate(n_rejected, total)
        status = grade(fraction, warn, fail)
        return make_result(
            ctx,
            spec,
            status,
            f"{n_rejected} of {total} rows ({fraction:.2%}) of the {ctx.scope_name} were rejected; "
            f"warn above {warn:.2%}, fail above {fail:.2%}",
            observed_value=fraction,
            threshold=fail,
            failing_rows=n_rejected,
            total_rows=total,
            details={
                "rows_rejected": n_rejected,
                "rows_accepted": n_accepted,
                "rejection_rate": fraction,
                "warn_threshold": warn,
                "fail_threshold": fail,
            },
        )

    return Plan({}, finish)


@planner(ReconciliationCheck)
def plan_reconciliation(ctx: EvalContext, spec: ReconciliationCheck) -> Plan:
    if catalog.asset(ctx.asset) is None:
        raise CheckError(
            f"reconciliation {spec.between} is defined for the bundled patients pipeline "
            f"(raw/patients, stg/patients, core/dim_patient), not for {ctx.asset}; use a "
            "custom_sql check that returns the unreconciled rows"
        )
    batch = ctx.batch if ctx.mode == INCREMENTAL else None

    def raw_vs_stg(_v: Mapping[str, Any], _total: int) -> CheckResult:
        staged = sa.select(files.c.file_id).where(files.c.staged_at.is_not(None))
        if batch is not None:
            staged = staged.where(batch.where(files.c.file_id))
        # Per staged file, three counts through each table's (_file_id, _row_number) key.
        f = files.c
        per_file = sa.select(
            f.file_id,
            *(
                sa.select(sa.func.count())
                .where(t.c._file_id == f.file_id)
                .scalar_subquery()
                .label(name)
                for name, t in (
                    ("raw", catalog.RAW_PATIENTS.table),
                    ("stg", _STG),
                    ("rejected", _STG_REJECTED),
                )
            ),
        ).where(f.file_id.in_(staged))
        counts: dict[str, dict[int, int]] = {"raw": {}, "stg": {}, "rejected": {}}
        with ctx.engine.connect() as conn:
            for row in conn.execute(per_file):
                for name in counts:
                    counts[name][int(row.file_id)] = int(row._mapping[name])
        file_ids: set[int] = set().union(*(c.keys() for c in counts.values()))
        diff = {
            f: counts["raw"].get(f, 0) - counts["stg"].get(f, 0) - counts["rejected"].get(f, 0)
            for f in file_ids
        }
        failing = sum(abs(d) for d in diff.values())
        raw_total = sum(counts["raw"].values())
        return count_result(
            ctx,
            spec,
            failing,
            f"rows unaccounted for between raw and stg (staged + rejected) over {len(file_ids)} "
            f"staged file(s), {sum(1 for d in diff.values() if d)} file(s) off",
            {
                "raw_rows": raw_total,
                "stg_rows": sum(counts["stg"].values()),
                "rejected_rows": sum(counts["rejected"].values()),
                "files_checked": len(file_ids),
                "files_mismatched": sum(1 for d in diff.values() if d),
            },
            total=raw_total,
        )

    def stg_vs_core(_v: Mapping[str, Any], _total: int) -> CheckResult:
        s, d = _STG, catalog.CORE_DIM_PATIENT.table
        merged = sa.select(files.c.file_id).where(files.c.merged_at.is_not(None))
        in_scope = batch.where(s.c._file_id) if batch is not None else s.c._file_id.in_(merged)
        # Every staged patient of a merged file has a current version (through the partial
        # unique index on patient_id WHERE is_current).
        if batch is None:
            # A plain anti-join (hashed on Postgres), not a per-row probe inside an aggregate.
            has_current = sa.exists().where(d.c.patient_id == s.c.id, d.c.is_current)
            missing_q = sa.select(sa.func.count()).where(in_scope, ~has_current)
        else:
            # The merge gave every new or changed patient of the file a current version of this
            # file (ix_dim_patient_file_id): the ids of those versions, hashed once (NOT IN: a
            # hashed subplan on Postgres, a temporary index on SQLite, whatever the estimates),
            # leave the patients re-sent unchanged, and only they are probed for a current
            # version of an earlier file. Materialized, so the planner cannot probe every row.
            own = sa.select(d.c.patient_id).where(batch.where(d.c._file_id), d.c.is_current)
            leftover = (
                sa.select(s.c.id.label("id"))
                .where(in_scope, s.c.id.not_in(own))
                .cte("leftover")
                .prefix_with("MATERIALIZED")
            )
            probe = sa.exists().where(d.c.patient_id == leftover.c.id, d.c.is_current)
            missing_q = sa.select(sa.func.count()).select_from(leftover).where(~probe)
        total_q = sa.select(sa.func.count()).where(in_scope)
        with ctx.engine.connect() as conn:
            missing, total = conn.execute(
                sa.select(missing_q.scalar_subquery(), total_q.scalar_subquery())
            ).one()
        return count_result(
            ctx,
            spec,
            int(missing),
            f"of {int(total)} staged rows of merged files have no current row in core",
            {"stg_rows": int(total)},
            total=int(total),
        )

    return Plan({}, raw_vs_stg if spec.between == "raw_vs_stg" else stg_vs_core)
