"""The self-healing sensor on a real Dagster instance with real runs: a transient warehouse outage is
healed by a bounded re-run and its incident goes to monitoring, then resolved with its alerts; a
contract break is never re-run; the circuit breaker opens after N failed re-runs and escalates; two
sensor evaluations at once request one re-run; runs another mechanism retries are left to it."""

import threading
import time
from datetime import timedelta
from pathlib import Path
from typing import Any

import dagster as dg
import pytest
import sqlalchemy as sa
import yaml

from healthmon_dagster.definitions import defs
from healthmon_dagster.defs.pipeline.jobs import raw_file_run_config
from healthmon_dagster.defs.resources import HealthmonConfigResource
from healthmon_dagster.defs.selfheal.sensors import (
    Tick,
    decide_stale,
    self_healing_sensor,
)
from healthmon_dagster.etl.landing import LocalLandingSource
from healthmon_dagster.etl.sample import SampleFile, generate_sample, write_to
from healthmon_dagster.incidents import selfheal as sh
from healthmon_dagster.run_tags import FILE_ATTEMPT_TAG
from healthmon_dagster.store.db import get_engine
from healthmon_dagster.store.metrics import utcnow
from healthmon_dagster.store.tables import (
    alerts,
    incident_alerts,
    incident_events,
    incidents,
    self_heal_attempts,
)
from healthmon_dagster_tests.defs.fixtures import (
    FAST_RETRY,
    PROJECT_CONFIG,
    raw_rows,
    run_job,
    unreachable_url,
)
from healthmon_dagster_tests.fixtures import free_port

RAW_KEY = "raw/patients"


def use_config(monkeypatch: pytest.MonkeyPatch, folder: Path, **self_healing: Any) -> None:
    """healthmon.yaml with fast landing retries and ``self_healing`` as given (fast by default)."""
    data = yaml.safe_load(PROJECT_CONFIG.read_text())
    data["landing"]["retry"] = FAST_RETRY
    data["feature_flags"]["self_healing"] = True
    data["self_healing"] = {
        "initial_delay_seconds": 1,
        "max_delay_seconds": 1,
        "jitter": 0,
        "quiet_period_minutes": 0.02,
        **self_healing,
    }
    path = folder / "healthmon.yaml"
    path.write_text(yaml.safe_dump(data))
    monkeypatch.setenv("HEALTHMON_CONFIG", str(path))


