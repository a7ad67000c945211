"""The check library on SQLite and Postgres: each sample defect fails the right check, clean data passes."""

from datetime import UTC, date, datetime, timedelta
from pathlib import Path

import pytest
import sqlalchemy as sa
from sqlalchemy.engine import Engine

from healthmon_dagster.config import load_config
from healthmon_dagster.config.models import AssetQualityConfig, HealthConfiguration
from healthmon_dagster.etl import core, raw, staging
from healthmon_dagster.etl.landing import LocalLandingSource
from healthmon_dagster.etl.sample import DEFECTS, generate_sample, write_to
from healthmon_dagster.quality import (
    ERROR,
    FAILED,
    FULL,
    INCREMENTAL,
    INSUFFICIENT_HISTORY,
    PASSED,
    WARN,
    CheckResult,
    evaluate,
    evaluate_last_load,
    record_results,
)
from healthmon_dagster.store.metrics import MetricPoint, write_metrics
from healthmon_dagster.store.tables import check_results, dim_patient, metrics

PROJECT_CONFIG = Path(__file__).resolve().parents[2] / "healthmon.yaml"
ROWS = 200
TODAY = date(2025, 1, 2)

# Check names of healthmon.yaml.
SCHEMA = "patients_file_has_synthea_columns"
ROW_COUNT = "row_count_is_in_range"
WELL_FORMED = "raw_records_are_well_formed"
VOLUME = "row_count_volume_is_normal"
REJECTION = "rejection_rate_below_threshold"
SCD2 = "scd2_integrity_holds"
# Defects the raw loader rejects whole (the run fails before any check); checks see the file before.
LOADER_REJECTS = {"missing_column", "semicolon_delimiter", "non_utf8"}
# Which check each defect fails, and how; every other check passes.
EXPECTED: dict[str, dict[str, str]] = {
    "null_ids": {REJECTION: WARN},  # 3% rejected: above warn (1%), below fail (5%)
    "duplicate_ids": {REJECTION: FAILED},  # both rows of each pair are rejected: 6%
    "unknown_gender": {REJECTION: WARN},
    "future_birthdate": {REJECTION: WARN},
    "death_before_birth": {REJECTION: WARN},
    "out_of_range_coordinates": {REJECTION: WARN},
    "missing_column": {},
    "extra_column": {},  # allow_unexpected: true
    "semicolon_delimiter": {},
    "empty_file": {ROW_COUNT: FAILED, VOLUME: WARN},
    "truncated_last_line": {WELL_FORMED: WARN},  # 1 of 200 rejected (0.5%) is within 1%
    "volume_drop": {VOLUME: WARN},
    "bom_crlf": {},
    "non_utf8": {},
    "zip_leading_zeros_stripped": {REJECTION: FAILED},
    "locale_numbers": {REJECTION: FAILED},
}


def project_config() -> HealthConfiguration:
    return load_config(PROJECT_CONFIG)


def load(
    engine: Engine,
    tmp_path: Path,
    rows: int = ROWS,
    files: int = 2,
    defect: str | None = None,
    **kw: object,
) -> None:
    """Land, load, stage and merge a generated batch, as the pipeline does."""
    landing = LocalLandingSource(tmp_path / "landing")
    samples = generate_sample(rows, files=files, defect=defect, **kw)  # type: ignore[arg-type]
    write_to(landing, samples)
    for sample in samples:
        raw.load_file(engine, landing, sample.key)
    staging.stage_pending(engine, today=TODAY)
    core.merge_pending(engine)


def seed_volume_history(engine: Engine, days: int = 10, rows: float = ROWS) -> None:
    """Per-load row counts of raw/patients as the raw asset records them, one a day."""
    start = datetime.now(UTC) - timedelta(days=days + 1)
    write_metrics(
        engine,
        [
            MetricPoint(
                "raw_loader",
                "rows_loaded",
                rows + (i % 3) * 2,
                "rows",
                {"asset": "raw/patients"},
                start + timedelta(days=i),
            )
            for i in range(days)
        ],
    )


