"""The outbox dispatcher against a real webhook receiver: exactly once, grouping timing, retries
with backoff and Retry-After, permanent failures, rate limits shared by two dispatchers."""

import hashlib
import hmac
import threading
from collections import Counter
from datetime import timedelta

import pytest
from sqlalchemy.engine import Engine

from healthmon_dagster.enums import AlertEventKind
from healthmon_dagster.notify.base import Delivery
from healthmon_dagster.notify.dispatch import Dispatcher
from healthmon_dagster_tests.notify.fixtures import (
    T0,
    Answer,
    Clock,
    HttpStub,
    add_event,
    config_with,
    open_alert,
    outbox,
    statuses,
    webhook_server,
)

SECRET = "whsec-test-4f1d"


def hook_config(**kwargs: object) -> object:
    return config_with(
        {
            "hook": {
                "type": "webhook",
                "retry_attempts": kwargs.pop("retry_attempts", 2),
                "configuration": {"url_env": "TEST_HOOK_URL", "secret_env": "TEST_HOOK_SECRET"},
            }
        },
        **kwargs,  # type: ignore[arg-type]
    )


def dispatcher(
    engine: Engine, server: HttpStub, clock: Clock, concurrency: int = 8, **kwargs: object
) -> Dispatcher:
    config = kwargs.pop("config", None) or hook_config(**kwargs)
    env = {"TEST_HOOK_URL": f"{server.url}/hook", "TEST_HOOK_SECRET": SECRET}
    return Dispatcher(
        engine,
        config,  # type: ignore[arg-type]
        clock=clock,
        env=env,
        external_url="http://dagster:3000",
        concurrency=concurrency,
    )


def test_a_firing_alert_is_posted_once_as_alertmanager_v4_signed(engine: Engine) -> None:
    alert = open_alert(engine, channels=["hook"])
    clock = Clock(T0)
    with webhook_server() as server:
        report = dispatcher(engine, server, clock).run_once()
        again = dispatcher(engine, server, clock).run_once()

    assert report.channel("hook").sent == 1 and report.ok
    assert again.sent == 0
    [request] = server.requests
    body = request.json
    assert body["version"] == "4" and body["status"] == "firing" and body["receiver"] == "hook"
    assert body["truncatedAlerts"] == 0
    assert body["groupLabels"] == {"rule_id": "check_failed", "asset": "stg/patients"}
    assert body["externalURL"] == "http://dagster:3000"
    [sent] = body["alerts"]
    assert sent["fingerprint"] == alert.fingerprint
    assert sent["labels"]["check"] == "gender_is_valid"
    assert sent["annotations"]["summary"] == "Check gender_is_valid failed on stg/patients"
    assert sent["annotations"]["failing_rows"] == "3"
    assert sent["startsAt"] == "2026-01-05T12:00:00Z" and sent["endsAt"] == "0001-01-01T00:00:00Z"
    assert sent["generatorURL"].startswith("http://dagster:3000/assets/stg/patients?view=checks")
    # The signature covers the timestamp and the raw body; the key is the row's delivery key.
    timestamp = request.headers["X-Healthmon-Timestamp"]
    expected = hmac.new(SECRET.encode(), f"{timestamp}.".encode() + request.body, hashlib.sha256)
    assert request.headers["X-Healthmon-Signature"] == "sha256=" + expected.hexdigest()
    [row] = outbox(engine)
    assert (row.status, row.attempts, row.claimed_by) == ("sent", 1, None)
    assert request.headers["Idempotency-Key"] == row.delivery_key and len(row.delivery_key) == 64


