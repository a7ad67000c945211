"""Incidents exported to incident tools (SQLite and Postgres), through real local HTTP receivers
and the outbox dispatcher: an ITSM system on the webhook channel receives signed Alertmanager-v4
JSON with the incident's labels when the incident opens, escalates and resolves (the test checks
the HMAC signature as a receiver would), and PagerDuty receives a trigger and then a resolve with
the same ``dedup_key`` for each of the incident's alerts. Updates (a status change, an assignment,
not each absorbed failure) reach the ITSM once each, saying what changed; PagerDuty, whose Events API
has no update event, gets none. An update follows a firing notification still queued; while the
incident's alert is suppressed its updates wait, and the ITSM told before hears of them after."""

import hmac
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import dagster as dg
import pytest
import sqlalchemy as sa
import yaml

from healthmon_dagster.alerting.actions import add_silence, expire_silence
from healthmon_dagster.alerting.labels import parse_matcher
from healthmon_dagster.config import load_config
from healthmon_dagster.definitions import build_defs
from healthmon_dagster.defs.alerting.sensors import alert_evaluation_sensor
from healthmon_dagster.enums import IncidentSeverity, IncidentSource, IncidentStatus
from healthmon_dagster.incidents.announce import UPDATE_LOOKBACK, announce, queue_updates
from healthmon_dagster.incidents.lifecycle import assign, resolve, set_status, update
from healthmon_dagster.incidents.records import Actor, Failure, open_or_absorb, timeline
from healthmon_dagster.notify.dispatch import Dispatcher
from healthmon_dagster.notify.webhook import SIGNATURE_HEADER, TIMESTAMP_HEADER, sign
from healthmon_dagster.store.db import get_engine
from healthmon_dagster.store.metrics import utcnow
from healthmon_dagster.store.tables import notifications
from healthmon_dagster_tests.defs.fixtures import PROJECT_CONFIG
from healthmon_dagster_tests.notify.fixtures import (
    HttpStub,
    Request,
    pagerduty_server,
    webhook_server,
)

SECRET = "itsm-shared-secret"
ROUTING_KEY = "R" * 32
PERSON = Actor("cli:alice", IncidentSource.CLI)
HOOK = Actor("hook:patients_etl_job", IncidentSource.HOOK)
OUTAGE_KEY = "resource:database:warehouse"


