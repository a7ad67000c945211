"""Contract breaks through patients_etl_job, SQLite and Postgres: a file the raw loader rejects whole is
a failed, blocking ERROR evaluation of the raw contract check (``schema`` on raw/patients), reported
by the raw step before the run fails, in Dagster's check history, etl.check_results and the asset
health rollup, with the reason and never a field value."""

import gzip
import json
from collections.abc import Callable
from pathlib import Path

import dagster as dg
import pytest
import sqlalchemy as sa
import yaml
from click.testing import CliRunner

from healthmon_dagster.cli.main import cli
from healthmon_dagster.definitions import build_defs
from healthmon_dagster.defs.health.instance_facts import get_asset_health
from healthmon_dagster.defs.pipeline.jobs import raw_file_run_config
from healthmon_dagster.etl.landing import LocalLandingSource
from healthmon_dagster.etl.sample import SampleFile, generate_sample
from healthmon_dagster.health.asset_health import CheckState
from healthmon_dagster.store.db import get_engine
from healthmon_dagster.store.tables import check_results, files, load_runs, metrics
from healthmon_dagster_tests.defs.fixtures import (
    RAW,
    failure_descriptions,
    materialized,
    patient_values,
    ran_steps,
)
from healthmon_dagster_tests.quality.fixtures import PROJECT_CONFIG, SCHEMA

CONTRACT = dg.AssetCheckKey(RAW, SCHEMA)


def _first_line_replaced(data: bytes, old: bytes, new: bytes) -> bytes:
    header, rest = data.split(b"\n", 1)
    assert old in header
    return header.replace(old, new) + b"\n" + rest


def _nul_in_fifth_record(data: bytes) -> bytes:
    lines = data.split(b"\n")
    lines[5] = lines[5][:3] + b"\x00" + lines[5][3:]  # physical line 6 (the header is line 1)
    return b"\n".join(lines)


def _first_non_utf8_line(data: bytes) -> int:
    for number, line in enumerate(data.split(b"\n"), start=1):
        try:
            line.decode("utf-8")
        except UnicodeDecodeError:
            return number
    raise AssertionError("the sample has no invalid UTF-8")


# defect -> (sample defect, transformation of its bytes, reason code, what the description says)
Defect = tuple[str | None, Callable[[bytes], bytes], str, Callable[[bytes], str]]
DEFECTS: dict[str, Defect] = {
    "missing_column": (
        "missing_column",
        lambda d: d,
        "missing_columns",
        lambda _: "header lacks required column(s) HEALTHCARE_COVERAGE (24 columns found)",
    ),
    "renamed_column": (
        None,
        lambda d: _first_line_replaced(d, b"HEALTHCARE_COVERAGE", b"COVERAGE_USD"),
        "missing_columns",
        lambda _: (
            "header lacks required column(s) HEALTHCARE_COVERAGE (25 columns found; 1 "
            "unknown column at position 25)"
        ),
    ),
    "semicolon_delimiter": (
        "semicolon_delimiter",
        lambda d: d,
        "delimiter",
        lambda _: "file is ';'-delimited; the contract accepts ','",
    ),
    "non_utf8": (
        "non_utf8",
        lambda d: d,
        "not_utf8",
        lambda d: f"not valid UTF-8 at line {_first_non_utf8_line(d)}",
    ),
    "nul_byte": (
        None,
        _nul_in_fifth_record,
        "nul_byte",
        lambda _: "NUL byte at line 6: binary or corrupt file",
    ),
    "binary": (None, gzip.compress, "not_utf8", lambda _: "not valid UTF-8 at line 1"),
    "headerless": (
        "headerless",
        lambda d: d,
        "no_header",
        lambda _: (
            "no header line: line 1 is a data record (25 fields, none a contract column "
            "name, some dates, numbers or ids)"
        ),
    ),
    "header_joined": (
        "header_joined",
        lambda d: d,
        "header_joined",
        lambda _: (
            "the header line runs into the first record (line 1 has 49 fields; positions "
            "25-49 hold data values)"
        ),
    ),
    "duplicate_header": (
        None,
        lambda d: _first_line_replaced(d, b",FIRST,", b",LAST,"),
        "duplicate_columns",
        lambda _: "header repeats column(s) LAST",
    ),
}


def land(home: Path, defect: str) -> tuple[SampleFile, bytes]:
    """Land the defective file; returns the clean-or-sample file it came from and its bytes."""
    sample_defect, transform, _, _ = DEFECTS[defect]
    (sample,) = generate_sample(100, files=1, defect=sample_defect)
    data = transform(sample.data)
    LocalLandingSource(home / "landing").put(sample.key, data)
    return sample, data


