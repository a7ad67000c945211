"""The landing sensor: one run request per pending landing file (local folder or S3), each run loading
its file; a failed run is requested again with backoff until the file loads or is stuck; rejected
files never starve a good one; a tick is bounded and continues from its cursor; an unreachable or
malformed S3 endpoint or warehouse skips the tick with the reason."""

import hashlib
import json
import os
import time
from pathlib import Path

import boto3
import dagster as dg
import pytest
import sqlalchemy as sa
import yaml
from click.testing import CliRunner

from healthmon_dagster.cli.main import cli
from healthmon_dagster.definitions import defs
from healthmon_dagster.defs.pipeline import sensors
from healthmon_dagster.etl import raw, staging
from healthmon_dagster.etl.landing import LocalLandingSource, S3LandingSource
from healthmon_dagster.etl.sample import generate_sample, write_to
from healthmon_dagster.store.db import get_engine
from healthmon_dagster.store.tables import SOURCE_COLUMNS, dim_patient, file_attempts, files
from healthmon_dagster_tests.defs.fixtures import (
    CORE,
    RAW,
    STG,
    STG_REJECTED,
    evaluate_sensor,
    failure_descriptions,
    failure_metadata,
    is_number,
    materialized,
    metric_components,
    ran_steps,
    raw_rows,
    run_job,
    run_request,
    step_retries,
    unreachable_url,
    use_retry_config,
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
        assert request.run_key == f"{sample.key}@{fingerprint}#1"  # attempt 1
        assert fingerprint.startswith(f"{len(sample.data)}-")  # local fingerprint: size-mtime

    current_patients = []
    for request, sample in zip(requests, samples, strict=True):
        result = run_request(instance, request)
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
        f"{s.key}@{hashlib.md5(s.data).hexdigest()}#1" for s in samples
    ]
    for request in requests:
        result = run_request(instance, request)
        assert result.success, failure_descriptions(result)
        assert materialized(result)[RAW]["rows_loaded"] == 100
    assert raw_rows(db_url) == 200
    assert not (healthmon_env / "landing").exists()  # nothing was read from the local folder
    assert not evaluate_sensor(instance).run_requests


@pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)
def test_s3_endpoint_down_skips_the_sensor_and_fails_the_run(
    healthmon_env: Path, instance: dg.DagsterInstance, monkeypatch: pytest.MonkeyPatch
) -> None:
    use_retry_config(monkeypatch, healthmon_env.parent, step_retries=1)
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
    # S3 unreachable is transient: the step was retried inside the run before it failed.
    assert step_retries(result) == 1
    assert failure_metadata(result)["healthmon/error_class"] == "s3_unavailable"


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


def attempts(db_url: str) -> list[tuple[str, int, str, str | None]]:
    """(file key, attempt, status, error class) of every attempt, in order."""
    c = file_attempts.c
    with get_engine(db_url).connect() as conn:
        return [
            (r.file_key, r.attempt, r.status, r.error_class)
            for r in conn.execute(
                sa.select(c.file_key, c.attempt, c.status, c.error_class).order_by(
                    c.file_key, c.fingerprint, c.attempt
                )
            )
        ]


def skip_message(tick: dg.SensorResult) -> str:
    assert not tick.run_requests
    assert tick.skip_reason is not None
    return tick.skip_reason.skip_message or ""


def check_evaluation(result: dg.ExecuteInProcessResult, name: str) -> dg.AssetCheckEvaluation:
    (evaluation,) = [e for e in result.get_asset_check_evaluations() if e.check_name == name]
    return evaluation


