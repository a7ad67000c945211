"""Helpers shared by the quality tests (and the Dagster check tests): load generated files (or
given rows) through the pipeline, seed volume history, break an SCD2 history, evaluate the
project's checks."""

import csv
import io
from datetime import date, timedelta
from pathlib import Path

import sqlalchemy as sa
from sqlalchemy.engine import Engine

from healthmon_dagster.config import load_config
from healthmon_dagster.config.models import HealthConfiguration
from healthmon_dagster.enums import QualityStatus
from healthmon_dagster.etl import core, raw, staging
from healthmon_dagster.etl.catalog import RAW_PATIENTS
from healthmon_dagster.etl.landing import LocalLandingSource
from healthmon_dagster.etl.sample import (
    COLUMNS,
    generate_sample,
    write_to,
    write_volume_history,
)
from healthmon_dagster.quality import INCREMENTAL, CheckResult, evaluate
from healthmon_dagster.store.metrics import MetricPoint, write_metrics
from healthmon_dagster.store.tables import dim_patient

PROJECT_CONFIG = Path(__file__).resolve().parents[2] / "healthmon.yaml"
ROWS = 200
TODAY = date(2025, 1, 2)

# Check names of healthmon.yaml.
SCHEMA = "patients_file_has_synthea_columns"
ROW_COUNT = "row_count_is_in_range"
WELL_FORMED = "raw_records_are_well_formed"
VOLUME = "row_count_volume_is_normal"
FILE_ANOMALIES = "landing_file_is_clean"
REJECTION = "rejection_rate_below_threshold"
FLAGGED = "no_rows_flagged"
IDS = "patient_ids_are_joinable"
GENDER = "gender_is_m_or_f"
DATES = "dates_are_valid"
COORDINATES = "coordinates_are_valid"
AMOUNTS = "amounts_are_valid"
SCD2 = "scd2_integrity_holds"
IDENTITY = "patient_identity_is_stable"
# Defects the raw loader rejects whole (the run fails before any check); checks see the file before.
LOADER_REJECTS = {
    "missing_column",
    "semicolon_delimiter",
    "non_utf8",
    "headerless",
    "header_joined",
}
# Which check each defect fails, and how; every other check passes.
EXPECTED: dict[str, dict[str, QualityStatus]] = {
    # 3% rejected: above warn (1%), below fail (5%); a row that cannot be joined fails
    "null_ids": {REJECTION: QualityStatus.WARN, IDS: QualityStatus.FAILED},
    # both rows of each pair are rejected: 6%
    "duplicate_ids": {REJECTION: QualityStatus.FAILED, IDS: QualityStatus.FAILED},
    "unknown_gender": {REJECTION: QualityStatus.WARN, GENDER: QualityStatus.WARN},
    "future_birthdate": {REJECTION: QualityStatus.WARN, DATES: QualityStatus.WARN},
    "death_before_birth": {REJECTION: QualityStatus.WARN, DATES: QualityStatus.WARN},
    "out_of_range_coordinates": {REJECTION: QualityStatus.WARN, COORDINATES: QualityStatus.WARN},
    "missing_column": {},
    "extra_column": {FILE_ANOMALIES: QualityStatus.WARN},  # the schema check allows unexpected
    "semicolon_delimiter": {},
    "empty_file": {ROW_COUNT: QualityStatus.FAILED, VOLUME: QualityStatus.WARN},
    # 1 of 200 rejected (0.5%) is within 1%
    "truncated_last_line": {WELL_FORMED: QualityStatus.WARN},
    "volume_drop": {VOLUME: QualityStatus.WARN},
    "bom_crlf": {FILE_ANOMALIES: QualityStatus.WARN},
    # normalised by the loader (trimmed, matched ignoring case, mapped by name, skipped): warned
    "header_whitespace": {FILE_ANOMALIES: QualityStatus.WARN},
    "header_case": {FILE_ANOMALIES: QualityStatus.WARN},
    "columns_reordered": {FILE_ANOMALIES: QualityStatus.WARN},
    "blank_lines": {FILE_ANOMALIES: QualityStatus.WARN},
    "cr_line_endings": {FILE_ANOMALIES: QualityStatus.WARN},
    # rejected whole by the loader: no header, or the header runs into the first record
    "headerless": {},
    "header_joined": {},
    "non_utf8": {},
    # 4-digit ZIPs in Massachusetts: kept and flagged, not rejected
    "zip_leading_zeros_stripped": {FLAGGED: QualityStatus.WARN},
    "locale_numbers": {REJECTION: QualityStatus.FAILED, AMOUNTS: QualityStatus.WARN},
    # valid in every field: only the identity check sees the reused ids
    "identity_change": {IDENTITY: QualityStatus.FAILED},
}


def project_config() -> HealthConfiguration:
    return load_config(PROJECT_CONFIG)


# Configured checks that a landed defect fails in the Dagster job rather than in evaluate(): the
# raw asset reports the contract check failed for a file the loader rejects whole
# (defs/pipeline/test_contract.py: missing_column, semicolon_delimiter, non_utf8, ...).
FAILED_BY_THE_JOB: dict[str, str] = {SCHEMA: "missing_column"}

