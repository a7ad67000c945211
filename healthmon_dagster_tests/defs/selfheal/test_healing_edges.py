"""Edges of what heals a landing file's failure, and of the wait for ``run_retries`` (real Dagster
instance, real runs, SQLite and Postgres): a file whose raw load happened but whose check step met
an outage heals by the checks' next evaluation (its own attempt finds it already loaded); a stuck
file loaded by a person's run of every pending file heals; a fixed file that loads empty and fails
its own ERROR check does not heal; a failure marked for a ``run_retries`` re-execution that never
launches is decided after the wait, whatever the window, and Dagster is told not to retry it too;
a broken file in a run of every pending file is not healed by other files' loads; a fixed file
loaded by a run that failed later heals; a heal is not recorded over a failure decided meanwhile;
a re-run waiting out its backoff goes at once when the warehouse answers again.
"""

import dataclasses
import sqlite3
import threading
import time
from datetime import timedelta
from pathlib import Path

import dagster as dg
import pytest
from dagster._daemon.auto_run_reexecution.auto_run_reexecution import should_retry

from healthmon_dagster.definitions import defs
from healthmon_dagster.defs.pipeline.jobs import raw_file_run_config
from healthmon_dagster.defs.selfheal import sensors as shs
from healthmon_dagster.defs.selfheal.sensors import run_assets
from healthmon_dagster.etl import staging
from healthmon_dagster.etl.landing import LocalLandingSource
from healthmon_dagster.etl.sample import generate_sample, write_to
from healthmon_dagster.incidents import selfheal as sh
from healthmon_dagster.run_tags import WILL_RETRY_TAG
from healthmon_dagster.store.db import get_engine
from healthmon_dagster.store.metrics import utcnow
from healthmon_dagster_tests.defs.fixtures import evaluate_sensor, raw_rows, run_job
from healthmon_dagster_tests.defs.selfheal.test_healing_scope import CheckOutage
from healthmon_dagster_tests.defs.selfheal.test_review_fixes import QUIET, land_nth, rows_of
from healthmon_dagster_tests.defs.selfheal.test_sensors import (
    RAW_KEY,
    Outage,
    execute,
    incident_rows,
    land,
    outage,
    tick,
    use_config,
)

__all__ = ["outage"]  # the fixture, imported for these tests


def settle(instance: dg.DagsterInstance, db_url: str) -> str:
    """Ticks past the quiet period; the incident's status."""
    for _ in range(2):
        tick(instance)
        time.sleep(QUIET)
    tick(instance)
    (incident,) = incident_rows(db_url)
    return str(incident.status)


@pytest.mark.parametrize(
    ("driver_error", "rule"),
    [
        # A driver's refusal: transient, the landing sensor's to retry.
        (sqlite3.OperationalError("connection refused"), "coordination:file_attempt"),
        # An error no rule knows waits for a person: another file's load proves nothing of it.
        (Exception("connection refused"), "database_error"),
    ],
)
def test_a_loaded_file_whose_check_met_an_outage_heals_by_the_next_evaluation(
    driver_error: Exception,
    rule: str,
    healthmon_env: Path,
    db_url: str,
    instance: dg.DagsterInstance,
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
) -> None:
    use_config(monkeypatch, tmp_path)
    monkeypatch.setenv("HEALTHMON_HEALTH_DATABASE_URL", db_url)
    sample = land(healthmon_env)
    check_outage = CheckOutage(monkeypatch, driver_error)
    (attempt1,) = evaluate_sensor(instance).run_requests or []
    first = execute(instance, attempt1)
    assert first.success is False and raw_rows(db_url, sample.key) == 50
    assert RAW_KEY in run_assets(instance, first.run_id).check_not_evaluated
    assert not tick(instance).run_requests
    check_outage.end()

    # The file's next attempt finds it loaded (no materialization); the next file's load
    # evaluates raw/patients' checks again, passing.
    evaluate_sensor(instance)
    time.sleep(1.1)
    for request in evaluate_sensor(instance).run_requests or []:
        execute(instance, request)
    other = land_nth(healthmon_env, 2)
    (load,) = evaluate_sensor(instance).run_requests or []
    assert execute(instance, load).success and raw_rows(db_url, other.key) == 50
    assert rows_of(db_url, RAW_KEY)[0][2:] == ("skipped", rule)
    expected = "resolved" if rule.startswith("coordination:") else "open"
    assert settle(instance, db_url) == expected


