"""The self-healing sensor with the other retry mechanisms running, on a real Dagster instance with
real runs (SQLite and Postgres): the landing sensor's attempts and catch-up runs heal their incident;
a catch-up run is the landing sensor's to retry, and no stale re-run runs under its backlog; a failed
run whose ``dagster/will_retry`` tag is not written yet is left to ``run_retries``; an incident
resolves only once every asset of it is healed; opening the circuit breaker pages; a
materialization clears an asset's consecutive failures; a re-run whose request was lost keeps its
failed run's configuration."""

import time
from datetime import timedelta
from pathlib import Path
from typing import Any

import dagster as dg
import pytest
import sqlalchemy as sa

from healthmon_dagster.definitions import defs
from healthmon_dagster.defs.pipeline.jobs import raw_file_run_config
from healthmon_dagster.defs.resources import HealthmonConfigResource
from healthmon_dagster.defs.selfheal.sensors import Tick, decide_stale, heal_failure
from healthmon_dagster.etl import staging
from healthmon_dagster.etl.failures import Classification
from healthmon_dagster.etl.landing import LocalLandingSource
from healthmon_dagster.etl.sample import SampleFile, generate_sample, write_to
from healthmon_dagster.incidents import lifecycle
from healthmon_dagster.incidents import selfheal as sh
from healthmon_dagster.incidents.records import open_or_absorb
from healthmon_dagster.incidents.rootkey import root_key_for
from healthmon_dagster.run_tags import AUTO_RETRY_RUN_ID_TAG, WILL_RETRY_TAG
from healthmon_dagster.store.db import get_engine
from healthmon_dagster.store.metrics import utcnow
from healthmon_dagster.store.tables import alerts
from healthmon_dagster_tests.defs.fixtures import (
    CORE,
    RAW,
    STG,
    STG_REJECTED,
    evaluate_sensor,
    raw_rows,
    run_job,
    unreachable_url,
)
from healthmon_dagster_tests.defs.selfheal.test_sensors import (
    RAW_KEY,
    Outage,
    attempt_rows,
    execute,
    incident_rows,
    land,
    outage,
    tick,
    timeline,
    use_config,
)

__all__ = ["outage"]  # the fixture, imported for these tests

QUIET = 1.3  # use_config's quiet period is 1.2 s


def rows_of(db_url: str, asset: str) -> list[tuple[str, int, str, str]]:
    return [r for r in attempt_rows(db_url) if r[0] == asset]


def land_nth(home: Path, n: int) -> SampleFile:
    """The n-th landing file (1, 2, ...): its own key and patients."""
    (sample,) = generate_sample(50, files=1, start_index=n - 1)
    write_to(LocalLandingSource(home / "landing"), [sample])
    return sample


def skip_message(result: dg.SensorResult) -> str:
    assert result.skip_reason is not None
    return result.skip_reason.skip_message or ""


# --- 1. the landing sensor's runs heal their incident ---------------------------------------------


def test_the_landing_sensors_next_attempt_heals_the_outage_incident(
    outage: Outage,
    healthmon_env: Path,
    db_url: str,
    instance: dg.DagsterInstance,
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
) -> None:
    use_config(monkeypatch, tmp_path)
    sample = land(healthmon_env)
    (attempt1,) = evaluate_sensor(instance).run_requests or []  # the landing sensor's attempt 1
    outage.down()
    assert execute(instance, attempt1).success is False  # the hook opens the warehouse incident

    assert not tick(instance).run_requests  # the landing sensor's to retry
    (incident,) = incident_rows(db_url)
    assert incident.root_key == "resource:database:warehouse"

    # The warehouse is back: the landing sensor records attempt 1 and requests attempt 2 after its
    # backoff (1 s); it loads the file with its checks passing.
    outage.up()
    assert not evaluate_sensor(instance).run_requests
    time.sleep(1.1)
    (attempt2,) = evaluate_sensor(instance).run_requests or []
    assert (attempt2.run_key or "").endswith("#2")
    recovered = execute(instance, attempt2)
    assert recovered.success and raw_rows(db_url, sample.key) == 50

    assert not tick(instance).run_requests
    assert incident_rows(db_url)[0].status == "monitoring"
    time.sleep(QUIET)
    tick(instance)
    (done,) = incident_rows(db_url)
    assert done.status == "resolved"
    assert recovered.run_id in (done.resolution or ""), done.resolution
    assert "landing sensor" in (done.resolution or "")
    assert (RAW_KEY, 2, "succeeded", "recovered:file_attempt") in attempt_rows(db_url)
    # Not a re-run of this sensor: no re-run counted against its bounds.
    summary = sh.summary(get_engine(db_url), timedelta(hours=1), utcnow())
    assert (summary.reruns_in_window, summary.in_flight) == (0, 0)
    changes = [t for _, k, t, _ in timeline(db_url) if k == "status_changed"]
    assert any(recovered.run_id in t for t in changes), changes


