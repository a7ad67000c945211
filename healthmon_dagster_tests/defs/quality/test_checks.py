"""Generated asset checks in patients_etl_job: results, blocking, crashes, records, PHI."""

import json
from pathlib import Path

import dagster as dg
import pytest
import sqlalchemy as sa
import yaml

from healthmon_dagster.definitions import build_defs
from healthmon_dagster.etl.landing import LocalLandingSource
from healthmon_dagster.etl.sample import generate_sample, write_to
from healthmon_dagster.store.db import get_engine
from healthmon_dagster.store.tables import check_results, metrics
from healthmon_dagster_tests.defs.fixtures import (
    CORE,
    RAW,
    STG,
    failure_descriptions,
    materialized,
    patient_values,
    ran_steps,
)
from healthmon_dagster_tests.quality.fixtures import (
    FILE_ANOMALIES,
    PROJECT_CONFIG,
    REJECTION,
    SCHEMA,
    seed_volume_history,
)


def code_location() -> dg.Definitions:
    """The code location as definitions.py builds it, from the current HEALTHMON_CONFIG."""
    return build_defs()


def use_config(monkeypatch: pytest.MonkeyPatch, tmp_path: Path, edit: dict[str, object]) -> None:
    """healthmon.yaml with ``edit`` applied to quality.assets, as HEALTHMON_CONFIG."""
    data = yaml.safe_load(PROJECT_CONFIG.read_text())
    data["quality"]["assets"].update(edit)
    path = tmp_path / "healthmon.yaml"
    path.write_text(yaml.safe_dump(data))
    monkeypatch.setenv("HEALTHMON_CONFIG", str(path))


def run_job(defs: dg.Definitions, instance: dg.DagsterInstance) -> dg.ExecuteInProcessResult:
    return defs.resolve_job_def("patients_etl_job").execute_in_process(
        instance=instance, raise_on_error=False
    )


def evaluations(result: dg.ExecuteInProcessResult) -> dict[str, dg.AssetCheckEvaluation]:
    return {
        e.asset_check_evaluation_data.check_name: e.asset_check_evaluation_data
        for e in result.all_events
        if e.event_type == dg.DagsterEventType.ASSET_CHECK_EVALUATION
    }


def recorded(db_url: str, run_id: str) -> dict[str, sa.Row]:  # type: ignore[type-arg]
    with get_engine(db_url).connect() as conn:
        return {
            r.check_name: r
            for r in conn.execute(
                sa.select(check_results).where(check_results.c.dagster_run_id == run_id)
            )
        }


def test_clean_files_pass_every_check_of_every_layer(
    healthmon_env: Path, db_url: str, instance: dg.DagsterInstance
) -> None:
    defs = code_location()
    seed_volume_history(get_engine(db_url))
    write_to(LocalLandingSource(healthmon_env / "landing"), generate_sample(200, files=1))

    result = run_job(defs, instance)

    assert result.success, failure_descriptions(result)
    found = evaluations(result)
    n_events = sum(
        e.event_type == dg.DagsterEventType.ASSET_CHECK_EVALUATION for e in result.all_events
    )
    assert n_events == 17  # raw 5, stg 7, core 2 from healthmon.yaml + 3 last_load_is_fresh
    assert {SCHEMA, FILE_ANOMALIES} <= set(found)  # the file checks too: no failure, no warning
    assert {n for n, e in found.items() if not e.passed} == set(), {
        n: e.description for n, e in found.items() if not e.passed
    }
    for evaluation in found.values():
        numbers = {k: v.value for k, v in evaluation.metadata.items() if k != "status"}
        assert numbers and all(isinstance(v, int | float) for v in numbers.values())
    rows = recorded(db_url, result.run_id)
    assert set(rows) == set(found)
    assert {r.status for r in rows.values()} == {"passed"}
    assert rows[REJECTION].target == "stg/patients"
    with get_engine(db_url).connect() as conn:
        comps = set(
            conn.execute(
                sa.select(metrics.c.component).where(metrics.c.metric_name.like("check.%"))
            ).scalars()
        )
    assert comps == {"raw_loader", "staging_transformer", "core_merger"}
    specs = {s.key: s for s in defs.resolve_all_asset_specs()}
    assert {k for k, s in specs.items() if s.freshness_policy is not None} == {RAW, STG, CORE}


