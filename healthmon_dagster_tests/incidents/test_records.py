"""Opening incidents: one open incident per root key (a constraint, also when threads and processes
race), absorbed failures on the timeline, escalation and relapse, events and reading back."""

import multiprocessing
import threading
from typing import Any

import pytest
import sqlalchemy as sa
from sqlalchemy import exc as sa_exc
from sqlalchemy.engine import Engine

from healthmon_dagster.enums import IncidentEventKind, IncidentSeverity, IncidentStatus
from healthmon_dagster.incidents import lifecycle
from healthmon_dagster.incidents.records import (
    IncidentError,
    IncidentNotFound,
    add_event,
    get_incident,
    list_incidents,
    open_or_absorb,
    timeline,
)
from healthmon_dagster.store.db import dispose_engines, get_engine
from healthmon_dagster.store.tables import incidents
from healthmon_dagster_tests.incidents.fixtures import ALICE, HOOK, SENSOR, T0, failure, minutes


def kinds(engine: Engine, incident_id: int) -> list[str]:
    return [e.kind for e in timeline(engine, incident_id)]


def test_a_failure_opens_an_incident_with_its_facts_and_timeline(engine: Engine) -> None:
    opened = open_or_absorb(
        engine, "asset:raw/patients", failure(run_id="r1"), HOOK, T0 + minutes(1)
    )
    assert opened.created
    inc = get_incident(engine, opened.incident_id)
    assert inc.status == IncidentStatus.OPEN
    assert inc.component == "raw_loader"
    assert inc.asset_keys == ("raw/patients",)
    assert inc.resources == ("database:warehouse",)
    assert inc.start_time == T0 and inc.created_at == T0 + minutes(1)
    assert inc.metadata == {"error_classes": ["database_unavailable"]}
    events = timeline(engine, opened.incident_id)
    assert [e.kind for e in events] == ["created", "failure"]
    assert all(e.actor == "hook:patients_etl_job" and e.source == "hook" for e in events)
    assert "error class database_unavailable" in events[1].text
    assert events[1].details["run_id"] == "r1"


def test_a_second_failure_of_the_same_root_cause_is_absorbed(engine: Engine) -> None:
    first = open_or_absorb(engine, "resource:database:warehouse", failure(), HOOK, T0)
    second = open_or_absorb(
        engine,
        "resource:database:warehouse",
        failure(
            T0 + minutes(2),
            component="staging_transformer",
            assets=("stg/patients",),
            severity=IncidentSeverity.HIGH,
            error_class="connection_refused",
        ),
        SENSOR,
        T0 + minutes(3),
    )
    assert not second.created and second.incident_id == first.incident_id
    inc = get_incident(engine, first.incident_id)
    assert inc.failure_count == 2
    assert inc.asset_keys == ("raw/patients", "stg/patients")
    assert inc.severity == IncidentSeverity.HIGH
    assert inc.metadata["error_classes"] == ["connection_refused", "database_unavailable"]
    assert kinds(engine, inc.incident_id) == ["created", "failure", "failure", "escalated"]
    # Another root key is another incident.
    other = open_or_absorb(engine, "asset:core/dim_patient", failure(), HOOK, T0)
    assert other.created and other.incident_id != first.incident_id


def test_a_failure_while_monitoring_is_a_relapse(engine: Engine) -> None:
    opened = open_or_absorb(engine, "asset:raw/patients", failure(), HOOK, T0)
    lifecycle.set_status(engine, opened.incident_id, IncidentStatus.MONITORING, ALICE, now=T0)
    open_or_absorb(engine, "asset:raw/patients", failure(T0 + minutes(5)), HOOK, T0 + minutes(5))
    inc = get_incident(engine, opened.incident_id)
    assert inc.status == IncidentStatus.INVESTIGATING
    last = timeline(engine, opened.incident_id)[-1]
    assert (last.from_status, last.to_status) == ("monitoring", "investigating")
    assert "relapse" in last.text


