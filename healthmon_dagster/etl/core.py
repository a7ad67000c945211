"""Core: SCD2 merge of staged files into ``core.dim_patient``, in SQL, one file per transaction.

For each staged file, oldest first: a patient whose tracked attributes changed (``hash_diff``) gets its
current version closed (``valid_to``, ``is_current = false``) and a new current version; a new patient gets
a first version; an unchanged re-send creates nothing. A partial unique index keeps exactly one current
row per patient even if two merges race. Files are feeds, not snapshots: a patient absent from a file is
not ended.

Cost: every statement is driven by the file's rows (``stg.patients`` through its primary key) and
finds each patient's current version through ``uq_dim_patient_current``, so a merge is linear in
the file and logarithmic in the table, on SQLite (which has no hash join: a statement driven by
the table instead probes the file once per current version, quadratic as both grow) and on
Postgres alike. Each row's hash is computed once per statement that needs it. After the merge,
Postgres gets ``VACUUM (ANALYZE)`` (:func:`~healthmon_dagster.store.db.vacuum_analyze`).
"""

import time
from dataclasses import dataclass

import sqlalchemy as sa
from sqlalchemy.engine import Engine
from sqlalchemy.sql.elements import ColumnElement

from healthmon_dagster.store.connection import write_transaction
from healthmon_dagster.store.db import vacuum_analyze
from healthmon_dagster.store.metrics import utcnow
from healthmon_dagster.store.tables import (
    TRACKED_COLUMNS,
    Timestamp,
    dim_patient,
    files,
    load_runs,
    stg_patients,
)

_NULL_MARK = "\x1f"  # distinguishes NULL from an empty string inside the hash input


def hash_diff_expr(table: sa.Table) -> ColumnElement[str]:
    """md5 over the tracked attributes as text, in a fixed order ('|' separated, NULL marked)."""
    parts: list[ColumnElement[str]] = []
    for name in TRACKED_COLUMNS:
        parts.append(sa.func.coalesce(sa.cast(table.c[name], sa.Text), _NULL_MARK))
    expr = parts[0]
    for part in parts[1:]:
        expr = expr + "|" + part
    return sa.func.md5(expr)


@dataclass
class MergeResult:
    file_id: int
    rows_in: int = 0
    inserted_new: int = 0
    versions_changed: int = 0
    unchanged: int = 0
    duration_s: float = 0.0

    @property
    def rows_written(self) -> int:
        return self.inserted_new + self.versions_changed


def pending_files(engine: Engine) -> list[int]:
    with engine.connect() as conn:
        return list(
            conn.execute(
                sa.select(files.c.file_id)
                .where(files.c.staged_at.is_not(None), files.c.merged_at.is_(None))
                .order_by(files.c.file_id)
            ).scalars()
        )


def merge_file(
    engine: Engine, file_id: int, dagster_run_id: str | None = None
) -> MergeResult | None:
    """Merge one staged file; None when another run merged it first."""
    started, t0 = utcnow(), time.perf_counter()
    result = MergeResult(file_id=file_id)
    s, d = stg_patients, dim_patient
    batch_hash = hash_diff_expr(s)
    in_batch = s.c._file_id == file_id
    with write_transaction(engine) as conn:
        claimed = conn.execute(
            files.update()
            .where(
                files.c.file_id == file_id,
                files.c.merged_at.is_(None),
                files.c.staged_at.is_not(None),
            )
            .values(merged_at=started)
        ).rowcount
        if claimed != 1:
            return None
        result.rows_in = conn.execute(sa.select(sa.func.count()).where(in_batch)).scalar_one()
        # 1. close the current version of every patient whose attributes changed: the file's rows
        # whose hash differs from their current version's, then those versions by their key.
        cur = d.alias("cur")
        changed_ids = (
            sa.select(s.c.id)
            .join(cur, sa.and_(cur.c.patient_id == s.c.id, cur.c.is_current))
            .where(in_batch, batch_hash != cur.c.hash_diff)
        )
        result.versions_changed = conn.execute(
            d.update()
            .where(d.c.is_current, d.c.patient_id.in_(changed_ids))
            .values(valid_to=started, is_current=False)
        ).rowcount
        # 2. a current version for every patient of the batch that has none now (new or just closed)
        has_current = sa.exists().where(d.c.patient_id == s.c.id, d.c.is_current)
        result.inserted_new = (
            conn.execute(
                d.insert().from_select(
                    [
                        "patient_id",
                        *TRACKED_COLUMNS,
                        "hash_diff",
                        "valid_from",
                        "valid_to",
                        "is_current",
                        "_file_id",
                        "_row_number",
                    ],
                    sa.select(
                        s.c.id,
                        *(s.c[c] for c in TRACKED_COLUMNS),
                        batch_hash,
                        sa.literal(started, Timestamp),
                        sa.null(),
                        sa.true(),
                        s.c._file_id,
                        s.c._row_number,
                    )
                    .where(in_batch, ~has_current)
                    # In key order, index pages are touched once each instead of at random.
                    .order_by(s.c.id),
                )
            ).rowcount
            - result.versions_changed
        )
        result.unchanged = result.rows_in - result.inserted_new - result.versions_changed
        result.duration_s = time.perf_counter() - t0
        conn.execute(
            load_runs.insert().values(
                dagster_run_id=dagster_run_id,
                layer="core",
                file_id=file_id,
                status="success",
                rows_in=result.rows_in,
                rows_out=result.rows_written,
                started_at=started,
                finished_at=utcnow(),
                duration_ms=result.duration_s * 1000,
            )
        )
    vacuum_analyze(engine, dim_patient)
    return result


def merge_pending(engine: Engine, dagster_run_id: str | None = None) -> list[MergeResult]:
    results = []
    for file_id in pending_files(engine):
        res = merge_file(engine, file_id, dagster_run_id)
        if res is not None:
            results.append(res)
    return results