def test_blocking_schema_failure_on_raw_stops_staging(
    healthmon_env: Path,
    db_url: str,
    instance: dg.DagsterInstance,
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
) -> None:
    data = yaml.safe_load(PROJECT_CONFIG.read_text())
    raw_checks = data["quality"]["assets"]["raw/patients"]["checks"]
    raw_checks[0]["allow_unexpected"] = False  # the schema check, blocking
    use_config(monkeypatch, tmp_path, {"raw/patients": {"checks": raw_checks}})
    (sample,) = generate_sample(100, files=1, defect="extra_column")
    write_to(LocalLandingSource(healthmon_env / "landing"), [sample])

    result = run_job(code_location(), instance)

    assert result.success is False
    schema = evaluations(result)[SCHEMA]
    assert schema.passed is False and schema.severity == dg.AssetCheckSeverity.ERROR
    assert "LOYALTY_TIER" in (schema.description or "")
    assert set(materialized(result)) == {RAW}
    assert not {"stg_patients", "core__dim_patient"} & ran_steps(result)
    assert recorded(db_url, result.run_id)[SCHEMA].status == "failed"


def test_a_crashing_check_is_an_execution_failure_not_a_pass(
    healthmon_env: Path,
    db_url: str,
    instance: dg.DagsterInstance,
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
) -> None:
    data = yaml.safe_load(PROJECT_CONFIG.read_text())
    stg_checks = data["quality"]["assets"]["stg/patients"]["checks"]
    stg_checks.append({"kind": "not_null", "name": "ghost_is_not_null", "columns": ["ghost"]})
    use_config(monkeypatch, tmp_path, {"stg/patients": {"checks": stg_checks}})
    samples = generate_sample(100, files=1, defect="unknown_gender")
    write_to(LocalLandingSource(healthmon_env / "landing"), samples)

    result = run_job(code_location(), instance)

    assert result.success is False
    found = evaluations(result)
    assert "ghost_is_not_null" not in found  # planned, never evaluated: execution failed
    assert found[REJECTION].passed is False  # the other checks still reported
    (description,) = failure_descriptions(result)
    assert "ghost_is_not_null" in description and "column ghost does not exist" in description
    rows = recorded(db_url, result.run_id)
    assert rows["ghost_is_not_null"].status == "error"
    assert rows["ghost_is_not_null"].severity == "ERROR"
    assert CORE in materialized(result)  # the failed check was not blocking

    # PHI: nothing a check emitted or recorded holds a field value of the data.
    seen = [description]
    for evaluation in found.values():
        seen.append(evaluation.description or "")
        seen.extend(str(v.value) for v in evaluation.metadata.values())
    for row in rows.values():
        seen.extend([row.message or "", json.dumps(row.details)])
    text = "\n".join(seen)
    values = patient_values(samples)
    assert len(values) > 500
    assert not sorted(v for v in values if v in text)


def test_full_sweep_job_checks_whole_tables_not_only_the_latest_file(
    healthmon_env: Path, db_url: str, instance: dg.DagsterInstance
) -> None:
    landing = LocalLandingSource(healthmon_env / "landing")
    # The older file has 3% unknown genders, the newer one is clean.
    write_to(landing, generate_sample(200, files=1, defect="unknown_gender", prefix="patients_a"))
    write_to(landing, generate_sample(200, files=1, seed=7, prefix="patients_b"))
    defs = code_location()

    etl = run_job(defs, instance)
    sweep = defs.resolve_job_def("quality_full_sweep_job").execute_in_process(
        instance=instance, tags={"healthmon/quality_mode": "full"}, raise_on_error=False
    )

    assert etl.success, failure_descriptions(etl)
    assert sweep.success, failure_descriptions(sweep)
    assert not materialized(sweep)  # checks only: the sweep never reloads anything
    # The ETL run judged the latest file (clean); the sweep judges all 400 rows (6 rejected).
    assert evaluations(etl)[REJECTION].passed is True
    swept = evaluations(sweep)[REJECTION]
    assert swept.passed is False and swept.severity == dg.AssetCheckSeverity.WARN
    row = recorded(db_url, sweep.run_id)[REJECTION]
    assert row.status == "warn" and row.failing_rows == 6