def test_a_failed_run_is_requested_again_after_its_backoff_and_the_file_loads_once(
    healthmon_env: Path,
    db_url: str,
    instance: dg.DagsterInstance,
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
) -> None:
    use_retry_config(monkeypatch, tmp_path, initial_delay_seconds=2, max_delay_seconds=2)
    (sample,) = generate_sample(100, files=1)
    write_to(LocalLandingSource(healthmon_env / "landing"), [sample])
    (first,) = evaluate_sensor(instance).run_requests or []
    assert first.run_key is not None and first.run_key.endswith("#1")

    # The warehouse is down for the whole run: the step retries twice inside it, then fails.
    monkeypatch.setenv("HEALTHMON_DATABASE_URL", unreachable_url(db_url, tmp_path))
    down = run_request(instance, first)
    monkeypatch.setenv("HEALTHMON_DATABASE_URL", db_url)

    assert down.success is False
    assert step_retries(down) == 2
    meta = failure_metadata(down)
    assert meta["healthmon/transient"] is True
    error_class = meta["healthmon/error_class"]
    assert error_class in ("connection_refused", "database_unavailable")

    # The next tick records the failure; attempt 2 waits for its backoff (2 s from the run's
    # end), then is requested.
    assert "1 waiting to retry" in skip_message(evaluate_sensor(instance))
    assert attempts(db_url) == [(sample.key, 1, "failed", error_class)]
    time.sleep(2.2)
    (second,) = evaluate_sensor(instance).run_requests or []
    assert second.run_key == first.run_key[: -len("#1")] + "#2"

    up = run_request(instance, second)

    assert up.success, failure_descriptions(up)
    assert raw_rows(db_url, sample.key) == 100
    assert "no new files" in skip_message(evaluate_sensor(instance))
    assert attempts(db_url) == [
        (sample.key, 1, "failed", error_class),
        (sample.key, 2, "succeeded", None),
    ]


def test_a_file_that_keeps_failing_is_stuck_and_fails_the_check_until_it_lands_again(
    healthmon_env: Path,
    db_url: str,
    instance: dg.DagsterInstance,
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
) -> None:
    use_retry_config(monkeypatch, tmp_path, max_attempts=2, step_retries=0)
    landing = LocalLandingSource(healthmon_env / "landing")
    stuck, good, again = generate_sample(50, files=3)
    write_to(landing, [stuck])
    down = unreachable_url(db_url, tmp_path)
    for n in (1, 2):
        (request,) = evaluate_sensor(instance).run_requests or []
        assert request.run_key is not None and request.run_key.endswith(f"#{n}")
        monkeypatch.setenv("HEALTHMON_DATABASE_URL", down)
        assert run_request(instance, request).success is False
        monkeypatch.setenv("HEALTHMON_DATABASE_URL", db_url)
        time.sleep(1.2)

    # Past max_attempts the file is stuck: no further run, however long we wait. The tick that
    # finds it reports the failed check at once.
    tick = evaluate_sensor(instance)
    assert "no new files" in skip_message(tick)
    (reported,) = tick.asset_events
    assert isinstance(reported, dg.AssetCheckEvaluation)
    assert (reported.check_name, reported.passed) == ("landing_files_are_not_stuck", False)
    assert reported.severity == dg.AssetCheckSeverity.ERROR
    assert not evaluate_sensor(instance).asset_events  # once, not every tick
    (*_, last) = attempts(db_url)
    assert last[:3] == (stuck.key, 2, "stuck") and last[3] in (
        "connection_refused",
        "database_unavailable",
    )

    # The check fails (ERROR) in the run of the next file, naming the stuck file and its class.
    write_to(landing, [good])
    (request,) = evaluate_sensor(instance).run_requests or []
    result = run_request(instance, request)
    assert result.success, failure_descriptions(result)
    evaluation = check_evaluation(result, "landing_files_are_not_stuck")
    assert evaluation.passed is False
    assert evaluation.severity == dg.AssetCheckSeverity.ERROR
    assert stuck.key in (evaluation.description or "") and last[3] in (evaluation.description or "")

    # Landed again with other content, it is pending again, loads, and the check passes.
    landing.put(stuck.key, again.data)
    (request,) = evaluate_sensor(instance).run_requests or []
    assert request.run_key is not None and request.run_key.startswith(f"{stuck.key}@")
    assert request.run_key.endswith("#1")
    result = run_request(instance, request)
    assert result.success, failure_descriptions(result)
    assert check_evaluation(result, "landing_files_are_not_stuck").passed
    assert raw_rows(db_url, stuck.key) == 50