def test_the_resolve_is_sent_and_a_flap_inside_group_wait_sends_nothing(engine: Engine) -> None:
    clock = Clock(T0)
    kept = open_alert(engine, channels=["hook"])
    flap = open_alert(
        engine, channels=["hook"], labels={"rule_id": "freshness", "asset": "core/dim_patient"}
    )
    add_event(engine, flap, AlertEventKind.RESOLVED, ["hook"], at=T0 + timedelta(seconds=5))
    with webhook_server() as server:
        clock.advance(31)
        first = dispatcher(engine, server, clock, group_wait=30).run_once()
        add_event(engine, kept, AlertEventKind.RESOLVED, ["hook"], at=clock.now)
        clock.advance(301)
        second = dispatcher(engine, server, clock, group_wait=30, group_interval=300).run_once()

    assert first.channel("hook").cancelled == 2  # the flapping alert: neither firing nor resolve
    assert [r.json["status"] for r in server.requests] == ["firing", "resolved"]
    resolved = server.requests[1].json["alerts"][0]
    assert resolved["status"] == "resolved" and resolved["endsAt"] == "2026-01-05T12:00:31Z"
    assert second.channel("hook").sent == 1
    assert sorted(statuses(engine)) == ["cancelled", "cancelled", "sent", "sent"]


def test_group_wait_by_severity_sends_errors_at_once_and_lets_warnings_wait(
    engine: Engine,
) -> None:
    clock = Clock(T0)
    open_alert(engine, channels=["hook"], labels={"rule_id": "error_rule"}, severity="error")
    open_alert(engine, channels=["hook"], labels={"rule_id": "warn_rule"}, severity="warning")
    mixed = {"rule_id": "mixed_rule"}  # one group: its most urgent alert decides its wait
    open_alert(engine, channels=["hook"], labels={**mixed, "check": "a"}, severity="warning")
    open_alert(engine, channels=["hook"], labels={**mixed, "check": "b"}, severity="critical")
    by_severity = {"error": 0, "critical": 0}
    with webhook_server() as server:
        d = dispatcher(engine, server, clock, group_wait=30, group_wait_by_severity=by_severity)
        now = d.run_once()
        clock.advance(31)
        later = d.run_once()

    assert now.channel("hook").sent == 3 and now.channel("hook").deferred == 1
    first = [r.json["commonLabels"].get("rule_id") for r in server.requests[:2]]
    assert sorted(first) == ["error_rule", "mixed_rule"]
    assert len(server.requests[first.index("mixed_rule")].json["alerts"]) == 2
    assert later.channel("hook").sent == 1
    assert server.requests[2].json["commonLabels"]["rule_id"] == "warn_rule"


def test_group_wait_batches_a_new_group_and_group_interval_holds_the_next(engine: Engine) -> None:
    clock = Clock(T0)
    labels = {"rule_id": "check_failed", "asset": "stg/patients"}
    open_alert(engine, channels=["hook"], labels={**labels, "check": "a"}, at=T0)
    with webhook_server() as server:
        d = dispatcher(engine, server, clock, group_wait=30, group_interval=300)
        waiting = d.run_once()
        open_alert(
            engine,
            channels=["hook"],
            labels={**labels, "check": "b"},
            at=T0 + timedelta(seconds=10),
        )
        clock.advance(29)
        still = d.run_once()
        clock.advance(2)  # T0 + 31 s: the group's wait is over
        batched = d.run_once()
        open_alert(engine, channels=["hook"], labels={**labels, "check": "c"}, at=clock.now)
        clock.advance(60)
        held = d.run_once()
        clock.advance(241)  # 300 s after the group's last notification
        later = d.run_once()

    assert waiting.channel("hook").deferred == 1
    assert still.sent == 0
    assert batched.channel("hook").sent == 2
    assert held.sent == 0 and held.channel("hook").deferred == 1
    assert later.channel("hook").sent == 1
    assert [len(r.json["alerts"]) for r in server.requests] == [2, 1]
    assert [a["labels"]["check"] for a in server.requests[0].json["alerts"]] == ["a", "b"]


