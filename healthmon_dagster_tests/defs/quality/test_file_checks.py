"""The file_anomalies check (landing_file_is_clean on raw/patients) through patients_etl_job, SQLite
and Postgres: each anomaly the loader tolerates warns (never fails, never blocks), each can be
ignored, the full sweep judges the files of its window, and no header text outside the contract or
field value is shown."""

import json
from pathlib import Path
from typing import Any

import dagster as dg
import pytest
import sqlalchemy as sa
import yaml

from healthmon_dagster.definitions import build_defs
from healthmon_dagster.etl.landing import LocalLandingSource
from healthmon_dagster.etl.sample import generate_sample, write_to
from healthmon_dagster.store.db import get_engine
from healthmon_dagster.store.tables import SYNTHEA_COLUMN_ORDER, check_results, files
from healthmon_dagster_tests.defs.fixtures import (
    CORE,
    failure_descriptions,
    materialized,
    patient_values,
)
from healthmon_dagster_tests.quality.fixtures import (
    FILE_ANOMALIES,
    PROJECT_CONFIG,
    seed_volume_history,
)

ANOMALIES = (
    "bom",
    "crlf_line_endings",
    "cr_line_endings",
    "unexpected_columns",
    "other_delimiter",
    "missing_optional_columns",
    "malformed_records",
    "header_whitespace",
    "header_case",
    "column_order",
    "blank_lines",
)


def use_config(
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
    settings: dict[str, Any] | None = None,
    accepted_delimiters: list[str] | None = None,
) -> None:
    """healthmon.yaml with ``settings`` applied to the file_anomalies check, as HEALTHMON_CONFIG."""
    data = yaml.safe_load(PROJECT_CONFIG.read_text())
    (check,) = [
        c
        for c in data["quality"]["assets"]["raw/patients"]["checks"]
        if c.get("name") == FILE_ANOMALIES
    ]
    check.update(settings or {})
    if accepted_delimiters is not None:
        data["landing"]["accepted_delimiters"] = accepted_delimiters
    path = tmp_path / "healthmon.yaml"
    path.write_text(yaml.safe_dump(data))
    monkeypatch.setenv("HEALTHMON_CONFIG", str(path))


def run(job: str, instance: dg.DagsterInstance, **kw: Any) -> dg.ExecuteInProcessResult:
    return (
        build_defs()
        .resolve_job_def(job)
        .execute_in_process(instance=instance, raise_on_error=False, **kw)
    )


def file_check(result: dg.ExecuteInProcessResult) -> dg.AssetCheckEvaluation:
    (evaluation,) = [
        e.asset_check_evaluation_data
        for e in result.all_events
        if e.event_type == dg.DagsterEventType.ASSET_CHECK_EVALUATION
        and e.asset_check_evaluation_data.check_name == FILE_ANOMALIES
    ]
    return evaluation


def recorded(db_url: str, run_id: str) -> sa.Row[Any]:
    with get_engine(db_url).connect() as conn:
        return conn.execute(
            sa.select(check_results).where(
                check_results.c.dagster_run_id == run_id,
                check_results.c.check_name == FILE_ANOMALIES,
            )
        ).one()


