"""What heals an incident is the run that fixes its failure, nothing else (real Dagster instance,
real runs, SQLite and Postgres):

- a landing file's failure heals only when that file loads: another file's load leaves a broken
  file's incident open, a contract break is decided by its own rule (not left to the landing
  sensor) and heals when the fixed file loads; a file's load heals its own failure while another
  file is still stuck; a file's failure decided after the incident reached monitoring still heals;
  a failure absorbed after the healing run started does not hide that run;
- a run re-executed by Dagster's ``run_retries`` heals when its re-execution succeeds, also a
  re-execution from the failed step that only evaluates a check; a failed re-run of this sensor
  that ``run_retries`` is about to re-execute is not counted failed before its re-execution ends;
- one run healing a failure from before ``file_key`` existed and one bound to the file records
  both.
"""

import os
import sqlite3
import time
from datetime import timedelta
from pathlib import Path

import dagster as dg
import pytest
import sqlalchemy as sa
import yaml
from sqlalchemy import exc as sa_exc

from healthmon_dagster.definitions import defs
from healthmon_dagster.defs.pipeline import checks as pipeline_checks
from healthmon_dagster.defs.pipeline.jobs import raw_file_run_config
from healthmon_dagster.defs.selfheal.sensors import run_assets
from healthmon_dagster.etl.landing import LocalLandingSource
from healthmon_dagster.etl.sample import generate_sample, write_to
from healthmon_dagster.incidents import selfheal as sh
from healthmon_dagster.run_tags import (
    AUTO_RETRY_RUN_ID_TAG,
    PARENT_RUN_ID_TAG,
    RETRY_NUMBER_TAG,
    SELF_HEAL_TAG,
    WILL_RETRY_TAG,
)
from healthmon_dagster.store.db import get_engine
from healthmon_dagster.store.metrics import utcnow
from healthmon_dagster_tests.defs.fixtures import evaluate_sensor, raw_rows, run_job
from healthmon_dagster_tests.defs.selfheal.test_review_fixes import QUIET, land_nth, rows_of
from healthmon_dagster_tests.defs.selfheal.test_sensors import (
    RAW_KEY,
    Outage,
    execute,
    incident_rows,
    land,
    outage,
    tick,
    timeline,
    use_config,
)

__all__ = ["outage"]  # the fixture, imported for these tests


def reexecute(
    instance: dg.DagsterInstance, failed: dg.DagsterRun, **tags: str
) -> dg.ExecuteInProcessResult:
    """Dagster's ``run_retries`` re-execution of ``failed`` (all of it): its configuration, its
    tags (inherited) and the tags Dagster adds to a re-execution, and the failed run's
    ``dagster/auto_retry_run_id`` once it is launched."""
    inherited = {k: v for k, v in failed.tags.items() if not k.startswith("dagster/")}
    retry_tags = {RETRY_NUMBER_TAG: "1", PARENT_RUN_ID_TAG: failed.run_id}
    result = defs.resolve_job_def(failed.job_name).execute_in_process(
        run_config=failed.run_config,
        instance=instance,
        tags={**inherited, **retry_tags, "dagster/root_run_id": failed.run_id, **tags},
        raise_on_error=False,
    )
    instance.add_run_tags(failed.run_id, {AUTO_RETRY_RUN_ID_TAG: result.run_id})
    return result