def test_a_stuck_file_loaded_by_a_run_of_every_pending_file_heals(
    outage: Outage,
    healthmon_env: Path,
    db_url: str,
    instance: dg.DagsterInstance,
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
) -> None:
    use_config(monkeypatch, tmp_path)
    sample = land(healthmon_env)
    (attempt,) = evaluate_sensor(instance).run_requests or []
    outage.down()
    assert execute(instance, attempt).success is False
    assert not tick(instance).run_requests
    outage.up()
    evaluate_sensor(instance)  # attempt 1 failed; its backoff
    # A person materializes the pipeline with no configuration: every unloaded file.
    load = run_job(instance, {})
    assert load.success and raw_rows(db_url, sample.key) == 50
    assert sample.key in run_assets(instance, load.run_id).files
    assert settle(instance, db_url) == "resolved"


def test_a_fixed_file_that_loads_empty_and_fails_its_own_check_does_not_heal(
    healthmon_env: Path,
    db_url: str,
    instance: dg.DagsterInstance,
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
) -> None:
    use_config(monkeypatch, tmp_path)
    land(healthmon_env, defect="missing_column")
    (attempt,) = evaluate_sensor(instance).run_requests or []
    assert execute(instance, attempt).success is False
    tick(instance)
    (good,) = generate_sample(50, files=1)
    header_only = dataclasses.replace(good, data=good.data.split(b"\n", 1)[0] + b"\n", rows=0)
    write_to(LocalLandingSource(healthmon_env / "landing"), [header_only])
    (reload,) = evaluate_sensor(instance).run_requests or []
    loaded = execute(instance, reload)
    done = run_assets(instance, loaded.run_id)
    assert loaded.success and good.key in done.files and RAW_KEY in done.failed_checks
    assert settle(instance, db_url) == "open"


@pytest.mark.parametrize("window", [60, 5])
def test_a_re_execution_never_launched_is_decided_after_the_wait(
    window: int,
    outage: Outage,
    healthmon_env: Path,
    db_url: str,
    instance: dg.DagsterInstance,
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
) -> None:
    use_config(monkeypatch, tmp_path, window_minutes=window)
    sample = land(healthmon_env)
    outage.down()
    failed = run_job(instance, raw_file_run_config(sample.key))
    assert failed.success is False
    instance.add_run_tags(failed.run_id, {WILL_RETRY_TAG: "true"})  # the retry daemon is down
    assert not tick(instance).run_requests and rows_of(db_url, RAW_KEY) == []
    outage.up()
    later = utcnow() + timedelta(minutes=11)
    monkeypatch.setattr(shs, "utcnow", lambda: later)
    (rerun,) = tick(instance).run_requests or []
    assert (rerun.run_key or "").startswith(f"selfheal:{failed.run_id}")
    # Dagster's daemon, back, does not re-execute it as well.
    run = instance.get_run_by_id(failed.run_id)
    assert run is not None and run.tags[WILL_RETRY_TAG] == "false"
    assert not should_retry(run, instance)


@pytest.mark.parametrize("with_good_file", [False, True])
def test_a_broken_file_in_a_run_of_every_pending_file_is_not_healed_by_other_loads(
    with_good_file: bool,
    healthmon_env: Path,
    db_url: str,
    instance: dg.DagsterInstance,
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
) -> None:
    use_config(monkeypatch, tmp_path)
    monkeypatch.setenv("HEALTHMON_HEALTH_DATABASE_URL", db_url)
    bad = land(healthmon_env, defect="missing_column")
    if with_good_file:
        land_nth(healthmon_env, 2)
    assert run_job(instance, {}).success is False  # every pending file
    tick(instance)
    other = land_nth(healthmon_env, 3)  # nobody fixes the broken file; another loads
    assert run_job(instance, raw_file_run_config(other.key)).success
    assert raw_rows(db_url, bad.key) == 0
    assert settle(instance, db_url) == "open"


