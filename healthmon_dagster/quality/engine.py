"""Quality checks from config, evaluated as SQL in the warehouse.

:func:`evaluate` takes the check specs of one asset (``quality.assets.<key>.checks``) and returns one
:class:`CheckResult` per spec, in order. Cost model:

- Row-level checks (not_null, accepted_values, range, regex, row_count, freshness) of one table are
  fused into ONE aggregate query of ``count(*) FILTER (WHERE <row breaks rule>)`` expressions, which
  Postgres runs with parallel workers.
- ``unique`` is a ``GROUP BY <key> HAVING count(*) > 1`` subquery (hash aggregate, parallel), not
  ``count(DISTINCT ...)`` (which disables parallel workers); text keys group under ``COLLATE "C"``
  on Postgres (byte order: same groups under any deterministic collation, about 2x faster).
- ``scd2_integrity`` is one pass grouped by key (current-row count, bad windows, flag mismatches)
  plus a window over the versions of keys that have history only.

Modes: ``incremental`` (default for runs that load a file) evaluates row-level checks and
per-file checks on the latest batch only (``_file_id`` of the latest file in ``etl.files`` for the
bundled tables, ``max(batch_column)`` for others): cost grows with the batch, not with the table;
uniqueness of the batch against the rest of the table is an ``EXISTS`` probe (fast through an index
on the key). ``full`` evaluates every check over the whole table (the scheduled sweep).

A check that cannot be evaluated (missing table or column, SQL error) returns status ``error`` with a
message that names the table/column and what to do; it never passes.
"""

import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Engine
from sqlalchemy.sql.elements import ColumnElement

from healthmon_dagster.config.models import (
    AcceptedValuesCheck,
    CustomSqlCheck,
    FreshnessCheck,
    NotNullCheck,
    RangeCheck,
    ReconciliationCheck,
    RegexCheck,
    RejectionRateCheck,
    RowCountChangeCheck,
    RowCountCheck,
    Scd2IntegrityCheck,
    SchemaCheck,
    UniqueCheck,
    VolumeAnomalyCheck,
)
from healthmon_dagster.quality.results import (
    ERROR,
    FAILED,
    INSUFFICIENT_HISTORY,
    PASSED,
    WARN,
    CheckResult,
)
from healthmon_dagster.store.errors import error_text
from healthmon_dagster.store.metrics import as_utc
from healthmon_dagster.store.tables import (
    check_results,
    dim_patient,
    files,
    metrics,
    raw_patients,
    stg_patients,
    stg_patients_rejected,
)

FULL = "full"
INCREMENTAL = "incremental"
MODES = (FULL, INCREMENTAL)

LAST_LOAD_IS_FRESH = "last_load_is_fresh"
"""Name of the generated last-load freshness check of every asset with a ``freshness:`` entry."""

BUNDLED_TABLES: dict[str, sa.Table] = {
    "raw/patients": raw_patients,
    "stg/patients": stg_patients,
    "stg/patients_rejected": stg_patients_rejected,
    "core/dim_patient": dim_patient,
}
# When a bundled table's batch (a landing file) counts as arrived in it, from the etl.files audit.
_FILE_ARRIVED: dict[str, ColumnElement[bool]] = {
    "raw/patients": files.c.status.in_(("loaded", "empty")),
    "stg/patients": sa.and_(files.c.status == "loaded", files.c.staged_at.is_not(None)),
    "stg/patients_rejected": sa.and_(files.c.status == "loaded", files.c.staged_at.is_not(None)),
    "core/dim_patient": sa.and_(files.c.status == "loaded", files.c.merged_at.is_not(None)),
}
_FILE_LOADED_AT: dict[str, sa.Column[Any]] = {
    "raw/patients": files.c.loaded_at,
    "stg/patients": files.c.staged_at,
    "stg/patients_rejected": files.c.staged_at,
    "core/dim_patient": files.c.merged_at,
}
# Per-load volume of the bundled assets, as the assets record it in etl.metrics.
VOLUME_METRICS: dict[str, tuple[str, str]] = {
    "raw/patients": ("raw_loader", "rows_loaded"),
    "stg/patients": ("staging_transformer", "rows_in"),
    "stg/patients_rejected": ("staging_transformer", "rows_rejected"),
    "core/dim_patient": ("core_merger", "rows_in"),
}
LAYER_COMPONENTS = {"raw": "raw_loader", "stg": "staging_transformer", "core": "core_merger"}
DEFAULT_COMPONENT = "data_quality"
VOLUME_HISTORY_LIMIT = 400


def component_for(asset: str) -> str:
    """The health component an asset's check metrics belong to (by layer: raw/stg/core)."""
    return LAYER_COMPONENTS.get(asset.split("/", 1)[0], DEFAULT_COMPONENT)


class CheckError(Exception):
    """A check cannot be evaluated; the message says what is missing and what to do."""


@dataclass(frozen=True)
class Batch:
    """The rows of one load: ``column = value`` (``_file_id`` of the latest file, by default)."""

    column: str
    value: Any


Spec = Any  # one of the QualityCheckSpec models


