"""custom_sql: a per-batch query runs on the latest batch, and on every batch in the full sweep."""

from pathlib import Path

from sqlalchemy.engine import Engine

from healthmon_dagster.enums import QualityStatus
from healthmon_dagster.etl import core, raw, staging
from healthmon_dagster.etl.landing import LocalLandingSource
from healthmon_dagster.etl.sample import generate_sample
from healthmon_dagster.quality import (
    FULL,
    INCREMENTAL,
)
from healthmon_dagster_tests.quality.fixtures import (
    ROWS,
    TODAY,
    evaluate_all,
    project_config,
)


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
    assert full["raw_records_are_well_formed"].status == QualityStatus.WARN