# case -> (sample defect, check settings, accepted delimiters, anomalies found, description part)
CASES: dict[str, tuple[str | None, dict[str, str], list[str] | None, dict[str, float], str]] = {
    "bom_crlf": (
        "bom_crlf",
        {},
        None,
        {"bom": 1, "crlf_line_endings": 1},
        "1 file(s) with a UTF-8 byte-order mark (stripped); 1 file(s) with CRLF line endings",
    ),
    "cr_line_endings": (
        "cr_line_endings",
        {},
        None,
        {"cr_line_endings": 1},
        "1 file(s) with CR-only line endings (read as lines)",
    ),
    "extra_column": (
        "extra_column",
        {},
        None,
        {"unexpected_columns": 1},
        "1 column(s) outside the contract (not loaded; header text withheld)",
    ),
    "other_delimiter": (
        "semicolon_delimiter",
        {},
        [",", ";"],
        {"other_delimiter": 1},
        "1 file(s) delimited by ';' instead of ','",
    ),
    "missing_optional_columns": (
        None,
        {"missing_optional_columns": "warn"},
        None,
        {"missing_optional_columns": 3},
        "3 optional column(s) absent (loaded as empty: FIPS, INCOME, MIDDLE)",
    ),
    "header_whitespace": (
        "header_whitespace",
        {},
        None,
        {"header_whitespace": 2},
        "2 header name(s) with surrounding spaces (trimmed)",
    ),
    "header_case": (
        "header_case",
        {},
        None,
        {"header_case": 2},
        "2 contract column name(s) in another case (matched ignoring case)",
    ),
    "column_order": (
        "columns_reordered",
        {},
        None,
        {"column_order": 1},
        "1 file(s) with the contract columns in another order than Synthea's",
    ),
    "blank_lines": (
        "blank_lines",
        {},
        None,
        {"blank_lines": 2},
        "2 blank line(s) between records (skipped)",
    ),
    "malformed_records": (
        "truncated_last_line",
        {"malformed_records": "warn"},
        None,
        {"malformed_records": 1},
        "1 record(s) kept with _error",
    ),
}


@pytest.mark.parametrize("case", list(CASES))
def test_each_tolerated_anomaly_warns(
    healthmon_env: Path,
    db_url: str,
    instance: dg.DagsterInstance,
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
    case: str,
) -> None:
    defect, settings, delimiters, anomalies, says = CASES[case]
    use_config(monkeypatch, tmp_path, settings, delimiters)
    samples = generate_sample(100, files=1, defect=defect)
    write_to(LocalLandingSource(healthmon_env / "landing"), samples)

    result = run("patients_etl_job", instance)

    assert result.success, failure_descriptions(result)
    assert CORE in materialized(result)  # a warning never blocks
    evaluation = file_check(result)
    assert evaluation.passed is False
    assert evaluation.severity == dg.AssetCheckSeverity.WARN
    description = evaluation.description or ""
    assert description.startswith("the latest file: ") and says in description, description
    meta = {k: v.value for k, v in evaluation.metadata.items()}
    # Every figure is reported, warned or not: the samples lack the 3 optional columns.
    expected = {**{a: 0 for a in ANOMALIES}, "missing_optional_columns": 3, **anomalies}
    assert {a: meta[a] for a in ANOMALIES} == expected
    assert meta["status"] == "warn" and meta["anomalies_warned"] == len(anomalies)
    assert meta["files_checked"] == 1
    row = recorded(db_url, result.run_id)
    assert (row.status, row.severity, row.target) == ("warn", "WARN", "raw/patients")

    # Header text outside the contract and field values stay in the warehouse.
    text = "\n".join([description, row.message, json.dumps(row.details), *map(str, meta.values())])
    assert "LOYALTY_TIER" not in text
    clean_values = patient_values(generate_sample(100, files=1))  # same seed, same patients
    assert not sorted(v for v in clean_values if v in text)


def test_an_ignored_anomaly_does_not_warn(
    healthmon_env: Path,
    db_url: str,
    instance: dg.DagsterInstance,
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
) -> None:
    use_config(monkeypatch, tmp_path, {"bom": "ignore", "crlf_line_endings": "ignore"})
    write_to(LocalLandingSource(healthmon_env / "landing"), generate_sample(100, defect="bom_crlf"))

    result = run("patients_etl_job", instance)

    assert result.success, failure_descriptions(result)
    evaluation = file_check(result)
    assert evaluation.passed is True, evaluation.description
    assert evaluation.description == "the latest file: no anomaly set to warn"
    meta = {k: v.value for k, v in evaluation.metadata.items()}
    assert (meta["bom"], meta["crlf_line_endings"], meta["anomalies_warned"]) == (1, 1, 0)
    assert recorded(db_url, result.run_id).status == "passed"