def record_current_load(engine: Engine) -> None:
    """The latest file's row count, as raw_patients records it after a load."""
    with engine.connect() as conn:
        rows = conn.execute(
            sa.text(
                "SELECT rows_raw FROM etl.files WHERE status IN ('loaded', 'empty') "
                "ORDER BY file_id DESC LIMIT 1"
            )
        ).scalar_one()
    write_metrics(
        engine, [MetricPoint("raw_loader", "rows_loaded", rows, "rows", {"asset": "raw/patients"})]
    )


def evaluate_all(
    engine: Engine, config: HealthConfiguration, mode: str = INCREMENTAL
) -> dict[str, CheckResult]:
    rejection = (config.quality.rejection_rate.warn, config.quality.rejection_rate.fail)
    out: dict[str, CheckResult] = {}
    for asset, qc in config.quality.assets.items():
        for result in evaluate(engine, asset, qc.checks, mode=mode, rejection_rate=rejection):
            out[result.check_name] = result
    return out


def statuses(results: dict[str, CheckResult]) -> dict[str, str]:
    return {name: r.status for name, r in results.items() if r.status != PASSED}


@pytest.mark.parametrize("defect", [None, *DEFECTS])
def test_each_defect_fails_the_right_check_and_only_it(
    engine: Engine, tmp_path: Path, defect: str | None
) -> None:
    seed_volume_history(engine)
    load(engine, tmp_path, defect=defect)
    record_current_load(engine)

    results = evaluate_all(engine, project_config())

    assert statuses(results) == (EXPECTED[defect] if defect else {}), {
        n: r.message for n, r in results.items() if r.status != PASSED
    }
    for result in results.values():
        assert result.severity == {PASSED: None, WARN: "WARN", FAILED: "ERROR"}[result.status]
    if defect == "extra_column":
        assert results[SCHEMA].details["unexpected_columns"] == 1
        assert "LOYALTY_TIER" in results[SCHEMA].message
    if defect in LOADER_REJECTS:
        with engine.connect() as conn:
            last = sa.text("SELECT status FROM etl.files ORDER BY file_id DESC LIMIT 1")
            assert conn.execute(last).scalar() == "rejected"


def test_full_sweep_evaluates_whole_tables(engine: Engine, tmp_path: Path) -> None:
    load(engine, tmp_path, files=3, defect="unknown_gender")

    incremental = evaluate_all(engine, project_config(), INCREMENTAL)
    full = evaluate_all(engine, project_config(), FULL)

    assert incremental[REJECTION].total_rows == ROWS
    assert incremental[REJECTION].status == WARN  # 6 of 200
    assert full[REJECTION].total_rows == 3 * ROWS
    assert full[REJECTION].status == PASSED  # 6 of 600 = 1.0%, not above 1%
    assert full["patient_id_is_not_null"].total_rows == 3 * ROWS - 6
    assert full[SCD2].status == PASSED
    with engine.connect() as conn:
        versions = conn.execute(sa.select(sa.func.count()).select_from(dim_patient)).scalar_one()
    # SCD2 integrity is judged on the whole table in either mode, and says so in its total.
    assert full[SCD2].total_rows == incremental[SCD2].total_rows == versions


def test_broken_scd2_history_fails_with_the_violation_counted(
    engine: Engine, tmp_path: Path
) -> None:
    load(engine, tmp_path, files=1)
    d = dim_patient
    with engine.begin() as conn:
        current = conn.execute(sa.select(d).where(d.c.is_current).limit(1)).mappings().one()
        # An older closed version whose window runs past the start of the current one.
        older = {k: v for k, v in current.items() if k != "patient_sk"}
        older.update(
            valid_from=current["valid_from"] - timedelta(days=10),
            valid_to=current["valid_from"] + timedelta(days=1),
            is_current=False,
        )
        conn.execute(d.insert().values(**older))

    (result,) = evaluate(
        engine, "core/dim_patient", project_config().quality.assets["core/dim_patient"].checks[:1]
    )

    assert result.status == FAILED and result.severity == "ERROR"
    assert result.details["overlapping_versions"] == 1
    assert result.failing_rows == 1


