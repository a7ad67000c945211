"""The ETL code location end to end: landing sensor -> patients_etl_job runs, on a real Dagster instance."""

import csv
import hashlib
import io
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import boto3
import dagster as dg
import pytest
import sqlalchemy as sa

from healthmon_dagster.definitions import defs
from healthmon_dagster.defs.jobs import raw_file_run_config
from healthmon_dagster.defs.sensors import landing_files_sensor
from healthmon_dagster.etl.landing import LocalLandingSource, S3LandingSource
from healthmon_dagster.etl.sample import SampleFile, generate_sample, write_to
from healthmon_dagster.store.db import get_engine
from healthmon_dagster.store.tables import files, metrics, raw_patients
from healthmon_dagster_tests.conftest import free_port

RAW = dg.AssetKey(["raw", "patients"])
STG = dg.AssetKey(["stg", "patients"])
STG_REJECTED = dg.AssetKey(["stg", "patients_rejected"])
CORE = dg.AssetKey(["core", "dim_patient"])
DOWNSTREAM_STEPS = {"stg_patients", "core__dim_patient"}
# The asset checks of each layer (defs/checks.py) run in the same job, and skip with their asset.
CHECK_STEPS = {
    "raw__patients__quality_checks",
    "stg__patients__quality_checks",
    "core__dim_patient__quality_checks",
}
# Columns whose values identify a patient; none of them may leave the warehouse.
PHI_COLUMNS = (
    "Id",
    "BIRTHDATE",
    "SSN",
    "DRIVERS",
    "PASSPORT",
    "FIRST",
    "LAST",
    "MAIDEN",
    "ADDRESS",
)


@pytest.fixture
def instance() -> Iterator[dg.DagsterInstance]:
    with dg.instance_for_test() as inst:
        yield inst


def evaluate_sensor(instance: dg.DagsterInstance) -> dg.SensorResult:
    result = landing_files_sensor(
        dg.build_sensor_context(instance=instance, resources=defs.resources)
    )
    assert isinstance(result, dg.SensorResult)
    return result


def run_job(
    instance: dg.DagsterInstance, run_config: dict[str, Any] | None = None
) -> dg.ExecuteInProcessResult:
    return defs.resolve_job_def("patients_etl_job").execute_in_process(
        run_config=run_config or {}, instance=instance, raise_on_error=False
    )


def materialized(result: dg.ExecuteInProcessResult) -> dict[dg.AssetKey, dict[str, Any]]:
    """Metadata of each asset the run materialized, as plain values."""
    return {
        event.asset_key: {k: v.value for k, v in event.materialization.metadata.items()}
        for event in result.get_asset_materialization_events()
        if event.asset_key is not None
    }


def failure_descriptions(result: dg.ExecuteInProcessResult) -> list[str]:
    """What a user reads for each failed step: the Failure's description, else the error."""
    out = []
    for event in result.get_step_failure_events():
        data = event.step_failure_data
        if data.user_failure_data is not None and data.user_failure_data.description:
            out.append(data.user_failure_data.description)
        else:
            out.append(data.error.message if data.error else "")
    return out


def ran_steps(result: dg.ExecuteInProcessResult) -> set[str]:
    return {
        e.step_key
        for e in [*result.get_step_success_events(), *result.get_step_failure_events()]
        if e.step_key is not None
    }


def raw_rows(db_url: str, file_key: str | None = None) -> int:
    query = sa.select(sa.func.count()).select_from(raw_patients)
    if file_key is not None:
        query = query.where(raw_patients.c._file == file_key)
    with get_engine(db_url).connect() as conn:
        return int(conn.execute(query).scalar_one())


def metric_components(db_url: str) -> set[str]:
    with get_engine(db_url).connect() as conn:
        return set(conn.execute(sa.select(metrics.c.component).distinct()).scalars())


