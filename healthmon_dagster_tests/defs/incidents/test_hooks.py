"""The incident failure hook and the run-failure sensor on real runs (SQLite and Postgres): a
warehouse outage opens one incident blaming the database, a broken file one for raw/patients, a
blocking check one for its check step, ``dagster asset materialize`` fires the hook too, the sensor
never records a failure a hook recorded, and no patient value reaches an incident. The incident fast
path: the hook that opens an incident sends its notification before the run ends, once (a failure
that joins the incident sends nothing; the sensors ticking after it add nothing), and a receiver
that does not answer costs a bounded wait and leaves the notification to the dispatch job."""

import os
import subprocess
import sys
import time
from datetime import timedelta
from pathlib import Path

import dagster as dg
import pytest
import sqlalchemy as sa
import yaml

from healthmon_dagster.definitions import build_defs
from healthmon_dagster.defs.alerting.hooks import FAST_PATH_REQUEST_TIMEOUT
from healthmon_dagster.defs.incidents.sensors import incident_run_failure_sensor
from healthmon_dagster.defs.pipeline.jobs import raw_file_run_config
from healthmon_dagster.defs.resources import HealthmonConfigResource
from healthmon_dagster.etl.landing import LocalLandingSource
from healthmon_dagster.etl.sample import generate_sample, write_to
from healthmon_dagster.incidents.records import list_incidents, timeline
from healthmon_dagster.notify.dispatch import Dispatcher
from healthmon_dagster.notify.webhook import SIGNATURE_HEADER
from healthmon_dagster.store.db import get_engine
from healthmon_dagster.store.metrics import utcnow
from healthmon_dagster.store.tables import alerts, incident_events, incidents, notifications
from healthmon_dagster_tests.defs.alerting.test_end_to_end import dispatch
from healthmon_dagster_tests.defs.alerting.test_sensors import evaluate_alerts
from healthmon_dagster_tests.defs.fixtures import (
    PROJECT_CONFIG,
    failure_descriptions,
    patient_values,
    run_job,
    use_retry_config,
)
from healthmon_dagster_tests.defs.pipeline.fixtures import PROJECT_ROOT
from healthmon_dagster_tests.fixtures import free_port
from healthmon_dagster_tests.notify.fixtures import Answer, HttpStub, webhook_server


def incident_rows(db_url: str) -> list[sa.Row[object]]:
    with get_engine(db_url).connect() as conn:
        return list(conn.execute(sa.select(incidents).order_by(incidents.c.incident_id)))


def everything_written(db_url: str) -> str:
    """Every incident and timeline text, as one string (for the no-patient-value assertion)."""
    with get_engine(db_url).connect() as conn:
        rows = [*conn.execute(sa.select(incidents)), *conn.execute(sa.select(incident_events))]
    return "\n".join(str(tuple(r)) for r in rows)


def sensor_tick(instance: dg.DagsterInstance, run_id: str) -> None:
    """One evaluation of the run-failure sensor for the failed run ``run_id``."""
    run = instance.get_run_by_id(run_id)
    assert run is not None and run.status == dg.DagsterRunStatus.FAILURE
    (record,) = instance.get_records_for_run(
        run_id=run_id, of_type=dg.DagsterEventType.RUN_FAILURE
    ).records
    event = record.event_log_entry.dagster_event
    assert event is not None
    defs = build_defs()
    context = dg.build_run_status_sensor_context(
        sensor_name=incident_run_failure_sensor.name,
        dagster_event=event,
        dagster_instance=instance,
        dagster_run=run,
        resources=defs.resources,
        repository_def=defs.get_repository_def(),
    ).for_run_failure()
    incident_run_failure_sensor(context)