@pytest.fixture
def receivers(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> Iterator[tuple[Path, HttpStub, HttpStub]]:
    """healthmon.yaml whose incidents go to an ITSM webhook (signed) and PagerDuty, both local."""
    with webhook_server() as itsm, pagerduty_server() as pagerduty:
        data = yaml.safe_load(PROJECT_CONFIG.read_text())
        data["channels"]["itsm"] = {
            "type": "webhook",
            "configuration": {"url_env": "ITSM_WEBHOOK_URL", "secret_env": "ITSM_WEBHOOK_SECRET"},
        }
        data["channels"]["pagerduty"] = {
            "type": "pagerduty",
            "configuration": {"url": f"{pagerduty.url}/v2/enqueue"},
        }
        data["alerting"]["builtin_channels"] = ["itsm", "pagerduty"]
        data["alerting"]["grouping"]["group_wait_seconds"] = 0
        data["alerting"]["grouping"]["group_interval_seconds"] = 1
        path = tmp_path / "healthmon.yaml"
        path.write_text(yaml.safe_dump(data))
        monkeypatch.setenv("HEALTHMON_CONFIG", str(path))
        monkeypatch.setenv("ITSM_WEBHOOK_URL", f"{itsm.url}/itsm/alerts")
        monkeypatch.setenv("ITSM_WEBHOOK_SECRET", SECRET)
        monkeypatch.setenv("PAGERDUTY_ROUTING_KEY", ROUTING_KEY)
        yield path, itsm, pagerduty


def tick(instance: dg.DagsterInstance) -> None:
    defs = build_defs()
    context = dg.build_sensor_context(
        instance=instance, resources=defs.resources, repository_def=defs.get_repository_def()
    )
    assert isinstance(alert_evaluation_sensor(context), dg.SkipReason)


def drain(db_url: str, config_path: Path) -> None:
    with Dispatcher(get_engine(db_url), load_config(config_path)) as dispatcher:
        dispatcher.drain(10.0)


def verified(request: Request) -> Any:
    """The body, after checking its signature as an ITSM receiver does (HMAC-SHA256 of
    ``<timestamp>.<raw body>`` with the shared secret, compared in constant time)."""
    timestamp = request.headers[TIMESTAMP_HEADER]
    expected = sign(SECRET, timestamp, request.body)
    assert hmac.compare_digest(request.headers[SIGNATURE_HEADER], expected)
    assert not hmac.compare_digest(sign("another secret", timestamp, request.body), expected)
    assert request.headers["Idempotency-Key"]
    return request.json


def itsm_alerts(itsm: HttpStub) -> list[tuple[str, str, str]]:
    """(status, incident_id label, severity label) of every alert the ITSM received, in order."""
    out = []
    for request in itsm.on("/itsm/alerts"):
        body = verified(request)
        assert body["version"] == "4" and body["receiver"] == "itsm"
        for alert in body["alerts"]:
            labels = alert["labels"]
            assert labels["alertname"] == "incident"
            assert labels["component"] == "raw_loader"
            out.append((alert["status"], labels["incident_id"], labels["severity"]))
    return out


def pagerduty_events(pagerduty: HttpStub) -> list[tuple[str, str, str]]:
    """(event_action, dedup_key, severity) of every event PagerDuty received, in order."""
    out = []
    for request in pagerduty.on("/v2/enqueue"):
        event = request.json
        assert event["routing_key"] == ROUTING_KEY
        severity = event.get("payload", {}).get("severity", "")
        out.append((event["event_action"], event["dedup_key"], severity))
    return out


def test_an_incident_reaches_an_itsm_webhook_signed_and_pagerduty_trigger_then_resolve(
    healthmon_env: Path,
    db_url: str,
    instance: dg.DagsterInstance,
    receivers: tuple[Path, HttpStub, HttpStub],
) -> None:
    config_path, itsm, pagerduty = receivers
    engine = get_engine(db_url)
    failure = Failure(
        title="step raw__patients of patients_etl_job failed (connection_refused)",
        component="raw_loader",
        occurred_at=utcnow(),
        asset_keys=("raw/patients",),
        error_class="connection_refused",
        cause_resource="database:warehouse",
    )
    incident_id = open_or_absorb(
        engine, "resource:database:warehouse", failure, Actor("hook:job", IncidentSource.HOOK)
    ).incident_id
    iid = str(incident_id)

    # Opened: the ITSM gets a firing alert with the incident's labels; PagerDuty a trigger.
    tick(instance)
    drain(db_url, config_path)
    assert itsm_alerts(itsm) == [("firing", iid, "warning")]
    ((action, opened_key, severity),) = pagerduty_events(pagerduty)
    assert (action, severity) == ("trigger", "warning")

    # Escalated (an update of its severity): the old alert resolves, one of the new severity fires.
    update(engine, incident_id, PERSON, {"severity": "critical"})
    tick(instance)
    drain(db_url, config_path)
    assert sorted(itsm_alerts(itsm)[1:]) == [
        ("firing", iid, "critical"),
        ("resolved", iid, "warning"),
    ]
    events = pagerduty_events(pagerduty)[1:]
    assert ("resolve", opened_key) in [(a, k) for a, k, _ in events]
    ((_, escalated_key, _),) = [e for e in events if e[0] == "trigger"]
    assert escalated_key != opened_key

    # Resolved: the ITSM is told the incident resolved; PagerDuty resolves the same dedup_key.
    resolve(engine, incident_id, "warehouse back", PERSON)
    tick(instance)
    drain(db_url, config_path)
    assert itsm_alerts(itsm)[-1] == ("resolved", iid, "critical")
    assert [(a, k) for a, k, _ in pagerduty_events(pagerduty)] == [
        ("trigger", opened_key),
        *[(a, k) for a, k, _ in events],
        ("resolve", escalated_key),
    ]
    # Every transition was delivered once to each tool, and is on the incident's timeline.
    assert len(itsm_alerts(itsm)) == 4 and len(pagerduty_events(pagerduty)) == 4
    tick(instance)
    sent = [
        (e.details["channel"], e.details["kind"])
        for e in timeline(engine, incident_id)
        if e.kind == "notification_sent"
    ]
    assert sorted(sent) == sorted(
        [(channel, kind) for channel in ("itsm", "pagerduty") for kind in ("firing",) * 2]
        + [(channel, "resolved") for channel in ("itsm", "pagerduty")] * 2
    )


def outage(run: str = "r1") -> Failure:
    """A failure of run ``run`` blamed on the warehouse (an outage's incident)."""
    return Failure(
        title=f"step raw__patients of run {run} failed (connection_refused)",
        component="raw_loader",
        occurred_at=utcnow(),
        asset_keys=("raw/patients",),
        error_class="connection_refused",
        cause_resource="database:warehouse",
        severity=IncidentSeverity.HIGH,
        dedup_key=f"failure:step:{run}:raw__patients",
    )


def itsm_updates(itsm: HttpStub) -> list[tuple[str, str, str, str]]:
    """(status, incident_id label, update kind, update text) of every update the ITSM received."""
    return [
        (
            alert["status"],
            alert["labels"]["incident_id"],
            alert["annotations"]["incident_update_kind"],
            alert["annotations"]["incident_update"],
        )
        for request in itsm.on("/itsm/alerts")
        for alert in verified(request)["alerts"]
        if "incident_update" in alert["annotations"]
    ]


def test_incident_updates_reach_the_itsm_once_each_and_not_pagerduty(
    healthmon_env: Path,
    db_url: str,
    instance: dg.DagsterInstance,
    receivers: tuple[Path, HttpStub, HttpStub],
) -> None:
    config_path, itsm, pagerduty = receivers
    engine = get_engine(db_url)
    incident_id = open_or_absorb(engine, OUTAGE_KEY, outage("r1"), HOOK).incident_id
    iid = str(incident_id)
    tick(instance)
    drain(db_url, config_path)
    assert itsm_alerts(itsm) == [("firing", iid, "error")] and itsm_updates(itsm) == []

    set_status(engine, incident_id, IncidentStatus.INVESTIGATING, PERSON, "looking at the database")
    assign(engine, incident_id, "data-platform", PERSON)
    tick(instance)
    drain(db_url, config_path)
    assert open_or_absorb(engine, OUTAGE_KEY, outage("r2"), HOOK).created is False
    tick(instance)
    tick(instance)  # a second evaluation announces nothing twice
    drain(db_url, config_path)

    assert itsm_updates(itsm) == [
        (
            "firing",
            iid,
            "status_changed",
            f"incident {iid} status changed: status open -> investigating; looking at the database",
        ),
        ("firing", iid, "assigned", f"incident {iid} assigned: assigned to data-platform"),
        # The absorbed failure (r2) is on the timeline, not sent: an outage absorbs dozens.
    ]
    # PagerDuty: the trigger only; its Events API has no update event.
    assert [a for a, _, _ in pagerduty_events(pagerduty)] == ["trigger"]
    # The updates sent are on the timeline, as every notification of the incident's alert.
    tick(instance)
    sent = [
        e.details["kind"] for e in timeline(engine, incident_id) if e.kind == "notification_sent"
    ]
    assert sorted(sent) == ["firing", "firing", "updated", "updated"]


def test_a_silenced_incident_sends_no_updates_then_or_later(
    healthmon_env: Path,
    db_url: str,
    instance: dg.DagsterInstance,
    receivers: tuple[Path, HttpStub, HttpStub],
) -> None:
    """Updates of an incident whose alert is suppressed (here a silence; the dependency's alert
    that paged the outage first mutes it the same way) are not sent, then or after the silence."""
    config_path, itsm, pagerduty = receivers
    engine = get_engine(db_url)
    silence = add_silence(
        engine,
        [parse_matcher("alertname=incident")],
        utcnow() + timedelta(hours=1),
        "alice",
        "database maintenance",
    )
    incident_id = open_or_absorb(engine, OUTAGE_KEY, outage(), HOOK).incident_id
    tick(instance)
    drain(db_url, config_path)
    set_status(engine, incident_id, IncidentStatus.INVESTIGATING, PERSON, "looking")
    assign(engine, incident_id, "data-platform", PERSON)
    tick(instance)
    drain(db_url, config_path)
    assert itsm.on("/itsm/alerts") == [] and pagerduty.on("/v2/enqueue") == []

    expire_silence(engine, silence)
    tick(instance)
    drain(db_url, config_path)
    # The silence over, the incident is announced once, with no backlog of stale updates.
    assert itsm_alerts(itsm) == [("firing", str(incident_id), "error")]
    assert itsm_updates(itsm) == []


def updates_queued(db_url: str) -> list[tuple[str, str, str | None]]:
    """(channel, status, last_error) of every ``updated`` notification in the outbox."""
    n = notifications.c
    with get_engine(db_url).connect() as conn:
        return [
            (str(channel), str(status), error)
            for channel, status, error in conn.execute(
                sa.select(n.channel, n.status, n.last_error)
                .where(n.kind == "updated")
                .order_by(n.notification_id)
            )
        ]


def itsm_sequence(itsm: HttpStub) -> list[str]:
    """What the ITSM received, in order: ``update`` for an update, else the alert's status."""
    return [
        "update" if "incident_update" in alert["annotations"] else alert["status"]
        for request in itsm.on("/itsm/alerts")
        for alert in verified(request)["alerts"]
    ]


def test_an_update_written_before_the_firing_notification_went_out_follows_it(
    healthmon_env: Path,
    db_url: str,
    instance: dg.DagsterInstance,
    receivers: tuple[Path, HttpStub, HttpStub],
) -> None:
    """The alert fired and its firing notification is still queued (a group wait, a retry after
    a 429) when the status changes: the update is queued behind it, not lost, and the ITSM gets
    the firing first."""
    config_path, itsm, pagerduty = receivers
    engine = get_engine(db_url)
    incident_id = open_or_absorb(engine, OUTAGE_KEY, outage(), HOOK).incident_id
    tick(instance)  # the alert fires; its firing notifications are queued, none sent yet
    set_status(engine, incident_id, IncidentStatus.INVESTIGATING, PERSON, "looking")
    tick(instance)
    assert updates_queued(db_url) == [("itsm", "pending", None)]
    drain(db_url, config_path)
    assert itsm_sequence(itsm) == ["firing", "update"]
    assert itsm_updates(itsm) == [
        (
            "firing",
            str(incident_id),
            "status_changed",
            f"incident {incident_id} status changed: status open -> investigating; looking",
        )
    ]
    assert [a for a, _, _ in pagerduty_events(pagerduty)] == ["trigger"]


def test_an_update_queued_behind_a_firing_notification_is_dropped_with_it(
    healthmon_env: Path,
    db_url: str,
    instance: dg.DagsterInstance,
    receivers: tuple[Path, HttpStub, HttpStub],
) -> None:
    """The incident resolves before its firing notification went out: the update waiting
    behind it is cancelled with it; the ITSM hears nothing of an incident it never saw."""
    config_path, itsm, pagerduty = receivers
    engine = get_engine(db_url)
    incident_id = open_or_absorb(engine, OUTAGE_KEY, outage(), HOOK).incident_id
    tick(instance)
    set_status(engine, incident_id, IncidentStatus.INVESTIGATING, PERSON, "looking")
    tick(instance)
    resolve(engine, incident_id, "warehouse back", PERSON)
    tick(instance)
    drain(db_url, config_path)
    assert updates_queued(db_url) == [("itsm", "cancelled", "alert resolved before it was sent")]
    assert itsm.on("/itsm/alerts") == [] and pagerduty.on("/v2/enqueue") == []


def test_updates_made_during_a_silence_after_the_page_reach_the_itsm_when_it_ends(
    healthmon_env: Path,
    db_url: str,
    instance: dg.DagsterInstance,
    receivers: tuple[Path, HttpStub, HttpStub],
) -> None:
    """The ITSM was told of the incident; a silence starts; the status and the assignee change
    meanwhile: nothing is queued or sent while it lasts, and once it ends the ITSM hears of both
    (PagerDuty of neither)."""
    config_path, itsm, pagerduty = receivers
    engine = get_engine(db_url)
    incident_id = open_or_absorb(engine, OUTAGE_KEY, outage(), HOOK).incident_id
    iid = str(incident_id)
    tick(instance)
    drain(db_url, config_path)
    assert itsm_sequence(itsm) == ["firing"]
    silence = add_silence(
        engine,
        [parse_matcher("alertname=incident")],
        utcnow() + timedelta(hours=1),
        "alice",
        "database maintenance",
    )
    tick(instance)  # the alert is suppressed now
    set_status(engine, incident_id, IncidentStatus.INVESTIGATING, PERSON, "root cause found")
    assign(engine, incident_id, "data-platform", PERSON)
    tick(instance)
    drain(db_url, config_path)
    # The entries wait, unmarked: no update is queued while the alert is suppressed.
    assert updates_queued(db_url) == []
    assert itsm_sequence(itsm) == ["firing"]

    expire_silence(engine, silence)
    tick(instance)
    tick(instance)  # a second evaluation announces nothing twice
    drain(db_url, config_path)
    assert itsm_updates(itsm) == [
        (
            "firing",
            iid,
            "status_changed",
            f"incident {iid} status changed: status open -> investigating; root cause found",
        ),
        ("firing", iid, "assigned", f"incident {iid} assigned: assigned to data-platform"),
    ]
    assert itsm_sequence(itsm) == ["firing", "update", "update"]
    assert [a for a, _, _ in pagerduty_events(pagerduty)] == ["trigger"]


def test_an_update_queued_before_a_silence_waits_in_the_outbox_until_it_ends(
    healthmon_env: Path,
    db_url: str,
    instance: dg.DagsterInstance,
    receivers: tuple[Path, HttpStub, HttpStub],
) -> None:
    """An update queued while the alert was active, not yet sent when a silence starts: the
    dispatcher does not send it while the alert is suppressed, says why, and sends it as soon as
    the silence ends. Before, it was due again every minute of the silence (a dispatch run a
    minute for nothing) and went out only at the next of those rechecks."""
    config_path, itsm, _ = receivers
    engine = get_engine(db_url)
    incident_id = open_or_absorb(engine, OUTAGE_KEY, outage(), HOOK).incident_id
    tick(instance)
    drain(db_url, config_path)
    set_status(engine, incident_id, IncidentStatus.INVESTIGATING, PERSON, "looking")
    tick(instance)
    assert updates_queued(db_url) == [("itsm", "pending", None)]
    silence = add_silence(
        engine,
        [parse_matcher("alertname=incident")],
        utcnow() + timedelta(hours=1),
        "alice",
        "database maintenance",
    )
    tick(instance)  # suppressed before the dispatcher took the update
    drain(db_url, config_path)
    assert updates_queued(db_url) == [
        ("itsm", "pending", f"waiting: alert suppressed by silence {silence}")
    ]
    assert itsm_sequence(itsm) == ["firing"]
    # Parked, not due: the dispatch sensor starts no run for it while the silence lasts.
    config = load_config(config_path)
    with Dispatcher(engine, config) as dispatcher:
        assert (dispatcher.next_due_in() or 0) > 30 * 60

    expire_silence(engine, silence)
    assign(engine, incident_id, "data-platform", PERSON)  # a newer update, queued at the end
    tick(instance)
    drain(db_url, config_path)  # released by the silence's end: due at once
    assert updates_queued(db_url) == [("itsm", "sent", None), ("itsm", "sent", None)]
    assert [kind for _, _, kind, _ in itsm_updates(itsm)] == ["status_changed", "assigned"]
    assert itsm_sequence(itsm) == ["firing", "update", "update"]


def test_updates_held_by_a_silence_longer_than_the_lookback_are_still_sent(
    healthmon_env: Path,
    db_url: str,
    instance: dg.DagsterInstance,
    receivers: tuple[Path, HttpStub, HttpStub],
) -> None:
    """A silence outlasts UPDATE_LOOKBACK: the status change made at its start is older than the
    lookback when it ends, and is sent all the same (it waited for the silence, not for a health
    store that was down)."""
    config_path, itsm, _ = receivers
    engine = get_engine(db_url)
    config = load_config(config_path)
    start = utcnow() - UPDATE_LOOKBACK - timedelta(days=1)
    incident_id = open_or_absorb(engine, OUTAGE_KEY, outage(), HOOK, now=start).incident_id
    announce(engine, config, incident_id, "test", now=start)
    drain(db_url, config_path)
    assert itsm_sequence(itsm) == ["firing"]
    silence = add_silence(
        engine,
        [parse_matcher("alertname=incident")],
        utcnow() + timedelta(hours=1),
        "alice",
        "long maintenance",
        starts_at=start + timedelta(hours=1),
    )
    announce(engine, config, incident_id, "test", now=start + timedelta(hours=2))  # suppressed
    set_status(
        engine,
        incident_id,
        IncidentStatus.INVESTIGATING,
        PERSON,
        "looking",
        now=start + timedelta(hours=3),
    )
    assert queue_updates(engine, config, now=start + timedelta(hours=4)) == 0
    assert updates_queued(db_url) == []

    expire_silence(engine, silence)
    tick(instance)
    drain(db_url, config_path)
    assert [kind for _, _, kind, _ in itsm_updates(itsm)] == ["status_changed"]