@pytest.fixture
def outage(
    healthmon_env: Path, db_url: str, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> "Outage":
    """The health store stays up (db_url); the warehouse goes down and comes back."""
    monkeypatch.setenv("HEALTHMON_HEALTH_DATABASE_URL", db_url)
    return Outage(monkeypatch, db_url, unreachable_url(db_url, tmp_path))


class Outage:
    def __init__(self, monkeypatch: pytest.MonkeyPatch, up: str, down: str) -> None:
        self.monkeypatch, self.up_url, self.down_url = monkeypatch, up, down

    def down(self) -> None:
        self.monkeypatch.setenv("HEALTHMON_DATABASE_URL", self.down_url)

    def up(self) -> None:
        self.monkeypatch.setenv("HEALTHMON_DATABASE_URL", self.up_url)


def tick(instance: dg.DagsterInstance) -> dg.SensorResult:
    result = self_healing_sensor(
        dg.build_sensor_context(instance=instance, resources=defs.resources)
    )
    assert isinstance(result, dg.SensorResult)
    return result


def execute(instance: dg.DagsterInstance, request: dg.RunRequest) -> dg.ExecuteInProcessResult:
    """Run what the sensor requested, in process, as the daemon would launch it."""
    return defs.resolve_job_def("patients_etl_job").execute_in_process(
        run_config=request.run_config,
        instance=instance,
        tags={**request.tags, "dagster/run_key": request.run_key or ""},
        asset_selection=request.asset_selection,
        raise_on_error=False,
    )


def land(home: Path, defect: str | None = None) -> SampleFile:
    (sample,) = generate_sample(50, files=1, **({"defect": defect} if defect else {}))
    write_to(LocalLandingSource(home / "landing"), [sample])
    return sample


def timeline(db_url: str) -> list[tuple[int, str, str, dict[str, Any]]]:
    e = incident_events.c
    with get_engine(db_url).connect() as conn:
        return [
            (r.incident_id, r.kind, r.text, dict(r.details))
            for r in conn.execute(
                sa.select(e.incident_id, e.kind, e.text, e.details).order_by(e.event_id)
            )
        ]


def incident_rows(db_url: str) -> list[Any]:
    with get_engine(db_url).connect() as conn:
        return conn.execute(sa.select(incidents).order_by(incidents.c.incident_id)).all()


def attempt_rows(db_url: str) -> list[tuple[str, int, str, str]]:
    c = self_heal_attempts.c
    with get_engine(db_url).connect() as conn:
        return [
            (r.asset_key, r.attempt, r.status, r.rule)
            for r in conn.execute(
                sa.select(c.asset_key, c.attempt, c.status, c.rule).order_by(c.asset_key, c.attempt)
            )
        ]


def link_alert(db_url: str, incident_id: int) -> int:
    """A firing alert linked to the incident (as the alert adapter links one)."""
    now = utcnow()
    with get_engine(db_url).begin() as conn:
        alert_id = conn.execute(
            alerts.insert()
            .values(
                fingerprint="fp-warehouse",
                rule_id="database_down",
                state="firing",
                status="active",
                severity="critical",
                component="database",
                labels={"component": "database"},
                title="warehouse unreachable",
                details={},
                group_key="g",
                started_at=now,
                last_active_at=now,
                last_evaluated_at=now,
            )
            .returning(alerts.c.alert_id)
        ).scalar_one()
        conn.execute(
            incident_alerts.insert().values(
                incident_id=incident_id, alert_id=alert_id, linked_at=now, linked_by="test"
            )
        )
    return int(alert_id)


def alert_state(db_url: str, alert_id: int) -> str:
    with get_engine(db_url).connect() as conn:
        return str(
            conn.execute(sa.select(alerts.c.state).where(alerts.c.alert_id == alert_id)).scalar()
        )


def test_a_transient_outage_is_healed_and_the_incident_resolves_with_its_alerts(
    outage: Outage,
    healthmon_env: Path,
    db_url: str,
    instance: dg.DagsterInstance,
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
) -> None:
    # A backoff longer than a tick takes on a loaded machine.
    use_config(monkeypatch, tmp_path, initial_delay_seconds=4, max_delay_seconds=4)
    sample = land(healthmon_env)
    outage.down()
    failed = run_job(instance, raw_file_run_config(sample.key))
    assert failed.success is False

    # The failure is transient (the warehouse refuses): an incident on the warehouse, a re-run.
    (first,) = tick(instance).run_requests or []
    assert first.run_key is not None and first.run_key.startswith("selfheal:" + failed.run_id)
    assert {tuple(k.path) for k in first.asset_selection or []} >= {("raw", "patients")}
    (incident,) = incident_rows(db_url)
    assert incident.root_key == "resource:database:warehouse"
    alert_id = link_alert(db_url, incident.incident_id)

    # Still down: the re-run fails; the next re-run waits for the backoff (4 s).
    assert execute(instance, first).success is False
    waiting = tick(instance)
    assert not waiting.run_requests
    assert "1 outcome(s) recorded" in (waiting.skip_reason.skip_message or "")  # type: ignore[union-attr]
    outage.up()
    time.sleep(4.1)  # the backoff: the first tick after it re-runs
    (second,) = tick(instance).run_requests or []
    assert second.run_key != first.run_key
    healed = execute(instance, second)
    assert healed.success
    assert raw_rows(db_url, sample.key) == 50

    # Success with checks passing: monitoring; after the quiet period (1.2 s): resolved.
    tick(instance)
    assert incident_rows(db_url)[0].status == "monitoring"
    time.sleep(1.3)
    tick(instance)
    (done,) = incident_rows(db_url)
    assert done.status == "resolved" and "self-healed" in done.resolution
    assert alert_state(db_url, alert_id) == "resolved"

    kinds = [(k, d.get("rule"), d.get("action")) for _, k, _, d in timeline(db_url)]
    heal = [k for k in kinds if k[0].startswith("self_heal")]
    assert heal[0] == ("self_heal_attempt", heal[0][1], "rerun")
    assert heal[0][1] in ("driver_refused", "sqlite_unavailable", "driver_operational")
    assert [k[0] for k in heal].count("self_heal_attempt") == 2
    outcomes = [d for _, k, _, d in timeline(db_url) if k == "self_heal_outcome"]
    assert [o.get("succeeded") for o in outcomes if "succeeded" in o] == [False, True]
    statuses = [k for k, *_ in kinds if k in ("status_changed", "resolved")]
    assert statuses == ["status_changed", "resolved"]
    # Every asset the failed run planned and did not materialize, re-run together.
    assert attempt_rows(db_url) == [
        (asset, n, status, heal[0][1])
        for asset in ("core/dim_patient", RAW_KEY, "stg/patients", "stg/patients_rejected")
        for n, status in ((1, "failed"), (2, "succeeded"))
    ]


def test_an_s3_outage_is_one_incident_for_the_hook_and_the_sensor(
    healthmon_env: Path,
    db_url: str,
    instance: dg.DagsterInstance,
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
) -> None:
    use_config(monkeypatch, tmp_path)
    monkeypatch.setenv("HEALTHMON_S3_BUCKET", "landing-down")
    monkeypatch.setenv("AWS_ENDPOINT_URL", f"http://127.0.0.1:{free_port()}")
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    assert run_job(instance).success is False  # the hook opens the bucket's incident

    (request,) = tick(instance).run_requests or []  # transient: re-run

    # The sensor blames the same bucket as the hook: its decision joins that incident.
    (incident,) = incident_rows(db_url)
    assert incident.root_key == "resource:s3:landing-down"
    assert request.run_key is not None
    decided = {i for i, kind, _, _ in timeline(db_url) if kind == "self_heal_attempt"}
    assert decided == {incident.incident_id}


def test_a_contract_break_is_never_re_run_and_the_rule_is_on_the_timeline(
    healthmon_env: Path,
    db_url: str,
    instance: dg.DagsterInstance,
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
) -> None:
    use_config(monkeypatch, tmp_path)
    bad = land(healthmon_env, defect="missing_column")
    assert run_job(instance, raw_file_run_config(bad.key)).success is False

    for _ in range(3):  # later ticks decide nothing again
        assert not tick(instance).run_requests
    (incident,) = incident_rows(db_url)
    decisions = [(t, d) for _, k, t, d in timeline(db_url) if k == "self_heal_attempt"]
    assert len(decisions) == 1
    text, details = decisions[0]
    assert details["action"] == "skip" and details["rule"] == "contract_break"
    assert "not transient" in text
    assert (RAW_KEY, 1, "skipped", "contract_break") in attempt_rows(db_url)
    assert {r[2:] for r in attempt_rows(db_url)} == {("skipped", "contract_break")}
    assert incident.status == "open"


def test_the_circuit_breaker_opens_after_n_failed_re_runs_and_escalates(
    outage: Outage,
    healthmon_env: Path,
    db_url: str,
    instance: dg.DagsterInstance,
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
) -> None:
    use_config(monkeypatch, tmp_path, breaker_failures=2, escalate_to="critical")
    sample = land(healthmon_env)
    outage.down()
    run_job(instance, raw_file_run_config(sample.key))
    for _ in range(2):
        (request,) = tick(instance).run_requests or []
        assert execute(instance, request).success is False
        time.sleep(1.1)
    # Two consecutive failed re-runs: the breaker opens instead of a third re-run.
    assert not tick(instance).run_requests
    assert not tick(instance).run_requests
    (incident,) = incident_rows(db_url)
    assert incident.severity == "critical"
    rows = [r for r in attempt_rows(db_url) if r[0] == RAW_KEY]
    assert [r[2] for r in rows] == ["failed", "failed", "escalated"]
    assert rows[-1][3] == "circuit_breaker"
    escalations = [t for _, k, t, _ in timeline(db_url) if k == "escalated"]
    assert any("circuit breaker opened after 2 consecutive failed" in t for t in escalations)
    summary = sh.summary(get_engine(db_url), timedelta(hours=1), utcnow())
    assert RAW_KEY in [a for a, _ in summary.open_breakers]
    assert summary.failed_in_window == 2 * len(summary.open_breakers)

    # The warehouse returns and a person loads the asset: the breaker closes.
    outage.up()
    assert run_job(instance, raw_file_run_config(sample.key)).success
    tick(instance)
    assert [r[2] for r in attempt_rows(db_url) if r[0] == RAW_KEY][-1] == "reset"
    assert not sh.summary(get_engine(db_url), timedelta(hours=1), utcnow()).open_breakers


def test_two_sensor_evaluations_at_once_request_one_re_run(
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
    run_job(instance, raw_file_run_config(sample.key))
    results: list[dg.SensorResult] = []
    barrier = threading.Barrier(2)

    def evaluate() -> None:
        barrier.wait()
        results.append(tick(instance))

    threads = [threading.Thread(target=evaluate) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    requests = [r for result in results for r in result.run_requests or []]
    assert len(requests) == 1
    rows = attempt_rows(db_url)
    assert {r[0] for r in rows} >= {RAW_KEY} and {r[1:3] for r in rows} == {(1, "requested")}
    assert len([k for _, k, _, _ in timeline(db_url) if k == "self_heal_attempt"]) == 1


def test_a_file_attempt_with_retries_left_is_the_landing_sensors(
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
    result = defs.resolve_job_def("patients_etl_job").execute_in_process(
        run_config=raw_file_run_config(sample.key),
        instance=instance,
        tags={FILE_ATTEMPT_TAG: f"{sample.key}@x#1"},
        raise_on_error=False,
    )
    assert result.success is False

    assert not tick(instance).run_requests
    # The failure hook opened the outage's incident (one, on the warehouse); this sensor re-ran
    # nothing and opened nothing: the retry is the landing sensor's.
    assert [r.root_key for r in incident_rows(db_url)] == ["resource:database:warehouse"]
    decisions = [d for _, kind, _, d in timeline(db_url) if kind == "self_heal_attempt"]
    assert decisions and all("coordination:file_attempt" in str(d) for d in decisions), decisions
    assert (RAW_KEY, 1, "skipped", "coordination:file_attempt") in attempt_rows(db_url)
    assert {r[2:] for r in attempt_rows(db_url)} == {("skipped", "coordination:file_attempt")}


def test_the_sensor_is_off_while_its_feature_flag_is(
    healthmon_env: Path,
    db_url: str,
    instance: dg.DagsterInstance,
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
) -> None:
    use_config(monkeypatch, tmp_path)
    path = tmp_path / "healthmon.yaml"
    data = yaml.safe_load(path.read_text())
    data["feature_flags"]["self_healing"] = False
    path.write_text(yaml.safe_dump(data))
    sample = land(healthmon_env)
    monkeypatch.setenv("HEALTHMON_DATABASE_URL", unreachable_url(db_url, tmp_path))
    run_job(instance, raw_file_run_config(sample.key))

    result = tick(instance)
    assert not result.run_requests
    assert "feature flag self_healing is off" in (result.skip_reason.skip_message or "")  # type: ignore[union-attr]
    assert not attempt_rows(db_url)


def test_a_stale_asset_whose_upstream_is_newer_is_re_run_once_per_staleness(
    healthmon_env: Path, db_url: str, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    use_config(monkeypatch, tmp_path)
    cfg = HealthmonConfigResource().load()
    policy = sh.SelfHealPolicy.from_config(cfg.self_healing)
    engine = get_engine(db_url)
    now = utcnow()
    fail_window = timedelta(minutes=cfg.freshness["stg/patients"].fail_window_minutes)
    latest = {
        RAW_KEY: now - timedelta(minutes=5),
        "stg/patients": now - fail_window - timedelta(minutes=1),  # stale, raw is newer
        "stg/patients_rejected": now - timedelta(minutes=5),
        "core/dim_patient": now - fail_window - timedelta(minutes=1),  # stale, stg is older
    }

    first = Tick(requests=[])
    decide_stale(engine, cfg, policy, latest, first)
    again = Tick(requests=[])
    decide_stale(engine, cfg, policy, latest, again)

    (request,) = first.requests
    assert {"/".join(k.path) for k in request.asset_selection or []} == {
        "stg/patients",
        "stg/patients_rejected",
    }
    assert not again.requests  # the same staleness is decided once
    (incident,) = incident_rows(db_url)
    assert incident.root_key == "asset:raw/patients"  # the lineage's incident
    assert incident.component == "staging_transformer"  # the most upstream failing asset's
    (entry,) = [d for _, k, _, d in timeline(db_url) if k == "self_heal_attempt"]
    assert (entry["action"], entry["rule"]) == ("rerun", "stale:upstream_newer")


def test_on_by_default_it_requests_nothing_on_valid_data(
    healthmon_env: Path,
    db_url: str,
    instance: dg.DagsterInstance,
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
) -> None:
    """A fresh user's configuration (nothing in healthmon.yaml): the sensor is on, and after a
    good load it requests no run, opens no incident and records no decision, tick after tick."""
    empty = tmp_path / "healthmon.yaml"
    empty.write_text("# nothing configured\n")
    monkeypatch.setenv("HEALTHMON_CONFIG", str(empty))
    assert HealthmonConfigResource().load().feature_enabled("self_healing")
    sample = land(healthmon_env)
    assert run_job(instance, raw_file_run_config(sample.key)).success
    for _ in range(3):
        result = tick(instance)
        assert not result.run_requests
        message = result.skip_reason.skip_message or ""  # type: ignore[union-attr]
        assert message.startswith("0 re-run(s) requested, 0 outcome(s) recorded, 0 decision(s)")
    assert not incident_rows(db_url) and not attempt_rows(db_url)
