"""Timeline entries that exist once by a database constraint (``uq_incident_events_dedup_key``),
not by a read before the write: the ``notification_sent`` entry of one notification, and the
``failure`` entry of one critical alert or of one failed step, when threads and processes race."""

import multiprocessing
import threading
from collections.abc import Callable
from dataclasses import replace
from typing import Any

import pytest
import sqlalchemy as sa
from sqlalchemy import exc as sa_exc
from sqlalchemy.engine import Engine

from healthmon_dagster.enums import IncidentEventKind
from healthmon_dagster.incidents.alerts import open_for_critical_alerts
from healthmon_dagster.incidents.announce import record_sent
from healthmon_dagster.incidents.records import (
    add_event,
    get_incident,
    list_incidents,
    open_or_absorb,
    timeline,
)
from healthmon_dagster.store.db import dispose_engines, get_engine
from healthmon_dagster.store.tables import (
    alert_events,
    alerts,
    incident_alerts,
    incident_events,
    notifications,
)
from healthmon_dagster_tests.incidents.fixtures import HOOK, SENSOR, T0, failure, minutes

WORKERS = 4


def _alert(conn: sa.Connection, rule_id: str, severity: str, labels: dict[str, str]) -> int:
    alert_id = conn.execute(
        alerts.insert()
        .values(
            fingerprint=f"fp-{rule_id}-{sorted(labels.items())}"[:64],
            rule_id=rule_id,
            state="firing",
            status="active",
            severity=severity,
            component="raw_loader",
            labels=labels,
            title=f"{rule_id} fired",
            details={},
            group_key=rule_id,
            started_at=T0,
            fired_at=T0,
            last_active_at=T0,
            last_evaluated_at=T0,
        )
        .returning(alerts.c.alert_id)
    ).scalar_one()
    return int(alert_id)


def _sent_notifications(engine: Engine, incident_id: int, n: int) -> None:
    """The incident's alert (alertname=incident) and ``n`` notifications of it sent."""
    with engine.begin() as conn:
        alert_id = _alert(
            conn,
            "incident_medium",
            "warning",
            {"alertname": "incident", "incident_id": str(incident_id)},
        )
        event_id = conn.execute(
            alert_events.insert()
            .values(alert_id=alert_id, at=T0, kind="firing", actor="sensor", details={})
            .returning(alert_events.c.event_id)
        ).scalar_one()
        for i in range(n):
            conn.execute(
                notifications.insert().values(
                    event_id=event_id,
                    alert_id=alert_id,
                    channel=f"channel{i}",
                    kind="firing",
                    group_key="g",
                    status="sent",
                    not_before=T0,
                    created_at=T0,
                    sent_at=T0 + minutes(1),
                )
            )