@dataclass
class _Ctx:
    engine: Engine
    health: Engine
    asset: str
    table: sa.Table
    mode: str
    batch: Batch | None
    now: datetime
    rejection_rate: tuple[float, float]
    batch_column: str | None

    @property
    def qualified(self) -> str:
        return f"{self.table.schema}.{self.table.name}" if self.table.schema else self.table.name

    def col(self, name: str) -> sa.Column[Any]:
        for column in self.table.c:
            if column.name == name or column.name.lower() == name.lower():
                return column
        raise CheckError(
            f"column {name} does not exist in {self.qualified} "
            f"(columns: {', '.join(c.name for c in self.table.c)}); fix the check's column in "
            "healthmon.yaml or the table"
        )

    @property
    def scope(self) -> list[ColumnElement[bool]]:
        """The row filter of row-level checks: the batch in incremental mode, else nothing."""
        if self.mode == INCREMENTAL and self.batch is not None:
            return [self.col(self.batch.column) == self.batch.value]
        return []

    @property
    def scope_name(self) -> str:
        return "latest batch" if self.scope else "table"


@dataclass
class _Plan:
    """How one spec is evaluated: aggregate expressions fused into the table's row query (may be
    empty), then ``finish(values, total)`` (which may run queries of its own)."""

    exprs: dict[str, ColumnElement[Any]] = field(default_factory=dict)
    finish: Callable[[Mapping[str, Any], int], CheckResult] | None = None
    needs_total: bool = False


# --- thresholds --------------------------------------------------------------------------------


def _fraction_thresholds(spec: Spec) -> tuple[float | None, float | None]:
    """(warn, fail) as failing fractions; ``mostly`` is ``fail = 1 - mostly``; no threshold at
    all means any failing row fails."""
    mostly = getattr(spec, "mostly", None)
    if spec.fail is not None:
        fail: float | None = spec.fail
    elif mostly is not None:
        fail = round(1.0 - mostly, 12)
    else:
        fail = 0.0 if spec.warn is None else None
    return spec.warn, fail


def _count_thresholds(spec: Spec) -> tuple[float | None, float | None]:
    fail = spec.fail if spec.fail is not None else (0.0 if spec.warn is None else None)
    return spec.warn, fail


def _grade(value: float, warn: float | None, fail: float | None) -> str:
    if fail is not None and value > fail:
        return FAILED
    if warn is not None and value > warn:
        return WARN
    return PASSED


def _rate(n: int, total: int) -> float:
    return n / total if total else 0.0


def _result(ctx: _Ctx, spec: Spec, status: str, message: str, **kw: Any) -> CheckResult:
    details = {k: float(v) for k, v in kw.pop("details", {}).items() if v is not None}
    return CheckResult(
        check_name=spec.check_name,
        asset=ctx.asset,
        kind=spec.kind,
        status=status,
        message=message,
        details=details,
        blocking=spec.blocking,
        **kw,
    )


def _fraction_result(
    ctx: _Ctx, spec: Spec, failing: int, total: int, what: str, details: dict[str, float]
) -> CheckResult:
    warn, fail = _fraction_thresholds(spec)
    rate = _rate(failing, total)
    status = _grade(rate, warn, fail)
    limit = fail if status == FAILED or warn is None else warn
    message = f"{failing} of {total} rows ({rate:.2%}) of the {ctx.scope_name} {what}" + (
        f"; allowed: {limit:.2%}" if limit is not None else ""
    )
    return _result(
        ctx,
        spec,
        status,
        message,
        observed_value=rate,
        threshold=fail if fail is not None else warn,
        failing_rows=failing,
        total_rows=total,
        details={
            "failing_rows": failing,
            "total_rows": total,
            "failing_fraction": rate,
            **({"warn_threshold": warn} if warn is not None else {}),
            **({"fail_threshold": fail} if fail is not None else {}),
            **details,
        },
    )


def _count_result(
    ctx: _Ctx,
    spec: Spec,
    failing: int,
    what: str,
    details: dict[str, float],
    total: int | None = None,
) -> CheckResult:
    warn, fail = _count_thresholds(spec)
    status = _grade(failing, warn, fail)
    limit = fail if status == FAILED or warn is None else warn
    message = f"{failing} {what}" + (f"; allowed: {limit:g}" if limit is not None else "")
    return _result(
        ctx,
        spec,
        status,
        message,
        observed_value=float(failing),
        threshold=fail if fail is not None else warn,
        failing_rows=failing,
        total_rows=total,
        details={
            "failing_rows": failing,
            **({"total_rows": total} if total is not None else {}),
            **({"warn_threshold": warn} if warn is not None else {}),
            **({"fail_threshold": fail} if fail is not None else {}),
            **details,
        },
    )


def _count_if(cond: ColumnElement[bool]) -> ColumnElement[int]:
    return sa.func.count().filter(cond)


def _group_key(ctx: _Ctx, column: sa.Column[Any]) -> ColumnElement[Any]:
    """The key as grouped: text under COLLATE "C" on Postgres (equality is the same, hashing
    and comparing bytes is cheaper than the database's default collation)."""
    if ctx.engine.dialect.name == "postgresql" and isinstance(column.type, sa.String):
        return column.collate("C")
    return column


# --- row-level checks (fused) ----------------------------------------------------------------


def _plan_not_null(ctx: _Ctx, spec: NotNullCheck) -> _Plan:
    cols = [ctx.col(c) for c in spec.columns]
    exprs = {f"null_{i}": _count_if(c.is_(None)) for i, c in enumerate(cols)}
    if len(cols) > 1:
        exprs["any"] = _count_if(sa.or_(*(c.is_(None) for c in cols)))

    def finish(v: Mapping[str, Any], total: int) -> CheckResult:
        failing = int(v["any"] if len(cols) > 1 else v["null_0"])
        per_column = {f"null_rows__{c.name}": int(v[f"null_{i}"]) for i, c in enumerate(cols)}
        names = ", ".join(c.name for c in cols)
        return _fraction_result(ctx, spec, failing, total, f"have NULL in {names}", per_column)

    return _Plan(exprs, finish)