def test_a_fixed_file_loaded_by_a_run_that_failed_later_heals(
    healthmon_env: Path,
    db_url: str,
    instance: dg.DagsterInstance,
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
) -> None:
    """The fixed file loads, then staging fails in the same run (a bug): the file's own failure
    healed; staging's is its own (a person's downstream run heals that)."""
    use_config(monkeypatch, tmp_path)
    monkeypatch.setenv("HEALTHMON_HEALTH_DATABASE_URL", db_url)
    bad = land(healthmon_env, defect="missing_column")
    assert run_job(instance, raw_file_run_config(bad.key)).success is False
    tick(instance)
    (good,) = generate_sample(50, files=1)
    write_to(LocalLandingSource(healthmon_env / "landing"), [good])
    real = staging.stage_pending

    def staging_bug(*args: object, **kwargs: object) -> object:
        raise RuntimeError("staging bug")

    monkeypatch.setattr(staging, "stage_pending", staging_bug)
    load = run_job(instance, raw_file_run_config(good.key))
    assert load.success is False and raw_rows(db_url, good.key) == 50
    tick(instance)
    healed = [r for r in rows_of(db_url, RAW_KEY) if r[2] == "succeeded"]
    assert healed and healed[-1][3] == "recovered:run", rows_of(db_url, RAW_KEY)
    monkeypatch.setattr(staging, "stage_pending", real)


def test_a_heal_is_not_recorded_over_a_failure_decided_meanwhile(
    healthmon_env: Path, db_url: str
) -> None:
    """Two sensor processes: one read the pending failure (attempt 1), the other recorded a new
    failure of the asset (attempt 2) before the first records its heal."""
    engine = get_engine(db_url)
    now = utcnow()
    left = "coordination:file_attempt"
    stg = "stg/patients"
    for n, source in ((1, "a"), (2, "b")):
        planned = sh.Planned(stg, n, sh.Status.SKIPPED, left, sh.Reason.FAILED_RUN)
        assert sh.claim(engine, [planned], source, 7, now) is not None
    later = now + timedelta(seconds=5)
    assert sh.record_recovery(engine, 7, {(stg, None): 1}, "run", "run-s", later, now) == []
    assert sh.blockers(engine, 7)  # the new failure still holds the incident
    assert sh.record_recovery(engine, 7, {(stg, None): 2}, "run", "run-s", later, now) == [
        (stg, None)
    ]


def tick_with(instance: dg.DagsterInstance, cursor: str | None) -> dg.SensorResult:
    """A tick of the self-healing sensor with the cursor of the one before (as the daemon keeps)."""
    context = dg.build_sensor_context(instance=instance, resources=defs.resources, cursor=cursor)
    result = shs.self_healing_sensor(context)
    assert isinstance(result, dg.SensorResult)
    return result


@pytest.mark.parametrize("probed_down", [True, False])
def test_a_re_run_waiting_out_its_backoff_goes_at_once_when_the_warehouse_answers_again(
    probed_down: bool,
    outage: Outage,
    healthmon_env: Path,
    db_url: str,
    instance: dg.DagsterInstance,
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
) -> None:
    """Only when a probe found the warehouse down after the failed re-run: one that answered
    every probe (the failure was a reset mid-load, say) waits out its backoff."""
    use_config(monkeypatch, tmp_path, initial_delay_seconds=600, max_delay_seconds=600)
    sample = land(healthmon_env)
    outage.down()
    assert run_job(instance, raw_file_run_config(sample.key)).success is False
    (first,) = tick_with(instance, None).run_requests or []
    assert execute(instance, first).success is False  # still down: a 10 min backoff
    cursor = None
    if probed_down:
        waiting = tick_with(instance, None)  # the warehouse does not answer: it waits
        assert not waiting.run_requests and "warehouse" in (waiting.cursor or "")
        cursor = waiting.cursor
    outage.up()
    requests = tick_with(instance, cursor).run_requests or []
    if not probed_down:
        assert requests == []
        return
    (second,) = requests  # it answers again: no 10 min wait
    assert execute(instance, second).success and raw_rows(db_url, sample.key) == 50
    decided = [r[3] for r in rows_of(db_url, RAW_KEY)]
    assert decided[-1].startswith("dependency_back:"), decided


def test_a_probe_that_does_not_answer_in_time_has_not_answered(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A black-holed landing endpoint must not hold the tick (Dagster gives a sensor 60 s)."""
    monkeypatch.setattr(shs, "PROBE_SECONDS", 0.3)
    hang = threading.Event()
    probe = shs.Probe(None, lambda: hang.wait(30))
    started = time.monotonic()
    assert probe("landing") is False
    assert time.monotonic() - started < 2
    assert "landing" in probe.seen  # found unavailable: its answer later cuts the backoff short
    hang.set()