def _in_threads(target: Callable[[], object]) -> None:
    barrier = threading.Barrier(WORKERS)
    errors: list[BaseException] = []

    def run() -> None:
        try:
            barrier.wait()
            target()
        except BaseException as exc:  # surfaced below
            errors.append(exc)

    threads = [threading.Thread(target=run) for _ in range(WORKERS)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []


def _in_processes(target: Callable[[str, Any], None], db_url: str) -> None:
    ctx = multiprocessing.get_context("spawn")
    barrier = ctx.Barrier(WORKERS)
    procs = [ctx.Process(target=target, args=(db_url, barrier)) for _ in range(WORKERS)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(120)
    assert [p.exitcode for p in procs] == [0] * WORKERS


def _record_sent(url: str, barrier: Any) -> None:
    engine = get_engine(url)
    barrier.wait()
    record_sent(engine)
    dispose_engines()


def _assert_each_notification_once(engine: Engine, incident_id: int, n: int) -> None:
    sent = [e for e in timeline(engine, incident_id) if e.kind == "notification_sent"]
    assert sorted(e.details["channel"] for e in sent) == [f"channel{i}" for i in range(n)]
    assert len({e.dedup_key for e in sent}) == n
    assert record_sent(engine) == 0


@pytest.mark.parametrize("how", ["threads", "processes"])
def test_racing_recorders_put_each_sent_notification_on_the_timeline_once(
    engine: Engine, db_url: str, how: str
) -> None:
    incident_id = open_or_absorb(engine, "asset:raw/patients", failure(), HOOK, T0).incident_id
    _sent_notifications(engine, incident_id, 3)
    if how == "threads":
        _in_threads(lambda: record_sent(engine))
    else:
        _in_processes(_record_sent, db_url)
    _assert_each_notification_once(engine, incident_id, 3)


def test_the_database_refuses_a_second_entry_with_a_dedup_key(engine: Engine) -> None:
    incident_id = open_or_absorb(engine, "asset:raw/patients", failure(), HOOK, T0).incident_id
    first = add_event(
        engine, incident_id, IncidentEventKind.NOTE, SENSOR, "once", dedup_key="note:1"
    )
    assert first is not None
    again = add_event(
        engine, incident_id, IncidentEventKind.NOTE, SENSOR, "twice", dedup_key="note:1"
    )
    assert again is None
    # Without ON CONFLICT the unique index raises: the constraint, not the code, decides.
    with pytest.raises(sa_exc.IntegrityError), engine.begin() as conn:
        conn.execute(
            incident_events.insert().values(
                incident_id=incident_id,
                at=T0,
                kind="note",
                actor="x",
                source="cli",
                text="t",
                details={},
                dedup_key="note:1",
            )
        )
    # Entries without a key never conflict.
    add_event(engine, incident_id, IncidentEventKind.NOTE, SENSOR, "a")
    add_event(engine, incident_id, IncidentEventKind.NOTE, SENSOR, "a")
    assert [e.text for e in timeline(engine, incident_id)].count("a") == 2


def _critical_alert(engine: Engine) -> int:
    with engine.begin() as conn:
        return _alert(conn, "contract_break", "critical", {"asset": "raw/patients"})


def _open_for_alerts(url: str, barrier: Any) -> None:
    engine = get_engine(url)
    barrier.wait()
    open_for_critical_alerts(engine)
    dispose_engines()


@pytest.mark.parametrize("how", ["threads", "processes"])
def test_racing_processes_count_one_critical_alert_as_one_failure(
    engine: Engine, db_url: str, how: str
) -> None:
    alert_id = _critical_alert(engine)
    if how == "threads":
        _in_threads(lambda: open_for_critical_alerts(engine))
    else:
        _in_processes(_open_for_alerts, db_url)
    (inc,) = list_incidents(engine, include_ended=True)
    assert inc.failure_count == 1
    events = timeline(engine, inc.incident_id)
    failures = [e for e in events if e.kind == "failure"]
    assert [e.dedup_key for e in failures] == [f"failure:alert:{alert_id}"]
    assert [e.kind for e in events].count("alert_linked") == 1
    with engine.connect() as conn:
        links = conn.execute(sa.select(incident_alerts.c.incident_id)).scalars().all()
    assert links == [inc.incident_id]


def test_a_step_failure_reported_by_the_hook_and_the_sensor_is_recorded_once(
    engine: Engine,
) -> None:
    step = failure(T0, run_id="r1", step_key="raw_patients")
    step = replace(step, dedup_key="failure:step:r1:raw_patients")
    first = open_or_absorb(engine, "asset:raw/patients", step, HOOK, T0)
    # The sensor reports the same step later; even under another root key it changes nothing.
    again = open_or_absorb(engine, "asset:raw/patients", step, SENSOR, T0 + minutes(1))
    elsewhere = open_or_absorb(engine, "component:dagster_runs", step, SENSOR, T0 + minutes(1))
    assert again.incident_id == elsewhere.incident_id == first.incident_id
    assert not again.created and not elsewhere.created
    assert get_incident(engine, first.incident_id).failure_count == 1
    assert len(list_incidents(engine, include_ended=True)) == 1  # the new one was rolled back
    assert [e.kind for e in timeline(engine, first.incident_id)] == ["created", "failure"]