@pytest.mark.parametrize(
    ("answer", "error"),
    [
        (Answer(500, {"error": "boom"}), "answered HTTP 500"),
        (Answer(200, {}, delay=3), "did not answer within 2s"),
    ],
    ids=["500", "timeout"],
)
def test_a_failed_send_is_retried_with_backoff_and_the_same_key(
    engine: Engine, answer: Answer, error: str
) -> None:
    open_alert(engine, channels=["hook"])
    clock = Clock(T0)
    with webhook_server() as server:
        server.then(answer)
        d = dispatcher(engine, server, clock)
        failed = d.run_once()
        [row] = outbox(engine)
        wait = (row.not_before.replace(tzinfo=None) - T0.replace(tzinfo=None)).total_seconds()
        retry_now = d.run_once()
        clock.advance(wait)
        sent = d.run_once()

    assert failed.channel("hook").retrying == 1 and failed.ok
    assert error in row.last_error and row.attempts == 1 and row.status == "pending"
    assert 0.5 <= wait <= 1.0  # backoff_initial_seconds 1, equal jitter
    assert retry_now.sent == 0
    assert sent.channel("hook").sent == 1
    keys = [r.headers["Idempotency-Key"] for r in server.requests]
    assert len(keys) == 2 and len(set(keys)) == 1  # the receiver can drop the repeat
    [row] = outbox(engine)
    assert (row.status, row.attempts, row.last_error) == ("sent", 2, None)


def test_429_honours_retry_after_for_the_whole_channel_without_using_an_attempt(
    engine: Engine,
) -> None:
    open_alert(engine, channels=["hook"])
    open_alert(engine, channels=["hook"], labels={"rule_id": "x", "asset": "raw/patients"})
    clock = Clock(T0)
    with webhook_server() as server:
        server.then(Answer(429, {"error": "slow down"}, {"Retry-After": "7"}))
        d = dispatcher(engine, server, clock, concurrency=1)  # the second waits for the first
        limited = d.run_once()
        rows = outbox(engine)
        clock.advance(6)
        early = d.run_once()
        clock.advance(1.5)
        late = d.run_once()

    assert limited.channel("hook").retrying == 1 and limited.channel("hook").deferred == 1
    assert len(server.requests) == 3  # the 429, then both rows after the pause
    assert rows[0].attempts == 0 and "answered 429 Too Many Requests" in rows[0].last_error
    paused_until = (T0 + timedelta(seconds=7)).replace(tzinfo=None)
    assert [r.not_before.replace(tzinfo=None) for r in rows] == [paused_until, paused_until]
    assert early.sent == 0  # the second row waits for the channel's pause too
    assert late.channel("hook").sent == 2


def test_refused_connections_retry_until_retry_attempts_then_fail(engine: Engine) -> None:
    open_alert(engine, channels=["hook"])
    clock = Clock(T0)
    closed = HttpStub()  # never started: its port refuses connections
    closed.server.server_close()
    d = dispatcher(engine, closed, clock, retry_attempts=2, backoff_initial_seconds=1)
    reports = []
    for _ in range(4):
        reports.append(d.run_once())
        clock.advance(10)

    assert [r.channel("hook").retrying for r in reports[:2]] == [1, 1]
    assert reports[2].channel("hook").failed == 1 and not reports[2].ok
    assert "Connection refused" in reports[2].channel("hook").errors[0]
    assert reports[3].sent == reports[3].failed == 0
    [row] = outbox(engine)
    assert (row.status, row.attempts) == ("failed", 3)
    assert "webhook channel 'hook' (TEST_HOOK_URL) is unreachable" in row.last_error


def test_a_4xx_fails_at_once_and_no_secret_reaches_the_error(engine: Engine) -> None:
    open_alert(engine, channels=["hook"])
    with webhook_server() as server:
        url = f"{server.url}/hook"
        server.then(Answer(400, f"bad request to {url} signed {SECRET}".encode()))
        report = dispatcher(engine, server, Clock()).run_once()

    [row] = outbox(engine)
    assert row.status == "failed" and row.attempts == 1
    assert "answered HTTP 400" in row.last_error and "***" in row.last_error
    assert SECRET not in row.last_error and url not in row.last_error
    assert not report.ok and "\n" not in row.last_error