def _plan_accepted_values(ctx: _Ctx, spec: AcceptedValuesCheck) -> _Plan:
    col = ctx.col(spec.column)

    def finish(v: Mapping[str, Any], total: int) -> CheckResult:
        return _fraction_result(
            ctx,
            spec,
            int(v["bad"]),
            total,
            f"have a {col.name} outside the {len(spec.values)} accepted values",
            {},
        )

    # NULL is not judged here (not_null is its own check), as in dbt and Great Expectations.
    return _Plan({"bad": _count_if(col.not_in(spec.values))}, finish)


def _plan_range(ctx: _Ctx, spec: RangeCheck) -> _Plan:
    col = ctx.col(spec.column)
    conds = []
    if spec.min is not None:
        conds.append(col < spec.min)
    if spec.max is not None:
        conds.append(col > spec.max)
    exprs = {"bad": _count_if(sa.or_(*conds))}
    if spec.min is not None:
        exprs["below"] = _count_if(col < spec.min)

    def finish(v: Mapping[str, Any], total: int) -> CheckResult:
        bad = int(v["bad"])
        below = int(v.get("below", 0))
        bounds = f"[{'-inf' if spec.min is None else f'{spec.min:g}'}, "
        bounds += f"{'+inf' if spec.max is None else f'{spec.max:g}'}]"
        return _fraction_result(
            ctx,
            spec,
            bad,
            total,
            f"have {col.name} outside {bounds}",
            {"rows_below_min": below, "rows_above_max": bad - below},
        )

    return _Plan(exprs, finish)


def _plan_regex(ctx: _Ctx, spec: RegexCheck) -> _Plan:
    col = ctx.col(spec.column)
    text = col if isinstance(col.type, sa.String) else sa.cast(col, sa.Text)
    expr = _count_if(sa.and_(col.is_not(None), sa.not_(text.regexp_match(spec.pattern))))

    def finish(v: Mapping[str, Any], total: int) -> CheckResult:
        return _fraction_result(
            ctx, spec, int(v["bad"]), total, f"have a {col.name} not matching the pattern", {}
        )

    return _Plan({"bad": expr}, finish)


def _plan_row_count(ctx: _Ctx, spec: RowCountCheck) -> _Plan:
    def finish(_v: Mapping[str, Any], total: int) -> CheckResult:
        low = spec.min is not None and total < spec.min
        high = spec.max is not None and total > spec.max
        bounds = f"[{spec.min if spec.min is not None else 0}, "
        bounds += f"{spec.max if spec.max is not None else 'inf'}]"
        status = FAILED if low or high else PASSED
        if spec.warn is not None and spec.fail is None and status == FAILED:
            status = WARN  # only a warning level was given
        return _result(
            ctx,
            spec,
            status,
            f"{total} rows in the {ctx.scope_name}; expected {bounds}",
            observed_value=float(total),
            threshold=float(spec.min if low or spec.max is None else spec.max or 0),
            total_rows=total,
            details={"row_count": total, "min": spec.min, "max": spec.max},
        )

    return _Plan({}, finish, needs_total=True)


def _as_utc(ts: Any) -> datetime | None:
    if ts is None:
        return None
    if isinstance(ts, str):
        ts = datetime.fromisoformat(ts)
    if not isinstance(ts, datetime):  # a DATE column
        ts = datetime(ts.year, ts.month, ts.day)
    return as_utc(ts)


def _age_result(
    ctx: _Ctx,
    spec: Spec,
    newest: datetime | None,
    warn_min: float | None,
    fail_min: float,
    what: str,
) -> CheckResult:
    if newest is None:
        return _result(
            ctx,
            spec,
            FAILED,
            f"no {what} found: the asset has never been loaded",
            threshold=float(fail_min),
            details={"fail_after_minutes": fail_min},
        )
    age = max((ctx.now - newest).total_seconds() / 60, 0.0)
    status = (
        FAILED if age > fail_min else WARN if warn_min is not None and age > warn_min else PASSED
    )
    return _result(
        ctx,
        spec,
        status,
        f"{what} is {age:.0f} minutes old; warn after {warn_min or '-'}, fail after {fail_min}",
        observed_value=age,
        threshold=float(fail_min),
        details={
            "age_minutes": age,
            "fail_after_minutes": fail_min,
            **({"warn_after_minutes": warn_min} if warn_min is not None else {}),
        },
    )


def _plan_freshness(ctx: _Ctx, spec: FreshnessCheck) -> _Plan:
    col = ctx.col(spec.column)

    def finish(v: Mapping[str, Any], _total: int) -> CheckResult:
        return _age_result(
            ctx,
            spec,
            _as_utc(v["newest"]),
            spec.warn_after_minutes,
            spec.fail_after_minutes,
            f"the newest {col.name}",
        )

    return _Plan({"newest": sa.func.max(col)}, finish)


# --- checks with queries of their own --------------------------------------------------------


def _scalar(ctx: _Ctx, query: sa.Select[Any]) -> Any:
    with ctx.engine.connect() as conn:
        return conn.execute(query).scalar()


