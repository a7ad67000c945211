"""The ETL assets through patients_etl_job on a real Dagster instance, SQLite and Postgres: loads,
rejected files (never retried), duplicate content, a database outage (retried inside the run, then
a failure that says what and where), a run stopped by SIGTERM mid-load, and no patient value in
anything emitted."""

import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import dagster as dg
import pytest
import sqlalchemy as sa
import yaml

from healthmon_dagster.defs.pipeline.jobs import raw_file_run_config
from healthmon_dagster.etl import catalog
from healthmon_dagster.etl.landing import LocalLandingSource
from healthmon_dagster.etl.sample import generate_sample, write_to
from healthmon_dagster.store.db import get_engine
from healthmon_dagster.store.tables import check_results, files, load_runs, metrics
from healthmon_dagster_tests.defs.fixtures import (
    CHECK_STEPS,
    DOWNSTREAM_STEPS,
    FAST_RETRY,
    RAW,
    STG,
    STG_REJECTED,
    evaluate_sensor,
    failure_descriptions,
    failure_metadata,
    materialized,
    patient_values,
    ran_steps,
    raw_rows,
    run_job,
    step_retries,
    use_retry_config,
)
from healthmon_dagster_tests.fixtures import free_port


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


def test_each_asset_records_its_volume_under_its_own_key(
    healthmon_env: Path, db_url: str, instance: dg.DagsterInstance
) -> None:
    write_to(
        LocalLandingSource(healthmon_env / "landing"),
        generate_sample(200, files=1, defect="unknown_gender"),
    )

    result = run_job(instance)

    assert result.success, failure_descriptions(result)
    with get_engine(db_url).connect() as conn:
        recorded = {
            (r.component, r.metric_name, r.tags["asset"]): r.value
            for r in conn.execute(
                sa.select(
                    metrics.c.component, metrics.c.metric_name, metrics.c.tags, metrics.c.value
                )
            )
        }
    # The metric each volume-anomaly check learns from (etl/catalog.py), one per asset.
    for asset in catalog.ASSETS:
        assert (asset.component.value, asset.volume_metric, asset.key) in recorded, asset.key
    rejected = recorded[
        (
            catalog.STG_PATIENTS_REJECTED.component.value,
            catalog.STG_PATIENTS_REJECTED.volume_metric,
            catalog.STG_PATIENTS_REJECTED.key,
        )
    ]
    assert rejected == materialized(result)[STG_REJECTED]["rows_rejected"] > 0


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
    # A contract break is a data error: never retried, inside the run or by the sensor.
    assert step_retries(result) == 0
    meta = failure_metadata(result)
    assert (meta["healthmon/error_class"], meta["healthmon/transient"]) == ("contract_break", False)


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
    use_retry_config(monkeypatch, healthmon_env.parent, step_retries=3)
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
    # Connection refused is transient: the step was retried three times inside the run, with
    # exponential backoff; the failure says which class of error it was.
    assert step_retries(down) == 3
    meta = failure_metadata(down)
    assert meta == {
        "healthmon/error_class": "connection_refused",
        "healthmon/transient": True,
        "healthmon/error_rule": "driver_refused",
        "healthmon/dependency": "warehouse",  # the landing sensor retries at its return
    }
    waits = [
        e.event_specific_data.seconds_to_wait
        for e in down.all_events
        if e.event_type == dg.DagsterEventType.STEP_UP_FOR_RETRY
    ]
    base = FAST_RETRY["step_retry_delay_seconds"]  # retry n waits (2^n - 1) x base, +- base
    assert len(waits) == 3
    for n, wait in enumerate(waits, start=1):
        assert (2**n - 2) * base <= wait <= 2**n * base

    monkeypatch.setenv("HEALTHMON_DATABASE_URL", db_url)
    up = run_job(instance, run_config)

    assert up.success, failure_descriptions(up)
    assert materialized(up)[RAW]["rows_loaded"] == 100
    assert raw_rows(db_url, sample.key) == 100


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
        for event in result.all_events:  # check evaluations, the raw contract check's included
            if event.event_type == dg.DagsterEventType.ASSET_CHECK_EVALUATION:
                evaluation = event.asset_check_evaluation_data
                seen.append(evaluation.description or "")
                seen.extend(str(v.value) for v in evaluation.metadata.values())
    with get_engine(db_url).connect() as conn:
        seen.extend(json.dumps(tags) for tags in conn.execute(sa.select(metrics.c.tags)).scalars())
        for row in conn.execute(sa.select(check_results.c.message, check_results.c.details)):
            seen.extend([row.message or "", json.dumps(row.details)])
    assert any("rows rejected" in s for s in seen)  # the logs were collected
    assert any("patients_bad_0001.csv: header lacks" in s for s in seen)  # and the contract check

    text = "\n".join(seen)
    leaked = sorted(v for v in values if v in text)
    assert not leaked, (
        f"{len(leaked)} patient field value(s) found in metadata, logs or metric tags"
    )