# --- 2. catch-up runs are the landing sensor's; 1. their success heals ---------------------------


def test_a_catch_up_run_is_left_to_the_landing_sensor_and_its_success_heals(
    healthmon_env: Path,
    db_url: str,
    instance: dg.DagsterInstance,
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
) -> None:
    use_config(monkeypatch, tmp_path)
    sample = land(healthmon_env)
    real_stage_pending = staging.stage_pending
    down = unreachable_url(db_url, tmp_path)

    def staging_database_down(engine: sa.Engine, *args: object, **kwargs: object) -> object:
        # The fault: staging meets a warehouse that is not there (a real driver error).
        return real_stage_pending(get_engine(down), *args, **kwargs)  # type: ignore[arg-type]

    # Raw loads; staging fails on a transient error: the landing sensor catches up.
    monkeypatch.setattr(staging, "stage_pending", staging_database_down)
    (attempt,) = evaluate_sensor(instance).run_requests or []
    assert execute(instance, attempt).success is False
    assert raw_rows(db_url, sample.key) == 50
    (catch_up,) = evaluate_sensor(instance).run_requests or []
    assert (catch_up.run_key or "").startswith("catch-up@")
    assert execute(instance, catch_up).success is False

    assert not tick(instance).run_requests  # neither failure is this sensor's to re-run
    stg = rows_of(db_url, "stg/patients")
    assert [r[2:] for r in stg] == [
        ("skipped", "coordination:file_attempt"),
        ("skipped", "coordination:catch_up"),
    ]
    # While the backlog exists, no stale re-run of the assets it catches up.
    cfg = HealthmonConfigResource().load()
    policy = sh.SelfHealPolicy.from_config(cfg.self_healing)
    now = utcnow()
    fail_window = timedelta(minutes=cfg.freshness["stg/patients"].fail_window_minutes)
    stale = Tick(requests=[])
    latest = {RAW_KEY: now, "stg/patients": now - fail_window - timedelta(minutes=1)}
    decide_stale(
        get_engine(db_url), cfg, policy, latest, stale, warehouse=lambda: get_engine(db_url)
    )
    assert not stale.requests and stale.waiting == 1

    # The fault goes; the landing sensor's next catch-up run succeeds: the incident heals.
    monkeypatch.setattr(staging, "stage_pending", real_stage_pending)
    time.sleep(1.1)
    (again,) = evaluate_sensor(instance).run_requests or []
    healed = execute(instance, again)
    assert healed.success
    assert not tick(instance).run_requests
    (incident,) = incident_rows(db_url)
    assert incident.status == "monitoring"
    time.sleep(QUIET)
    tick(instance)
    (done,) = incident_rows(db_url)
    assert done.status == "resolved" and healed.run_id in (done.resolution or "")
    assert rows_of(db_url, "stg/patients")[-1][2:] == ("succeeded", "recovered:catch_up")


# --- 3. run_retries' tag not written yet ------------------------------------------------------------