def test_unconfigured_and_disabled_channels_say_so(engine: Engine) -> None:
    open_alert(engine, channels=["hook", "off"])
    config = config_with(
        {
            "hook": {"type": "webhook", "configuration": {"url_env": "TEST_HOOK_URL_UNSET"}},
            "off": {"type": "webhook", "enabled": False, "configuration": {"url_env": "X_URL"}},
        }
    )
    report = Dispatcher(engine, config, clock=Clock(), env={}).run_once()

    assert report.channel("hook").failed == 1 and report.channel("off").cancelled == 1
    by_channel = {r.channel: r for r in outbox(engine)}
    assert by_channel["hook"].last_error == (
        "channel 'hook' is not configured: TEST_HOOK_URL_UNSET is not set (the URL of webhook 'hook')"
    )
    assert by_channel["off"].last_error == "channel 'off' is disabled (enabled: false)"


def test_the_rate_limit_queues_a_storm_per_second_and_per_minute(engine: Engine) -> None:
    for i in range(5):
        open_alert(engine, channels=["hook"], labels={"rule_id": "r", "asset": f"a{i}"})
    clock = Clock(T0)
    with webhook_server() as server:
        d = dispatcher(engine, server, clock, rate={"webhook": 3})
        sent = []
        for step in (0, 0, 1.5, 1.5, 1.5, 57, 1.5):
            clock.advance(step)
            sent.append(d.run_once().sent)

    # 3 a minute is 1 a second: one now, one per later second, then the minute is full.
    assert sent == [1, 0, 1, 1, 0, 1, 1]
    assert statuses(engine).count("sent") == 5 and len(server.requests) == 5


def test_two_dispatchers_at_once_send_each_row_once(engine: Engine) -> None:
    for i in range(40):
        open_alert(engine, channels=["hook"], labels={"rule_id": "r", "asset": f"a{i}"})
    config = hook_config(rate={"webhook": 60_000})
    with webhook_server() as server:
        env = {"TEST_HOOK_URL": f"{server.url}/hook", "TEST_HOOK_SECRET": SECRET}
        dispatchers = [
            Dispatcher(engine, config, clock=Clock(T0), env=env, batch_size=3)  # type: ignore[arg-type]
            for _ in range(2)
        ]

        def work(d: Dispatcher) -> None:
            while d.run_once().sent:
                pass

        threads = [threading.Thread(target=work, args=(d,)) for d in dispatchers]
        for t in threads:
            t.start()
        for t in threads:
            t.join()

    fingerprints = Counter(a["fingerprint"] for r in server.requests for a in r.json["alerts"])
    assert len(fingerprints) == 40 and set(fingerprints.values()) == {1}
    assert statuses(engine) == ["sent"] * 40
    owners = {r.headers["Idempotency-Key"] for r in server.requests}
    assert len(owners) == len(server.requests)


def test_the_lease_covers_the_longest_wave_while_it_is_sent(engine: Engine) -> None:
    open_alert(engine, channels=["hook"])
    clock = Clock(T0)
    seen = []

    class Recording:
        """The channel under the dispatcher: reads the row's lease while "sending"."""

        name, type, threaded, one_alert_per_request = "hook", "webhook", False, False

        def configured(self) -> list[str]:
            return []

        def secret_values(self) -> list[str]:
            return []

        def send(self, message: object) -> Delivery:
            seen.append(outbox(engine)[0].claimed_until.replace(tzinfo=None))
            return Delivery(detail="ok")

    config = hook_config(lease_seconds=5, request_timeout_seconds=2)
    notifiers = {"hook": Recording()}
    Dispatcher(engine, config, clock=clock, notifiers=notifiers).run_once()  # type: ignore[arg-type]

    # 4 rounds of requests that may each take the 2 s timeout, + 1 s: longer than the 5 s lease.
    assert seen == [(T0 + timedelta(seconds=9)).replace(tzinfo=None)]
    assert outbox(engine)[0].status == "sent"
