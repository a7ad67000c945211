"""scd2_integrity: a broken history fails with the violation counted."""

from datetime import timedelta
from pathlib import Path

import sqlalchemy as sa
from sqlalchemy.engine import Engine

from healthmon_dagster.enums import QualityStatus
from healthmon_dagster.quality import (
    evaluate,
)
from healthmon_dagster.store.tables import dim_patient
from healthmon_dagster_tests.quality.fixtures import (
    load,
    project_config,
)


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

    assert result.status == QualityStatus.FAILED and result.severity == "ERROR"
    assert result.details["overlapping_versions"] == 1
    assert result.failing_rows == 1
