"""The incident lifecycle: allowed and refused status changes, resolve/reopen/close, assignment,
notes, edits, links to alerts and incidents, and concurrent changes."""

import threading
from datetime import datetime

import pytest
import sqlalchemy as sa
from sqlalchemy.engine import Engine

from healthmon_dagster.enums import IncidentSeverity, IncidentStatus
from healthmon_dagster.incidents import lifecycle
from healthmon_dagster.incidents.lifecycle import TRANSITIONS, InvalidTransition
from healthmon_dagster.incidents.records import (
    IncidentError,
    get_incident,
    open_or_absorb,
    timeline,
)
from healthmon_dagster.store.tables import alerts
from healthmon_dagster_tests.incidents.fixtures import ALICE, HOOK, SENSOR, T0, failure, minutes

S = IncidentStatus


def opened(engine: Engine, key: str = "asset:raw/patients") -> int:
    return open_or_absorb(engine, key, failure(), HOOK, T0).incident_id


def add_alert(
    engine: Engine,
    at: datetime = T0,
    component: str = "raw_loader",
    labels: dict[str, str] | None = None,
    severity: str = "critical",
) -> int:
    with engine.begin() as conn:
        return int(
            conn.execute(
                alerts.insert()
                .values(
                    fingerprint=f"fp{at.timestamp()}{component}",
                    rule_id="check_failed",
                    state="firing",
                    status="active",
                    severity=severity,
                    component=component,
                    labels=labels if labels is not None else {"asset": "raw/patients"},
                    title="raw/patients: 3 checks failed",
                    details={},
                    group_key="g",
                    started_at=at,
                    last_active_at=at,
                    last_evaluated_at=at,
                )
                .returning(alerts.c.alert_id)
            ).scalar_one()
        )


def test_the_full_lifecycle_records_every_step(engine: Engine) -> None:
    iid = opened(engine)
    for to in (S.INVESTIGATING, S.IDENTIFIED, S.MONITORING):
        lifecycle.set_status(engine, iid, to, ALICE, now=T0 + minutes(10))
    lifecycle.resolve(
        engine, iid, "restarted the database", ALICE, root_cause="disk full", now=T0 + minutes(40)
    )
    inc = get_incident(engine, iid)
    assert inc.status == S.RESOLVED
    assert inc.end_time == T0 + minutes(40) and inc.duration_minutes == pytest.approx(40.0)
    assert (inc.resolution, inc.root_cause) == ("restarted the database", "disk full")
    assert inc.acknowledged_at == T0 + minutes(10)
    lifecycle.close(engine, iid, ALICE, "postmortem done", now=T0 + minutes(60))
    assert get_incident(engine, iid).closed_at == T0 + minutes(60)
    events = timeline(engine, iid)
    assert [(e.kind, e.from_status, e.to_status) for e in events[2:]] == [
        ("status_changed", "open", "investigating"),
        ("status_changed", "investigating", "identified"),
        ("status_changed", "identified", "monitoring"),
        ("resolved", "monitoring", "resolved"),
        ("closed", "resolved", "closed"),
    ]
    assert all(e.actor == "cli:alice" and e.source == "cli" for e in events[2:])


def test_an_invalid_transition_names_the_allowed_ones(engine: Engine) -> None:
    iid = opened(engine)
    lifecycle.set_status(engine, iid, S.MONITORING, ALICE)
    with pytest.raises(
        InvalidTransition,
        match="monitoring: it cannot move to identified; "
        "allowed from monitoring: investigating, resolved",
    ):
        lifecycle.set_status(engine, iid, S.IDENTIFIED, ALICE)
    with pytest.raises(InvalidTransition, match="allowed from monitoring"):
        lifecycle.close(engine, iid, ALICE)
    lifecycle.resolve(engine, iid, "fixed", ALICE)
    lifecycle.close(engine, iid, ALICE)
    with pytest.raises(InvalidTransition, match="closed, which is final"):
        lifecycle.set_status(engine, iid, S.OPEN, ALICE)
    assert get_incident(engine, iid).status == S.CLOSED


def test_every_status_reaches_only_its_allowed_successors(engine: Engine) -> None:
    for current, allowed in TRANSITIONS.items():
        for to in S:
            if to in allowed:
                lifecycle.check_transition(1, current, to)
            else:
                with pytest.raises(InvalidTransition):
                    lifecycle.check_transition(1, current, to)


def test_resolving_needs_a_resolution(engine: Engine) -> None:
    iid = opened(engine)
    with pytest.raises(IncidentError, match="needs a resolution"):
        lifecycle.set_status(engine, iid, S.RESOLVED, ALICE)
    with pytest.raises(IncidentError, match="needs a resolution"):
        lifecycle.resolve(engine, iid, "  ", ALICE)
    assert get_incident(engine, iid).status == S.OPEN


def test_reopen_clears_the_end_and_is_refused_while_another_is_open(engine: Engine) -> None:
    iid = opened(engine)
    lifecycle.resolve(engine, iid, "fixed", ALICE, now=T0 + minutes(5))
    lifecycle.set_status(engine, iid, S.OPEN, ALICE, "the fix did not hold", now=T0 + minutes(9))
    inc = get_incident(engine, iid)
    assert inc.status == S.OPEN and inc.end_time is None and inc.duration_minutes is None
    assert timeline(engine, iid)[-1].kind == "reopened"
    lifecycle.resolve(engine, iid, "fixed again", ALICE)
    newer = opened(engine)
    with pytest.raises(IncidentError, match=f"incident {newer} is open for the same root cause"):
        lifecycle.set_status(engine, iid, S.OPEN, ALICE)
    assert get_incident(engine, iid).status == S.RESOLVED