def test_missing_column_and_missing_table_are_errors_never_passes(
    engine: Engine, tmp_path: Path
) -> None:
    load(engine, tmp_path, files=1)
    qc = AssetQualityConfig.model_validate(
        {
            "checks": [
                {"kind": "not_null", "columns": ["id"]},
                {"kind": "not_null", "name": "ghost_is_not_null", "columns": ["ghost"]},
                {"kind": "range", "column": "lat", "min": -90, "max": 90},
            ]
        }
    )

    ok, ghost, lat = evaluate(engine, "stg/patients", qc.checks)
    (missing,) = evaluate(engine, "stg/not_there", qc.checks[:1])

    assert (ok.status, lat.status) == (PASSED, PASSED)
    assert ghost.status == ERROR and ghost.severity == "ERROR"
    assert "column ghost does not exist in stg.patients" in ghost.message
    assert missing.status == ERROR
    assert "stg.not_there" in missing.message and "does not exist" in missing.message


def test_checks_on_a_users_own_table(engine: Engine) -> None:
    """Any warehouse table named as schema/table works with the same YAML."""
    with engine.begin() as conn:
        conn.execute(
            sa.text(
                "CREATE TABLE core.visits (visit_id INTEGER, code TEXT, amount REAL, "
                "batch INTEGER, _loaded_at TIMESTAMP)"
            )
        )
        now = datetime.now(UTC).replace(tzinfo=None)
        rows = [
            {
                "v": i,
                "c": "A" if i % 10 else "Z",
                "a": float(i),
                "b": 1 + i // 50,
                "t": now - timedelta(minutes=5),
            }
            for i in range(100)
        ]
        rows.append({"v": 99, "c": None, "a": -5.0, "b": 3, "t": now})  # a duplicate, in batch 3
        conn.execute(sa.text("INSERT INTO core.visits VALUES (:v, :c, :a, :b, :t)"), rows)
    qc = AssetQualityConfig.model_validate(
        {
            "batch_column": "batch",
            "checks": [
                {"kind": "not_null", "columns": ["code"], "mostly": 0.95},
                {"kind": "unique", "columns": ["visit_id"]},
                {"kind": "accepted_values", "column": "code", "values": ["A", "B"], "warn": 0},
                {"kind": "range", "column": "amount", "min": 0},
                {"kind": "regex", "column": "code", "pattern": "^[A-Z]$"},
                {"kind": "row_count", "min": 10, "max": 1000},
                {"kind": "freshness", "column": "_loaded_at", "fail_after_minutes": 60},
                {
                    "kind": "schema",
                    "required_columns": ["visit_id", "code"],
                    "allow_unexpected": False,
                    "types": {"visit_id": "integer", "amount": "float"},
                },
                {"kind": "custom_sql", "sql": "SELECT * FROM core.visits WHERE amount > 1000"},
                {"kind": "volume_anomaly", "min_history": 3},
            ],
        }
    )

    full = {r.check_name: r for r in evaluate(engine, "core/visits", qc.checks, mode=FULL)}
    batch = {
        r.check_name: r
        for r in evaluate(engine, "core/visits", qc.checks, batch_column=qc.batch_column)
    }

    assert {n: r.status for n, r in full.items() if r.status != PASSED} == {
        "visit_id_is_unique": FAILED,
        "code_has_accepted_values": WARN,
        "amount_is_in_range": FAILED,
        "schema_matches": FAILED,  # batch is not declared
        "row_count_volume_is_normal": INSUFFICIENT_HISTORY,
    }, {n: r.message for n, r in full.items()}
    assert full["visit_id_is_unique"].failing_rows == 1
    assert full["code_has_accepted_values"].failing_rows == 10
    assert "batch" in full["schema_matches"].message
    # Batch 3 (the latest) holds the second row with visit_id 99: found against the table.
    assert batch["visit_id_is_unique"].total_rows == 1
    assert batch["visit_id_is_unique"].failing_rows == 1
    assert batch["row_count_is_in_range"].status == FAILED  # 1 row in the batch


