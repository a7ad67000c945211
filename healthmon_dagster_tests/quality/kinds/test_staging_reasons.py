"""rejection_reasons and staging_flags: counts per reason code, at most 20 row numbers, whole codes
only, and an error (never a pass) where the staging tables are not the asset's."""

from pathlib import Path

from sqlalchemy.engine import Engine

from healthmon_dagster.config.models import AssetQualityConfig
from healthmon_dagster.enums import QualityStatus
from healthmon_dagster.etl.sample import defect_rows
from healthmon_dagster.quality import evaluate
from healthmon_dagster_tests.quality.fixtures import load


def _specs(checks: list[dict[str, object]]) -> AssetQualityConfig:
    return AssetQualityConfig.model_validate({"checks": checks})


def test_reasons_are_counted_each_and_rows_named_up_to_twenty(
    engine: Engine, tmp_path: Path
) -> None:
    load(engine, tmp_path, rows=1000, files=1, defect="unknown_gender")  # 30 rows
    specs = _specs(
        [
            {"kind": "rejection_reasons", "reasons": ["gender_invalid", "id_missing"]},
            {"kind": "rejection_reasons", "name": "by_prefix", "reasons": ["id_not_uuid"]},
        ]
    ).checks
    found, none = evaluate(engine, "stg/patients_rejected", specs)

    assert found.status == QualityStatus.FAILED  # neither warn nor fail: any row fails
    assert found.details["rows__gender_invalid"] == 30 and found.details["rows__id_missing"] == 0
    assert (found.failing_rows, found.total_rows) == (30, 1000)
    first = ", ".join(str(pos + 1) for pos in defect_rows(1000)[:20])
    assert found.message.endswith(f"row numbers: {first} in patients_0001.csv (the first 20 of 30)")
    assert none.status == QualityStatus.PASSED and none.failing_rows == 0


def test_flags_are_counted_per_code(engine: Engine, tmp_path: Path) -> None:
    load(engine, tmp_path, rows=100, files=1, defect="zip_leading_zeros_stripped")
    specs = _specs(
        [
            {"kind": "staging_flags"},
            {"kind": "staging_flags", "name": "ssn_only", "flags": ["ssn_invalid"]},
            {"kind": "staging_flags", "name": "zip_fails", "flags": ["zip_invalid"], "fail": 10},
        ]
    ).checks
    every, ssn, zip_fails = evaluate(engine, "stg/patients", specs)

    assert every.status == QualityStatus.WARN and every.failing_rows > 10
    assert every.details["rows__zip_invalid"] == every.failing_rows
    assert every.details["rows__ssn_invalid"] == 0
    assert ssn.status == QualityStatus.PASSED
    assert zip_fails.status == QualityStatus.FAILED


def test_on_another_asset_the_checks_are_errors(engine: Engine, tmp_path: Path) -> None:
    load(engine, tmp_path, rows=50, files=1)
    specs = _specs(
        [{"kind": "rejection_reasons", "reasons": ["id_missing"]}, {"kind": "staging_flags"}]
    ).checks
    for result in evaluate(engine, "core/dim_patient", specs):
        assert result.status == QualityStatus.ERROR
        assert "stg/patients" in result.message
    (flags,) = evaluate(engine, "stg/patients_rejected", specs[1:])
    assert flags.status == QualityStatus.ERROR
    assert "configure staging_flags there" in flags.message