def test_a_warehouse_outage_opens_one_incident_blaming_the_database(
    healthmon_env: Path,
    db_url: str,
    instance: dg.DagsterInstance,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    use_retry_config(monkeypatch, healthmon_env.parent, step_retries=1)
    samples = generate_sample(100, files=2)
    write_to(LocalLandingSource(healthmon_env / "landing"), samples)
    # The health store stays up; the warehouse is a closed port (with a password never shown).
    monkeypatch.setenv("HEALTHMON_HEALTH_DATABASE_URL", db_url)
    monkeypatch.setenv(
        "HEALTHMON_DATABASE_URL",
        f"postgresql+psycopg2://etl:s3cret@127.0.0.1:{free_port()}/warehouse",
    )

    first = run_job(instance, raw_file_run_config(samples[0].key))
    second = run_job(instance, raw_file_run_config(samples[1].key))

    assert not first.success and not second.success
    (row,) = incident_rows(db_url)  # both runs' failures: one root cause, one incident
    assert row.root_key == "resource:database:warehouse"
    assert (row.status, row.severity, row.failure_count) == ("open", "high", 2)
    assert row.component == "raw_loader"
    assert row.asset_keys == ["raw/patients"]
    assert row.metadata["error_classes"] == ["connection_refused"]
    events = timeline(get_engine(db_url), row.incident_id)
    failures = [e for e in events if e.kind == "failure"]
    assert [e.source for e in failures] == ["hook", "hook"]
    assert {e.details["run_id"] for e in failures} == {first.run_id, second.run_id}
    assert failures[0].details["rule"] == "driver_refused"
    assert failures[0].details["transient"] is True
    assert failures[0].actor == "hook:patients_etl_job"
    assert "s3cret" not in everything_written(db_url)

    # The run-failure sensor sees both failed runs; the hooks recorded them: nothing is added.
    sensor_tick(instance, first.run_id)
    sensor_tick(instance, second.run_id)
    (again,) = incident_rows(db_url)
    assert again.failure_count == 2
    assert len(timeline(get_engine(db_url), row.incident_id)) == len(events)


def test_a_broken_file_opens_an_incident_for_raw_patients_without_patient_values(
    healthmon_env: Path, db_url: str, instance: dg.DagsterInstance
) -> None:
    (bad,) = generate_sample(100, files=1, defect="missing_column")
    write_to(LocalLandingSource(healthmon_env / "landing"), [bad])

    result = run_job(instance, raw_file_run_config(bad.key))

    assert result.success is False
    (row,) = incident_rows(db_url)
    assert row.root_key == "asset:raw/patients"
    assert (row.severity, row.tags) == ("medium", ["permanent"])
    assert row.metadata["error_classes"] == ["contract_break"]
    (failure,) = [e for e in timeline(get_engine(db_url), row.incident_id) if e.kind == "failure"]
    assert failure.details["step_key"] == "raw__patients"
    assert failure.details["transient"] is False
    assert "HEALTHCARE_COVERAGE" in failure.text  # the missing column is named
    written = everything_written(db_url)
    assert not {v for v in patient_values([bad]) if len(v) > 3 and v in written}


def test_a_failed_blocking_check_step_opens_an_incident(
    healthmon_env: Path,
    db_url: str,
    instance: dg.DagsterInstance,
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
) -> None:
    data = yaml.safe_load(PROJECT_CONFIG.read_text())
    data["quality"]["assets"]["raw/patients"]["checks"][0]["allow_unexpected"] = False
    path = tmp_path / "healthmon.yaml"
    path.write_text(yaml.safe_dump(data))
    monkeypatch.setenv("HEALTHMON_CONFIG", str(path))
    (sample,) = generate_sample(100, files=1, defect="extra_column")
    write_to(LocalLandingSource(healthmon_env / "landing"), [sample])

    result = (
        build_defs()
        .resolve_job_def("patients_etl_job")
        .execute_in_process(instance=instance, raise_on_error=False)
    )

    assert result.success is False
    (row,) = incident_rows(db_url)
    assert row.root_key == "asset:raw/patients"
    assert row.metadata["error_classes"] == ["check_failed"]
    (failure,) = [e for e in timeline(get_engine(db_url), row.incident_id) if e.kind == "failure"]
    assert failure.details["step_key"] == "raw__patients__quality_checks"
    assert failure.details["rule"] == "blocking_check_failed"
    assert "check step" in failure.text
    assert "LOYALTY_TIER" not in everything_written(db_url)


def test_dagster_asset_materialize_fires_the_hook(healthmon_env: Path, db_url: str) -> None:
    (bad,) = generate_sample(50, files=1, defect="missing_column")
    write_to(LocalLandingSource(healthmon_env / "landing"), [bad])
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join(
            p for p in (str(PROJECT_ROOT), os.environ.get("PYTHONPATH")) if p
        ),
    }
    dagster = Path(sys.executable).parent / "dagster"
    done = subprocess.run(
        [str(dagster), "asset", "materialize", "-m", "healthmon_dagster.definitions"]
        + ["--select", "raw/patients"],
        cwd=PROJECT_ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=240,
    )

    assert done.returncode != 0, done.stdout[-2000:]
    (row,) = incident_rows(db_url)
    assert row.root_key == "asset:raw/patients"
    (failure,) = [e for e in timeline(get_engine(db_url), row.incident_id) if e.kind == "failure"]
    assert failure.actor == "hook:__ASSET_JOB"
    assert failure.details["job"] == "__ASSET_JOB"


