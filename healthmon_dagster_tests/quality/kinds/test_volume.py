"""volume_anomaly: too little history is a visible warning until history gives a verdict."""

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

    assert first.status == QualityStatus.INSUFFICIENT_HISTORY and first.severity == "WARN"
    assert "insufficient history" in first.message
    assert later.status == QualityStatus.PASSED
    assert later.details["n_history"] >= 7