def evaluations(result: dg.ExecuteInProcessResult) -> dict[str, dg.DagsterEvent]:
    return {
        e.asset_check_evaluation_data.check_name: e
        for e in result.all_events
        if e.event_type == dg.DagsterEventType.ASSET_CHECK_EVALUATION
    }


def run(defs: dg.Definitions, instance: dg.DagsterInstance, key: str) -> dg.ExecuteInProcessResult:
    return defs.resolve_job_def("patients_etl_job").execute_in_process(
        run_config=raw_file_run_config(key), instance=instance, raise_on_error=False
    )


@pytest.mark.parametrize("defect", list(DEFECTS))
def test_a_rejected_file_is_a_failed_contract_check(
    healthmon_env: Path, db_url: str, instance: dg.DagsterInstance, defect: str
) -> None:
    _, _, reason, says = DEFECTS[defect]
    sample, data = land(healthmon_env, defect)
    defs = build_defs()

    result = run(defs, instance, sample.key)

    # The file is visibly rejected, as before: the run fails, nothing loads, stg and core skip.
    assert result.success is False
    (failure,) = failure_descriptions(result)
    assert sample.key in failure
    assert ran_steps(result) == {"raw__patients"}  # no check step, no stg, no core
    assert not materialized(result)
    engine = get_engine(db_url)
    with engine.connect() as conn:
        audit = conn.execute(
            sa.select(files.c.status, files.c.error).where(files.c.file_key == sample.key)
        ).one()
    assert audit.status == "rejected" and audit.error.startswith(f"{reason}:")

    # ... and the contract check failed, reported by the raw step before it failed.
    event = evaluations(result)[SCHEMA]
    evaluation = event.asset_check_evaluation_data
    assert event.step_key == "raw__patients"
    assert evaluation.passed is False
    assert evaluation.severity == dg.AssetCheckSeverity.ERROR
    assert evaluation.blocking is True
    description = evaluation.description or ""
    assert f"{sample.key}: {says(data)}" in description, description
    meta = {k: v.value for k, v in evaluation.metadata.items()}
    assert meta["status"] == "failed" and meta["files_rejected"] == 1
    assert meta["reasons"] == reason and meta[f"reason__{reason}"] == 1
    assert meta["file_keys"] == sample.key
    if reason == "missing_columns":
        assert meta["missing_columns"] == 1 and meta["line"] == 1
    if reason == "nul_byte":
        assert meta["line"] == 6

    # Dagster's check history (not PLANNED), etl.check_results and the asset health rollup.
    record = instance.event_log_storage.get_latest_asset_check_execution_by_key([CONTRACT])
    assert record[CONTRACT].status.value == "FAILED"  # not PLANNED
    with engine.connect() as conn:
        rows = conn.execute(
            sa.select(check_results).where(check_results.c.dagster_run_id == result.run_id)
        ).all()
    (row,) = rows
    assert (row.check_name, row.target, row.status, row.severity) == (
        SCHEMA,
        "raw/patients",
        "failed",
        "ERROR",
    )
    assert row.message == description
    (health,) = get_asset_health(instance, defs, asset_keys=[RAW])
    states = {c.name: c.state for c in health.check_results}
    assert states[SCHEMA] == CheckState.FAILED

    # Never a field value: not in the evaluation, the failure, the logs or the stored result.
    seen = [description, failure, row.message or "", json.dumps(row.details)]
    seen += [str(v) for v in meta.values()]
    seen += [e.user_message for e in instance.all_logs(result.run_id)]
    text = "\n".join(seen)
    # Same seed, same patients: the clean file's values (a defective file may not parse as CSV).
    values = patient_values(generate_sample(100, files=1))
    assert len(values) > 500
    assert not sorted(v for v in values if v in text)


def test_a_repeated_header_name_outside_the_contract_is_located_not_shown(
    healthmon_env: Path, db_url: str, instance: dg.DagsterInstance
) -> None:
    (sample,) = generate_sample(100, files=1)
    header, rest = sample.data.split(b"\n", 1)
    rows = b"\n".join(line + b",a,b" for line in rest.splitlines())
    LocalLandingSource(healthmon_env / "landing").put(
        sample.key, header + b",Ypsilanti_Quarry,Ypsilanti_Quarry\n" + rows
    )

    result = run(build_defs(), instance, sample.key)

    assert result.success is False
    evaluation = evaluations(result)[SCHEMA].asset_check_evaluation_data
    description = evaluation.description or ""
    assert "header repeats 1 unknown name(s), at positions 26-27" in description
    meta = {k: v.value for k, v in evaluation.metadata.items()}
    assert meta["repeated_columns"] == 1
    text = "\n".join(
        [description, *failure_descriptions(result)]
        + [str(v.value) for v in evaluation.metadata.values()]
    )
    assert "Ypsilanti" not in text


