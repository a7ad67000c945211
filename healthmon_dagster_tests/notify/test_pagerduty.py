"""The PagerDuty channel against a local stand-in for the Events API v2: one event per alert with
dedup_key = fingerprint, trigger / acknowledge / resolve with the same routing key, failures
followed through to the end (one incident per alert, resolved)."""

from datetime import timedelta

import pytest
from sqlalchemy.engine import Engine

from healthmon_dagster.alerting import actions
from healthmon_dagster.enums import AlertEventKind
from healthmon_dagster.notify.dispatch import Dispatcher
from healthmon_dagster_tests.notify.fixtures import (
    T0,
    Answer,
    Clock,
    HttpStub,
    PagerDutyService,
    PagerDutyStub,
    Request,
    add_event,
    config_with,
    open_alert,
    outbox,
    pagerduty_server,
)

ROUTING_KEY = "R0UT1NGKEY0123456789abcdefABCDEF"  # 32 characters, as PagerDuty's
TIMEOUT, LATE = 0.5, 1.5


def pd_dispatcher(engine: Engine, url: str, clock: Clock, key: str = ROUTING_KEY) -> Dispatcher:
    config = config_with(
        {"pd": {"type": "pagerduty", "retry_attempts": 2, "configuration": {"url": url}}},
        request_timeout_seconds=TIMEOUT,
    )
    return Dispatcher(
        engine,
        config,
        clock=clock,
        env={"PAGERDUTY_ROUTING_KEY": key},
        external_url="http://dagster:3000",
    )


def test_trigger_acknowledge_resolve_with_the_fingerprint_as_dedup_key(engine: Engine) -> None:
    clock = Clock(T0)
    labels = {"rule_id": "check_failed", "asset": "stg/patients"}
    a = open_alert(engine, channels=["pd"], labels={**labels, "check": "a"}, severity="critical")
    b = open_alert(engine, channels=["pd"], labels={**labels, "check": "b"}, severity="warning")
    with pagerduty_server() as pd:
        url = f"{pd.url}/v2/enqueue"
        d = pd_dispatcher(engine, url, clock)
        first = d.run_once()
        clock.advance(60)
        add_event(engine, a, AlertEventKind.ACKNOWLEDGED, ["pd"], at=clock.now, actor="cli:ana")
        d.run_once()
        clock.advance(60)
        add_event(engine, a, AlertEventKind.RESOLVED, ["pd"], at=clock.now)
        clock.advance(2)
        d.run_once()

    assert first.channel("pd").sent == 2  # one group, but one event per alert
    events = [r.json for r in pd.requests]
    sent = [(e["event_action"], e["dedup_key"]) for e in events]
    # The two triggers of one pass go out in parallel: in either order.
    assert sorted(sent[:2]) == sorted([("trigger", a.fingerprint), ("trigger", b.fingerprint)])
    assert sent[2:] == [("acknowledge", a.fingerprint), ("resolve", a.fingerprint)]
    assert {e["routing_key"] for e in events} == {ROUTING_KEY}
    by_key = {e["dedup_key"]: e for e in events[:2]}
    payload = by_key[a.fingerprint]["payload"]
    assert payload["severity"] == "critical"
    assert by_key[b.fingerprint]["payload"]["severity"] == "warning"
    assert payload["summary"].startswith("[staging_transformer] Check gender_is_valid failed")
    assert len(payload["summary"]) <= 1024
    assert payload["source"] == "healthmon" and payload["class"] == "check_failed"
    assert payload["group"] == "stg/patients"
    assert payload["custom_details"]["failing_rows"] == 3
    assert events[0]["links"][0]["href"].startswith("http://dagster:3000/assets/stg/patients")
    assert "payload" not in events[2] and "payload" not in events[3]
    assert [r.status for r in outbox(engine)] == ["sent"] * 4


@pytest.mark.parametrize(
    ("answer", "status", "error"),
    [
        (Answer(429, {"status": "throttle"}, {"Retry-After": "20"}), "pending", "429 Too Many"),
        (Answer(502, b"bad gateway"), "pending", "HTTP 502 (bad gateway); will retry"),
        (Answer(202, {}, delay=LATE), "pending", "did not answer within 0.5s"),
        (Answer(400, {"status": "invalid event", "errors": ["bad"]}), "failed", "HTTP 400"),
    ],
    ids=["429", "502", "timeout", "400"],
)
def test_pagerduty_failures(engine: Engine, answer: Answer, status: str, error: str) -> None:
    open_alert(engine, channels=["pd"])
    with pagerduty_server() as pd:
        pd.then(answer)
        pd_dispatcher(engine, f"{pd.url}/v2/enqueue", Clock(T0)).run_once()

    [row] = outbox(engine)
    assert row.status == status and error in row.last_error, row.last_error
    assert ROUTING_KEY not in row.last_error
    if answer.status == 429:
        assert row.not_before.replace(tzinfo=None) == (T0 + timedelta(seconds=20)).replace(
            tzinfo=None
        )


