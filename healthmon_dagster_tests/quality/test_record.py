"""record_results(): results land in etl.check_results and etl.metrics with their numbers."""

from pathlib import Path

import pytest
import sqlalchemy as sa
from sqlalchemy.engine import Engine

from healthmon_dagster.enums import QualityStatus
from healthmon_dagster.quality import (
    record_results,
)
from healthmon_dagster.store.tables import check_results, metrics
from healthmon_dagster_tests.quality.fixtures import (
    REJECTION,
    ROW_COUNT,
    SCD2,
    evaluate_all,
    load,
    project_config,
)


def test_results_are_recorded_with_their_numbers(engine: Engine, tmp_path: Path) -> None:
    load(engine, tmp_path, files=1, defect="unknown_gender")
    results = evaluate_all(engine, project_config())

    record_results(engine, list(results.values()), "run-1")

    with engine.connect() as conn:
        rows = {r.check_name: r for r in conn.execute(sa.select(check_results))}
        names = set(conn.execute(sa.select(metrics.c.component, metrics.c.metric_name)).all())
    assert set(rows) == set(results)
    rejected = rows[REJECTION]
    assert (rejected.status, rejected.severity, rejected.target) == (
        QualityStatus.WARN,
        "WARN",
        "stg/patients",
    )
    assert rejected.failing_rows == 6 and rejected.threshold == 0.05
    assert rejected.dagster_run_id == "run-1" and rejected.source == "asset_check"
    assert rejected.details["rejection_rate"] == pytest.approx(0.03)
    assert ("staging_transformer", f"check.{REJECTION}.failing_rows") in names
    assert ("raw_loader", f"check.{ROW_COUNT}.observed_value") in names
    assert ("core_merger", f"check.{SCD2}.passed") in names