def test_a_thousand_rejected_files_do_not_starve_a_good_one(
    healthmon_env: Path, db_url: str, instance: dg.DagsterInstance
) -> None:
    landing = LocalLandingSource(healthmon_env / "landing")
    semicolons = (";".join(SOURCE_COLUMNS) + "\n").encode()  # a delimiter the contract refuses
    for i in range(1000):
        landing.put(f"patients_rejected_{i:04}.csv", semicolons)
    # The loader rejects one of them; the other 999 get the same etl.files row in one insert (a
    # thousand runs would test nothing more and take minutes).
    first, *others = landing.list_files()
    engine = get_engine(db_url)
    assert raw.load_file(engine, landing, first.key, fingerprint=first.fingerprint).status == (
        "rejected"
    )
    with engine.connect() as conn:
        row = conn.execute(sa.select(files).where(files.c.file_key == first.key)).one()._asdict()
    del row["file_id"]
    with engine.begin() as conn:
        conn.execute(
            files.insert(),
            [{**row, "file_key": f.key, "fingerprint": f.fingerprint} for f in others],
        )
    (good,) = generate_sample(20, files=1)
    write_to(landing, [good])  # landed after all of them

    started = time.perf_counter()
    tick = evaluate_sensor(instance)
    took = time.perf_counter() - started

    assert [r.tags["healthmon/file_key"] for r in tick.run_requests or []] == [good.key]
    assert took < 10, f"a tick over 1,001 listed files took {took:.1f} s"


def test_a_tick_stops_at_its_bound_and_the_next_continues_from_its_cursor(
    healthmon_env: Path, instance: dg.DagsterInstance, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(sensors, "MAX_RUNS_PER_TICK", 2)
    samples = generate_sample(10, files=5)
    write_to(LocalLandingSource(healthmon_env / "landing"), samples)
    keys = [s.key for s in samples]

    seen = []
    cursor = None
    for _ in range(3):
        tick = evaluate_sensor(instance, cursor)
        seen.append([r.tags["healthmon/file_key"] for r in tick.run_requests or []])
        cursor = tick.cursor

    # Oldest first, two a tick; then the walk wraps around to file 1, whose attempt was requested
    # but never launched (nothing runs in this test), so it is requested again under its run key.
    assert seen == [keys[0:2], keys[2:4], [keys[4], keys[0]]]


@pytest.mark.parametrize(
    "url",
    [
        "closed",
        "postgresql+psycopg2://etl:s3cret@127.0.0.1:notaport/warehouse",
        "nosuchdriver://etl:s3cret@127.0.0.1/warehouse",
        "host=127.0.0.1 password=s3cret dbname=warehouse",
    ],
)
@pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)
def test_an_unusable_warehouse_skips_the_tick_with_a_reason_and_no_password(
    healthmon_env: Path, instance: dg.DagsterInstance, monkeypatch: pytest.MonkeyPatch, url: str
) -> None:
    write_to(LocalLandingSource(healthmon_env / "landing"), generate_sample(10, files=1))
    if url == "closed":
        url = f"postgresql+psycopg2://etl:s3cret@127.0.0.1:{free_port()}/warehouse"
    monkeypatch.setenv("HEALTHMON_DATABASE_URL", url)

    message = skip_message(evaluate_sensor(instance))

    assert message.startswith("warehouse ")
    assert "s3cret" not in message
    assert len(message.splitlines()) == 1


def tags_of(instance: dg.DagsterInstance, run_id: str) -> dict[str, str]:
    run = instance.get_run_by_id(run_id)
    assert run is not None
    return dict(run.tags)


RUN_RETRIES = {
    "run_retries": {"enabled": True, "max_retries": 1, "retry_on_asset_or_op_failure": False}
}


