"""Generated asset checks in patients_etl_job: results, blocking, crashes, records, PHI."""

import json
import logging
import re
from pathlib import Path

import dagster as dg
import pytest
import sqlalchemy as sa
import yaml
from click.testing import CliRunner
from sqlalchemy.engine import make_url

from healthmon_dagster.cli.main import cli
from healthmon_dagster.config import ConfigError
from healthmon_dagster.definitions import build_defs
from healthmon_dagster.defs.health.instance_facts import get_asset_health
from healthmon_dagster.etl.landing import LocalLandingSource
from healthmon_dagster.etl.sample import (
    SampleFile,
    defect_count,
    defect_rows,
    generate_sample,
    write_to,
)
from healthmon_dagster.formatting import metadata_number
from healthmon_dagster.health.asset_health import AssetHealthStatus
from healthmon_dagster.store.db import dispose_engines, get_engine
from healthmon_dagster.store.tables import check_results, files, incidents, metrics
from healthmon_dagster_tests.defs.fixtures import (
    CORE,
    RAW,
    STG,
    STG_REJECTED,
    failure_descriptions,
    materialized,
    patient_values,
    ran_steps,
)
from healthmon_dagster_tests.defs.pipeline.fixtures import SqliteOutage, TcpProxy
from healthmon_dagster_tests.quality.fixtures import (
    AMOUNTS,
    COORDINATES,
    DATES,
    FILE_ANOMALIES,
    FLAGGED,
    GENDER,
    IDENTITY,
    IDS,
    PROJECT_CONFIG,
    REJECTION,
    ROW_COUNT,
    SCD2,
    SCHEMA,
    VOLUME,
    WELL_FORMED,
    add_overlapping_version,
    sample_rows,
    seed_volume_history,
)


def code_location() -> dg.Definitions:
    """The code location as definitions.py builds it, from the current HEALTHMON_CONFIG."""
    return build_defs()


def use_config(monkeypatch: pytest.MonkeyPatch, tmp_path: Path, edit: dict[str, object]) -> Path:
    """healthmon.yaml with ``edit`` applied to quality.assets, as HEALTHMON_CONFIG."""
    data = yaml.safe_load(PROJECT_CONFIG.read_text())
    data["quality"]["assets"].update(edit)
    path = tmp_path / "healthmon.yaml"
    path.write_text(yaml.safe_dump(data))
    monkeypatch.setenv("HEALTHMON_CONFIG", str(path))
    return path


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
    # raw 5, stg 3, stg rejected 5, core 3 from healthmon.yaml + 3 last_load_is_fresh, and the
    # pipeline's own landing_files_are_not_stuck
    assert n_events == 20
    assert {SCHEMA, FILE_ANOMALIES, IDENTITY} <= set(found)  # no failure, no warning
    assert {n for n, e in found.items() if not e.passed} == set(), {
        n: e.description for n, e in found.items() if not e.passed
    }
    for evaluation in found.values():
        numbers = {k: v.value for k, v in evaluation.metadata.items() if k != "status"}
        assert numbers and all(isinstance(v, int | float) for v in numbers.values())
        # Rounded to meaningful digits: 0.1 ms, 4 significant digits, counts as ints.
        assert numbers["duration_ms"] == round(numbers["duration_ms"], 1)
        for name in ("failing_rows", "total_rows", "row_count", "n_history", "min_history"):
            assert not isinstance(numbers.get(name, 0), float), (name, numbers)
        for value in numbers.values():
            assert isinstance(value, int) or value == float(f"{value:.4g}") or abs(value) >= 1000
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


