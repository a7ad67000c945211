"""The outbox dispatcher against a real webhook receiver: exactly once, grouping timing, retries
with backoff and Retry-After, permanent failures, rate limits shared by two dispatchers."""

import hashlib
import hmac
import threading
import time
from bisect import bisect_left
from collections import Counter
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from sqlalchemy.engine import Engine

from healthmon_dagster.alerting import actions
from healthmon_dagster.alerting.engine import queue
from healthmon_dagster.enums import AlertEventKind, NotificationKind
from healthmon_dagster.notify.dispatch import Dispatcher, DispatchReport
from healthmon_dagster_tests.fixtures import free_port
from healthmon_dagster_tests.notify.fixtures import (
    T0,
    Answer,
    Clock,
    HttpStub,
    Request,
    StoredAlert,
    add_event,
    config_with,
    open_alert,
    outbox,
    statuses,
    webhook_server,
)

SECRET = "whsec-test-4f1d"


def hook_config(**kwargs: object) -> object:
    hook: dict[str, object] = {
        "type": "webhook",
        "configuration": {"url_env": "TEST_HOOK_URL", "secret_env": "TEST_HOOK_SECRET"},
    }
    if "retry_attempts" in kwargs:
        hook["retry_attempts"] = kwargs.pop("retry_attempts")
    return config_with({"hook": hook}, **kwargs)  # type: ignore[arg-type]


def _naive(ts: datetime) -> datetime:
    return ts.replace(tzinfo=None) if ts.tzinfo is None else ts.astimezone(UTC).replace(tzinfo=None)