def test_an_attempt_waits_for_run_retries_and_a_canceled_run_is_not_retried(
    healthmon_env: Path, db_url: str, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    use_retry_config(monkeypatch, tmp_path)
    lost, canceled = generate_sample(10, files=2)
    write_to(LocalLandingSource(healthmon_env / "landing"), [lost, canceled])
    job = defs.resolve_job_def("patients_etl_job")
    started = dg.DagsterRunStatus.STARTED
    with dg.instance_for_test(overrides=RUN_RETRIES) as instance:
        lost_request, canceled_request = evaluate_sensor(instance).run_requests or []
        # A run worker dies: its code server reports the run failed, and run_retries (as
        # configured in dagster.yaml) marks it for one re-execution.
        first = instance.create_run_for_job(
            job_def=job, run_config=lost_request.run_config, tags=lost_request.tags, status=started
        )
        instance.report_run_failed(first)
        assert tags_of(instance, first.run_id)["dagster/will_retry"] == "true"
        # Someone cancels the other file's run.
        other = instance.create_run_for_job(
            job_def=job,
            run_config=canceled_request.run_config,
            tags=canceled_request.tags,
            status=started,
        )
        instance.report_run_canceled(other)

        assert not evaluate_sensor(instance).run_requests
        assert attempts(db_url) == [
            (lost.key, 1, "requested", None),  # run_retries has it: no attempt stacked on it
            (canceled.key, 1, "stuck", "run_canceled"),  # not retried behind anyone's back
        ]

        # The re-execution dies too: run_retries is spent, the sensor's next attempt follows.
        retry = instance.create_run_for_job(
            job_def=job,
            run_config=lost_request.run_config,
            # The tags Dagster's run_retries gives a re-execution (its own are inherited).
            tags={
                **lost_request.tags,
                "dagster/retry_number": "1",
                "dagster/root_run_id": first.run_id,
                "dagster/parent_run_id": first.run_id,
            },
            root_run_id=first.run_id,
            parent_run_id=first.run_id,
            status=started,
        )
        instance.report_run_failed(retry)
        assert tags_of(instance, retry.run_id)["dagster/will_retry"] == "false"
        time.sleep(1.2)  # the attempts' backoff
        (request,) = evaluate_sensor(instance).run_requests or []

    assert request.run_key == (lost_request.run_key or "")[: -len("#1")] + "#2"
    c = file_attempts.c
    with get_engine(db_url).connect() as conn:
        row = conn.execute(
            sa.select(c.status, c.error_class, c.runs, c.dagster_run_id).where(
                c.file_key == lost.key, c.attempt == 1
            )
        ).one()
    assert tuple(row) == ("failed", "run_worker_lost", 2, retry.run_id)


def attempt_reasons(db_url: str, key: str) -> list[tuple[int, str, str | None, str | None]]:
    """(attempt, status, reason, dependency) of each attempt of ``key``, in order."""
    c = file_attempts.c
    with get_engine(db_url).connect() as conn:
        return [
            tuple(r)  # type: ignore[misc]
            for r in conn.execute(
                sa.select(c.attempt, c.status, c.reason, c.dependency)
                .where(c.file_key == key)
                .order_by(c.attempt)
            )
        ]


def test_a_file_that_failed_for_the_warehouse_is_retried_in_the_tick_that_sees_it_back(
    healthmon_env: Path,
    db_url: str,
    instance: dg.DagsterInstance,
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
) -> None:
    # Backoff of ten minutes: without the warehouse's return, attempt 2 would wait that long.
    use_retry_config(
        monkeypatch, tmp_path, initial_delay_seconds=600, max_delay_seconds=600, step_retries=0
    )
    (sample,) = generate_sample(40, files=1)
    write_to(LocalLandingSource(healthmon_env / "landing"), [sample])
    tick = evaluate_sensor(instance)
    (first,) = tick.run_requests or []
    down = unreachable_url(db_url, tmp_path)

    # The warehouse goes away: the run fails on it, and the sensor's ticks find it unavailable
    # (they skip; the cursor remembers when).
    monkeypatch.setenv("HEALTHMON_DATABASE_URL", down)
    failed = run_request(instance, first)
    assert failed.success is False
    assert failure_metadata(failed)["healthmon/dependency"] == "warehouse"
    while_down = evaluate_sensor(instance, tick.cursor)
    assert "cannot be used" in skip_message(while_down)
    assert "warehouse" in json.loads(while_down.cursor or "{}")["unavailable"]

    # It answers again: the same tick records attempt 1's failure and requests attempt 2 at once.
    monkeypatch.setenv("HEALTHMON_DATABASE_URL", db_url)
    back = evaluate_sensor(instance, while_down.cursor)
    (second,) = back.run_requests or []
    assert second.run_key == (first.run_key or "")[: -len("#1")] + "#2"
    assert run_request(instance, second).success
    assert raw_rows(db_url, sample.key) == 40
    assert "no new files" in skip_message(evaluate_sensor(instance, back.cursor))
    assert attempt_reasons(db_url, sample.key) == [
        (1, "failed", "new file", "warehouse"),
        (2, "succeeded", "warehouse answers again", None),
    ]


def test_without_an_outage_seen_by_the_sensor_a_failed_attempt_waits_for_its_backoff(
    healthmon_env: Path,
    db_url: str,
    instance: dg.DagsterInstance,
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
) -> None:
    use_retry_config(
        monkeypatch, tmp_path, initial_delay_seconds=600, max_delay_seconds=600, step_retries=0
    )
    landing = LocalLandingSource(healthmon_env / "landing")
    (sample,) = generate_sample(10, files=1)
    write_to(landing, [sample])
    tick = evaluate_sensor(instance)
    (first,) = tick.run_requests or []
    monkeypatch.setenv("HEALTHMON_DATABASE_URL", unreachable_url(db_url, tmp_path))
    assert run_request(instance, first).success is False
    monkeypatch.setenv("HEALTHMON_DATABASE_URL", db_url)

    # The sensor never found the warehouse unavailable (the failure may be a blip of the run's own
    # connection): the attempt keeps its backoff instead of using its budget tick after tick.
    assert "1 waiting to retry" in skip_message(evaluate_sensor(instance, tick.cursor))

    # Now the sensor finds it unavailable: attempt 2 is due when the warehouse answers again. An
    # attempt requested after that outage was seen does not profit from it: it keeps its backoff.
    monkeypatch.setenv("HEALTHMON_DATABASE_URL", unreachable_url(db_url, tmp_path))
    seen_down = evaluate_sensor(instance, tick.cursor)
    monkeypatch.setenv("HEALTHMON_DATABASE_URL", db_url)
    (other,) = generate_sample(10, files=1, seed=7)
    landing.put("patients_later.csv", other.data)
    back = evaluate_sensor(instance, seen_down.cursor)
    assert sorted(r.run_key or "" for r in back.run_requests or []) == [
        (first.run_key or "")[: -len("#1")] + "#2",
        next(r.run_key or "" for r in back.run_requests or [] if "later" in (r.run_key or "")),
    ]
    (later,) = [r for r in back.run_requests or [] if r.tags["healthmon/file_key"] != sample.key]
    assert (later.run_key or "").endswith("#1")
    monkeypatch.setenv("HEALTHMON_DATABASE_URL", unreachable_url(db_url, tmp_path))
    assert run_request(instance, later).success is False
    monkeypatch.setenv("HEALTHMON_DATABASE_URL", db_url)
    # Only the first file's attempt 2 is requested (again: nothing ran it); the later file waits.
    last = evaluate_sensor(instance, back.cursor)
    assert [r.run_key for r in last.run_requests or []] == [(first.run_key or "")[:-1] + "2"]
    assert attempt_reasons(db_url, "patients_later.csv") == [(1, "failed", "new file", "warehouse")]


def release(*args: str) -> str:
    out = CliRunner().invoke(cli, ["files", "retry", *args])
    assert out.exit_code == 0, out.output
    return out.output


def test_a_released_stuck_file_is_requested_with_a_fresh_budget_and_loads(
    healthmon_env: Path,
    db_url: str,
    instance: dg.DagsterInstance,
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
) -> None:
    use_retry_config(monkeypatch, tmp_path, max_attempts=2, step_retries=0)
    (sample,) = generate_sample(30, files=1)
    write_to(LocalLandingSource(healthmon_env / "landing"), [sample])
    down = unreachable_url(db_url, tmp_path)

    def attempt_fails(n: int) -> None:
        (request,) = evaluate_sensor(instance).run_requests or []
        assert (request.run_key or "").endswith(f"#{n}")
        monkeypatch.setenv("HEALTHMON_DATABASE_URL", down)
        assert run_request(instance, request).success is False
        monkeypatch.setenv("HEALTHMON_DATABASE_URL", db_url)
        time.sleep(1.2)  # the backoff

    attempt_fails(1)
    attempt_fails(2)
    assert "no new files" in skip_message(evaluate_sensor(instance))  # stuck after 2 attempts

    assert "by alice" in release(sample.key, "--by", "alice")

    # Attempt 3 at once; it fails too, but the budget counts from the release: not stuck yet.
    attempt_fails(3)
    (request,) = evaluate_sensor(instance).run_requests or []
    assert (request.run_key or "").endswith("#4")
    result = run_request(instance, request)
    assert result.success, failure_descriptions(result)
    assert raw_rows(db_url, sample.key) == 30
    assert "no new files" in skip_message(evaluate_sensor(instance))
    assert [(a, s, r) for a, s, r, _ in attempt_reasons(db_url, sample.key)] == [
        (1, "failed", "new file"),
        (2, "stuck", "backoff passed"),
        (3, "failed", "released by alice"),
        (4, "succeeded", "backoff passed"),
    ]


def test_a_rejected_file_released_after_its_configuration_is_fixed_loads(
    healthmon_env: Path,
    db_url: str,
    instance: dg.DagsterInstance,
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
) -> None:
    use_retry_config(monkeypatch, tmp_path)
    (sample,) = generate_sample(25, files=1)
    semicolons = sample.data.decode().replace(",", ";").encode()  # the sample has no quoted commas
    LocalLandingSource(healthmon_env / "landing").put(sample.key, semicolons)
    (request,) = evaluate_sensor(instance).run_requests or []
    assert run_request(instance, request).success is False  # rejected: ';' is not accepted
    assert "no new files" in skip_message(evaluate_sensor(instance))

    # The operator accepts ';' and releases the file: the sensor requests it, and it loads.
    config = Path(os.environ["HEALTHMON_CONFIG"])
    data = yaml.safe_load(config.read_text())
    data["landing"]["accepted_delimiters"] = [",", ";"]
    config.write_text(yaml.safe_dump(data))
    assert "(rejected after 1 attempt(s)) by bob" in release(sample.key, "--by", "bob")
    (again,) = evaluate_sensor(instance).run_requests or []
    assert (again.run_key or "").endswith("#2")
    result = run_request(instance, again)

    assert result.success, failure_descriptions(result)
    assert raw_rows(db_url, sample.key) == 25
    assert "no new files" in skip_message(evaluate_sensor(instance))
    with get_engine(db_url).connect() as conn:
        statuses = conn.execute(
            sa.select(files.c.status)
            .where(files.c.file_key == sample.key)
            .order_by(files.c.file_id)
        ).scalars()
        assert list(statuses) == ["rejected", "loaded"]  # the rejection stays on record


def core_rows(db_url: str) -> int:
    with get_engine(db_url).connect() as conn:
        return int(conn.execute(sa.select(sa.func.count()).select_from(dim_patient)).scalar_one())


def run_catch_up(instance: dg.DagsterInstance, request: dg.RunRequest) -> dg.ExecuteInProcessResult:
    """Run a catch-up request in process, with its asset selection and tags."""
    return defs.resolve_job_def("patients_etl_job").execute_in_process(
        instance=instance,
        asset_selection=request.asset_selection,
        tags=request.tags,
        raise_on_error=False,
    )


def test_a_file_whose_staging_failed_is_caught_up_without_another_file(
    healthmon_env: Path,
    db_url: str,
    instance: dg.DagsterInstance,
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
) -> None:
    use_retry_config(monkeypatch, tmp_path, step_retries=0)
    (sample,) = generate_sample(20, files=1)
    write_to(LocalLandingSource(healthmon_env / "landing"), [sample])
    real_stage_pending = staging.stage_pending
    down = unreachable_url(db_url, tmp_path)

    def staging_database_down(engine: sa.Engine, *args: object, **kwargs: object) -> object:
        # The fault: staging meets a warehouse that is not there (a real driver error).
        return real_stage_pending(get_engine(down), *args, **kwargs)  # type: ignore[arg-type]

    # Raw loads; staging fails on a transient error (no step retry configured): the run fails.
    monkeypatch.setattr(staging, "stage_pending", staging_database_down)
    (request,) = evaluate_sensor(instance).run_requests or []
    first = run_request(instance, request)
    assert first.success is False
    assert failure_metadata(first)["healthmon/transient"] is True
    assert (raw_rows(db_url, sample.key), core_rows(db_url)) == (20, 0)

    # No new file lands. The sensor records the attempt and requests a catch-up run of the
    # downstream assets, with a run key from the store: the next tick requests the same run.
    tick = evaluate_sensor(instance)
    assert tick.run_requests, (tick.skip_reason, attempt_reasons(db_url, sample.key))
    (catch_up,) = tick.run_requests
    assert catch_up.run_key == "catch-up@files<=1#1"
    assert set(catch_up.asset_selection or []) == {STG, STG_REJECTED, CORE}
    (same,) = evaluate_sensor(instance).run_requests or []
    assert same.run_key == catch_up.run_key

    # The catch-up run meets the fault too: the next one waits for the attempts' backoff.
    assert run_catch_up(instance, catch_up).success is False
    assert "catch-up run 2 from" in skip_message(evaluate_sensor(instance))
    time.sleep(1.2)  # FAST_RETRY: 1 s
    monkeypatch.setattr(staging, "stage_pending", real_stage_pending)
    (second,) = evaluate_sensor(instance).run_requests or []
    assert second.run_key == "catch-up@files<=1#2"
    result = run_catch_up(instance, second)

    assert result.success, failure_descriptions(result)
    assert set(materialized(result)) == {STG, STG_REJECTED, CORE}
    assert {e.check_name for e in result.get_asset_check_evaluations()} >= {
        "scd2_integrity_holds"  # the checks of the layers it caught up ran with it
    }
    assert core_rows(db_url) == 20
    assert "no new files" in skip_message(evaluate_sensor(instance))


@pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)
def test_no_catch_up_while_an_etl_run_is_in_progress(
    healthmon_env: Path,
    db_url: str,
    instance: dg.DagsterInstance,
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
) -> None:
    use_retry_config(monkeypatch, tmp_path, step_retries=0)
    (sample,) = generate_sample(10, files=1)
    write_to(LocalLandingSource(healthmon_env / "landing"), [sample])
    real_stage_pending = staging.stage_pending
    down = unreachable_url(db_url, tmp_path)
    monkeypatch.setattr(
        staging,
        "stage_pending",
        lambda engine, *a, **k: real_stage_pending(get_engine(down), *a, **k),
    )
    (request,) = evaluate_sensor(instance).run_requests or []
    assert run_request(instance, request).success is False
    job = defs.resolve_job_def("patients_etl_job")
    instance.create_run_for_job(job_def=job, status=dg.DagsterRunStatus.STARTED)

    message = skip_message(evaluate_sensor(instance))

    assert "1 loaded file(s) not yet staged or merged: waiting for the ETL run in progress" in (
        message
    )