@pytest.mark.parametrize(
    ("name", "value", "shown"),
    [
        ("duration_ms", 12.34567, 12.3),
        ("failing_fraction", 0.0123456, 0.01235),
        ("failing_fraction", 0.0, 0.0),  # a fraction stays a float when whole
        ("change_pct", -12.3456, -12.35),
        ("score", 123456.789, 123456.8),
        ("failing_rows", 6.0, 6),
        ("n_history", 7.0, 7),
        ("expected", 200.0, 200.0),
        ("age_minutes", 0.000123456, 0.0001235),
    ],
)
def test_metadata_numbers_are_rounded_to_meaningful_digits(
    name: str, value: float, shown: float
) -> None:
    got = metadata_number(name, value)
    assert got == shown and type(got) is type(shown)


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
    assert "#26" in (schema.description or "")  # the extra column's position, never its text
    assert "LOYALTY_TIER" not in str(materialized(result)) + (schema.description or "")
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
    # A column named in a check's own fields is refused at load (test_unknown_column_stops_...);
    # one inside custom SQL is only found when the query runs.
    stg_checks.append(
        {
            "kind": "custom_sql",
            "name": "ghost_query_runs",
            "sql": "SELECT _row_number FROM stg.patients WHERE ghost IS NULL",
        }
    )
    use_config(monkeypatch, tmp_path, {"stg/patients": {"checks": stg_checks}})
    samples = generate_sample(100, files=1, defect="unknown_gender")
    write_to(LocalLandingSource(healthmon_env / "landing"), samples)

    result = run_job(code_location(), instance)

    assert result.success is False
    found = evaluations(result)
    assert "ghost_query_runs" not in found  # planned, never evaluated: execution failed
    assert found[REJECTION].passed is False  # the other checks still reported
    (description,) = failure_descriptions(result)
    assert "ghost_query_runs: check could not be evaluated" in description
    rows = recorded(db_url, result.run_id)
    assert rows["ghost_query_runs"].status == "error"
    assert rows["ghost_query_runs"].severity == "ERROR"
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
    # The ETL run staged both files and judges both (6 of 400 rejected), as the sweep does.
    ran = evaluations(etl)[REJECTION]
    assert ran.passed is False and "of the 2 files of this run" in (ran.description or "")
    swept = evaluations(sweep)[REJECTION]
    assert swept.passed is False and swept.severity == dg.AssetCheckSeverity.WARN
    row = recorded(db_url, sweep.run_id)[REJECTION]
    assert row.status == "warn" and row.failing_rows == 6


def emitted_text(result: dg.ExecuteInProcessResult, db_url: str) -> str:
    """Everything the run's checks said: descriptions, metadata, recorded messages and details."""
    seen = failure_descriptions(result)
    for evaluation in evaluations(result).values():
        seen.append(evaluation.description or "")
        seen.extend(str(v.value) for v in evaluation.metadata.values())
    for row in recorded(db_url, result.run_id).values():
        seen.extend([row.message or "", json.dumps(row.details)])
    return "\n".join(seen)


def run_each_file(
    samples: list[SampleFile], home: Path, db_url: str, instance: dg.DagsterInstance
) -> dg.ExecuteInProcessResult:
    """Land the files one at a time, one ETL run each (a daily export); the last run's result."""
    seed_volume_history(get_engine(db_url))
    defs = code_location()
    result = None
    for sample in samples:
        write_to(LocalLandingSource(home / "landing"), [sample])
        result = run_job(defs, instance)
        assert result.success, failure_descriptions(result)
    assert result is not None
    return result


def test_a_later_file_that_reuses_ids_for_other_people_fails_the_identity_check(
    healthmon_env: Path, db_url: str, instance: dg.DagsterInstance
) -> None:
    samples = generate_sample(200, files=2, defect="identity_change")

    result = run_each_file(samples, healthmon_env, db_url, instance)

    found = evaluations(result)
    identity = found[IDENTITY]
    assert identity.passed is False and identity.severity == dg.AssetCheckSeverity.ERROR
    assert identity.asset_key == CORE
    reused = defect_count(200)
    meta = {k: v.value for k, v in identity.metadata.items()}
    assert meta["failing_rows"] == reused and meta["keys_affected"] == reused
    assert meta["changed__birthdate"] == meta["changed__ssn"] == reused
    # Every field is valid: the identity check is the only one that fails.
    assert {n for n, e in found.items() if not e.passed} == {IDENTITY}
    row = recorded(db_url, result.run_id)[IDENTITY]
    assert (row.status, row.severity, row.failing_rows) == ("failed", "ERROR", reused)
    # PHI: counts and column names only, never an id, birth date or SSN of either file.
    text = emitted_text(result, db_url)
    values = patient_values(samples)
    assert len(values) > 500
    assert not sorted(v for v in values if v in text)


