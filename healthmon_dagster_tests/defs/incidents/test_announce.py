"""Incidents announced through the alert channels (SQLite and Postgres): opening an incident fires
its alert (alertname=incident) on the next alert evaluation and the outbox sends it once; the sent
notification lands on the incident's timeline once; escalating re-announces it at the higher
severity; resolving it resolves the alert and tells the channels."""

import logging
from datetime import datetime
from pathlib import Path
from typing import Any

import dagster as dg
import pytest
import sqlalchemy as sa
import yaml

from healthmon_dagster.config import load_config
from healthmon_dagster.definitions import build_defs
from healthmon_dagster.defs.alerting.sensors import alert_evaluation_sensor
from healthmon_dagster.enums import IncidentSource
from healthmon_dagster.incidents.lifecycle import resolve, update
from healthmon_dagster.incidents.records import (
    Actor,
    Failure,
    list_incidents,
    open_or_absorb,
    timeline,
)
from healthmon_dagster.notify.dispatch import Dispatcher
from healthmon_dagster.store.db import get_engine
from healthmon_dagster.store.metrics import utcnow
from healthmon_dagster.store.tables import alerts, notifications
from healthmon_dagster_tests.defs.fixtures import PROJECT_CONFIG

PERSON = Actor("cli:alice", IncidentSource.CLI)


@pytest.fixture
def config_path(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Path:
    """healthmon.yaml without a group wait (notifications are due at once)."""
    data = yaml.safe_load(PROJECT_CONFIG.read_text())
    data["alerting"]["grouping"]["group_wait_seconds"] = 0
    path = tmp_path / "healthmon.yaml"
    path.write_text(yaml.safe_dump(data))
    monkeypatch.setenv("HEALTHMON_CONFIG", str(path))
    return path


def tick(instance: dg.DagsterInstance) -> None:
    defs = build_defs()
    context = dg.build_sensor_context(
        instance=instance, resources=defs.resources, repository_def=defs.get_repository_def()
    )
    assert isinstance(alert_evaluation_sensor(context), dg.SkipReason)


def drain(db_url: str, config_path: Path) -> None:
    with Dispatcher(get_engine(db_url), load_config(config_path)) as dispatcher:
        dispatcher.drain(10.0)


def incident_alerts(db_url: str) -> list[Any]:
    with get_engine(db_url).connect() as conn:
        return list(
            conn.execute(
                sa.select(alerts)
                .where(alerts.c.rule_id.startswith("incident_"))
                .order_by(alerts.c.alert_id)
            )
        )


def sent(db_url: str, status: str = "sent") -> list[tuple[int, str, str]]:
    n = notifications.c
    with get_engine(db_url).connect() as conn:
        return [
            (r.alert_id, r.kind, r.channel)
            for r in conn.execute(
                sa.select(n.alert_id, n.kind, n.channel)
                .where(n.status == status)
                .order_by(n.notification_id)
            )
        ]


def open_incident(db_url: str, now: datetime) -> int:
    failure = Failure(
        title="step raw__patients of patients_etl_job failed (connection_refused)",
        component="raw_loader",
        occurred_at=now,
        asset_keys=("raw/patients",),
        error_class="connection_refused",
        cause_resource="database:warehouse",
    )
    actor = Actor("hook:patients_etl_job", IncidentSource.HOOK)
    return open_or_absorb(
        get_engine(db_url), "resource:database:warehouse", failure, actor
    ).incident_id


def test_an_incident_is_announced_escalated_and_resolved_through_the_channels(
    healthmon_env: Path,
    db_url: str,
    instance: dg.DagsterInstance,
    config_path: Path,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO, logger="healthmon.notify")
    engine = get_engine(db_url)
    incident_id = open_incident(db_url, utcnow())

    tick(instance)
    (alert,) = incident_alerts(db_url)
    assert alert.state == "firing" and alert.rule_id == "incident_medium"
    assert alert.severity == "warning"
    assert {k: alert.labels[k] for k in ("alertname", "incident_id", "component", "severity")} == {
        "alertname": "incident",
        "incident_id": str(incident_id),
        "component": "raw_loader",
        "severity": "warning",
    }
    drain(db_url, config_path)
    assert sent(db_url) == [(alert.alert_id, "firing", "log")]
    assert f"incident {incident_id}" in caplog.text

    tick(instance)
    tick(instance)  # the sent notification is on the timeline once
    notes = [e for e in timeline(engine, incident_id) if e.kind == "notification_sent"]
    assert [(e.details["channel"], e.details["kind"]) for e in notes] == [("log", "firing")]
    assert (notes[0].source, notes[0].actor) == ("sensor", "sensor:incident_notifications")

    update(engine, incident_id, PERSON, {"severity": "critical"})
    tick(instance)
    old, new = incident_alerts(db_url)
    assert (old.state, new.state) == ("resolved", "firing")
    assert (new.rule_id, new.severity) == ("incident_critical", "critical")
    drain(db_url, config_path)
    assert sent(db_url)[1:] == [(new.alert_id, "firing", "log")]
    # The old severity's alert resolved: its channel is told, after the group interval.
    assert sent(db_url, "pending") == [(old.alert_id, "resolved", "log")]

    resolve(engine, incident_id, "warehouse back", PERSON)
    tick(instance)
    assert [a.state for a in incident_alerts(db_url)] == ["resolved", "resolved"]
    assert (new.alert_id, "resolved", "log") in sent(db_url, "pending")
    tick(instance)
    kinds = [
        e.details["kind"] for e in timeline(engine, incident_id) if e.kind == "notification_sent"
    ]
    assert kinds == ["firing", "firing"]  # the resolved notices are not sent yet
    assert len(incident_alerts(db_url)) == 2  # ended: nothing new is raised
    # The critical incident alert is the incident's own announcement, not a new incident.
    assert [i.incident_id for i in list_incidents(engine, include_ended=True)] == [incident_id]