def _plan_unique(ctx: _Ctx, spec: UniqueCheck) -> _Plan:
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

    def duplicates(where: list[ColumnElement[bool]], extra_key: list[Any]) -> int:
        keys = [*extra_key, *(_group_key(ctx, c) for c in cols)]
        groups = (
            sa.select(sa.func.count().label("n"))
            .where(*where)
            .group_by(*keys)
            .having(sa.func.count() > 1)
            .subquery()
        )
        return int(_scalar(ctx, sa.select(sa.func.coalesce(sa.func.sum(groups.c.n - 1), 0))) or 0)

    def finish(_v: Mapping[str, Any], total: int) -> CheckResult:
        scope = ctx.scope
        if scope:
            failing = duplicates([*scope, *not_null], [])
            if spec.scope == "table":
                # Batch keys already present outside the batch: one index probe per batch row.
                other = ctx.table.alias("other")
                clash = sa.exists().where(
                    *(other.c[c.name] == c for c in cols),
                    other.c[ctx.batch.column] != ctx.batch.value,  # type: ignore[union-attr]
                )
                failing += int(_scalar(ctx, sa.select(sa.func.count()).where(*scope, clash)) or 0)
        elif spec.scope == "latest_file":
            # The full sweep checks every file: uniqueness holds within each file.
            key_col = batch_col if batch_col is not None else ctx.col("_file_id")
            failing = duplicates(not_null, [key_col])
        else:
            failing = duplicates(not_null, [])
        within = "within each file" if spec.scope == "latest_file" and not scope else ""
        return _fraction_result(
            ctx, spec, failing, total, f"repeat a key ({names}) {within}".rstrip(), {}
        )

    return _Plan({}, finish, needs_total=True)