def _long_pathological_file(records: int) -> bytes:
    """``records`` records (the 1,000 of a sample, repeated) with a stray quote in the second:
    a file a loader must neither stall on nor take long to stop."""
    (sample,) = generate_sample(1000, files=1)
    header, body = sample.data.split(b"\n", 1)
    lines = body.splitlines()
    fields = lines[1].split(b",")
    fields[7] = b'"' + fields[7]  # FIRST opens a quoted field that never closes
    lines[1] = b",".join(fields)
    return header + b"\n" + b"\n".join(lines * (records // 1000)) + b"\n"


def test_sigterm_stops_a_load_promptly_and_commits_nothing(
    healthmon_env: Path, db_url: str, tmp_path: Path
) -> None:
    # `dagster job execute` runs the job in its own process as a run worker does: Dagster maps
    # SIGTERM (what Kubernetes and Docker send on cancel) to SIGINT, and the default launcher's
    # cancel sends SIGINT to the run worker; in a step either becomes an exception.
    key = "patients_0001.csv"
    LocalLandingSource(healthmon_env / "landing").put(key, _long_pathological_file(200_000))
    config = tmp_path / "run.yaml"
    config.write_text(yaml.safe_dump(raw_file_run_config(key)))
    command = [
        sys.executable,
        "-m",
        "dagster",
        "job",
        "execute",
        "-m",
        "healthmon_dagster.definitions",
    ]
    worker = subprocess.Popen(
        [*command, "-j", catalog.ETL_JOB, "-c", str(config)],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env=os.environ.copy(),
    )
    output: list[str] = []
    loading, failed = threading.Event(), threading.Event()

    def read_output() -> None:
        assert worker.stdout is not None
        for line in worker.stdout:
            output.append(line)
            if f"{key}: 50,000 records read" in line:
                loading.set()
            if "RUN_FAILURE" in line:
                failed.set()

    reader = threading.Thread(target=read_output, daemon=True)
    reader.start()
    try:
        assert loading.wait(180), "".join(output[-30:])
        stopped_at = time.monotonic()
        worker.send_signal(signal.SIGTERM)
        # The load stops and the run is reported failed within seconds; the process then exits
        # after the interpreter's final garbage collection, as after any run (slow on a busy
        # machine, so only waited for).
        assert failed.wait(30), "".join(output[-30:])
        failed_s = time.monotonic() - stopped_at
        worker.wait(300)
    finally:
        if worker.poll() is None:
            worker.kill()
            worker.wait()
    reader.join(10)

    assert failed_s < 10, failed_s
    assert worker.returncode != 0
    text = "".join(output)
    assert "records read" in text and "interrupted" in text.lower()
    # Nothing of the file was committed, and the audit says why.
    assert raw_rows(db_url) == 0
    with get_engine(db_url).connect() as conn:
        assert conn.execute(sa.select(files.c.status)).all() == []
        (run,) = conn.execute(sa.select(load_runs.c.status, load_runs.c.error)).all()
    assert run.status == "failed"
    assert run.error.startswith("interrupted (DagsterExecutionInterruptedError)"), run.error
    # Dagster's own record: the step failed as interrupted, the run did not succeed.
    with dg.DagsterInstance.get() as instance:
        (dagster_run,) = instance.get_runs()
        assert dagster_run.status == dg.DagsterRunStatus.FAILURE
