"""The landing sensor: one run request per new landing file (local folder or S3), each run loading
its file; an unreachable or malformed S3 endpoint skips the tick with the reason."""

import hashlib
from pathlib import Path

import boto3
import dagster as dg
import pytest

from healthmon_dagster.etl.landing import LocalLandingSource, S3LandingSource
from healthmon_dagster.etl.sample import generate_sample, write_to
from healthmon_dagster_tests.defs.fixtures import (
    CORE,
    RAW,
    STG,
    STG_REJECTED,
    evaluate_sensor,
    failure_descriptions,
    is_number,
    materialized,
    metric_components,
    ran_steps,
    raw_rows,
    run_job,
)
from healthmon_dagster_tests.fixtures import free_port


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
