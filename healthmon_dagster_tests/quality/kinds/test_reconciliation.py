"""reconciliation: rows lost between layers fail the check of that pair of layers. No landing file
can lose rows (staging and the merge are single transactions), so the rows are removed by hand."""

from pathlib import Path

import sqlalchemy as sa
from sqlalchemy.engine import Engine

from healthmon_dagster.enums import QualityStatus
from healthmon_dagster.quality import FULL
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


def test_a_load_finds_lost_versions_of_new_changed_and_unchanged_patients(
    engine: Engine, tmp_path: Path
) -> None:
    load(engine, tmp_path, files=2)  # the second file re-sends patients, some changed
    d, s = dim_patient, stg_patients
    assert evaluate_all(engine, project_config())[STG_VS_CORE].status == QualityStatus.PASSED
    with engine.connect() as conn:
        latest = sa.select(s.c.id).where(s.c._file_id == 2)
        versions = sa.func.count().label("versions")
        current = (
            sa.select(d.c.patient_id, sa.func.max(d.c._file_id).label("file"), versions)
            .where(d.c.patient_id.in_(latest))
            .group_by(d.c.patient_id)
            .subquery()
        )
        by_kind = {
            kind: conn.execute(sa.select(current.c.patient_id).where(cond).limit(1)).scalar_one()
            for kind, cond in {
                "new": sa.and_(current.c.file == 2, current.c.versions == 1),
                "changed": sa.and_(current.c.file == 2, current.c.versions == 2),
                "unchanged": current.c.file == 1,  # its current version is of the first file
            }.items()
        }
    with engine.begin() as conn:
        conn.execute(d.delete().where(d.c.patient_id.in_(list(by_kind.values())), d.c.is_current))

    latest_file = evaluate_all(engine, project_config())[STG_VS_CORE]
    swept = evaluate_all(engine, project_config(), FULL)[STG_VS_CORE]

    assert latest_file.status == QualityStatus.FAILED
    assert latest_file.failing_rows == 3  # one row of each kind in the latest file
    assert swept.failing_rows == 5  # the two re-sent patients were staged by both files