def dispatcher(
    engine: Engine, server: HttpStub, clock: Clock, concurrency: int = 8, **kwargs: object
) -> Dispatcher:
    batch_size = int(kwargs.pop("batch_size", 1000))  # type: ignore[call-overload]
    config = kwargs.pop("config", None) or hook_config(**kwargs)
    env = {"TEST_HOOK_URL": f"{server.url}/hook", "TEST_HOOK_SECRET": SECRET}
    return Dispatcher(
        engine,
        config,  # type: ignore[arg-type]
        clock=clock,
        env=env,
        external_url="http://dagster:3000",
        concurrency=concurrency,
        batch_size=batch_size,
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


def test_refused_connections_retry_for_retry_for_minutes_then_fail(engine: Engine) -> None:
    open_alert(engine, channels=["hook"])
    clock = Clock(T0)
    closed = HttpStub()  # never started: its port refuses connections
    closed.server.server_close()
    d = dispatcher(engine, closed, clock, retry_for_minutes=10, backoff_max_seconds=60)
    reports, waits = [], []
    while clock.now < T0 + timedelta(minutes=11) and not (reports and reports[-1].failed):
        reports.append(d.run_once())
        [row] = outbox(engine)
        waits.append((_naive(row.not_before) - _naive(clock.now)).total_seconds())
        clock.advance(max(waits[-1], 0))

    # Retried, with a backoff capped at backoff_max_seconds, until 10 min after the first failure.
    assert all(r.channel("hook").retrying == 1 for r in reports[:-1]) and len(reports) > 12
    assert max(waits[:-1]) <= 60 and sorted(waits[:5]) == waits[:5]
    assert reports[-1].channel("hook").failed == 1 and not reports[-1].ok
    assert clock.now == T0 + timedelta(minutes=10)  # the last try is at the horizon itself
    assert "Connection refused" in reports[-1].channel("hook").errors[0]
    assert "gave up after retrying for 10 min" in reports[-1].channel("hook").errors[0]
    [row] = outbox(engine)
    assert (row.status, row.attempts) == ("failed", len(reports))
    assert "webhook channel 'hook' (TEST_HOOK_URL) is unreachable" in row.last_error


def test_an_outage_longer_than_a_few_retries_still_delivers_the_page(engine: Engine) -> None:
    """Before: a row failed after retry_attempts (about 35 s of a receiver's outage) and nothing
    sent it again while the alert fired: the page was lost."""
    open_alert(engine, channels=["hook"])
    clock = Clock(T0)
    with webhook_server() as server:
        server.then(*[Answer(503, {"error": "maintenance"})] * 12)  # down for 5-12 minutes
        d = dispatcher(engine, server, clock, retry_attempts=2)  # a pre-time-budget setting
        reports = []
        while not (reports and reports[-1].sent) and clock.now < T0 + timedelta(hours=1):
            reports.append(d.run_once())
            clock.advance(d.next_due_in() or 60)

    assert all(r.ok for r in reports)  # nothing failed for good: the step stays green
    assert reports[-1].channel("hook").sent == 1 and len(server.requests) == 13
    assert clock.now - T0 > timedelta(minutes=5)  # backoff 1, 2, ... 64 s, then 120 s (jittered)
    assert len({r.headers["Idempotency-Key"] for r in server.requests}) == 1
    [row] = outbox(engine)
    assert (row.status, row.attempts, row.retry_until) == ("sent", 13, None)


def test_a_429_without_retry_after_backs_off_and_counts_against_the_budget(
    engine: Engine,
) -> None:
    """Before: a 429 without Retry-After used no attempt: it was retried at the first backoff
    step forever."""
    open_alert(engine, channels=["hook"])
    clock = Clock(T0)
    with webhook_server() as server:
        server.then(*[Answer(429, {"error": "slow down"})] * 40)
        d = dispatcher(engine, server, clock, retry_for_minutes=5)
        waits, reports = [], []
        while not (reports and reports[-1].failed) and clock.now < T0 + timedelta(hours=1):
            reports.append(d.run_once())
            [row] = outbox(engine)
            waits.append((_naive(row.not_before) - _naive(clock.now)).total_seconds())
            clock.advance(max(0.0, waits[-1]))

    assert reports[-1].channel("hook").failed == 1 and clock.now == T0 + timedelta(minutes=5)
    assert waits[3] > 2 * waits[0]  # the backoff grows
    [row] = outbox(engine)
    assert row.status == "failed" and row.attempts == len(server.requests) == len(reports)
    assert "429" in row.last_error


def test_a_retry_after_beyond_the_budget_fails_the_row_at_once(engine: Engine) -> None:
    open_alert(engine, channels=["hook"])
    with webhook_server() as server:
        # An hour's wait (the most a Retry-After is honoured for) against a 30-minute budget.
        server.then(Answer(429, {"error": "slow down"}, {"Retry-After": "3600"}))
        report = dispatcher(engine, server, Clock(T0), retry_for_minutes=30).run_once()

    assert report.channel("hook").failed == 1
    [row] = outbox(engine)
    assert row.status == "failed" and "Retry-After" in row.last_error


def test_a_4xx_fails_at_once_and_no_secret_reaches_the_error(engine: Engine) -> None:
    open_alert(engine, channels=["hook"])
    with webhook_server() as server:
        url = f"{server.url}/hook"
        server.then(Answer(400, f"bad request to {url} signed {SECRET}".encode()))
        report = dispatcher(engine, server, Clock()).run_once()

    [row] = outbox(engine)
    assert row.status == "failed" and row.attempts == 1
    # Refused outright: nothing went out under its key, so no resolve will follow it.
    assert row.delivery_key is None
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


def test_a_request_cut_off_by_a_kill_counts_against_the_rate_limit_after_its_lease(
    engine: Engine, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Before: a request whose dispatcher died mid-send counted only while its lease lasted
    (it left no record of its end), so the dispatcher taking it over sent it again and one more
    at once: 3 requests in a minute at a receiver allowed 2. Now it counts from its lease's end
    as a request that ended then."""
    for i in range(3):
        open_alert(engine, channels=["hook"], labels={"rule_id": "r", "asset": f"a{i}"})
    clock = Clock(T0)
    with webhook_server() as server:
        killed = dispatcher(engine, server, clock, rate={"webhook": 2}, lease_seconds=5)
        monkeypatch.setattr(killed, "_mark_sent", lambda *args, **kwargs: None)  # dies here
        killed.run_once()
        assert len(server.requests) == 1  # it reached the receiver; nothing was recorded
        d = dispatcher(engine, server, clock, rate={"webhook": 2}, lease_seconds=5)
        sent = []
        for step in (6, 1.5, 1.5, 60):  # past the lease; within its minute; past it
            clock.advance(step)
            sent.append(d.run_once().sent)

    # 2 reach the receiver in the minute after the cut-off request: it and its resend.
    assert sent == [1, 0, 0, 1]
    assert len(server.requests) == 3
    assert (
        server.requests[0].headers["Idempotency-Key"]
        == server.requests[1].headers["Idempotency-Key"]
    )
    assert statuses(engine).count("sent") == 2


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


def _most_in_one_second(times: list[float]) -> int:
    """The most arrivals in any window of one second (both ends in)."""
    times = sorted(times)
    return max((i - bisect_left(times, t - 1.0) + 1 for i, t in enumerate(times)), default=0)


def test_two_dispatchers_keep_a_burst_within_the_per_second_limit_at_the_receiver(
    engine: Engine,
) -> None:
    """Before: the limit counted a sent request from before its message was built (sent_at is
    the wave's start) and a failed one not at all once over, so retries and the sends of a slow
    pass bunched up at the receiver: 15 and more in a second against 10. Now a request counts
    from its claim until a second after its answer came, retries included."""
    for i in range(40):
        open_alert(engine, channels=["hook"], labels={"rule_id": "r", "asset": f"a{i}"})
    config = hook_config(rate={"webhook": 600}, backoff_initial_seconds=0.1)  # 10 a second
    with HttpStub(lambda r: Answer(200, {"status": "ok"}, delay=0.02)) as server:
        server.then(*[Answer(503, {"error": "busy"})] * 6)  # six requests retried at once
        env = {"TEST_HOOK_URL": f"{server.url}/hook", "TEST_HOOK_SECRET": SECRET}
        # A pass that sends one request at a time spreads its sends over its second; the other
        # sends them together: both claim from the one budget in the store.
        dispatchers = [
            Dispatcher(engine, config, env=env, concurrency=n)  # type: ignore[arg-type]
            for n in (1, 8)
        ]
        threads = [threading.Thread(target=d.drain, args=(15,)) for d in dispatchers]
        for t in threads:
            t.start()
        for t in threads:
            t.join()

    assert statuses(engine) == ["sent"] * 40
    assert len(server.requests) == 46
    assert _most_in_one_second([r.at for r in server.requests]) <= 10


class TrickleServer:
    """A webhook receiver that accepts at once but sends its answer's body one byte at a time:
    every read is within the client's timeout, so one request lasts as long as the trickle."""

    def __init__(self, seconds: float) -> None:
        self.requests: list[float] = []
        body = b'{"status": "ok"}' + b" " * 14
        gap = seconds / len(body)
        stub = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_POST(self) -> None:  # noqa: N802 - http.server's name
                self.rfile.read(int(self.headers.get("Content-Length") or 0))
                stub.requests.append(time.monotonic())
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                try:
                    for i in range(len(body)):
                        self.wfile.write(body[i : i + 1])
                        self.wfile.flush()
                        time.sleep(gap)
                except OSError:
                    pass

            def log_message(self, format: str, *args: object) -> None:
                pass

        class Server(ThreadingHTTPServer):
            daemon_threads = True

        self.server = Server(("127.0.0.1", free_port()), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def __enter__(self) -> "TrickleServer":
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.shutdown()
        self.server.server_close()


def _wait_for(condition: Callable[[], bool], seconds: float = 20) -> None:
    deadline = time.monotonic() + seconds
    while not condition():
        assert time.monotonic() < deadline, "timed out waiting"
        time.sleep(0.02)


def test_a_send_slower_than_the_lease_keeps_its_lease_and_goes_out_once(engine: Engine) -> None:
    """Before: the lease was extended once per wave by a guess (4 x the request timeout + 1 s);
    an answer that took longer (a trickling body, a Slack reply plus update, SMTP) let it lapse
    and a second dispatcher (the alert fast path, the dispatch job) sent the same row again."""
    open_alert(engine, channels=["hook"], at=datetime.now(UTC))
    config = hook_config(lease_seconds=5, request_timeout_seconds=1)
    with TrickleServer(seconds=7) as server:
        env = {"TEST_HOOK_URL": f"{server.url}/hook", "TEST_HOOK_SECRET": SECRET}
        reports: list[DispatchReport] = []
        first = Dispatcher(engine, config, env=env)  # type: ignore[arg-type]
        sending = threading.Thread(target=lambda: reports.append(first.run_once()))
        sending.start()
        _wait_for(lambda: bool(server.requests))
        time.sleep(5.8)  # past the 5 s lease the claim took
        claimed = outbox(engine)[0]
        second = Dispatcher(engine, config, env=env).run_once()  # type: ignore[arg-type]
        sending.join()

    assert second.sent == 0 and len(server.requests) == 1
    assert _naive(claimed.claimed_until) > _naive(datetime.now(UTC)) - timedelta(seconds=2)
    assert reports[0].channel("hook").sent == 1
    [row] = outbox(engine)
    assert (row.status, row.claimed_by, row.attempts) == ("sent", None, 1)


def test_an_alert_resolved_while_its_firing_is_in_flight_gets_its_resolve(engine: Engine) -> None:
    """Before: resolving cancelled the claimed firing and queued no resolve (nothing was
    ``sent`` yet); the firing reached the receiver anyway and stayed firing there."""
    alert = open_alert(engine, channels=["hook"])
    with webhook_server() as server:
        server.then(Answer(200, {"status": "ok"}, delay=1.5))  # the firing takes its time
        sending = threading.Thread(target=dispatcher(engine, server, Clock(T0)).run_once)
        sending.start()
        _wait_for(lambda: bool(server.requests))
        actions.resolve(engine, alert.alert_id, "ana", "fixed the file", T0 + timedelta(seconds=1))
        during = dispatcher(engine, server, Clock(T0 + timedelta(seconds=1))).run_once()
        sending.join()
        after = dispatcher(engine, server, Clock(T0 + timedelta(seconds=3))).run_once()

    assert during.sent == 0 and during.channel("hook").deferred == 1  # waits for its firing
    assert after.channel("hook").sent == 1
    assert [r.json["status"] for r in server.requests] == ["firing", "resolved"]
    assert [(r.kind, r.status) for r in outbox(engine)] == [
        ("firing", "sent"),
        ("resolved", "sent"),
    ]


def test_a_firing_retrying_when_its_alert_resolves_gives_way_to_the_resolve(
    engine: Engine,
) -> None:
    """The receiver got the firing but answered after the timeout: the row is retrying when the
    alert resolves. Before: the retry was cancelled and no resolve was queued."""
    alert = open_alert(engine, channels=["hook"])
    clock = Clock(T0)
    with webhook_server() as server:
        server.then(Answer(200, {"status": "ok"}, delay=3))  # the client gives up after 2 s
        d = dispatcher(engine, server, clock)
        first = d.run_once()
        actions.resolve(engine, alert.alert_id, "ana", "fixed the file", T0 + timedelta(seconds=1))
        clock.advance(30)
        second = d.run_once()

    assert first.channel("hook").retrying == 1
    assert second.channel("hook").cancelled == 1 and second.channel("hook").sent == 1
    assert [r.json["status"] for r in server.requests] == ["firing", "resolved"]
    firing, resolved = outbox(engine)
    assert (firing.status, resolved.status) == ("cancelled", "sent")
    assert "resolved" in firing.last_error


def test_a_dispatcher_that_lost_its_lease_leaves_the_row_to_its_new_owner(engine: Engine) -> None:
    """Before: the first dispatcher's failure was recorded on a row another dispatcher had
    claimed meanwhile, freeing it for a third, which sent it once more."""
    open_alert(engine, channels=["hook"])
    with webhook_server() as server:
        server.then(
            Answer(500, {"error": "boom"}, delay=1.0), Answer(200, {"status": "ok"}, delay=3.0)
        )
        # Its clock stands still: to the others its lease has lapsed.
        slow = threading.Thread(
            target=dispatcher(engine, server, Clock(T0), request_timeout_seconds=10).run_once
        )
        slow.start()
        _wait_for(lambda: bool(server.requests))
        later = T0 + timedelta(minutes=5)
        taker = threading.Thread(
            target=dispatcher(engine, server, Clock(later), request_timeout_seconds=10).run_once
        )
        taker.start()
        _wait_for(lambda: len(server.requests) == 2)
        slow.join()  # its 500 came while the row was the taker's
        third = dispatcher(engine, server, Clock(later + timedelta(seconds=1))).run_once()
        taker.join()

    assert third.sent == 0 and len(server.requests) == 2
    [row] = outbox(engine)
    assert (row.status, row.attempts, row.last_error, row.claimed_by) == ("sent", 1, None, None)


def _fingerprints(request: Request) -> frozenset[str]:
    return frozenset(a["fingerprint"] for a in request.json["alerts"])


def test_a_retried_group_split_by_the_batch_keeps_one_key_for_one_content(
    engine: Engine,
) -> None:
    """Before: the retry of a 3-alert message was cut by batch_size into [c0, c1] and [c2], both
    with the first request's Idempotency-Key; a receiver that drops a repeated key never got c2."""
    labels = {"rule_id": "check_failed", "asset": "stg/patients"}
    group = [
        open_alert(engine, channels=["hook"], labels={**labels, "check": f"c{i}"}) for i in range(3)
    ]
    clock = Clock(T0)
    with webhook_server() as server:
        server.then(Answer(500, {"error": "boom"}))
        first = dispatcher(engine, server, clock).run_once()
        clock.advance(60)
        d = dispatcher(engine, server, clock, batch_size=2)
        reports = [d.run_once() for _ in range(3)]

    assert first.channel("hook").retrying == 3
    assert sum(r.sent for r in reports) == 3 and statuses(engine) == ["sent"] * 3
    by_key: dict[str, set[frozenset[str]]] = {}
    for request in server.requests:
        by_key.setdefault(request.headers["Idempotency-Key"], set()).add(_fingerprints(request))
    # One key, one content: a receiver dropping repeated keys still gets every alert.
    assert all(len(contents) == 1 for contents in by_key.values()), by_key
    kept = set().union(*(next(iter(c)) for c in by_key.values()))
    assert kept == {a.fingerprint for a in group}
    # The retry of the same rows is the same request: same key, so it can be deduplicated.
    assert [len(r.json["alerts"]) for r in server.requests] == [3, 3]
    assert len(by_key) == 1


@pytest.mark.parametrize("status", [301, 302, 303, 307, 308])
def test_a_redirect_is_a_permanent_error_never_followed(engine: Engine, status: int) -> None:
    """Before: urllib followed it: a 301/302/303 turned the POST into a GET, and the GET's 200
    marked the row sent with nothing delivered (it also followed to other schemes)."""
    open_alert(engine, channels=["hook"])
    with webhook_server() as elsewhere, webhook_server() as server:
        target = f"{elsewhere.url}/moved?token=s3cr3t-in-query"
        server.then(Answer(status, b"", {"Location": target}))
        report = dispatcher(engine, server, Clock(T0)).run_once()

    assert elsewhere.requests == []  # never followed
    assert report.channel("hook").failed == 1 and not report.ok
    [row] = outbox(engine)
    assert row.status == "failed" and row.delivery_key is None
    assert f"answered HTTP {status}, redirected to {elsewhere.url}" in row.last_error
    assert "s3cr3t" not in row.last_error and "/moved" not in row.last_error


def _queue_update(engine: Engine, alert: StoredAlert, at: datetime, note: str) -> int:
    """An incident update of ``alert`` (an event and its ``updated`` row on the hook)."""
    event_id = add_event(engine, alert, AlertEventKind.NOTE, [], at=at, note=note)
    with engine.begin() as conn:
        queue(conn, event_id, alert.alert_id, ["hook"], NotificationKind.UPDATED, "g", at)
    return event_id


def test_an_update_waits_for_an_older_update_of_its_alert_still_pending(engine: Engine) -> None:
    """Before: an update waiting for its retry (a 5xx; or one held by a silence) was overtaken
    by the next update of its alert, due at once: an ITSM got the newer status, then the older
    one over it. Now the newer update waits behind it and follows it."""
    alert = open_alert(engine, channels=["hook"])
    clock = Clock(T0)
    with webhook_server() as server:
        d = dispatcher(engine, server, clock)
        assert d.run_once().channel("hook").sent == 1  # the firing
        server.then(Answer(500, {"error": "boom"}))
        older = _queue_update(engine, alert, clock.now, "investigating")
        assert d.run_once().channel("hook").retrying == 1
        newer = _queue_update(engine, alert, clock.now, "identified")
        waiting = d.run_once()
        clock.advance(2)  # past the older one's backoff
        together = d.run_once()  # the older one is retried; the newer one, a request apart
        after = d.run_once()

    assert waiting.sent == 0 and waiting.channel("hook").deferred == 1
    assert together.channel("hook").sent == 1 and together.channel("hook").deferred == 1
    assert after.channel("hook").sent == 1
    rows = {r.event_id: r for r in outbox(engine) if r.kind == "updated"}
    keys = [r.headers["Idempotency-Key"] for r in server.requests[1:]]
    assert keys == [rows[older].delivery_key, rows[older].delivery_key, rows[newer].delivery_key]