def is_number(value: object) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def test_sensor_requests_one_run_per_file_and_each_run_loads_its_file(
    healthmon_env: Path, db_url: str, instance: dg.DagsterInstance
) -> None:
    samples = generate_sample(300, files=3)
    write_to(LocalLandingSource(healthmon_env / "landing"), samples)

    tick = evaluate_sensor(instance)

    requests = tick.run_requests or []
    assert [r.run_config["ops"]["raw__patients"]["config"]["file_key"] for r in requests] == [
        s.key for s in samples
    ]
    for request, sample in zip(requests, samples, strict=True):
        fingerprint = request.run_config["ops"]["raw__patients"]["config"]["fingerprint"]
        assert request.run_key == f"{sample.key}@{fingerprint}"
        assert fingerprint.startswith(f"{len(sample.data)}-")  # local fingerprint: size-mtime

    current_patients = []
    for request, sample in zip(requests, samples, strict=True):
        result = run_job(instance, request.run_config)
        assert result.success, failure_descriptions(result)
        meta = materialized(result)
        assert set(meta) == {RAW, STG, STG_REJECTED, CORE}
        assert meta[RAW]["rows_loaded"] == sample.rows == 300
        assert is_number(meta[STG]["rejection_rate"]) and meta[STG]["rejection_rate"] == 0.0
        assert is_number(meta[CORE]["current_patients"])
        current_patients.append(meta[CORE]["current_patients"])
        assert raw_rows(db_url, sample.key) == 300

    # Files 2 and 3 re-send some earlier patients, so the dimension grows by less than 300 per file.
    assert current_patients[0] == 300
    assert current_patients[0] < current_patients[1] < current_patients[2] < 900
    assert {"raw_loader", "staging_transformer", "core_merger"} <= metric_components(db_url)

    again = evaluate_sensor(instance)
    assert not again.run_requests
    assert again.skip_reason is not None and "no new files" in (
        again.skip_reason.skip_message or ""
    )


def test_run_without_config_loads_every_unloaded_file(
    healthmon_env: Path, db_url: str, instance: dg.DagsterInstance
) -> None:
    write_to(LocalLandingSource(healthmon_env / "landing"), generate_sample(100, files=3))

    result = run_job(instance)

    assert result.success, failure_descriptions(result)
    meta = materialized(result)
    assert meta[RAW]["rows_loaded"] == 300
    assert meta[RAW]["files_loaded"] == 3
    assert meta[STG]["files_staged"] == 3
    assert raw_rows(db_url) == 300
    assert not evaluate_sensor(instance).run_requests


def test_file_missing_a_column_fails_the_run_and_loads_nothing(
    healthmon_env: Path, db_url: str, instance: dg.DagsterInstance
) -> None:
    (bad,) = generate_sample(100, files=1, defect="missing_column")
    write_to(LocalLandingSource(healthmon_env / "landing"), [bad])

    result = run_job(instance, raw_file_run_config(bad.key))

    assert result.success is False
    (description,) = failure_descriptions(result)
    assert "HEALTHCARE_COVERAGE" in description
    assert bad.key in description
    assert ran_steps(result) == {"raw__patients"}
    assert not materialized(result)
    assert raw_rows(db_url, bad.key) == 0
    with get_engine(db_url).connect() as conn:
        status = conn.execute(sa.select(files.c.status).where(files.c.file_key == bad.key)).scalar()
    assert status == "rejected"


def test_same_content_under_another_name_is_not_loaded_twice(
    healthmon_env: Path, db_url: str, instance: dg.DagsterInstance
) -> None:
    landing = LocalLandingSource(healthmon_env / "landing")
    (sample,) = generate_sample(100, files=1)
    write_to(landing, [sample])
    assert run_job(instance).success
    landing.put("patients_resent.csv", sample.data)

    (request,) = evaluate_sensor(instance).run_requests or []
    result = run_job(instance, request.run_config)

    assert result.success, failure_descriptions(result)
    assert request.run_config["ops"]["raw__patients"]["config"]["file_key"] == "patients_resent.csv"
    assert RAW not in materialized(result)
    assert {e.step_key for e in result.get_step_skipped_events()} == DOWNSTREAM_STEPS | CHECK_STEPS
    assert raw_rows(db_url) == 100
    messages = [e.user_message for e in instance.all_logs(result.run_id)]
    assert any("patients_resent.csv" in m and "already loaded" in m for m in messages)