def test_legitimate_changes_of_a_later_file_pass_the_identity_check(
    healthmon_env: Path, db_url: str, instance: dg.DagsterInstance
) -> None:
    # The generator's normal second file re-sends 10% of the patients, half of them changed
    # (address, marital status or a death date): ordinary SCD2 versions.
    result = run_each_file(generate_sample(200, files=2), healthmon_env, db_url, instance)

    found = evaluations(result)
    assert {n: e.description for n, e in found.items() if not e.passed} == {}
    identity = found[IDENTITY]
    meta = {k: v.value for k, v in identity.metadata.items()}
    assert meta["version_changes"] == 10 and meta["failing_rows"] == 0  # judged, not vacuous


def test_a_broken_history_of_a_patient_the_file_resends_fails_the_blocking_scd2_check(
    healthmon_env: Path, db_url: str, instance: dg.DagsterInstance
) -> None:
    first, second = generate_sample(200, files=2)
    resent = sorted(
        {r[0] for r in sample_rows(first.data)} & {r[0] for r in sample_rows(second.data)}
    )
    engine = get_engine(db_url)
    run_each_file([first], healthmon_env, db_url, instance)
    add_overlapping_version(engine, resent[0])  # a history only the merge may write
    write_to(LocalLandingSource(healthmon_env / "landing"), [second])

    result = run_job(code_location(), instance)

    scd2 = evaluations(result)[SCD2]
    assert scd2.passed is False and scd2.severity == dg.AssetCheckSeverity.ERROR
    meta = {k: v.value for k, v in scd2.metadata.items()}
    # Judged on the 200 patients of the file (not the whole table), the re-sent ones included.
    assert meta["keys_checked"] == 200 and meta["overlapping_versions"] == 1
    assert "of the 200 patients of the latest batch" in (scd2.description or "")
    row = recorded(db_url, result.run_id)[SCD2]
    assert (row.status, row.severity, row.failing_rows) == ("failed", "ERROR", 1)
    assert resent[0] not in emitted_text(result, db_url)


# --- Load-time validation: config that names what exists -------------------------------------------


