"""scd2_integrity: a broken history fails with the violation counted; a load judges every version
of the patients of its file (and says so), the sweep the whole table."""

from datetime import timedelta
from pathlib import Path

import sqlalchemy as sa
from sqlalchemy.engine import Engine

from healthmon_dagster.config.models import AssetQualityConfig, Scd2IntegrityCheck
from healthmon_dagster.enums import QualityStatus
from healthmon_dagster.etl.sample import generate_sample
from healthmon_dagster.quality import FULL, INCREMENTAL, CheckResult, evaluate
from healthmon_dagster.store.tables import dim_patient
from healthmon_dagster_tests.quality.fixtures import (
    SCD2,
    add_overlapping_version,
    land_rows,
    load,
    project_config,
    sample_rows,
)


def scd2_check() -> Scd2IntegrityCheck:
    (spec,) = [
        s
        for s in project_config().quality.assets["core/dim_patient"].checks
        if isinstance(s, Scd2IntegrityCheck)
    ]
    return spec


def judge(engine: Engine, mode: str = INCREMENTAL) -> CheckResult:
    (result,) = evaluate(engine, "core/dim_patient", [scd2_check()], mode=mode)
    return result


def close_current_version(engine: Engine, patient_id: str) -> None:
    """Leave the patient without a current version (closed a day after it opened)."""
    d = dim_patient
    current = sa.and_(d.c.is_current, d.c.patient_id == patient_id)
    with engine.begin() as conn:
        opened = conn.execute(sa.select(d.c.valid_from).where(current)).scalar_one()
        conn.execute(
            d.update().where(current).values(is_current=False, valid_to=opened + timedelta(days=1))
        )


def test_broken_scd2_history_fails_with_the_violation_counted(
    engine: Engine, tmp_path: Path
) -> None:
    load(engine, tmp_path, files=1)
    with engine.connect() as conn:
        patient = conn.execute(sa.select(dim_patient.c.patient_id).limit(1)).scalar_one()
    add_overlapping_version(engine, patient)

    result = judge(engine)

    assert result.check_name == SCD2 and result.blocking
    assert result.status == QualityStatus.FAILED and result.severity == "ERROR"
    assert result.details["overlapping_versions"] == 1
    assert result.failing_rows == 1


def test_a_load_judges_every_version_of_the_patients_of_its_file(
    engine: Engine, tmp_path: Path
) -> None:
    (sample,) = generate_sample(60, files=1, seed=5)
    rows = sample_rows(sample.data)
    first, later, new = rows[:30], rows[30:45], rows[45:]
    land_rows(engine, tmp_path, "patients_0001.csv", first)
    resent, untouched = first[0][0], first[1][0]
    # Broken histories of two patients of the first file; only the first is sent again.
    add_overlapping_version(engine, resent)
    close_current_version(engine, untouched)
    land_rows(engine, tmp_path, "patients_0002.csv", [first[0], *later])  # re-sent unchanged

    result = judge(engine)
    swept = judge(engine, FULL)

    # The load sees the broken history of the patient it re-sent, with all its versions...
    assert result.status == QualityStatus.FAILED and result.severity == "ERROR"
    assert result.details["keys_checked"] == 16
    assert result.total_rows == 17  # 15 new patients, 2 versions of the re-sent one
    assert (result.details["overlapping_versions"], result.details["keys_without_current"]) == (
        1,
        0,
    )
    assert result.message.startswith(
        "1 SCD2 violations in the 17 versions of the 16 patients of the latest batch"
    )
    # ...and the sweep every patient of the table.
    assert swept.status == QualityStatus.FAILED
    assert swept.details["overlapping_versions"] == swept.details["keys_without_current"] == 1
    assert swept.total_rows == 46 and "keys_checked" not in swept.details
    assert "in the 46 rows of the table" in swept.message

    land_rows(engine, tmp_path, "patients_0003.csv", new)  # new patients only

    latest = judge(engine)

    assert latest.status == QualityStatus.PASSED, latest.message
    assert latest.details["keys_checked"] == latest.total_rows == 15
    assert judge(engine, FULL).failing_rows == 2


def test_on_a_users_table_the_batch_is_the_keys_of_its_latest_batch_value(
    engine: Engine,
) -> None:
    with engine.begin() as conn:
        conn.execute(
            sa.text(
                "CREATE TABLE core.dim_account (account_id INTEGER NOT NULL, load_id INTEGER "
                "NOT NULL, valid_from INTEGER NOT NULL, valid_to INTEGER, is_current BOOLEAN "
                "NOT NULL)"
            )
        )
        conn.execute(
            sa.text(
                "INSERT INTO core.dim_account VALUES "
                # account 1: two current versions, loaded by batch 1 only
                "(1, 1, 1, NULL, true), (1, 1, 2, NULL, true), "
                # account 2: closed by batch 2; its first version came with batch 1
                "(2, 1, 1, 5, false), (2, 2, 5, NULL, true), "
                # account 3: new in batch 2, with a window that overlaps the next one
                "(3, 2, 1, 9, false), (3, 2, 5, NULL, true)"
            )
        )
    qc = AssetQualityConfig.model_validate(
        {"batch_column": "load_id", "checks": [{"kind": "scd2_integrity", "key": "account_id"}]}
    )

    (latest,) = evaluate(engine, "core/dim_account", qc.checks, batch_column="load_id")
    (swept,) = evaluate(engine, "core/dim_account", qc.checks, mode=FULL, batch_column="load_id")

    assert latest.status == QualityStatus.FAILED
    assert latest.details["keys_checked"] == 2 and latest.total_rows == 4  # accounts 2 and 3
    assert latest.details["overlapping_versions"] == 1
    assert latest.details["keys_with_multiple_current"] == 0
    assert "4 versions of the 2 keys of the latest batch" in latest.message
    assert swept.details["keys_with_multiple_current"] == 1 and swept.failing_rows == 2