class CheckOutage:
    """The stuck-files check step meets a database outage (its query raises ``error``, as the driver
    would) until :meth:`end`; raw/patients' load itself is not touched."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch, error: Exception) -> None:
        real = pipeline_checks.stuck_files_result
        self.down = True

        def stuck_files_result(engine: sa.Engine) -> object:
            if self.down:
                raise sa_exc.OperationalError("select", {}, error)
            return real(engine)

        monkeypatch.setattr(pipeline_checks, "stuck_files_result", stuck_files_result)

    def end(self) -> None:
        self.down = False


def etl_job() -> dg.JobDefinition:
    """The ETL job, reconstructable (a from-failure re-execution runs in its own process)."""
    return defs.resolve_job_def("patients_etl_job")


def run_of(instance: dg.DagsterInstance, result: dg.ExecuteInProcessResult) -> dg.DagsterRun:
    run = instance.get_run_by_id(result.run_id)
    assert run is not None
    return run


# --- a landing file's failure heals only when that file loads -------------------------------------


def test_another_files_load_leaves_a_broken_files_incident_open_until_it_is_fixed(
    healthmon_env: Path,
    db_url: str,
    instance: dg.DagsterInstance,
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
) -> None:
    use_config(monkeypatch, tmp_path)
    broken = land(healthmon_env, defect="missing_column")  # file 1: its contract broken
    (attempt,) = evaluate_sensor(instance).run_requests or []
    assert execute(instance, attempt).success is False
    assert not tick(instance).run_requests
    (incident,) = incident_rows(db_url)
    # Decided by the rule that classified it (not left to the landing sensor, which does not
    # retry a data error), and bound to the broken file.
    decisions = [d for _, k, _, d in timeline(db_url) if k == "self_heal_attempt"]
    assert [d["rule"] for d in decisions] == ["contract_break"], decisions
    assert rows_of(db_url, RAW_KEY)[-1][2:] == ("skipped", "contract_break")

    # Another file lands and loads with its checks passing: the broken file is still broken.
    other = land_nth(healthmon_env, 2)
    (load,) = evaluate_sensor(instance).run_requests or []
    assert execute(instance, load).success and raw_rows(db_url, other.key) == 50
    for _ in range(2):
        tick(instance)
        time.sleep(QUIET)
    (still,) = incident_rows(db_url)
    assert still.incident_id == incident.incident_id
    assert still.status == "open", still.status

    # The fixed file lands under the same key: its load heals the incident.
    (fixed,) = generate_sample(50, files=1)
    assert fixed.key == broken.key
    write_to(LocalLandingSource(healthmon_env / "landing"), [fixed])
    (reload,) = evaluate_sensor(instance).run_requests or []
    healed = execute(instance, reload)
    assert healed.success and raw_rows(db_url, broken.key) == 50
    tick(instance)
    assert incident_rows(db_url)[0].status == "monitoring"
    time.sleep(QUIET)
    tick(instance)
    (done,) = incident_rows(db_url)
    assert done.status == "resolved" and healed.run_id in (done.resolution or ""), done.resolution
    outcome = [t for _, k, t, _ in timeline(db_url) if k == "self_heal_outcome"]
    assert any(f"file {broken.key}" in t for t in outcome), outcome


def test_a_stuck_files_outage_incident_is_not_healed_by_another_files_load(
    outage: Outage,
    healthmon_env: Path,
    db_url: str,
    instance: dg.DagsterInstance,
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
) -> None:
    use_config(monkeypatch, tmp_path)
    stuck = land(healthmon_env)
    (attempt,) = evaluate_sensor(instance).run_requests or []
    outage.down()
    assert execute(instance, attempt).success is False
    assert not tick(instance).run_requests  # the landing sensor's to retry
    assert rows_of(db_url, RAW_KEY)[-1][2:] == ("skipped", "coordination:file_attempt")

    # The warehouse is back and another file lands; of the landing sensor's runs, the other
    # file's loads first: the first file is still not loaded, the incident not healed.
    outage.up()
    other = land_nth(healthmon_env, 2)
    evaluate_sensor(instance)  # records attempt 1's outcome; its backoff (1 s) follows
    time.sleep(1.1)
    requests = evaluate_sensor(instance).run_requests or []
    (again,) = [r for r in requests if (r.run_key or "").startswith(stuck.key)]
    (load,) = [r for r in requests if (r.run_key or "").startswith(other.key)]
    assert execute(instance, load).success and raw_rows(db_url, other.key) == 50
    tick(instance)
    assert raw_rows(db_url, stuck.key) == 0
    assert incident_rows(db_url)[0].status != "monitoring"

    # The landing sensor's next attempt of the first file loads it: now it heals.
    assert execute(instance, again).success and raw_rows(db_url, stuck.key) == 50
    tick(instance)
    assert incident_rows(db_url)[0].status == "monitoring"


# --- run_retries' re-execution heals ---------------------------------------------------------------


def test_a_run_re_executed_by_run_retries_heals_when_its_re_execution_succeeds(
    outage: Outage,
    healthmon_env: Path,
    db_url: str,
    instance: dg.DagsterInstance,
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
) -> None:
    use_config(monkeypatch, tmp_path)
    sample = land(healthmon_env)
    outage.down()
    failed = run_job(instance, raw_file_run_config(sample.key))
    assert failed.success is False
    # Dagster decided to re-execute it (a killed worker): this sensor waits for the launch.
    instance.add_run_tags(failed.run_id, {WILL_RETRY_TAG: "true"})
    assert not tick(instance).run_requests
    assert rows_of(db_url, RAW_KEY) == []
    (incident,) = incident_rows(db_url)

    outage.up()
    retried = reexecute(instance, run_of(instance, failed))
    assert retried.success and raw_rows(db_url, sample.key) == 50
    # Left to run_retries, whose re-execution healed it: both in one tick.
    assert not tick(instance).run_requests
    assert ("skipped", "coordination:run_retries") in [r[2:] for r in rows_of(db_url, RAW_KEY)]
    assert incident_rows(db_url)[0].status == "monitoring"
    time.sleep(QUIET)
    tick(instance)
    (done,) = incident_rows(db_url)
    assert done.incident_id == incident.incident_id
    assert done.status == "resolved" and retried.run_id in (done.resolution or "")
    assert "run_retries" in (done.resolution or ""), done.resolution
    assert rows_of(db_url, RAW_KEY)[-1][2:] == ("succeeded", "recovered:run_retries")


def test_a_from_failure_re_execution_that_only_evaluates_a_check_heals(
    healthmon_env: Path,
    db_url: str,
    instance: dg.DagsterInstance,
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
) -> None:
    """Dagster's default re-execution runs only the steps that did not succeed: when the run died
    after raw/patients materialized but before its check ran, the re-execution evaluates the check
    and materializes nothing."""
    use_config(monkeypatch, tmp_path)
    monkeypatch.setenv("HEALTHMON_HEALTH_DATABASE_URL", db_url)
    sample = land(healthmon_env)
    outage = CheckOutage(monkeypatch, sqlite3.OperationalError("connection refused"))
    failed = run_job(instance, raw_file_run_config(sample.key))
    assert failed.success is False and raw_rows(db_url, sample.key) == 50
    assert RAW_KEY in run_assets(instance, failed.run_id).check_not_evaluated
    instance.add_run_tags(failed.run_id, {WILL_RETRY_TAG: "true"})

    outage.end()
    with dg.execute_job(
        dg.reconstructable(etl_job),
        instance=instance,
        reexecution_options=dg.ReexecutionOptions.from_failure(failed.run_id, instance),
        tags={RETRY_NUMBER_TAG: "1"},
    ) as retried:
        assert retried.success
        retried_id = retried.run_id
    assert RAW_KEY not in run_assets(instance, retried_id).materialized
    instance.add_run_tags(failed.run_id, {AUTO_RETRY_RUN_ID_TAG: retried_id})
    tick(instance)
    assert incident_rows(db_url)[0].status == "monitoring"
    time.sleep(QUIET)
    tick(instance)
    (done,) = incident_rows(db_url)
    assert done.status == "resolved" and retried_id in (done.resolution or "")


def test_a_re_run_run_retries_re_executes_waits_for_its_re_execution(
    outage: Outage,
    healthmon_env: Path,
    db_url: str,
    instance: dg.DagsterInstance,
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
) -> None:
    use_config(monkeypatch, tmp_path)
    sample = land(healthmon_env)
    outage.down()
    assert run_job(instance, raw_file_run_config(sample.key)).success is False
    (request,) = tick(instance).run_requests or []
    rerun = execute(instance, request)  # the warehouse is still down: it fails
    assert rerun.success is False

    # The same storage seen by an instance with run_retries on, between Dagster's two writes: the
    # re-run is FAILED and its dagster/will_retry tag is not written yet. Its outcome waits.
    retries = {"enabled": True, "max_retries": 1, "retry_on_asset_or_op_failure": True}
    with dg.instance_for_test(
        temp_dir=instance.root_directory,
        overrides={"run_retries": retries},
        set_dagster_home=False,
    ) as retrying:
        assert not tick(retrying).run_requests
        assert rows_of(db_url, RAW_KEY)[0][2] == "requested", rows_of(db_url, RAW_KEY)
        retrying.add_run_tags(rerun.run_id, {WILL_RETRY_TAG: "true"})
        assert not tick(retrying).run_requests
        assert rows_of(db_url, RAW_KEY)[0][2] == "requested"

        # run_retries re-executes the re-run (it inherits the re-run's tag) and it succeeds.
        outage.up()
        retried = reexecute(retrying, run_of(retrying, rerun))
        assert retried.success
        assert run_of(retrying, retried).tags[SELF_HEAL_TAG] == request.run_key
        assert not tick(retrying).run_requests
    raw = rows_of(db_url, RAW_KEY)
    assert raw[0][2] == "succeeded", raw  # the re-run's outcome: no failure counted
    assert "failed" not in {r[2] for r in raw}, raw
    assert incident_rows(db_url)[0].status == "monitoring"


# --- scopes decided late, several files, a failure after the healing run -------------------------


def test_a_files_failure_decided_after_the_incident_reached_monitoring_still_heals(
    outage: Outage,
    healthmon_env: Path,
    db_url: str,
    instance: dg.DagsterInstance,
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
) -> None:
    use_config(monkeypatch, tmp_path)
    two = land_nth(healthmon_env, 2)
    (attempt,) = evaluate_sensor(instance).run_requests or []  # file 2's attempt, not run yet
    one = land_nth(healthmon_env, 1)
    outage.down()
    assert run_job(instance, raw_file_run_config(one.key)).success is False
    (rerun,) = tick(instance).run_requests or []
    # Before the next tick: file 2's attempt fails on the same outage, the outage ends, and the
    # re-run of file 1 succeeds.
    assert execute(instance, attempt).success is False
    outage.up()
    assert execute(instance, rerun).success
    tick(instance)  # monitoring, then file 2's failure decided on the monitoring incident
    assert incident_rows(db_url)[0].status == "monitoring"
    assert rows_of(db_url, RAW_KEY)[-1][2:] == ("skipped", "coordination:file_attempt")

    evaluate_sensor(instance)
    time.sleep(1.1)
    requests = evaluate_sensor(instance).run_requests or []
    (again,) = [r for r in requests if (r.run_key or "").startswith(two.key)]
    assert execute(instance, again).success and raw_rows(db_url, two.key) == 50
    tick(instance)
    time.sleep(QUIET)
    tick(instance)
    assert incident_rows(db_url)[0].status == "resolved"


def test_a_file_loaded_while_another_is_still_stuck_heals_its_own_failure(
    outage: Outage,
    healthmon_env: Path,
    db_url: str,
    instance: dg.DagsterInstance,
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
) -> None:
    """The stuck-files check (ERROR, not blocking) fails on raw/patients while file 2 is stuck;
    that judges file 2, not the load of file 1."""
    use_config(monkeypatch, tmp_path)
    data = yaml.safe_load(Path(os.environ["HEALTHMON_CONFIG"]).read_text())
    data["landing"]["retry"]["max_attempts"] = 1  # a failed attempt leaves its file stuck
    Path(os.environ["HEALTHMON_CONFIG"]).write_text(yaml.safe_dump(data))
    one, two = land_nth(healthmon_env, 1), land_nth(healthmon_env, 2)
    attempts = evaluate_sensor(instance).run_requests or []
    assert len(attempts) == 2
    outage.down()
    for a in attempts:
        assert execute(instance, a).success is False
    tick(instance)
    outage.up()
    evaluate_sensor(instance)  # both files stuck

    for n, sample in ((1, one), (2, two)):  # each landed again (other content), in turn
        (again,) = generate_sample(50, files=1, start_index=n - 1, seed=7)
        write_to(LocalLandingSource(healthmon_env / "landing"), [again])
        (load,) = evaluate_sensor(instance).run_requests or []
        assert execute(instance, load).success and raw_rows(db_url, sample.key) == 50
        tick(instance)
        if n == 1:  # file 2 still stuck: not healed yet
            assert incident_rows(db_url)[0].status != "monitoring"
    assert incident_rows(db_url)[0].status == "monitoring"


def test_a_failure_absorbed_after_the_healing_run_started_does_not_hide_that_run(
    outage: Outage,
    healthmon_env: Path,
    db_url: str,
    instance: dg.DagsterInstance,
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
) -> None:
    use_config(monkeypatch, tmp_path)
    sample = land(healthmon_env)
    (attempt1,) = evaluate_sensor(instance).run_requests or []
    outage.down()
    assert execute(instance, attempt1).success is False
    assert not tick(instance).run_requests
    outage.up()
    evaluate_sensor(instance)
    time.sleep(1.1)
    (attempt2,) = evaluate_sensor(instance).run_requests or []
    assert execute(instance, attempt2).success and raw_rows(db_url, sample.key) == 50
    # Before the next tick, the warehouse flaps: a later failure joins the incident.
    outage.down()
    assert run_job(instance, raw_file_run_config(land_nth(healthmon_env, 2).key)).success is False
    outage.up()
    tick(instance)
    file_one = [r for r in rows_of(db_url, RAW_KEY) if r[2] == "succeeded"]
    assert file_one and file_one[-1][3] == "recovered:file_attempt", rows_of(db_url, RAW_KEY)


def test_one_run_healing_an_old_and_a_file_bound_failure_records_both(
    healthmon_env: Path, db_url: str
) -> None:
    """Across the upgrade: a raw/patients row from before file_key existed (NULL) and one bound to
    the file, both healed by one load of the file."""
    engine = get_engine(db_url)
    now = utcnow()
    left = "coordination:file_attempt"
    sh.claim(
        engine, [sh.Planned(RAW_KEY, 1, sh.Status.SKIPPED, left, sh.Reason.FAILED_RUN)], "a", 7, now
    )
    bound = sh.Planned(RAW_KEY, 2, sh.Status.SKIPPED, left, sh.Reason.FAILED_RUN, None, "f.csv")
    sh.claim(engine, [bound], "b", 7, now)
    scopes: dict[sh.Scope, int] = {(RAW_KEY, None): 1, (RAW_KEY, "f.csv"): 2}
    ended = now + timedelta(seconds=5)
    first = sh.record_recovery(engine, 7, scopes, "file_attempt", "run-2", ended, now)
    again = sh.record_recovery(engine, 7, scopes, "file_attempt", "run-2", ended, now)
    assert sorted(first, key=str) == sorted(scopes, key=str) and again == []
    assert sh.blockers(engine, 7) == []