def test_after_resolve_the_same_root_cause_opens_a_new_incident(engine: Engine) -> None:
    first = open_or_absorb(engine, "asset:raw/patients", failure(), HOOK, T0)
    lifecycle.resolve(engine, first.incident_id, "restarted the database", ALICE, now=T0)
    again = open_or_absorb(engine, "asset:raw/patients", failure(), HOOK, T0 + minutes(10))
    assert again.created and again.incident_id != first.incident_id
    assert [i.incident_id for i in list_incidents(engine)] == [again.incident_id]
    assert len(list_incidents(engine, include_ended=True)) == 2


def test_the_database_refuses_a_second_open_incident_for_a_root_key(engine: Engine) -> None:
    open_or_absorb(engine, "asset:raw/patients", failure(), HOOK, T0)
    row = {
        "root_key": "asset:raw/patients",
        "title": "t",
        "severity": "low",
        "status": "investigating",
        "component": "raw_loader",
        "asset_keys": [],
        "resources": [],
        "impact": "none",
        "tags": [],
        "metadata": {},
        "started_at": T0,
        "created_at": T0,
        "last_failure_at": T0,
        "updated_at": T0,
    }
    with pytest.raises(sa_exc.IntegrityError), engine.begin() as conn:
        conn.execute(incidents.insert().values(**row))
    with engine.begin() as conn:  # a resolved one for the same key is history, not a duplicate
        conn.execute(incidents.insert().values(**(row | {"status": "resolved"})))


def _race(url: str, barrier: Any, n: int) -> None:
    engine = get_engine(url)
    barrier.wait()
    open_or_absorb(engine, "resource:s3:landing", failure(T0 + minutes(n), worker=n), SENSOR)
    dispose_engines()


def _assert_one_incident_with_four_failures(engine: Engine) -> None:
    (inc,) = list_incidents(engine, include_ended=True)
    assert inc.failure_count == 4
    events = timeline(engine, inc.incident_id)
    assert [e.kind for e in events].count("created") == 1
    workers = sorted(e.details["worker"] for e in events if e.kind == "failure")
    assert workers == [0, 1, 2, 3]


def test_four_threads_racing_open_one_incident(engine: Engine, db_url: str) -> None:
    barrier = threading.Barrier(4)
    errors: list[BaseException] = []

    def run(n: int) -> None:
        try:
            barrier.wait()
            open_or_absorb(
                engine, "resource:s3:landing", failure(T0 + minutes(n), worker=n), SENSOR
            )
        except BaseException as exc:  # surfaced below
            errors.append(exc)

    threads = [threading.Thread(target=run, args=(n,)) for n in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    _assert_one_incident_with_four_failures(engine)


def test_four_processes_racing_open_one_incident(engine: Engine, db_url: str) -> None:
    ctx = multiprocessing.get_context("spawn")
    barrier = ctx.Barrier(4)
    procs = [ctx.Process(target=_race, args=(db_url, barrier, n)) for n in range(4)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(120)
    assert [p.exitcode for p in procs] == [0, 0, 0, 0]
    _assert_one_incident_with_four_failures(engine)


def test_events_and_errors(engine: Engine) -> None:
    opened = open_or_absorb(engine, "asset:raw/patients", failure(), HOOK, T0)
    add_event(
        engine,
        opened.incident_id,
        IncidentEventKind.SELF_HEAL_ATTEMPT,
        SENSOR,
        "re-run of raw/patients requested (rule connection_refused: transient)",
        {"attempt": 1},
    )
    assert kinds(engine, opened.incident_id)[-1] == "self_heal_attempt"
    with pytest.raises(IncidentNotFound, match="no incident 999"):
        add_event(engine, 999, IncidentEventKind.NOTE, SENSOR, "x")
    with pytest.raises(IncidentError, match="root key"):
        open_or_absorb(engine, " ", failure(), HOOK)
    with engine.connect() as conn:
        assert conn.execute(sa.select(sa.func.count()).select_from(incidents)).scalar() == 1