def test_insufficient_history_is_a_visible_warning_and_history_turns_it_into_a_verdict(
    engine: Engine, tmp_path: Path
) -> None:
    load(engine, tmp_path, files=1)
    record_current_load(engine)
    (spec,) = [
        s for s in project_config().quality.assets["raw/patients"].checks if s.check_name == VOLUME
    ]

    (first,) = evaluate(engine, "raw/patients", [spec])
    seed_volume_history(engine, days=10)
    record_current_load(engine)
    (later,) = evaluate(engine, "raw/patients", [spec])

    assert first.status == INSUFFICIENT_HISTORY and first.severity == "WARN"
    assert "insufficient history" in first.message
    assert later.status == PASSED
    assert later.details["n_history"] >= 7


def test_last_load_freshness_reads_the_load_audit(engine: Engine, tmp_path: Path) -> None:
    never = evaluate_last_load(engine, "stg/patients", 60, 120)
    load(engine, tmp_path, files=1)
    fresh = evaluate_last_load(engine, "stg/patients", 60, 120)
    stale = evaluate_last_load(
        engine, "stg/patients", 60, 120, now=datetime.now(UTC) + timedelta(minutes=90)
    )

    assert never.status == FAILED
    assert fresh.status == PASSED
    assert stale.status == WARN and stale.observed_value is not None and stale.observed_value > 60


def test_results_are_recorded_with_their_numbers(engine: Engine, tmp_path: Path) -> None:
    load(engine, tmp_path, files=1, defect="unknown_gender")
    results = evaluate_all(engine, project_config())

    record_results(engine, list(results.values()), "run-1")

    with engine.connect() as conn:
        rows = {r.check_name: r for r in conn.execute(sa.select(check_results))}
        names = set(conn.execute(sa.select(metrics.c.component, metrics.c.metric_name)).all())
    assert set(rows) == set(results)
    rejected = rows[REJECTION]
    assert (rejected.status, rejected.severity, rejected.target) == (WARN, "WARN", "stg/patients")
    assert rejected.failing_rows == 6 and rejected.threshold == 0.05
    assert rejected.dagster_run_id == "run-1" and rejected.source == "asset_check"
    assert rejected.details["rejection_rate"] == pytest.approx(0.03)
    assert ("staging_transformer", f"check.{REJECTION}.failing_rows") in names
    assert ("raw_loader", f"check.{ROW_COUNT}.observed_value") in names
    assert ("core_merger", f"check.{SCD2}.passed") in names


def test_full_sweep_runs_a_per_batch_custom_sql_over_every_file(
    engine: Engine, tmp_path: Path
) -> None:
    landing = LocalLandingSource(tmp_path / "landing")
    older = generate_sample(ROWS, files=1, defect="truncated_last_line", prefix="patients_a")
    newer = generate_sample(ROWS, files=1, seed=3, prefix="patients_b")
    for sample in older + newer:
        landing.put(sample.key, sample.data)
        raw.load_file(engine, landing, sample.key)
    staging.stage_pending(engine, today=TODAY)
    core.merge_pending(engine)

    incremental = evaluate_all(engine, project_config(), INCREMENTAL)
    full = evaluate_all(engine, project_config(), FULL)

    # The truncated record is in the older file: the ETL run of the newer one does not see it,
    # the full sweep does.
    assert incremental["raw_records_are_well_formed"].failing_rows == 0
    assert full["raw_records_are_well_formed"].failing_rows == 1
    assert full["raw_records_are_well_formed"].status == WARN