# Every configured check -> the test that makes it fail by landing a file and running
# patients_etl_job ("module::function" under healthmon_dagster_tests/defs). The invariant checks
# below are made to fail by tampering instead.
_CHECKS = "quality/test_checks.py::"
FAILED_THROUGH_THE_JOB: dict[str, str] = {
    SCHEMA: "pipeline/test_contract.py::test_a_rejected_file_is_a_failed_contract_check",
    ROW_COUNT: _CHECKS + "test_raw_checks_and_identity_and_format_rules_fail_through_the_job",
    WELL_FORMED: _CHECKS + "test_raw_checks_and_identity_and_format_rules_fail_through_the_job",
    FILE_ANOMALIES: "quality/test_file_checks.py::test_each_tolerated_anomaly_warns",
    VOLUME: _CHECKS + "test_a_fresh_install_learns_volume_without_failing_until_a_real_deviation",
    REJECTION: _CHECKS + "test_every_file_a_run_stages_is_judged_not_only_the_newest",
    FLAGGED: _CHECKS + "test_each_staging_reason_check_fails_through_the_job",
    IDS: _CHECKS + "test_each_staging_reason_check_fails_through_the_job",
    GENDER: _CHECKS + "test_each_staging_reason_check_fails_through_the_job",
    DATES: _CHECKS + "test_each_staging_reason_check_fails_through_the_job",
    COORDINATES: _CHECKS + "test_each_staging_reason_check_fails_through_the_job",
    AMOUNTS: _CHECKS + "test_each_staging_reason_check_fails_through_the_job",
    IDENTITY: _CHECKS
    + "test_a_later_file_that_reuses_ids_for_other_people_fails_the_identity_check",
}

# Configured checks that guard invariants of the pipeline's own code (rows neither lost nor
# invented between layers, one current SCD2 version per patient): no landing file can break them,
# so they are made to fail by tampering with the tables in their own tests, not by a defect.
INVARIANT_CHECKS: dict[str, str] = {
    "raw_vs_stg_reconciles": "staging moves every raw row to stg or rejected in one transaction",
    "stg_vs_core_reconciles": "the merge gives every staged patient a current row",
    "scd2_integrity_holds": "the merge closes the old version in the statement that opens one",
}


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
    # kw passes generate_sample's other keyword arguments through as ``object``: hence the ignore.
    samples = generate_sample(rows, files=files, defect=defect, **kw)  # type: ignore[arg-type]
    write_to(landing, samples)
    for sample in samples:
        raw.load_file(engine, landing, sample.key)
    staging.stage_pending(engine, today=TODAY, config=project_config().staging)
    core.merge_pending(engine)


def seed_volume_history(engine: Engine, days: int = 10, rows: float = ROWS) -> None:
    """Per-load row counts of raw/patients as the raw asset records them, one a day."""
    write_volume_history(engine, rows, days)


def record_current_load(engine: Engine) -> None:
    """The latest file's row count, as raw_patients records it after a load."""
    with engine.connect() as conn:
        rows = conn.execute(
            sa.text(
                "SELECT rows_raw FROM etl.files WHERE status IN ('loaded', 'empty') "
                "ORDER BY file_id DESC LIMIT 1"
            )
        ).scalar_one()
    point = MetricPoint(
        RAW_PATIENTS.component,
        RAW_PATIENTS.volume_metric,
        rows,
        "rows",
        {"asset": RAW_PATIENTS.key},
    )
    write_metrics(engine, [point])


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
    return {name: r.status for name, r in results.items() if r.status != QualityStatus.PASSED}


def land_rows(engine: Engine, tmp_path: Path, key: str, rows: list[list[str]]) -> None:
    """Land one file of ``rows`` (fields in COLUMNS order), then load, stage and merge it as the
    pipeline does."""
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(COLUMNS)
    writer.writerows(rows)
    landing = LocalLandingSource(tmp_path / "landing")
    landing.put(key, out.getvalue().encode())
    raw.load_file(engine, landing, key)
    staging.stage_pending(engine, today=TODAY)
    core.merge_pending(engine)


def sample_rows(data: bytes) -> list[list[str]]:
    """The records of a generated file, without its header."""
    return list(csv.reader(io.StringIO(data.decode())))[1:]


def add_overlapping_version(engine: Engine, patient_id: str) -> None:
    """An older closed version of the patient whose window runs past the start of the current one."""
    d = dim_patient
    with engine.begin() as conn:
        current = (
            conn.execute(sa.select(d).where(d.c.is_current, d.c.patient_id == patient_id))
            .mappings()
            .one()
        )
        older = {k: v for k, v in current.items() if k != "patient_sk"}
        older.update(
            valid_from=current["valid_from"] - timedelta(days=10),
            valid_to=current["valid_from"] + timedelta(days=1),
            is_current=False,
        )
        conn.execute(d.insert().values(**older))