def test_a_failed_run_run_retries_will_re_execute_waits_for_its_tag(
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
    assert WILL_RETRY_TAG not in instance.get_run_by_id(failed.run_id).tags  # type: ignore[union-attr]

    # The same storage seen by an instance with run_retries on, between Dagster's two writes: the
    # run is FAILED and its dagster/will_retry tag is not there yet.
    retries = {"enabled": True, "max_retries": 1, "retry_on_asset_or_op_failure": True}
    with dg.instance_for_test(
        temp_dir=instance.root_directory,
        overrides={"run_retries": retries},
        set_dagster_home=False,
    ) as retrying:
        assert retrying.run_retries_enabled
        waiting = tick(retrying)
        assert not waiting.run_requests
        message = skip_message(waiting)
        assert "0 decision(s) recorded" in message and " 0 waiting" not in message, message
        assert not attempt_rows(db_url)

        # Dagster writes the tag: it waits for the re-execution to be launched...
        retrying.add_run_tags(failed.run_id, {WILL_RETRY_TAG: "true"})
        assert not tick(retrying).run_requests
        assert not attempt_rows(db_url)
        # ... and once it is, leaves the run to it.
        retrying.add_run_tags(failed.run_id, {AUTO_RETRY_RUN_ID_TAG: "re-execution"})
        assert not tick(retrying).run_requests
    assert {r[2:] for r in attempt_rows(db_url)} == {("skipped", "coordination:run_retries")}


def test_a_failed_run_run_retries_will_not_re_execute_is_re_run(
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
    retries = {"enabled": True, "max_retries": 1, "retry_on_asset_or_op_failure": False}
    with dg.instance_for_test(
        temp_dir=instance.root_directory,
        overrides={"run_retries": retries},
        set_dagster_home=False,
    ) as retrying:
        # A step failure, and run_retries does not retry step failures: nothing to wait for.
        (request,) = tick(retrying).run_requests or []
    assert (request.run_key or "").startswith(f"selfheal:{failed.run_id}")


# --- 4. an incident resolves only once all its assets are healed -----------------------------------


def test_an_incident_waits_for_every_re_run_before_monitoring(
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

    def materialize(selection: list[dg.AssetKey], config: dict[str, Any]) -> bool:
        return (
            defs.resolve_job_def("patients_etl_job")
            .execute_in_process(
                run_config=config,
                instance=instance,
                asset_selection=selection,
                raise_on_error=False,
            )
            .success
        )

    # Two failed runs of one outage, of different assets: one incident, two re-runs.
    assert not materialize([RAW], raw_file_run_config(sample.key))
    assert not materialize([STG, STG_REJECTED, CORE], {})
    requests = tick(instance).run_requests or []
    assert len(requests) == 2
    (incident,) = incident_rows(db_url)
    raw_rerun = next(r for r in requests if RAW in (r.asset_selection or []))
    downstream = next(r for r in requests if r is not raw_rerun)

    # The warehouse is back; only the raw re-run has run: the other is still requested.
    outage.up()
    assert execute(instance, raw_rerun).success
    tick(instance)
    assert incident_rows(db_url)[0].status == "open"

    # The downstream re-run fails: a trailing failure keeps the incident open too.
    outage.down()
    assert execute(instance, downstream).success is False
    tick(instance)
    assert incident_rows(db_url)[0].status == "open"
    outage.up()
    time.sleep(1.1)
    (third,) = tick(instance).run_requests or []
    assert execute(instance, third).success
    tick(instance)
    assert incident_rows(db_url)[0].status == "monitoring"
    time.sleep(QUIET)
    tick(instance)
    assert incident_rows(db_url)[0].status == "resolved"
    assert incident.incident_id == incident_rows(db_url)[0].incident_id


# --- 5. opening the breaker pages ----------------------------------------------------------------


def test_opening_the_breaker_on_a_high_incident_raises_it_to_critical_and_fires_its_alert(
    outage: Outage,
    healthmon_env: Path,
    db_url: str,
    instance: dg.DagsterInstance,
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
) -> None:
    use_config(monkeypatch, tmp_path, breaker_failures=1)  # escalate_to: its default, high
    sample = land(healthmon_env)
    outage.down()
    run_job(instance, raw_file_run_config(sample.key))
    assert incident_rows(db_url)[0].severity == "high"  # a resource incident starts high
    (request,) = tick(instance).run_requests or []
    assert execute(instance, request).success is False
    time.sleep(1.1)

    assert not tick(instance).run_requests  # the breaker opens
    (incident,) = incident_rows(db_url)
    assert incident.severity == "critical"
    with get_engine(db_url).connect() as conn:
        firing = (
            conn.execute(
                sa.select(alerts.c.rule_id).where(
                    alerts.c.state == "firing", alerts.c.rule_id.like("incident_%")
                )
            )
            .scalars()
            .all()
        )
    assert "incident_critical" in firing  # announced at once: its notifications are queued
    escalated = [t for _, k, t, _ in timeline(db_url) if k == "escalated"]
    assert any("high -> critical" in t for t in escalated), escalated


def test_escalating_never_lowers_a_severity_raised_meanwhile(
    healthmon_env: Path, db_url: str
) -> None:
    engine = get_engine(db_url)
    outage_failure = heal_failure(
        [RAW_KEY],
        Classification("connection_refused", True, "driver_refused", "warehouse"),
        "run r of patients_etl_job failed (connection_refused)",
        {},
    )
    incident_id = open_or_absorb(
        engine, root_key_for(engine, outage_failure), outage_failure, sh.ACTOR
    ).incident_id
    lifecycle.update(engine, incident_id, sh.ACTOR, {"severity": "medium"})

    # Right after escalate reads the severity, before it writes, another failure is absorbed that
    # makes the incident critical (a concurrent writer on its own connection; WAL on SQLite lets
    # it write while the read is open).
    injected: list[str] = []

    def absorbed_meanwhile(conn: sa.Connection, cursor: Any, statement: str, *_: Any) -> None:
        if injected or not statement.lstrip().upper().startswith("SELECT"):
            return
        if "severity" not in statement or "incidents" not in statement:
            return
        injected.append(statement)
        with engine.begin() as other:
            other.execute(
                sa.text("UPDATE etl.incidents SET severity = 'critical' WHERE incident_id = :i"),
                {"i": incident_id},
            )

    sa.event.listen(engine, "after_cursor_execute", absorbed_meanwhile)
    try:
        sh.escalate(engine, incident_id, sh.SelfHealPolicy(), "breaker opened", utcnow())
    finally:
        sa.event.remove(engine, "after_cursor_execute", absorbed_meanwhile)
    assert injected
    assert incident_rows(db_url)[0].severity == "critical"


# --- 6. a materialization clears consecutive failures; outcomes per asset ------------------------


def test_a_materialization_between_failures_resets_the_consecutive_count(
    outage: Outage,
    healthmon_env: Path,
    db_url: str,
    instance: dg.DagsterInstance,
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
) -> None:
    use_config(monkeypatch, tmp_path, breaker_failures=2)
    first, second = land_nth(healthmon_env, 1), land_nth(healthmon_env, 2)
    outage.down()
    run_job(instance, raw_file_run_config(first.key))
    (request,) = tick(instance).run_requests or []
    assert execute(instance, request).success is False  # failure 1

    # The warehouse is back and a person loads the file: the asset materializes.
    outage.up()
    assert run_job(instance, raw_file_run_config(first.key)).success
    tick(instance)

    # A new outage, weeks of failures later or not: the count starts over.
    outage.down()
    run_job(instance, raw_file_run_config(second.key))
    (again,) = tick(instance).run_requests or []
    assert execute(instance, again).success is False  # failure 1 again, not 2
    time.sleep(1.1)
    (third,) = tick(instance).run_requests or []  # re-run, no breaker
    assert third.run_key != again.run_key
    assert "escalated" not in [r[2] for r in rows_of(db_url, RAW_KEY)]


def test_a_failed_re_run_records_the_assets_it_materialized_as_succeeded(
    healthmon_env: Path, db_url: str, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    use_config(monkeypatch, tmp_path)
    engine = get_engine(db_url)
    now = utcnow()
    policy = sh.SelfHealPolicy()
    planned = [
        sh.Planned(a, 1, sh.Status.REQUESTED, "driver_refused", sh.Reason.FAILED_RUN)
        for a in (RAW_KEY, "stg/patients")
    ]
    key = sh.claim(engine, planned, "run-1", None, now)
    assert key is not None
    sh.record_rerun_outcome(engine, key, False, "rerun-1", policy, now, healed={RAW_KEY})
    assert [r[:3] for r in attempt_rows(db_url)] == [
        (RAW_KEY, 1, "succeeded"),
        ("stg/patients", 1, "failed"),
    ]


# --- 7. a lost tick keeps the failed run's configuration -------------------------------------------


def test_a_re_run_whose_request_was_lost_is_requested_again_with_its_configuration(
    outage: Outage,
    healthmon_env: Path,
    db_url: str,
    instance: dg.DagsterInstance,
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
) -> None:
    use_config(monkeypatch, tmp_path)
    failing, other = land_nth(healthmon_env, 1), land_nth(healthmon_env, 2)
    outage.down()
    run_job(instance, raw_file_run_config(failing.key))
    (lost,) = tick(instance).run_requests or []  # the tick's result is lost: never launched
    outage.up()
    (again,) = tick(instance).run_requests or []
    assert again.run_key == lost.run_key
    assert again.run_config == lost.run_config == raw_file_run_config(failing.key)
    assert execute(instance, again).success
    assert (raw_rows(db_url, failing.key), raw_rows(db_url, other.key)) == (50, 0)
