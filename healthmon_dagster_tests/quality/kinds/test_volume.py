"""volume_anomaly: too little history is learning (a pass that says so) until history gives a
verdict."""

from pathlib import Path

from sqlalchemy.engine import Engine

from healthmon_dagster.enums import QualityStatus
from healthmon_dagster.quality import (
    evaluate,
)
from healthmon_dagster_tests.quality.fixtures import (
    VOLUME,
    load,
    project_config,
    record_current_load,
    seed_volume_history,
)


def test_insufficient_history_is_learning_not_failing_and_history_turns_it_into_a_verdict(
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

    assert first.status == QualityStatus.INSUFFICIENT_HISTORY
    assert first.passed and first.learning and first.severity is None
    assert first.details["n_history"] == 0 and first.details["min_history"] == 7
    # 7 training observations, and the latest earlier load is kept out of training: 8 more loads.
    assert first.loads_needed == 8
    assert "learning" in first.message and "needs 8 more loads" in first.message
    assert later.status == QualityStatus.PASSED
    assert later.details["n_history"] >= 7