def test_database_down_fails_with_a_clear_message_then_the_file_loads(
    healthmon_env: Path,
    db_url: str,
    instance: dg.DagsterInstance,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    (sample,) = generate_sample(100, files=1)
    write_to(LocalLandingSource(healthmon_env / "landing"), [sample])
    run_config = raw_file_run_config(sample.key)
    port = free_port()
    monkeypatch.setenv(
        "HEALTHMON_DATABASE_URL", f"postgresql+psycopg2://etl:s3cret@127.0.0.1:{port}/warehouse"
    )

    down = run_job(instance, run_config)

    assert down.success is False
    (description,) = failure_descriptions(down)
    assert "unavailable" in description
    assert f"127.0.0.1:{port}" in description
    assert "s3cret" not in description
    assert ran_steps(down) == {"raw__patients"}

    monkeypatch.setenv("HEALTHMON_DATABASE_URL", db_url)
    up = run_job(instance, run_config)

    assert up.success, failure_descriptions(up)
    assert materialized(up)[RAW]["rows_loaded"] == 100
    assert raw_rows(db_url, sample.key) == 100


def s3_source(moto_server: str, bucket: str) -> S3LandingSource:
    client = boto3.client("s3", endpoint_url=moto_server, region_name="us-east-1")
    return S3LandingSource(client, bucket)


def test_s3_landing_files_are_found_by_the_sensor_and_loaded(
    healthmon_env: Path,
    db_url: str,
    instance: dg.DagsterInstance,
    moto_server: str,
    s3_bucket: str,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("HEALTHMON_S3_BUCKET", s3_bucket)
    samples = generate_sample(100, files=2)
    write_to(s3_source(moto_server, s3_bucket), samples)

    requests = evaluate_sensor(instance).run_requests or []

    # An S3 file's fingerprint is its ETag: the MD5 of the bytes for a single-part upload.
    assert [r.run_key for r in requests] == [
        f"{s.key}@{hashlib.md5(s.data).hexdigest()}" for s in samples
    ]
    for request in requests:
        result = run_job(instance, request.run_config)
        assert result.success, failure_descriptions(result)
        assert materialized(result)[RAW]["rows_loaded"] == 100
    assert raw_rows(db_url) == 200
    assert not (healthmon_env / "landing").exists()  # nothing was read from the local folder
    assert not evaluate_sensor(instance).run_requests


@pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)
def test_s3_endpoint_down_skips_the_sensor_and_fails_the_run(
    healthmon_env: Path, instance: dg.DagsterInstance, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("HEALTHMON_S3_BUCKET", "landing-down")
    monkeypatch.setenv("AWS_ENDPOINT_URL", f"http://127.0.0.1:{free_port()}")
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")

    tick = evaluate_sensor(instance)

    assert not tick.run_requests
    assert tick.skip_reason is not None
    message = tick.skip_reason.skip_message or ""
    assert "landing source" in message and "s3://landing-down" in message

    result = run_job(instance)

    assert result.success is False
    (description,) = failure_descriptions(result)
    assert "could not list s3://landing-down" in description
    assert "endpoint" in description
    assert ran_steps(result) == {"raw__patients"}


@pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)
def test_malformed_s3_endpoint_skips_the_sensor_and_fails_the_run(
    healthmon_env: Path, instance: dg.DagsterInstance, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("HEALTHMON_S3_BUCKET", "landing-typo")
    monkeypatch.setenv("AWS_ENDPOINT_URL", "127.0.0.1:9000")  # the scheme is missing

    tick = evaluate_sensor(instance)

    assert not tick.run_requests
    assert tick.skip_reason is not None
    message = tick.skip_reason.skip_message or ""
    assert "landing source" in message and "127.0.0.1:9000" in message

    result = run_job(instance)

    assert result.success is False
    (description,) = failure_descriptions(result)
    assert "s3://landing-typo" in description and "127.0.0.1:9000" in description


def patient_values(samples: list[SampleFile]) -> set[str]:
    values: set[str] = set()
    for sample in samples:
        text = sample.data.decode("utf-8", errors="replace")
        for row in csv.DictReader(io.StringIO(text)):
            values.update(row[c] for c in PHI_COLUMNS if row.get(c))
    return values


def test_no_patient_value_leaves_the_warehouse(
    healthmon_env: Path, db_url: str, instance: dg.DagsterInstance
) -> None:
    landing = LocalLandingSource(healthmon_env / "landing")
    samples = [
        *generate_sample(100, files=2, defect="unknown_gender"),
        *generate_sample(100, files=1, seed=7, defect="missing_column", prefix="patients_bad"),
    ]
    write_to(landing, samples)
    values = patient_values(samples)
    assert len(values) > 1000

    outcomes = [
        run_job(instance, r.run_config) for r in evaluate_sensor(instance).run_requests or []
    ]

    assert [r.success for r in outcomes] == [True, True, False]
    assert materialized(outcomes[1])[STG_REJECTED]["rows_rejected"] > 0
    seen: list[str] = []
    for result in outcomes:
        for meta in materialized(result).values():
            seen.extend(str(v) for v in meta.values())
        seen.extend(failure_descriptions(result))
        for entry in instance.all_logs(result.run_id):
            seen.append(entry.user_message)
            event = entry.dagster_event
            if event is not None and event.is_step_failure:
                data = event.step_failure_data
                seen.append(data.error.to_string() if data.error else "")
                if data.user_failure_data is not None:
                    seen.extend(str(v.value) for v in data.user_failure_data.metadata.values())
    with get_engine(db_url).connect() as conn:
        seen.extend(json.dumps(tags) for tags in conn.execute(sa.select(metrics.c.tags)).scalars())
    assert any("rows rejected" in s for s in seen)  # the logs were collected

    text = "\n".join(seen)
    leaked = sorted(v for v in values if v in text)
    assert not leaked, (
        f"{len(leaked)} patient field value(s) found in metadata, logs or metric tags"
    )