def test_a_mistyped_asset_key_stops_the_load_and_creates_no_asset(
    healthmon_env: Path, db_url: str, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    get_engine(db_url)  # the warehouse exists and is reachable
    path = use_config(
        monkeypatch,
        tmp_path,
        {"stg/patient": {"checks": [{"kind": "not_null", "columns": ["idd"]}]}},
    )

    with pytest.raises(ConfigError) as caught:
        code_location()

    assert caught.value.source == str(path)
    (error,) = caught.value.errors
    line = path.read_text().splitlines().index("    stg/patient:") + 1
    assert error.startswith(f"quality.assets['stg/patient'] (line {line}): asset key 'stg/patient'")
    assert error.endswith("did you mean 'stg/patients'?")


def test_an_unknown_column_of_a_bundled_table_stops_the_load_without_a_warehouse(
    healthmon_env: Path, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    # The bundled tables' columns are known from store/tables.py: no connection is needed.
    monkeypatch.setenv("HEALTHMON_DATABASE_URL", "postgresql+psycopg2://nobody@127.0.0.1:9/none")
    data = yaml.safe_load(PROJECT_CONFIG.read_text())
    stg_checks = data["quality"]["assets"]["stg/patients"]["checks"]
    stg_checks.insert(0, {"kind": "not_null", "columns": ["idd"]})
    path = use_config(monkeypatch, tmp_path, {"stg/patients": {"checks": stg_checks}})

    with pytest.raises(ConfigError) as caught:
        code_location()

    (error,) = caught.value.errors
    assert error.startswith("quality.assets['stg/patients'].checks[0].columns[0] (line ")
    assert "column 'idd' does not exist in stg.patients" in error
    assert error.endswith("did you mean 'id'?")
    assert str(path) in str(caught.value)


def test_a_users_table_is_checked_against_the_warehouse_at_load(
    healthmon_env: Path, db_url: str, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    with get_engine(db_url).begin() as conn:
        conn.execute(sa.text("CREATE TABLE core.visits (visit_id INTEGER, amount REAL)"))
    good = {"core/visits": {"checks": [{"kind": "range", "column": "AMOUNT", "min": 0}]}}
    use_config(monkeypatch, tmp_path, good)

    keys = set(code_location().resolve_all_asset_keys())  # column names match case-insensitively

    assert dg.AssetKey(["core", "visits"]) in keys
    bad = {"core/visits": {"checks": [{"kind": "range", "column": "amout", "min": 0}]}}
    use_config(monkeypatch, tmp_path, bad)
    with pytest.raises(ConfigError, match=r"column 'amout' does not exist in core.visits"):
        code_location()


def test_an_unreachable_warehouse_is_a_warning_at_load_not_an_error(
    healthmon_env: Path,
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
) -> None:
    monkeypatch.setenv("HEALTHMON_DATABASE_URL", "postgresql+psycopg2://nobody@127.0.0.1:9/none")
    use_config(
        monkeypatch,
        tmp_path,
        {"core/visits": {"checks": [{"kind": "range", "column": "amount", "min": 0}]}},
    )

    with caplog.at_level(logging.WARNING):
        keys = set(code_location().resolve_all_asset_keys())

    assert dg.AssetKey(["core", "visits"]) in keys  # cannot tell: the table may well exist
    (warning,) = [r.getMessage() for r in caplog.records if "could not check" in r.getMessage()]
    assert "core/visits" in warning and "127.0.0.1" in warning


def test_a_fresh_install_learns_volume_without_failing_until_a_real_deviation(
    healthmon_env: Path, db_url: str, instance: dg.DagsterInstance
) -> None:
    """No volume history yet: row_count_volume_is_normal passes as learning (Dagster, the store,
    the rollup, `healthmon checks`), then fails on a real drop once it has history."""
    defs = code_location()
    landing = LocalLandingSource(healthmon_env / "landing")
    samples = generate_sample(200, files=2)

    runs = []
    for sample in samples:  # one load per run, as the landing sensor requests them
        write_to(landing, [sample])
        runs.append(run_job(defs, instance))

    # 7 training observations needed; the latest earlier load is kept out of training (detection
    # window), so a fresh install needs 8 more loads after its first.
    for run, needed in zip(runs, (8, 7), strict=True):
        assert run.success, failure_descriptions(run)
        found = evaluations(run)
        assert {n for n, e in found.items() if not e.passed} == set()
        volume = found[VOLUME]
        meta = {k: v.value for k, v in volume.metadata.items()}
        assert meta["status"] == "insufficient_history"
        assert meta["n_history"] == 0 and meta["min_history"] == 7
        assert meta["loads_needed"] == needed
        assert f"needs {needed} more load" in (volume.description or "")
        row = recorded(db_url, run.run_id)[VOLUME]
        assert row.status == "insufficient_history" and row.severity is None
        with get_engine(db_url).connect() as conn:
            passed = conn.execute(
                sa.select(metrics.c.value).where(
                    metrics.c.metric_name == f"check.{VOLUME}.passed",
                    metrics.c.tags["status"].as_string() == "insufficient_history",
                )
            ).scalars()
            assert set(passed) == {1.0}  # learning is no failure in the metrics either

    raw = next(a for a in get_asset_health(instance, defs) if a.asset_key == "raw/patients")
    assert raw.status == AssetHealthStatus.HEALTHY, raw.reason
    assert f"check {VOLUME} LEARNING (needs 7 more loads)" in raw.reason
    shown = CliRunner().invoke(cli, ["checks", "--asset", "raw/patients"])
    assert shown.exit_code == 0, shown.output
    (line,) = [line for line in shown.output.splitlines() if VOLUME in line]
    assert "LEARNING (needs 7 more loads)" in line
    # raw/patients: 5 checks of healthmon.yaml, last_load_is_fresh, landing_files_are_not_stuck
    assert shown.output.splitlines()[-1] == "1 learning, 6 passed"

    # With history, a real deviation fails: a tenth of the usual volume.
    seed_volume_history(get_engine(db_url), days=10)
    (drop,) = generate_sample(200, files=1, defect="volume_drop", start_index=2)
    write_to(landing, [drop])
    dropped = run_job(defs, instance)

    volume = evaluations(dropped)[VOLUME]
    assert volume.passed is False and volume.severity == dg.AssetCheckSeverity.WARN
    assert recorded(db_url, dropped.run_id)[VOLUME].severity == "WARN"
    raw = next(a for a in get_asset_health(instance, defs) if a.asset_key == "raw/patients")
    assert raw.status == AssetHealthStatus.WARNING and "LEARNING" not in raw.reason

    # PHI: what the learning and failing checks emitted and recorded holds no field value.
    seen = [shown.output, raw.reason]
    for run in [*runs, dropped]:
        for evaluation in evaluations(run).values():
            seen.append(evaluation.description or "")
            seen.extend(str(v.value) for v in evaluation.metadata.values())
        for r in recorded(db_url, run.run_id).values():
            seen.extend([r.message or "", json.dumps(r.details)])
    text = "\n".join(seen)
    values = patient_values([*samples, drop])
    assert len(values) > 500
    assert not sorted(v for v in values if v in text)


@pytest.mark.parametrize(
    ("defect", "check", "severity"),
    [
        ("null_ids", IDS, dg.AssetCheckSeverity.ERROR),
        ("duplicate_ids", IDS, dg.AssetCheckSeverity.ERROR),
        ("unknown_gender", GENDER, dg.AssetCheckSeverity.WARN),
        ("future_birthdate", DATES, dg.AssetCheckSeverity.WARN),
        ("death_before_birth", DATES, dg.AssetCheckSeverity.WARN),
        ("out_of_range_coordinates", COORDINATES, dg.AssetCheckSeverity.WARN),
        ("locale_numbers", AMOUNTS, dg.AssetCheckSeverity.WARN),
        ("zip_leading_zeros_stripped", FLAGGED, dg.AssetCheckSeverity.WARN),
    ],
)
def test_each_staging_reason_check_fails_through_the_job(
    healthmon_env: Path,
    db_url: str,
    instance: dg.DagsterInstance,
    defect: str,
    check: str,
    severity: dg.AssetCheckSeverity,
) -> None:
    samples = generate_sample(200, files=1, defect=defect)
    write_to(LocalLandingSource(healthmon_env / "landing"), samples)

    result = run_job(code_location(), instance)

    found = evaluations(result)
    assert found[check].passed is False and found[check].severity == severity
    assert found[check].asset_key == (STG if check == FLAGGED else STG_REJECTED)
    meta = {k: v.value for k, v in found[check].metadata.items()}
    row = recorded(db_url, result.run_id)[check]
    assert row.failing_rows == meta["failing_rows"] > 0
    if defect in ("null_ids", "unknown_gender"):  # one row each at defect_rows (0-based)
        numbers = ", ".join(str(pos + 1) for pos in defect_rows(200))
        assert (found[check].description or "").endswith(
            f"row numbers: {numbers} in {samples[0].key}"
        )
        assert meta["failing_rows"] == defect_count(200)
    assert "row numbers: " in (row.message or "")
    # PHI: counts, reason codes and row numbers only.
    text = emitted_text(result, db_url)
    values = patient_values(samples)
    assert len(values) > 500
    assert not sorted(v for v in values if v in text)


@pytest.mark.parametrize("country", ["DE", "BR", "CA"])
def test_valid_international_exports_load_with_no_rejection_and_no_failed_check(
    healthmon_env: Path, db_url: str, instance: dg.DagsterInstance, country: str
) -> None:
    seed_volume_history(get_engine(db_url))
    samples = generate_sample(200, files=1, country=country)
    text = samples[0].data.decode()
    # Spelled as real exports spell them: FSA-only Canadian codes, German states in another case.
    tricky = {"CA": r",T2P,|,M5H,|,K1P,|,H2Y,|,V6B,|,B3H,", "DE": ",Nordrhein-westfalen,"}
    assert country not in tricky or re.search(tricky[country], text)
    write_to(LocalLandingSource(healthmon_env / "landing"), samples)

    result = run_job(code_location(), instance)

    assert result.success, failure_descriptions(result)
    found = evaluations(result)
    assert {n for n, e in found.items() if not e.passed} == set(), {
        n: e.description for n, e in found.items() if not e.passed
    }
    with get_engine(db_url).connect() as conn:
        rejected = conn.execute(sa.text("SELECT count(*) FROM stg.patients_rejected")).scalar()
        flagged = conn.execute(
            sa.text("SELECT count(*) FROM stg.patients WHERE _flags IS NOT NULL")
        ).scalar()
        current = conn.execute(
            sa.text("SELECT count(*) FROM core.dim_patient WHERE is_current")
        ).scalar()
    assert (rejected, flagged, current) == (0, 0, 200)


def test_every_file_a_run_stages_is_judged_not_only_the_newest(
    healthmon_env: Path, db_url: str, instance: dg.DagsterInstance
) -> None:
    """File A reaches raw but is not staged (a run stopped after raw); file B's run stages A and
    B: A's defects are reported, with row numbers that name A."""
    landing = LocalLandingSource(healthmon_env / "landing")
    defs = code_location()
    [bad] = generate_sample(200, files=1, defect="unknown_gender", prefix="patients_a")
    write_to(landing, [bad])
    raw_only = defs.resolve_job_def("patients_etl_job").execute_in_process(
        instance=instance, asset_selection=[RAW], raise_on_error=False
    )
    assert raw_only.success and STG not in materialized(raw_only)
    write_to(landing, generate_sample(200, files=1, seed=7, prefix="patients_b"))

    result = run_job(defs, instance)

    assert result.success, failure_descriptions(result)
    found = evaluations(result)
    gender = found[GENDER]
    assert gender.passed is False and gender.severity == dg.AssetCheckSeverity.WARN
    meta = {k: v.value for k, v in gender.metadata.items()}
    assert (meta["failing_rows"], meta["total_rows"]) == (defect_count(200), 400)
    numbers = ", ".join(str(pos + 1) for pos in defect_rows(200))
    assert (gender.description or "").endswith(f"row numbers: {numbers} in {bad.key}")
    assert "2 files of this run" in (gender.description or "")
    assert found[REJECTION].passed is False  # 6 of 400 rejected: above 1%
    # raw judged only what this run loaded (B, clean); A's raw checks ran in its own run.
    assert found[FILE_ANOMALIES].passed is True


def test_an_empty_files_run_does_not_rejudge_the_previous_files_rows(
    healthmon_env: Path, db_url: str, instance: dg.DagsterInstance
) -> None:
    landing = LocalLandingSource(healthmon_env / "landing")
    defs = code_location()
    first, empty = generate_sample(200, files=2, defect="empty_file")
    # The first file warns on its own gender codes (a defect applied to it by hand).
    broken = generate_sample(200, files=1, defect="unknown_gender")[0]
    write_to(landing, [SampleFile(first.key, broken.data, broken.rows, None)])
    assert evaluations(run_job(defs, instance))[GENDER].passed is False
    write_to(landing, [empty])

    result = run_job(defs, instance)

    found = evaluations(result)
    assert found[ROW_COUNT].passed is False  # the empty file itself is reported
    for name in (GENDER, REJECTION, IDS):
        assert found[name].passed is True, (name, found[name].description)
        assert "no rows in this run" in (found[name].description or "")


def age_files(db_url: str, days: int) -> None:
    """Every file so far was loaded ``days`` days ago."""
    engine = get_engine(db_url)
    postgres = engine.dialect.name == "postgresql"
    when = (
        sa.func.now() - sa.text(f"INTERVAL '{days} days'")
        if postgres
        else sa.text(f"datetime('now', '-{days} days')")
    )
    with engine.begin() as conn:
        conn.execute(files.update().values(loaded_at=when))


def test_the_sweep_judges_the_per_file_checks_of_its_window_only(
    healthmon_env: Path, db_url: str, instance: dg.DagsterInstance
) -> None:
    """A bad day fails the day's sweep; a clean file later, the sweep after the window passes."""
    landing = LocalLandingSource(healthmon_env / "landing")
    defs = code_location()
    # Day 1: other people under earlier ids, unknown genders (rejected), 4-digit ZIPs (flagged).
    run_each_file(
        generate_sample(200, files=2, defect="identity_change"), healthmon_env, db_url, instance
    )
    for defect, prefix in (
        ("unknown_gender", "patients_g"),
        ("zip_leading_zeros_stripped", "patients_z"),
    ):
        write_to(landing, generate_sample(200, seed=3, defect=defect, prefix=prefix))
        run_job(defs, instance)
    per_file = (REJECTION, GENDER, FLAGGED, IDENTITY)

    def sweep() -> dict[str, dg.AssetCheckEvaluation]:
        result = defs.resolve_job_def("quality_full_sweep_job").execute_in_process(
            instance=instance, tags={"healthmon/quality_mode": "full"}, raise_on_error=False
        )
        assert result.success, failure_descriptions(result)
        return evaluations(result)

    same_day = sweep()
    # The rejection rate of the day is 6 of 800 rows (0.75%): under its 1% threshold.
    assert {n for n in per_file if not same_day[n].passed} == {GENDER, FLAGGED, IDENTITY}
    assert same_day[REJECTION].metadata["total_rows"].value == 800
    assert "files loaded in the last 24 h" in (same_day[GENDER].description or "")

    age_files(db_url, 2)  # day 3: a clean file, then the day's sweep
    write_to(landing, generate_sample(200, seed=11, prefix="patients_c"))
    assert run_job(defs, instance).success

    later = sweep()
    assert {n: later[n].description for n in per_file if not later[n].passed} == {}
    assert (
        later[REJECTION].metadata["total_rows"].value,
        later[GENDER].metadata["total_rows"].value,
    ) == (200, 200)


def _edit_rows(sample: SampleFile, column: str, value: str, rows: list[int]) -> SampleFile:
    """``sample`` with ``column`` set to ``value`` in the data rows at ``rows`` (0-based)."""
    lines = sample.data.decode().split("\n")
    at = lines[0].split(",").index(column)
    for pos in rows:
        fields = lines[pos + 1].split(",")
        fields[at] = value
        lines[pos + 1] = ",".join(fields)
    return SampleFile(sample.key, "\n".join(lines).encode(), sample.rows, None)


# check -> (the file that breaks it, severity, asset): raw checks and identity/format rules that
# no generator defect breaks alone. Row 57 is hit (0-based 56).
RAW_AND_RULE_CASES = {
    "empty_file": (ROW_COUNT, dg.AssetCheckSeverity.ERROR, RAW),
    "truncated_last_line": (WELL_FORMED, dg.AssetCheckSeverity.WARN, RAW),
    "id_not_uuid": (IDS, dg.AssetCheckSeverity.ERROR, STG_REJECTED),
    "ssn_invalid": (FLAGGED, dg.AssetCheckSeverity.WARN, STG),
}


def _case_file(case: str) -> SampleFile:
    if case in ("empty_file", "truncated_last_line"):
        return generate_sample(200, files=1, defect=case)[0]
    [clean] = generate_sample(200, files=1)
    if case == "id_not_uuid":  # an id that can never be joined: not a UUID
        return _edit_rows(clean, "Id", "PAT-0000057", [56])
    return _edit_rows(clean, "SSN", "999-5-0057", [56])  # a Massachusetts row: US format


@pytest.mark.parametrize("case", list(RAW_AND_RULE_CASES))
def test_raw_checks_and_identity_and_format_rules_fail_through_the_job(
    healthmon_env: Path, db_url: str, instance: dg.DagsterInstance, case: str
) -> None:
    check, severity, asset = RAW_AND_RULE_CASES[case]
    sample = _case_file(case)
    write_to(LocalLandingSource(healthmon_env / "landing"), [sample])

    result = run_job(code_location(), instance)

    found = evaluations(result)
    assert found[check].passed is False and found[check].severity == severity, found[check]
    assert found[check].asset_key == asset
    row = recorded(db_url, result.run_id)[check]
    if case == "empty_file":
        assert (row.status, row.details["row_count"]) == ("failed", 0)
    else:
        assert row.failing_rows == 1
    if case in ("id_not_uuid", "ssn_invalid"):
        meta = {k: v.value for k, v in found[check].metadata.items()}
        assert meta[f"rows__{case}"] == 1
        assert (found[check].description or "").endswith(f"row numbers: 57 in {sample.key}")
    text = emitted_text(result, db_url)
    assert "PAT-0000057" not in text and "999-5-0057" not in text


def test_a_warehouse_outage_during_the_sweep_joins_the_outage_incident_not_one_per_asset(
    healthmon_env: Path,
    db_url: str,
    instance: dg.DagsterInstance,
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
) -> None:
    """The sweep's check steps, cut off from the warehouse after it served the load (Postgres: the
    pooled connections die with the proxy; SQLite: the file is gone), fail classified as the
    outage, so their failures join the database's incident instead of opening one per asset."""
    write_to(LocalLandingSource(healthmon_env / "landing"), generate_sample(100, files=1))
    health_url = (
        db_url if db_url.startswith("postgresql") else f"sqlite:///{tmp_path / 'health.db'}"
    )
    monkeypatch.setenv("HEALTHMON_HEALTH_DATABASE_URL", health_url)
    outage: TcpProxy | SqliteOutage
    if db_url.startswith("postgresql"):
        target = make_url(db_url)
        outage = TcpProxy((target.host or "127.0.0.1", target.port or 5432))
        outage.start()
        monkeypatch.setenv("HEALTHMON_DATABASE_URL", outage.url_for(db_url))
    else:
        outage = SqliteOutage(db_url)
    defs = code_location()
    try:
        assert run_job(defs, instance).success  # the load, through the same pool the sweep uses
        outage.stop()
        if isinstance(outage, SqliteOutage):
            dispose_engines()  # a run process opens the warehouse anew
        sweep = defs.resolve_job_def("quality_full_sweep_job").execute_in_process(
            instance=instance, raise_on_error=False
        )
    finally:
        if not outage.running:
            outage.start()

    assert sweep.success is False
    failed = sweep.get_step_failure_events()
    assert failed
    for event in failed:
        data = event.step_failure_data.user_failure_data
        if data is not None:  # a Failure of ours: classified as the outage
            meta = {k: v.value for k, v in data.metadata.items()}
            assert meta.get("healthmon/transient") is True, (event.step_key, meta)
    with get_engine(health_url).connect() as conn:
        (root_key,) = conn.execute(sa.select(incidents.c.root_key)).scalars().all()
    assert root_key == "resource:database:warehouse"


def test_a_check_that_cannot_run_while_the_warehouse_answers_is_a_check_error(
    healthmon_env: Path,
    instance: dg.DagsterInstance,
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
) -> None:
    data = yaml.safe_load(PROJECT_CONFIG.read_text())
    stg_checks = data["quality"]["assets"]["stg/patients"]["checks"]
    stg_checks.append(
        {"kind": "custom_sql", "name": "ghost_query_runs", "sql": "SELECT ghost FROM stg.patients"}
    )
    use_config(monkeypatch, tmp_path, {"stg/patients": {"checks": stg_checks}})
    write_to(LocalLandingSource(healthmon_env / "landing"), generate_sample(50, files=1))

    result = run_job(code_location(), instance)

    (event,) = result.get_step_failure_events()
    data = event.step_failure_data.user_failure_data
    assert data is not None
    meta = {k: v.value for k, v in data.metadata.items()}
    assert meta["healthmon/error_class"] == "check_error"
    assert meta["healthmon/transient"] is False
