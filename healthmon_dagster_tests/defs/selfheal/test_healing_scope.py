"""What heals an incident is the run that fixes its failure, nothing else (real Dagster instance,
real runs, SQLite and Postgres): a landing file's failure heals only when that file loads (another
file's load leaves a broken file's incident open, and a contract break is decided by its own rule,
not left to the landing sensor); a run re-executed by Dagster's ``run_retries`` heals when its
re-execution succeeds; a failed re-run of this sensor that ``run_retries`` is about to re-execute
is not counted as failed before its re-execution ends."""

import time
from pathlib import Path

import dagster as dg
import pytest

from healthmon_dagster.definitions import defs
from healthmon_dagster.defs.pipeline.jobs import raw_file_run_config
from healthmon_dagster.etl.landing import LocalLandingSource
from healthmon_dagster.etl.sample import generate_sample, write_to
from healthmon_dagster.run_tags import (
    PARENT_RUN_ID_TAG,
    RETRY_NUMBER_TAG,
    SELF_HEAL_TAG,
    WILL_RETRY_TAG,
)
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
    """Dagster's ``run_retries`` re-execution of ``failed``: its configuration, its tags (inherited)
    and the tags Dagster adds to a re-execution."""
    inherited = {k: v for k, v in failed.tags.items() if not k.startswith("dagster/")}
    return defs.resolve_job_def(failed.job_name).execute_in_process(
        run_config=failed.run_config,
        instance=instance,
        tags={
            **inherited,
            RETRY_NUMBER_TAG: "1",
            PARENT_RUN_ID_TAG: failed.run_id,
            "dagster/root_run_id": failed.run_id,
            **tags,
        },
        raise_on_error=False,
    )


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
    # Dagster decided to re-execute it (a killed worker): the failure is run_retries'.
    instance.add_run_tags(failed.run_id, {WILL_RETRY_TAG: "true"})
    assert not tick(instance).run_requests
    assert {r[2:] for r in rows_of(db_url, RAW_KEY)} == {("skipped", "coordination:run_retries")}
    (incident,) = incident_rows(db_url)

    outage.up()
    retried = reexecute(instance, run_of(instance, failed))
    assert retried.success and raw_rows(db_url, sample.key) == 50
    assert not tick(instance).run_requests
    assert incident_rows(db_url)[0].status == "monitoring"
    time.sleep(QUIET)
    tick(instance)
    (done,) = incident_rows(db_url)
    assert done.incident_id == incident.incident_id
    assert done.status == "resolved" and retried.run_id in (done.resolution or "")
    assert "run_retries" in (done.resolution or ""), done.resolution
    assert rows_of(db_url, RAW_KEY)[-1][2:] == ("succeeded", "recovered:run_retries")


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