def test_the_full_sweep_judges_every_file_of_its_window(
    healthmon_env: Path, db_url: str, instance: dg.DagsterInstance
) -> None:
    landing = LocalLandingSource(healthmon_env / "landing")
    write_to(landing, generate_sample(100, defect="bom_crlf", prefix="patients_a"))
    write_to(landing, generate_sample(100, defect="extra_column", seed=5, prefix="patients_b"))
    write_to(landing, generate_sample(100, seed=7, prefix="patients_c"))

    etl = run("patients_etl_job", instance)
    assert etl.success, failure_descriptions(etl)
    # The run loaded the three files and judges all three, not only the newest (clean) one.
    ran = file_check(etl)
    assert ran.passed is False and ran.metadata["files_checked"].value == 3
    assert (ran.description or "").startswith("the 3 files of this run: ")

    # The first file was loaded two days ago: outside the sweep's 24 h window.
    engine = get_engine(db_url)
    with engine.begin() as conn:
        conn.execute(
            files.update()
            .where(files.c.file_key == "patients_a_0001.csv")
            .values(loaded_at=sa.func.now() - sa.text("INTERVAL '2 days'"))
            if engine.dialect.name == "postgresql"
            else files.update()
            .where(files.c.file_key == "patients_a_0001.csv")
            .values(loaded_at=sa.text("datetime('now', '-2 days')"))
        )
    sweep = run("quality_full_sweep_job", instance, tags={"healthmon/quality_mode": "full"})

    assert sweep.success, failure_descriptions(sweep)
    evaluation = file_check(sweep)
    assert evaluation.passed is False and evaluation.severity == dg.AssetCheckSeverity.WARN
    meta = {k: v.value for k, v in evaluation.metadata.items()}
    assert (meta["files_checked"], meta["unexpected_columns"], meta["bom"]) == (2, 1, 0)
    assert (evaluation.description or "").startswith("2 file(s) loaded in the last 24 h: ")


def test_synthea_3_header_in_its_own_order_passes_every_check(
    healthmon_env: Path, db_url: str, instance: dg.DagsterInstance
) -> None:
    """Synthea 3.x writes MIDDLE after FIRST, FIPS after COUNTY, INCOME last: its real order is
    not "reordered", and nothing else fails or warns on it."""
    seed_volume_history(get_engine(db_url), rows=100)
    samples = generate_sample(100, files=1, newer_columns=True)
    assert samples[0].data.split(b"\n", 1)[0].decode() == ",".join(SYNTHEA_COLUMN_ORDER)
    write_to(LocalLandingSource(healthmon_env / "landing"), samples)

    result = run("patients_etl_job", instance)

    assert result.success, failure_descriptions(result)
    found = {
        e.asset_check_evaluation_data.check_name: e.asset_check_evaluation_data
        for e in result.all_events
        if e.event_type == dg.DagsterEventType.ASSET_CHECK_EVALUATION
    }
    assert {n: e.description for n, e in found.items() if not e.passed} == {}
    meta = {k: v.value for k, v in file_check(result).metadata.items()}
    assert (meta["column_order"], meta["missing_optional_columns"]) == (0, 0)
    with get_engine(db_url).connect() as conn:
        loaded = conn.execute(
            sa.text("SELECT count(*) FROM raw.patients WHERE middle IS NOT NULL AND income > '0'")
        ).scalar()
    assert loaded and loaded > 0  # the newer columns are loaded by name


def test_a_reordered_synthea_3_header_still_warns(
    healthmon_env: Path, db_url: str, instance: dg.DagsterInstance
) -> None:
    samples = generate_sample(100, files=1, newer_columns=True, defect="columns_reordered")
    write_to(LocalLandingSource(healthmon_env / "landing"), samples)

    result = run("patients_etl_job", instance)

    assert result.success, failure_descriptions(result)
    evaluation = file_check(result)
    assert evaluation.passed is False and evaluation.severity == dg.AssetCheckSeverity.WARN
    meta = {k: v.value for k, v in evaluation.metadata.items()}
    assert (meta["column_order"], meta["missing_optional_columns"]) == (1, 0)