def test_the_sensor_records_a_step_failure_no_hook_could_record(
    healthmon_env: Path,
    db_url: str,
    instance: dg.DagsterInstance,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    use_retry_config(monkeypatch, healthmon_env.parent, step_retries=0)
    (sample,) = generate_sample(50, files=1)
    write_to(LocalLandingSource(healthmon_env / "landing"), [sample])
    # Warehouse and health store down: the hook logs that it could not record, the run fails.
    down = f"postgresql+psycopg2://etl:s3cret@127.0.0.1:{free_port()}/warehouse"
    monkeypatch.setenv("HEALTHMON_DATABASE_URL", down)
    monkeypatch.setenv("HEALTHMON_HEALTH_DATABASE_URL", down)

    result = run_job(instance, raw_file_run_config(sample.key))

    assert result.success is False, failure_descriptions(result)
    messages = " ".join(e.user_message for e in instance.all_logs(result.run_id))
    assert "could not be recorded as an incident" in messages
    assert "s3cret" not in messages
    monkeypatch.setenv("HEALTHMON_DATABASE_URL", db_url)
    monkeypatch.setenv("HEALTHMON_HEALTH_DATABASE_URL", db_url)

    sensor_tick(instance, result.run_id)
    sensor_tick(instance, result.run_id)  # a second look records nothing more

    (incident,) = list_incidents(get_engine(db_url))
    assert incident.root_key == "resource:database:warehouse"
    assert incident.failure_count == 1
    (failure,) = [
        e for e in timeline(get_engine(db_url), incident.incident_id) if e.kind == "failure"
    ]
    assert (failure.source, failure.details["step_key"]) == ("sensor", "raw__patients")


def use_webhook(monkeypatch: pytest.MonkeyPatch, folder: Path, url: str) -> None:
    """The project's healthmon.yaml (one step retry) with the built-in rules sending to the log
    and the signed webhook at ``url``."""
    data = yaml.safe_load(PROJECT_CONFIG.read_text())
    data["landing"]["retry"].update(step_retries=1, step_retry_delay_seconds=0.05)
    data["channels"]["webhook"]["enabled"] = True
    data["alerting"]["builtin_channels"] = ["log", "webhook"]
    path = folder / "healthmon.yaml"
    path.write_text(yaml.safe_dump(data))
    monkeypatch.setenv("HEALTHMON_CONFIG", str(path))
    monkeypatch.setenv("HEALTHMON_WEBHOOK_URL", f"{url}/itsm")
    monkeypatch.setenv("HEALTHMON_WEBHOOK_SECRET", "hook-secret")


def incident_posts(hook: HttpStub, status: str = "firing", updates: bool = False) -> list[float]:
    """When each webhook request announcing an incident alert with ``status`` arrived (with
    ``updates``, each request telling an update of the incident instead)."""
    return [
        r.at
        for r in hook.on("/itsm")
        if any(
            a["labels"].get("alertname") == "incident"
            and a["status"] == status
            and ("incident_update" in a["annotations"]) == updates
            for a in r.json["alerts"]
        )
    ]


def run_ended_at(instance: dg.DagsterInstance, run_id: str) -> float:
    (entry,) = instance.all_logs(run_id, of_type=dg.DagsterEventType.RUN_FAILURE)
    return float(entry.timestamp)


def warehouse_down(monkeypatch: pytest.MonkeyPatch, db_url: str) -> None:
    """The health store stays up; the warehouse is a closed port."""
    monkeypatch.setenv("HEALTHMON_HEALTH_DATABASE_URL", db_url)
    monkeypatch.setenv(
        "HEALTHMON_DATABASE_URL",
        f"postgresql+psycopg2://etl:s3cret@127.0.0.1:{free_port()}/warehouse",
    )


def backstop(instance: dg.DagsterInstance, db_url: str) -> None:
    """The sensors after the run: an alert evaluation, the dispatch sensor and its job, and a
    dispatcher run ten minutes later (past every group's wait and interval)."""
    evaluate_alerts(instance, None)
    dispatch(instance)
    later = utcnow() + timedelta(minutes=10)
    config = HealthmonConfigResource().load()
    with Dispatcher(get_engine(db_url), config, clock=lambda: later) as dispatcher:
        dispatcher.drain(10)


def test_the_hook_that_opens_an_incident_notifies_before_the_run_ends_once(
    healthmon_env: Path,
    db_url: str,
    instance: dg.DagsterInstance,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    samples = generate_sample(100, files=2)
    write_to(LocalLandingSource(healthmon_env / "landing"), samples)
    with webhook_server() as hook:
        use_webhook(monkeypatch, healthmon_env.parent, hook.url)
        warehouse_down(monkeypatch, db_url)

        first = run_job(instance, raw_file_run_config(samples[0].key))

        assert first.success is False
        (sent_at,) = incident_posts(hook)  # the run's own notification, before it ended
        assert sent_at < run_ended_at(instance, first.run_id)
        (row,) = incident_rows(db_url)
        assert (row.severity, row.failure_count) == ("high", 1)
        (post,) = [r for r in hook.on("/itsm")]
        assert post.json["alerts"][0]["labels"]["incident_id"] == str(row.incident_id)
        assert post.headers[SIGNATURE_HEADER].startswith("sha256=")  # signed for the ITSM
        messages = " ".join(e.user_message for e in instance.all_logs(first.run_id))
        assert f"incident {row.incident_id} fast path" in messages
        assert "s3cret" not in post.body.decode() and "s3cret" not in messages

        # The second run's failure joins the incident: the hook announces nothing new.
        second = run_job(instance, raw_file_run_config(samples[1].key))
        assert second.success is False
        (again,) = incident_rows(db_url)
        assert again.failure_count == 2
        assert len(incident_posts(hook)) == 1

        backstop(instance, db_url)  # the sensors find it announced: it is not sent again

        assert len(incident_posts(hook)) == 1
        # An absorbed failure is no update the channels hear of (an outage absorbs many).
        assert incident_posts(hook, updates=True) == []
        n = notifications.c
        with get_engine(db_url).connect() as conn:
            rows = conn.execute(
                sa.select(n.channel, n.kind, n.status)
                .join(alerts, alerts.c.alert_id == n.alert_id)
                .where(alerts.c.rule_id.startswith("incident_"))
            ).all()
        assert sorted(rows) == [
            ("log", "firing", "sent"),
            ("webhook", "firing", "sent"),
        ]
        # The sent notifications land on the timeline (the evaluation sensor records them).
        evaluate_alerts(instance, None)
        notes = [
            (e.details["channel"], e.details["kind"])
            for e in timeline(get_engine(db_url), row.incident_id)
            if e.kind == "notification_sent"
        ]
        assert sorted(notes) == [("log", "firing"), ("webhook", "firing")]


def test_a_receiver_that_does_not_answer_costs_a_bounded_wait_and_the_dispatch_job_sends_later(
    healthmon_env: Path,
    db_url: str,
    instance: dg.DagsterInstance,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    (sample,) = generate_sample(100, files=1)
    write_to(LocalLandingSource(healthmon_env / "landing"), [sample])
    with webhook_server() as hook:
        use_webhook(monkeypatch, healthmon_env.parent, hook.url)
        warehouse_down(monkeypatch, db_url)
        hang = FAST_PATH_REQUEST_TIMEOUT + 3
        hook.then(Answer(200, {"status": "ok"}, delay=hang))

        started = time.monotonic()
        result = run_job(instance, raw_file_run_config(sample.key))
        took = time.monotonic() - started

        assert result.success is False
        assert took < hang + 20, took  # one request's timeout, not the receiver's delay
        assert incident_posts(hook) and not hook.answered  # asked, gave up waiting
        time.sleep(hang)  # the stand-in finishes its slow answer
        with get_engine(db_url).connect() as conn, conn.begin():
            n = notifications.c
            pending = conn.execute(sa.select(n.channel).where(n.status == "pending")).scalars()
            assert list(pending) == ["webhook"]
            conn.execute(notifications.update().values(not_before=sa.func.now()))
        assert dispatch(instance) is not None  # the backstop sends it
        assert len(incident_posts(hook)) == 2
        assert hook.answered[-1] is hook.requests[-1]
