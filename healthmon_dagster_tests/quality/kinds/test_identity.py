"""identity_stability: an Id reused for another person fails; every legitimate SCD2 change passes;
incremental judges the latest batch's versions, full every transition."""

from pathlib import Path

from sqlalchemy.engine import Engine

from healthmon_dagster.config.models import AssetQualityConfig, IdentityStabilityCheck
from healthmon_dagster.enums import QualityStatus
from healthmon_dagster.etl import core, raw, staging
from healthmon_dagster.etl.landing import LocalLandingSource
from healthmon_dagster.etl.sample import COLUMNS, defect_count, generate_sample, write_to
from healthmon_dagster.quality import FULL, INCREMENTAL, CheckResult, evaluate
from healthmon_dagster_tests.quality.fixtures import (
    IDENTITY,
    TODAY,
    land_rows,
    load,
    project_config,
    sample_rows,
)

COL = {name: i for i, name in enumerate(COLUMNS)}


def identity_check() -> IdentityStabilityCheck:
    (spec,) = [
        s
        for s in project_config().quality.assets["core/dim_patient"].checks
        if isinstance(s, IdentityStabilityCheck)
    ]
    return spec


def judge(engine: Engine, mode: str = INCREMENTAL, spec: object = None) -> CheckResult:
    (result,) = evaluate(engine, "core/dim_patient", [spec or identity_check()], mode=mode)
    return result


def test_the_project_configures_it_on_core_by_its_predicate_name() -> None:
    spec = identity_check()
    assert spec.check_name == IDENTITY
    assert spec.identity_columns == ["birthdate", "ssn"]
    assert spec.kind_description


def test_ids_reused_for_other_people_fail_with_counts_only(engine: Engine, tmp_path: Path) -> None:
    load(engine, tmp_path, files=2, defect="identity_change")

    result = judge(engine)
    swept = judge(engine, FULL)

    reused = defect_count(200)
    assert result.status == QualityStatus.FAILED and result.severity == "ERROR"
    assert result.failing_rows == reused
    assert result.details["keys_affected"] == reused
    assert result.details["changed__birthdate"] == result.details["changed__ssn"] == reused
    # the other version changes of the file are the generator's legitimate ones
    assert result.details["version_changes"] == reused + 10
    assert result.message.startswith(f"{reused} of {reused + 10} version changes in the latest")
    assert swept.status == QualityStatus.FAILED and swept.failing_rows == reused


def test_every_legitimate_change_passes(engine: Engine, tmp_path: Path) -> None:
    (first,) = generate_sample(50, files=1, seed=3)
    rows = sample_rows(first.data)
    land_rows(engine, tmp_path, "patients_0001.csv", rows)
    changed = []
    for i, row in enumerate(rows[:40]):
        new = list(row)
        if i % 5 == 0:
            new[COL["ADDRESS"]] = f"{i} Other Street"
            new[COL["CITY"]] = "Salem"
        elif i % 5 == 1:
            new[COL["MARITAL"]] = "S" if row[COL["MARITAL"]] == "M" else "M"
        elif i % 5 == 2:
            new[COL["HEALTHCARE_EXPENSES"]] = "123.45"
        elif i % 5 == 3:
            new[COL["HEALTHCARE_COVERAGE"]] = "67.89"
        else:
            new[COL["DEATHDATE"]] = "2024-12-31"  # a death date newly set (or moved)
        changed.append(new)
    land_rows(engine, tmp_path, "patients_0002.csv", changed)

    result = judge(engine)
    swept = judge(engine, FULL)

    assert result.status == QualityStatus.PASSED, result.message
    assert result.details["version_changes"] == 40  # every row opened a version, none tripped it
    assert swept.status == QualityStatus.PASSED and swept.total_rows == 40


def test_a_value_newly_supplied_is_not_a_change_of_identity(engine: Engine, tmp_path: Path) -> None:
    (first,) = generate_sample(20, files=1, seed=4)
    rows = sample_rows(first.data)
    without_ssn = [[*r[: COL["SSN"]], "", *r[COL["SSN"] + 1 :]] for r in rows]
    land_rows(engine, tmp_path, "patients_0001.csv", without_ssn)
    land_rows(engine, tmp_path, "patients_0002.csv", rows)  # the SSNs arrive later

    result = judge(engine)

    assert result.status == QualityStatus.PASSED, result.message
    assert result.details["version_changes"] == 20


def test_incremental_judges_the_latest_batch_and_full_the_whole_history(
    engine: Engine, tmp_path: Path
) -> None:
    load(engine, tmp_path, files=2, defect="identity_change")
    landing = LocalLandingSource(tmp_path / "landing")
    (clean,) = generate_sample(200, files=1, seed=9, prefix="later")  # new patients only
    write_to(landing, [clean])
    raw.load_file(engine, landing, clean.key)
    staging.stage_pending(engine, today=TODAY)
    core.merge_pending(engine)

    latest = judge(engine)
    swept = judge(engine, FULL)

    assert latest.status == QualityStatus.PASSED
    assert latest.details["version_changes"] == 0
    assert swept.status == QualityStatus.FAILED and swept.failing_rows == defect_count(200)


def test_warn_and_fail_are_counts_and_other_columns_can_be_named(
    engine: Engine, tmp_path: Path
) -> None:
    load(engine, tmp_path, files=2, defect="identity_change")
    qc = AssetQualityConfig.model_validate(
        {
            "checks": [
                {"kind": "identity_stability", "warn": 0, "fail": 10},
                {
                    "kind": "identity_stability",
                    "name": "gender_kept",
                    "identity_columns": ["GENDER"],
                },
            ]
        }
    )

    counted, gender = evaluate(engine, "core/dim_patient", qc.checks)

    assert counted.status == QualityStatus.WARN and counted.severity == "WARN"
    assert counted.check_name == "identity_is_stable"
    assert gender.details["version_changes"] == defect_count(200) + 10
    assert set(gender.details) >= {"changed__gender"}