def test_assignment_notes_and_edits(engine: Engine) -> None:
    iid = opened(engine)
    lifecycle.add_note(engine, iid, "the sensor noted a retry", SENSOR, now=T0 + minutes(1))
    assert get_incident(engine, iid).acknowledged_at is None  # a sensor is not a person
    lifecycle.assign(engine, iid, "bob", ALICE, now=T0 + minutes(3))
    lifecycle.assign(engine, iid, "carol", ALICE, now=T0 + minutes(4))
    said = lifecycle.update(
        engine,
        iid,
        ALICE,
        {"severity": "critical", "impact": "major", "root_cause": "disk full", "tags": ["db"]},
    )
    assert said == ["severity medium -> critical", "impact minor -> major", "root cause", "tags"]
    inc = get_incident(engine, iid)
    assert inc.assigned_to == "carol" and inc.acknowledged_at == T0 + minutes(3)
    assert (inc.severity, inc.impact, inc.root_cause, inc.tags) == (
        IncidentSeverity.CRITICAL,
        "major",
        "disk full",
        ("db",),
    )
    events = timeline(engine, iid)
    assert [e.kind for e in events[2:]] == ["note", "assigned", "assigned", "escalated"]
    assert events[4].text == "assigned to carol (was bob)"
    assert lifecycle.update(engine, iid, ALICE, {"impact": "major"}) == []  # nothing changed
    with pytest.raises(IncidentError, match="severity 'urgent' is not one of low, medium"):
        lifecycle.update(engine, iid, ALICE, {"severity": "urgent"})
    with pytest.raises(IncidentError, match="cannot edit status"):
        lifecycle.update(engine, iid, ALICE, {"status": "closed"})
    lifecycle.resolve(engine, iid, "fixed", ALICE)
    lifecycle.close(engine, iid, ALICE)
    with pytest.raises(IncidentError, match="closed, which is final: it cannot be assigned"):
        lifecycle.assign(engine, iid, "dave", ALICE)
    lifecycle.add_note(engine, iid, "postmortem: add a disk alert", ALICE)  # still allowed


def test_links_to_alerts_and_incidents_are_made_once(engine: Engine) -> None:
    iid = opened(engine)
    other = opened(engine, "asset:stg/patients")
    alert_id = add_alert(engine)
    assert lifecycle.link_alert(engine, iid, alert_id, SENSOR)
    assert not lifecycle.link_alert(engine, iid, alert_id, SENSOR)
    with pytest.raises(IncidentError, match="no alert 999"):
        lifecycle.link_alert(engine, iid, 999, SENSOR)
    assert lifecycle.link_incidents(engine, other, iid, 0.8, "same database", SENSOR)
    assert not lifecycle.link_incidents(engine, iid, other, 0.8, "same database", SENSOR)
    with pytest.raises(IncidentError, match="itself"):
        lifecycle.link_incidents(engine, iid, iid, 1.0, "x", SENSOR)
    inc = get_incident(engine, iid)
    assert inc.related_alerts == (alert_id,) and inc.related_incidents == (other,)
    assert get_incident(engine, other).related_incidents == (iid,)
    texts = [e.text for e in timeline(engine, iid) if e.kind in ("alert_linked", "incident_linked")]
    assert texts == [
        f"alert {alert_id} linked: raw/patients: 3 checks failed (rule check_failed, critical)",
        f"related to incident {other} (strength 0.80): same database",
    ]


def test_two_people_changing_the_status_at_once_one_wins(engine: Engine) -> None:
    iid = opened(engine)
    barrier = threading.Barrier(2)
    outcomes: list[str] = []

    def move(to: IncidentStatus) -> None:
        barrier.wait()
        try:
            lifecycle.set_status(engine, iid, to, ALICE)
            outcomes.append(f"ok {to}")
        except IncidentError as exc:
            outcomes.append(type(exc).__name__)

    threads = [threading.Thread(target=move, args=(S.INVESTIGATING,)) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    # The second either read 'investigating' (no move to itself) or read 'open' and lost the
    # conditional update: exactly one change and one timeline entry.
    assert sorted(outcomes) in (
        ["ConcurrentChange", "ok investigating"],
        ["InvalidTransition", "ok investigating"],
    )
    with engine.connect() as conn:
        changes = conn.execute(
            sa.text("SELECT count(*) FROM etl.incident_events WHERE kind = 'status_changed'")
        ).scalar()
    assert changes == 1


def test_a_change_based_on_a_stale_read_is_refused(engine: Engine) -> None:
    iid = opened(engine)
    with engine.connect() as conn:
        stale = conn.execute(
            sa.text(f"SELECT * FROM etl.incidents WHERE incident_id = {iid}")
        ).one()
    lifecycle.set_status(engine, iid, S.INVESTIGATING, ALICE)
    with (
        pytest.raises(lifecycle.ConcurrentChange, match="it is investigating now"),
        engine.begin() as conn,
    ):
        lifecycle._conditional_update(conn, stale, {"status": "monitoring"})
    assert get_incident(engine, iid).status == S.INVESTIGATING