def test_without_a_contract_check_a_rejected_file_fails_the_run_as_before(
    healthmon_env: Path,
    db_url: str,
    instance: dg.DagsterInstance,
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
) -> None:
    data = yaml.safe_load(PROJECT_CONFIG.read_text())
    raw = data["quality"]["assets"]["raw/patients"]
    raw["checks"] = [c for c in raw["checks"] if c["kind"] != "schema"]
    path = tmp_path / "healthmon.yaml"
    path.write_text(yaml.safe_dump(data))
    monkeypatch.setenv("HEALTHMON_CONFIG", str(path))
    sample, _ = land(healthmon_env, "missing_column")

    result = run(build_defs(), instance, sample.key)

    assert result.success is False
    (failure,) = failure_descriptions(result)
    assert "HEALTHCARE_COVERAGE" in failure
    assert ran_steps(result) == {"raw__patients"}
    assert not evaluations(result)
    with get_engine(db_url).connect() as conn:
        assert not conn.execute(sa.select(check_results.c.check_name)).all()


def test_a_run_over_several_files_loads_the_good_ones_and_fails_the_check_for_the_bad(
    healthmon_env: Path, db_url: str, instance: dg.DagsterInstance
) -> None:
    landing = LocalLandingSource(healthmon_env / "landing")
    (good,) = generate_sample(100, files=1, prefix="patients_a")
    (bad,) = generate_sample(100, files=1, seed=7, defect="non_utf8", prefix="patients_b")
    for sample in (good, bad):
        landing.put(sample.key, sample.data)

    result = (
        build_defs()
        .resolve_job_def("patients_etl_job")
        .execute_in_process(instance=instance, raise_on_error=False)
    )

    assert result.success is False
    assert materialized(result)[RAW]["file_keys"] == good.key
    evaluation = evaluations(result)[SCHEMA].asset_check_evaluation_data
    assert evaluation.passed is False
    meta = {k: v.value for k, v in evaluation.metadata.items()}
    assert (meta["files_rejected"], meta["file_keys"]) == (1, bad.key)
    assert f"{bad.key}: not valid UTF-8 at line" in (evaluation.description or "")
    assert good.key not in (evaluation.description or "")


@pytest.mark.parametrize("defect", ["headerless", "header_joined"])
def test_a_header_line_that_is_data_leaves_no_value_in_any_output(
    healthmon_env: Path, db_url: str, capfd: pytest.CaptureFixture[str], defect: str
) -> None:
    # What an operator sees: `healthmon demo` (landing sensor, the ETL run, the warehouse summary,
    # the checks, the health checks) and `healthmon checks`, then everything stored.
    (sample,) = generate_sample(100, files=1, defect=defect)
    LocalLandingSource(healthmon_env / "landing").put(sample.key, sample.data)
    runner = CliRunner()

    demo = runner.invoke(cli, ["demo"])
    table = runner.invoke(cli, ["checks"])
    as_json = runner.invoke(cli, ["checks", "--json"])

    assert demo.exit_code == 1, demo.output  # the file's run failed
    reason = DEFECTS[defect][2]
    assert f"{sample.key}" in demo.output and f"({reason}: " in demo.output
    assert SCHEMA in table.output and "failed" in table.output.lower()
    seen = [demo.output, table.output, as_json.output, *capfd.readouterr()]
    with dg.DagsterInstance.get() as instance:
        runs = instance.get_runs()
        assert any(r.tags.get("healthmon/file_key") == sample.key for r in runs)
        for dagster_run in runs:  # the ETL run and the health-check runs, every event whole
            seen.extend(dg.serialize_value(e) for e in instance.all_logs(dagster_run.run_id))
    with get_engine(db_url).connect() as conn:
        audit = conn.execute(sa.select(files).where(files.c.file_key == sample.key)).one()
        for table_ in (files, load_runs, check_results, metrics):
            seen.extend(str(dict(row._mapping)) for row in conn.execute(sa.select(table_)))
    assert audit.status == "rejected" and audit.error.startswith(f"{reason}: ")
    assert audit.unexpected_columns is None
    assert any(f"{SCHEMA}" in s and reason in s for s in seen)  # the check's result was read

    text = "\n".join(seen)
    values = patient_values(generate_sample(100, files=1))  # same seed: the same patients
    assert len(values) > 500
    leaked = sorted(v for v in values if v in text)
    assert not leaked, f"{len(leaked)} patient value(s) in the outputs"