def test_pagerduty_refused_and_not_configured(engine: Engine) -> None:
    open_alert(engine, channels=["pd"])
    closed = HttpStub()
    closed.server.server_close()
    pd_dispatcher(engine, f"{closed.url}/v2/enqueue", Clock(T0)).run_once()
    assert "is unreachable: Connection refused" in outbox(engine)[0].last_error

    report = pd_dispatcher(engine, closed.url, Clock(T0 + timedelta(hours=1)), key="").run_once()
    assert not report.ok
    assert outbox(engine)[0].last_error == (
        "channel 'pd' is not configured: PAGERDUTY_ROUTING_KEY is not set (the routing key of "
        "PagerDuty channel 'pd')"
    )


@pytest.mark.parametrize(
    "failure",
    [
        Answer(429, {"status": "throttle"}, {"Retry-After": "20"}),
        Answer(502, b"bad gateway"),
        Answer(202, {}, delay=LATE),  # never processed
        Answer(202, {}, delay=LATE, accept=True),  # processed, the answer came late
        Answer(500, b"", accept=True),  # processed, then an error
        None,  # refused
    ],
    ids=["429", "502", "timeout", "timeout-processed", "500-processed", "refused"],
)
def test_each_failure_ends_with_one_incident_per_alert(
    engine: Engine, failure: Answer | None
) -> None:
    labels = {"rule_id": "check_failed", "asset": "stg/patients"}
    a = open_alert(engine, channels=["pd"], labels={**labels, "check": "a"})
    b = open_alert(engine, channels=["pd"], labels={**labels, "check": "b"})
    clock = Clock(T0)
    closed = PagerDutyStub()
    closed.server.server_close()
    if failure is None:
        pd_dispatcher(engine, f"{closed.url}/v2/enqueue", clock).run_once()
    with pagerduty_server(closed.port) as pd:
        d = pd_dispatcher(engine, f"{pd.url}/v2/enqueue", clock)
        if failure is not None:
            pd.then(failure)
            assert d.run_once().channel("pd").retrying >= 1
        for _ in range(5):
            clock.advance(120)
            d.run_once()
        for alert in (a, b):
            add_event(engine, alert, AlertEventKind.RESOLVED, ["pd"], at=clock.now)
        clock.advance(5)
        d.run_once()

    assert [r.status for r in outbox(engine)] == ["sent"] * 4
    for alert in (a, b):
        [incident] = pd.service.of(alert.fingerprint)  # a repeated trigger is merged
        assert incident["status"] == "resolved"


def test_a_trigger_whose_every_retry_timed_out_still_gets_its_resolve(engine: Engine) -> None:
    """PagerDuty took every trigger but answered too late each time: the row ends failed after
    retry_for_minutes, yet an incident is open. Before: a failed row did not count as told, so
    the resolve was never queued and PagerDuty kept escalating."""
    alert = open_alert(engine, channels=["pd"])
    service = PagerDutyService()

    def late_triggers(request: Request) -> Answer:
        answer = service(request)
        if request.json["event_action"] == "trigger":
            return Answer(answer.status, answer.body, delay=LATE)  # taken, answered too late
        return answer

    clock = Clock(T0)
    with HttpStub(late_triggers) as pd:
        configuration = {"url": f"{pd.url}/v2/enqueue"}
        config = config_with(
            {"pd": {"type": "pagerduty", "retry_for_minutes": 1, "configuration": configuration}},
            request_timeout_seconds=TIMEOUT,
        )
        d = Dispatcher(engine, config, clock=clock, env={"PAGERDUTY_ROUTING_KEY": ROUTING_KEY})
        while outbox(engine)[0].status == "pending" and clock.now < T0 + timedelta(minutes=5):
            d.run_once()
            clock.advance(d.next_due_in() or 1)
        [firing] = outbox(engine)
        actions.resolve(engine, alert.alert_id, "ana", "fixed the file", clock.now)
        report = d.run_once()

    assert firing.status == "failed" and "did not answer within 0.5s" in firing.last_error
    assert report.channel("pd").sent == 1
    assert [r.json["event_action"] for r in pd.requests][-1] == "resolve"
    [incident] = service.of(alert.fingerprint)
    assert incident["status"] == "resolved"