def _plan_scd2(ctx: _Ctx, spec: Scd2IntegrityCheck) -> _Plan:
    key, vf, vt, cur = (
        ctx.col(n) for n in (spec.key, spec.valid_from, spec.valid_to, spec.is_current)
    )
    is_cur, not_cur = cur == sa.true(), cur == sa.false()
    bad_window = sa.and_(vt.is_not(None), vf >= vt)
    bad_flag = sa.or_(sa.and_(is_cur, vt.is_not(None)), sa.and_(not_cur, vt.is_(None)))

    def finish(_v: Mapping[str, Any], _batch_total: int) -> CheckResult:
        # SCD2 integrity is a property of the whole table, so its total is the table's rows, not
        # the batch's. One pass grouped by key; only keys with a problem leave the aggregate.
        nc, bw, bf = (_count_if(is_cur), _count_if(bad_window), _count_if(bad_flag))
        per_key = (
            sa.select(nc.label("nc"), bw.label("bw"), bf.label("bf"))
            .group_by(_group_key(ctx, key))
            .having(sa.or_(nc != 1, bw > 0, bf > 0))
            .subquery()
        )
        g = per_key.c
        summary = sa.select(
            _count_if(g.nc == 0),
            _count_if(g.nc > 1),
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
        return _count_result(
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

    return _Plan({}, finish, needs_total=True)


def _reflect(ctx: _Ctx, qualified: str) -> sa.Table:
    schema, _, name = qualified.rpartition(".")
    try:
        return sa.Table(name, sa.MetaData(), schema=schema or None, autoload_with=ctx.engine)
    except sa.exc.NoSuchTableError:
        raise CheckError(f"table {qualified} does not exist in the warehouse") from None


def _rejected_pair(ctx: _Ctx) -> tuple[sa.Table, sa.Table]:
    """(accepted, rejected) tables of a staging asset: ``x`` and ``x_rejected``."""
    if ctx.asset in ("stg/patients", "stg/patients_rejected"):
        return stg_patients, stg_patients_rejected
    t = ctx.table
    schema = f"{t.schema}." if t.schema else ""
    if t.name.endswith("_rejected"):
        return _reflect(ctx, schema + t.name[: -len("_rejected")]), t
    return t, _reflect(ctx, f"{schema}{t.name}_rejected")


def _plan_rejection_rate(ctx: _Ctx, spec: RejectionRateCheck) -> _Plan:
    accepted, rejected = _rejected_pair(ctx)
    default_warn, default_fail = ctx.rejection_rate
    warn = spec.warn if spec.warn is not None else default_warn
    fail = spec.fail if spec.fail is not None else default_fail

    def finish(_v: Mapping[str, Any], _total: int) -> CheckResult:
        def count(t: sa.Table) -> int:
            where = []
            if ctx.mode == INCREMENTAL and ctx.batch is not None and ctx.batch.column in t.c:
                where.append(t.c[ctx.batch.column] == ctx.batch.value)
            return int(_scalar(ctx, sa.select(sa.func.count()).select_from(t).where(*where)) or 0)

        n_rejected, n_accepted = count(rejected), count(accepted)
        total = n_rejected + n_accepted
        rate = _rate(n_rejected, total)
        status = _grade(rate, warn, fail)
        return _result(
            ctx,
            spec,
            status,
            f"{n_rejected} of {total} rows ({rate:.2%}) of the {ctx.scope_name} were rejected; "
            f"warn above {warn:.2%}, fail above {fail:.2%}",
            observed_value=rate,
            threshold=fail,
            failing_rows=n_rejected,
            total_rows=total,
            details={
                "rows_rejected": n_rejected,
                "rows_accepted": n_accepted,
                "rejection_rate": rate,
                "warn_threshold": warn,
                "fail_threshold": fail,
            },
        )

    return _Plan({}, finish)


def _plan_reconciliation(ctx: _Ctx, spec: ReconciliationCheck) -> _Plan:
    if ctx.asset not in BUNDLED_TABLES:
        raise CheckError(
            f"reconciliation {spec.between} is defined for the bundled patients pipeline "
            f"(raw/patients, stg/patients, core/dim_patient), not for {ctx.asset}; use a "
            "custom_sql check that returns the unreconciled rows"
        )
    batch = ctx.batch if ctx.mode == INCREMENTAL else None

    def raw_vs_stg(_v: Mapping[str, Any], _total: int) -> CheckResult:
        staged = sa.select(files.c.file_id).where(files.c.staged_at.is_not(None))
        if batch is not None:
            staged = staged.where(files.c.file_id == batch.value)
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
                    ("raw", raw_patients),
                    ("stg", stg_patients),
                    ("rejected", stg_patients_rejected),
                )
            ),
        ).where(f.file_id.in_(staged))
        counts: dict[str, dict[int, int]] = {"raw": {}, "stg": {}, "rejected": {}}
        with ctx.engine.connect() as conn:
            for row in conn.execute(per_file):
                for name in counts:
                    counts[name][int(row.file_id)] = int(row._mapping[name])
        file_ids = set().union(*(c.keys() for c in counts.values()))
        diff = {
            f: counts["raw"].get(f, 0) - counts["stg"].get(f, 0) - counts["rejected"].get(f, 0)
            for f in file_ids
        }
        failing = sum(abs(d) for d in diff.values())
        raw_total = sum(counts["raw"].values())
        return _count_result(
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
        s, d = stg_patients, dim_patient
        merged = sa.select(files.c.file_id).where(files.c.merged_at.is_not(None))
        in_scope = s.c._file_id == batch.value if batch is not None else s.c._file_id.in_(merged)
        # Every staged patient of a merged file has a current version (through the partial
        # unique index on patient_id WHERE is_current).
        has_current = sa.exists().where(d.c.patient_id == s.c.id, d.c.is_current)
        # A plain anti-join (hashed on Postgres), not a per-row probe inside an aggregate.
        with ctx.engine.connect() as conn:
            missing = conn.execute(
                sa.select(sa.func.count()).where(in_scope, ~has_current)
            ).scalar_one()
            total = conn.execute(sa.select(sa.func.count()).where(in_scope)).scalar_one()
        return _count_result(
            ctx,
            spec,
            int(missing),
            f"of {int(total)} staged rows of merged files have no current row in core",
            {"stg_rows": int(total)},
            total=int(total),
        )

    return _Plan({}, raw_vs_stg if spec.between == "raw_vs_stg" else stg_vs_core)


# Type families for the schema contract: a declared type matches any database type of its family.
_TYPE_FAMILIES: dict[str, tuple[str, ...]] = {
    "text": ("CHAR", "TEXT", "STRING", "CLOB", "VARCHAR"),
    "integer": ("INT", "SERIAL"),
    "numeric": ("NUMERIC", "DECIMAL"),
    "float": ("FLOAT", "DOUBLE", "REAL"),
    "date": ("DATE",),
    "timestamp": ("TIMESTAMP", "DATETIME"),
    "boolean": ("BOOL",),
    "uuid": ("UUID",),
    "json": ("JSON",),
}
_TYPE_ALIASES = {
    "string": "text",
    "varchar": "text",
    "int": "integer",
    "bigint": "integer",
    "decimal": "numeric",
    "double": "float",
    "real": "float",
    "datetime": "timestamp",
    "bool": "boolean",
    "jsonb": "json",
}


def _type_family(db_type: str) -> str | None:
    t = db_type.upper()
    if t.startswith("TIMESTAMP") or t.startswith("DATETIME"):
        return "timestamp"
    for family, markers in _TYPE_FAMILIES.items():
        if any(m in t for m in markers):
            return family
    return None


def _plan_schema(ctx: _Ctx, spec: SchemaCheck) -> _Plan:
    def finish(_v: Mapping[str, Any], _total: int) -> CheckResult:
        t = ctx.table
        try:
            reflected = sa.inspect(ctx.engine).get_columns(t.name, schema=t.schema)
        except sa.exc.NoSuchTableError:
            raise CheckError(f"table {ctx.qualified} does not exist in the warehouse") from None
        if not reflected:
            raise CheckError(f"table {ctx.qualified} does not exist in the warehouse")
        present = {c["name"].lower(): c for c in reflected}
        missing = [c for c in spec.required_columns if c.lower() not in present]
        data_columns = {n for n in present if not n.startswith("_")}
        declared = {c.lower() for c in [*spec.required_columns, *spec.types]}
        unexpected = sorted(data_columns - declared)
        file_unexpected: list[str] = []
        if ctx.asset == "raw/patients" and ctx.batch is not None:
            # The raw table keeps the contract's columns; what the file itself brought is audited.
            with ctx.engine.connect() as conn:
                row = conn.execute(
                    sa.select(files.c.unexpected_columns, files.c.missing_columns).where(
                        files.c.file_id == ctx.batch.value
                    )
                ).first()
            if row is not None:
                file_unexpected = [c for c in (row[0] or "").split(",") if c]
                file_missing = [c for c in (row[1] or "").split(",") if c]
                missing += [c for c in spec.required_columns if c in file_missing]
                # The raw table holds the contract's columns (optional ones too): only what the
                # file itself brought beyond them is unexpected.
                unexpected = [c for c in file_unexpected if c.lower() not in declared]
        drift = []
        sqlite = ctx.engine.dialect.name == "sqlite"
        for name, expected in spec.types.items():
            column = present.get(name.lower())
            if column is None:
                if name not in missing:
                    missing.append(name)
                continue
            want = _TYPE_ALIASES.get(expected.lower(), expected.lower())
            got = _type_family(str(column["type"]))
            if want != got and not (sqlite and want == "uuid" and got == "text"):
                drift.append(name)
        problems = len(missing) + len(drift) + (0 if spec.allow_unexpected else len(unexpected))
        parts = [
            f"{len(missing)} required column(s) missing"
            + (f" ({', '.join(missing)})" if missing else "")
        ]
        parts.append(
            f"{len(unexpected)} unexpected column(s)"
            + (f" ({', '.join(unexpected)})" if unexpected else "")
            + (" allowed" if spec.allow_unexpected else "")
        )
        parts.append(f"{len(drift)} type drift(s)" + (f" ({', '.join(drift)})" if drift else ""))
        return _count_result(
            ctx,
            spec,
            problems,
            "schema problem(s): " + "; ".join(parts),
            {
                "missing_columns": len(missing),
                "unexpected_columns": len(unexpected),
                "type_drifts": len(drift),
                "columns_present": len(present),
            },
        )

    return _Plan({}, finish)


def _plan_custom_sql(ctx: _Ctx, spec: CustomSqlCheck) -> _Plan:
    query = sa.text(spec.sql)
    uses_batch = "batch" in query._bindparams  # noqa: SLF001 - the documented :batch parameter
    if uses_batch and ctx.batch is None:
        raise CheckError("the custom SQL uses :batch but the asset has no batch yet")

    def finish(_v: Mapping[str, Any], _total: int) -> CheckResult:
        counted = sa.select(sa.func.count()).select_from(query.columns().subquery("custom"))
        with ctx.engine.connect() as conn:
            if not uses_batch:
                failing = int(conn.execute(counted).scalar() or 0)
            elif ctx.mode != FULL:
                failing = int(conn.execute(counted, {"batch": ctx.batch.value}).scalar() or 0)
            else:  # the full sweep runs a per-batch query once for every batch of the table
                column = ctx.table.c[ctx.batch.column]
                batches = conn.execute(sa.select(column).distinct()).scalars().all()
                failing = sum(
                    int(conn.execute(counted, {"batch": b}).scalar() or 0) for b in batches
                )
        return _count_result(ctx, spec, failing, "failing row(s) returned by the custom SQL", {})

    return _Plan({}, finish)


def _table_count(ctx: _Ctx) -> int:
    return int(_scalar(ctx, sa.select(sa.func.count()).select_from(ctx.table)) or 0)


def _previous_details(ctx: _Ctx, spec: Spec) -> Mapping[str, Any] | None:
    r = check_results.c
    with ctx.health.connect() as conn:
        row = conn.execute(
            sa.select(r.details)
            .where(
                r.target == ctx.asset,
                r.check_name == spec.check_name,
                r.status.in_((PASSED, WARN, FAILED)),
            )
            .order_by(r.ts.desc(), r.result_id.desc())
            .limit(1)
        ).scalar()
    return row


def _plan_row_count_change(ctx: _Ctx, spec: RowCountChangeCheck) -> _Plan:
    def finish(_v: Mapping[str, Any], total: int) -> CheckResult:
        current = total if not ctx.scope else _table_count(ctx)
        previous_details = _previous_details(ctx, spec)
        previous = (previous_details or {}).get("row_count")
        if previous is None:
            return _result(
                ctx,
                spec,
                INSUFFICIENT_HISTORY,
                f"{current} rows; no previous evaluation to compare with",
                observed_value=None,
                total_rows=current,
                details={"row_count": current},
            )
        change = (current - previous) / previous * 100 if previous else (100.0 if current else 0.0)
        too_low = spec.max_drop_pct is not None and -change > spec.max_drop_pct
        too_high = spec.max_growth_pct is not None and change > spec.max_growth_pct
        status = FAILED if too_low or too_high else PASSED
        if status == FAILED and spec.warn is not None and spec.fail is None:
            status = WARN
        limit = spec.max_drop_pct if change < 0 else spec.max_growth_pct
        return _result(
            ctx,
            spec,
            status,
            f"{current} rows, {change:+.1f}% against the previous {int(previous)}; "
            f"allowed drop {spec.max_drop_pct}%, growth {spec.max_growth_pct}%",
            observed_value=change,
            threshold=None if limit is None else float(limit),
            total_rows=current,
            details={"row_count": current, "previous_row_count": previous, "change_pct": change},
        )

    return _Plan({}, finish, needs_total=True)


Point = tuple[datetime, float]


def _volume_history(ctx: _Ctx, spec: VolumeAnomalyCheck) -> tuple[list[Point], Point | None]:
    """(history, current) of the asset's volume: per-load metrics of the bundled assets, else
    the check's own previous observations, with the table's row count now as current."""
    m = metrics.c
    if spec.metric == "row_count" and ctx.asset in VOLUME_METRICS:
        component, name = VOLUME_METRICS[ctx.asset]
        own = False
    elif spec.metric != "row_count":
        component, name, own = component_for(ctx.asset), spec.metric, False
    else:
        component, name, own = (
            component_for(ctx.asset),
            f"check.{spec.check_name}.observed_value",
            True,
        )
    with ctx.health.connect() as conn:
        rows = conn.execute(
            sa.select(m.ts, m.value)
            .where(
                m.component == component,
                m.metric_name == name,
                m.tags["asset"].as_string() == ctx.asset,
            )
            .order_by(m.ts.desc(), m.metric_id.desc())
            .limit(VOLUME_HISTORY_LIMIT)
        ).all()
    points = [(_as_utc(ts), float(v)) for ts, v in reversed(rows)]
    points = [(ts, v) for ts, v in points if ts is not None]
    if own:
        current = (ctx.now, float(_table_count(ctx)))
        return [p for p in points if p[0] < ctx.now], current
    if not points:
        return [], None
    return points[:-1], points[-1]


def _plan_volume(ctx: _Ctx, spec: VolumeAnomalyCheck) -> _Plan:
    def finish(_v: Mapping[str, Any], _total: int) -> CheckResult:
        from healthmon_dagster.analytics.anomaly import detect_volume_anomaly

        history, current = _volume_history(ctx, spec)
        if current is None:
            return _result(
                ctx,
                spec,
                INSUFFICIENT_HISTORY,
                f"no {spec.metric} observation recorded for {ctx.asset} yet",
                details={"n_history": 0, "min_history": spec.min_history},
            )
        found = detect_volume_anomaly(
            history,
            current,
            direction=spec.direction,
            sensitivity=spec.sensitivity,
            min_history=spec.min_history,
            seasonality=spec.seasonality,
        )
        if found.status == "insufficient_history":
            status = INSUFFICIENT_HISTORY
        elif found.status == "anomaly":
            fail_score = spec.fail
            strong = fail_score is not None and abs(found.score or 0.0) >= fail_score
            status = FAILED if strong else WARN
        else:
            status = PASSED
        details = {
            "current": current[1],
            "n_history": found.n_history,
            "min_history": spec.min_history,
            "sensitivity": spec.sensitivity,
            "score": found.score,
            "expected": found.expected,
            "lower": found.lower,
            "upper": found.upper,
        }
        return _result(
            ctx,
            spec,
            status,
            f"{spec.metric}: {found.message} (method {found.method})",
            observed_value=current[1],
            threshold=spec.sensitivity,
            details=details,
        )

    return _Plan({}, finish)


_PLANNERS: dict[str, Callable[[_Ctx, Any], _Plan]] = {
    "not_null": _plan_not_null,
    "unique": _plan_unique,
    "accepted_values": _plan_accepted_values,
    "range": _plan_range,
    "regex": _plan_regex,
    "row_count": _plan_row_count,
    "row_count_change": _plan_row_count_change,
    "schema": _plan_schema,
    "freshness": _plan_freshness,
    "reconciliation": _plan_reconciliation,
    "rejection_rate": _plan_rejection_rate,
    "scd2_integrity": _plan_scd2,
    "custom_sql": _plan_custom_sql,
    "volume_anomaly": _plan_volume,
}


# --- errors without values -------------------------------------------------------------------


def safe_error_message(exc: BaseException, known_names: set[str]) -> str:
    """A database error as text with no data value in it (``store.errors.error_text``)."""
    if isinstance(exc, CheckError):
        return str(exc)
    return error_text(exc, known_names)


def _known_names(ctx_table: sa.Table | None, asset: str) -> set[str]:
    names = set(asset.split("/")) | set(BUNDLED_TABLES) | {"raw", "stg", "core", "etl"}
    for t in (*BUNDLED_TABLES.values(), *([ctx_table] if ctx_table is not None else [])):
        names |= {t.name, f"{t.schema}.{t.name}", *(c.name for c in t.c)}
    return names


def _error_result(asset: str, spec: Spec, message: str, ms: float = 0.0) -> CheckResult:
    return CheckResult(
        check_name=spec.check_name,
        asset=asset,
        kind=spec.kind,
        status=ERROR,
        message=f"check could not be evaluated: {message}",
        blocking=spec.blocking,
        duration_ms=ms,
    )


# --- entry points ----------------------------------------------------------------------------


def resolve_table(engine: Engine, asset: str) -> sa.Table:
    """The warehouse table of an asset: a bundled table, or ``schema.table`` for ``schema/table``."""
    if asset in BUNDLED_TABLES:
        return BUNDLED_TABLES[asset]
    parts = asset.split("/")
    if len(parts) != 2:
        raise CheckError(f"asset key {asset} does not name a warehouse table; use 'schema/table'")
    schema, name = parts
    try:
        return sa.Table(name, sa.MetaData(), schema=schema, autoload_with=engine)
    except sa.exc.NoSuchTableError:
        raise CheckError(
            f"table {schema}.{name} (asset {asset}) does not exist in the warehouse"
        ) from None


def resolve_batch(
    engine: Engine, asset: str, table: sa.Table, batch_column: str | None = None
) -> Batch | None:
    """The latest batch of an asset's table; None when it has no batch column or no rows."""
    with engine.connect() as conn:
        if asset in _FILE_ARRIVED and batch_column is None:
            value = conn.execute(
                sa.select(sa.func.max(files.c.file_id)).where(_FILE_ARRIVED[asset])
            ).scalar()
            return None if value is None else Batch("_file_id", value)
        column = batch_column or ("_file_id" if "_file_id" in table.c else None)
        if column is None:
            return None
        if column not in table.c:
            raise CheckError(f"batch column {column} does not exist in {table.schema}.{table.name}")
        value = conn.execute(sa.select(sa.func.max(table.c[column]))).scalar()
    return None if value is None else Batch(column, value)


def evaluate(
    engine: Engine,
    asset: str,
    specs: Sequence[Spec],
    *,
    health_engine: Engine | None = None,
    mode: str = INCREMENTAL,
    rejection_rate: tuple[float, float] = (0.01, 0.05),
    batch_column: str | None = None,
    now: datetime | None = None,
) -> list[CheckResult]:
    """Evaluate ``specs`` on ``asset``'s table; one result per spec, in order, never raising for a
    check's own failure (status ``error``)."""
    if mode not in MODES:
        raise ValueError(f"mode {mode!r} is not one of {', '.join(MODES)}")
    t0 = time.perf_counter()
    try:
        table = resolve_table(engine, asset)
        batch = resolve_batch(engine, asset, table, batch_column)
    except Exception as exc:  # the whole asset is unreadable: every check is an error
        msg = safe_error_message(exc, _known_names(None, asset))
        return [_error_result(asset, s, msg) for s in specs]
    ctx = _Ctx(
        engine,
        health_engine or engine,
        asset,
        table,
        mode,
        batch,
        now or datetime.now(UTC),
        rejection_rate,
        batch_column,
    )
    known = _known_names(table, asset)
    plans: list[_Plan | CheckResult] = []
    for spec in specs:
        try:
            plans.append(_PLANNERS[spec.kind](ctx, spec))
        except Exception as exc:
            plans.append(_error_result(asset, spec, safe_error_message(exc, known)))
    plan_ms = (time.perf_counter() - t0) * 1000

    # One aggregate for every fused expression of the table (and the row count).
    values: dict[int, dict[str, Any]] = {}
    total = 0
    fused = [
        (i, p) for i, p in enumerate(plans) if isinstance(p, _Plan) and (p.exprs or p.needs_total)
    ]
    row_errors: dict[int, CheckResult] = {}
    row_ms = 0.0
    if fused:
        t1 = time.perf_counter()
        try:
            values, total = _run_fused(ctx, fused)
        except Exception:
            # Evaluate each plan alone so that one bad expression does not take the others down.
            for i, plan in fused:
                try:
                    v, total = _run_fused(ctx, [(i, plan)])
                    values.update(v)
                except Exception as exc:
                    row_errors[i] = _error_result(asset, specs[i], safe_error_message(exc, known))
        row_ms = (time.perf_counter() - t1) * 1000 / len(fused)

    results: list[CheckResult] = []
    for i, (spec, plan) in enumerate(zip(specs, plans, strict=True)):
        if isinstance(plan, CheckResult):
            results.append(plan)
            continue
        if i in row_errors:
            results.append(row_errors[i])
            continue
        t2 = time.perf_counter()
        try:
            assert plan.finish is not None
            result = plan.finish(values.get(i, {}), total)
        except Exception as exc:
            result = _error_result(asset, spec, safe_error_message(exc, known))
        ms = (time.perf_counter() - t2) * 1000 + plan_ms / len(specs)
        if plan.exprs or plan.needs_total:
            ms += row_ms
        results.append(_with_duration(result, ms))
    return results


def _with_duration(result: CheckResult, ms: float) -> CheckResult:
    from dataclasses import replace

    return replace(result, duration_ms=ms)


def _run_fused(
    ctx: _Ctx, plans: Sequence[tuple[int, _Plan]]
) -> tuple[dict[int, dict[str, Any]], int]:
    labels: list[tuple[int, str, str]] = []
    columns: list[ColumnElement[Any]] = [sa.func.count().label("total")]
    for i, plan in plans:
        for name, expr in plan.exprs.items():
            label = f"c{i}_{name}"
            labels.append((i, name, label))
            columns.append(expr.label(label))
    query = sa.select(*columns).select_from(ctx.table).where(*ctx.scope)
    with ctx.engine.connect() as conn:
        row = conn.execute(query).one()._mapping
    values: dict[int, dict[str, Any]] = {i: {} for i, _ in plans}
    for i, name, label in labels:
        values[i][name] = row[label]
    return values, int(row["total"])


def evaluate_last_load(
    engine: Engine,
    asset: str,
    warn_minutes: float | None,
    fail_minutes: float,
    *,
    timestamp_column: str | None = None,
    now: datetime | None = None,
) -> CheckResult:
    """Age of the asset's last load: ``etl.files`` audit times for the bundled tables, else the
    newest ``timestamp_column`` (default ``_loaded_at``) of the table. Works for data loaded
    outside Dagster, unlike a FreshnessPolicy (which only sees materializations)."""
    spec = _LastLoadSpec()
    t0 = time.perf_counter()
    table: sa.Table | None = None
    try:
        table = resolve_table(engine, asset)
        ctx = _Ctx(
            engine, engine, asset, table, FULL, None, now or datetime.now(UTC), (0.01, 0.05), None
        )
        with engine.connect() as conn:
            if asset in _FILE_LOADED_AT and timestamp_column is None:
                newest = conn.execute(
                    sa.select(sa.func.max(_FILE_LOADED_AT[asset])).where(_FILE_ARRIVED[asset])
                ).scalar()
                what = "the last load recorded in etl.files"
            else:
                col = ctx.col(timestamp_column or "_loaded_at")
                newest = conn.execute(sa.select(sa.func.max(col))).scalar()
                what = f"the newest {col.name}"
        result = _age_result(ctx, spec, _as_utc(newest), warn_minutes, fail_minutes, what)
    except Exception as exc:
        result = _error_result(asset, spec, safe_error_message(exc, _known_names(table, asset)))
    return _with_duration(result, (time.perf_counter() - t0) * 1000)


@dataclass(frozen=True)
class _LastLoadSpec:
    check_name: str = LAST_LOAD_IS_FRESH
    kind: str = "last_load_freshness"
    blocking: bool = False
