"""reconciliation: rows lost between layers fail the check of that pair of layers. No landing file
can lose rows (staging and the merge are single transactions), so the rows are removed by hand."""

from pathlib import Path

import sqlalchemy as sa
from sqlalchemy.engine import Engine

from healthmon_dagster.enums import QualityStatus
from healthmon_dagster.store.tables import dim_patient, stg_patients
from healthmon_dagster_tests.quality.fixtures import (
    INVARIANT_CHECKS,
    evaluate_all,
    load,
    project_config,
)

RAW_VS_STG = "raw_vs_stg_reconciles"
STG_VS_CORE = "stg_vs_core_reconciles"


def test_clean_load_reconciles(engine: Engine, tmp_path: Path) -> None:
    load(engine, tmp_path, files=1)
    results = evaluate_all(engine, project_config())
    assert results[RAW_VS_STG].status == results[STG_VS_CORE].status == QualityStatus.PASSED
    assert {RAW_VS_STG, STG_VS_CORE} <= set(INVARIANT_CHECKS)


def test_staged_rows_lost_fail_raw_vs_stg(engine: Engine, tmp_path: Path) -> None:
    load(engine, tmp_path, files=1)
    with engine.begin() as conn:
        conn.execute(stg_patients.delete().where(stg_patients.c._row_number.in_((3, 9))))
    result = evaluate_all(engine, project_config())[RAW_VS_STG]
    assert result.status == QualityStatus.FAILED
    assert result.failing_rows == 2


def test_current_versions_lost_fail_stg_vs_core(engine: Engine, tmp_path: Path) -> None:
    load(engine, tmp_path, files=1)
    with engine.begin() as conn:
        ids = conn.execute(
            sa.select(stg_patients.c.id).order_by(stg_patients.c._row_number).limit(3)
        ).scalars()
        conn.execute(dim_patient.delete().where(dim_patient.c.patient_id.in_(list(ids))))
    result = evaluate_all(engine, project_config())[STG_VS_CORE]
    assert result.status == QualityStatus.FAILED
    assert result.failing_rows == 3
