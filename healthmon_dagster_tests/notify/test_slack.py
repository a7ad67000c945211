"""The Slack channel against a local stand-in for Slack's Web API: Block Kit with links, the
resolve as a threaded reply with the original message updated, Slack's limits, failures followed
through to the end (one message in the channel), and the lookup that keeps a post whose answer
timed out from showing twice."""

from datetime import timedelta
from typing import Any

import pytest
import sqlalchemy as sa
from sqlalchemy.engine import Engine

from healthmon_dagster.alerting import actions
from healthmon_dagster.enums import AlertEventKind
from healthmon_dagster.notify.dispatch import Dispatcher
from healthmon_dagster.store.tables import notification_threads
from healthmon_dagster_tests.notify.fixtures import (
    T0,
    Answer,
    Clock,
    HttpStub,
    SlackStub,
    add_event,
    config_with,
    open_alert,
    outbox,
    slack_server,
)

TOKEN = "xoxb-test-0123456789"
TIMEOUT = 0.5  # seconds a request waits in these tests
LATE = 1.5  # an answer this late is a timeout


def slack_dispatcher(
    engine: Engine,
    base_url: str,
    clock: Clock,
    *,
    channel: str = "#data-alerts",
    lookup_messages: int | None = None,
    concurrency: int = 8,
    retry_for_minutes: float | None = None,
    **env: str,
) -> Dispatcher:
    configuration: dict[str, Any] = {"channel": channel, "base_url": f"{base_url}/api/"}
    if lookup_messages is not None:
        configuration["lookup_messages"] = lookup_messages
    channel_config: dict[str, Any] = {
        "type": "slack",
        "retry_attempts": 1,
        "configuration": configuration,
    }
    if retry_for_minutes is not None:
        channel_config["retry_for_minutes"] = retry_for_minutes
    config = config_with(
        {"alerts": channel_config},
        rate={"slack": 600},
        request_timeout_seconds=TIMEOUT,
    )
    return Dispatcher(
        engine,
        config,
        clock=clock,
        env={"SLACK_BOT_TOKEN": TOKEN, **env} if "SLACK_BOT_TOKEN" not in env else env,
        external_url="http://dagster:3000",
        concurrency=concurrency,
    )


def test_firing_posts_block_kit_and_the_resolve_replies_in_its_thread(engine: Engine) -> None:
    clock = Clock(T0)
    alert = open_alert(engine, channels=["alerts"], details={"failing_rows": 3, "rows": [17, 50]})
    with slack_server() as slack:
        d = slack_dispatcher(engine, slack.url, clock)
        d.run_once()
        clock.advance(120)
        add_event(engine, alert, AlertEventKind.RESOLVED, ["alerts"], at=clock.now)
        clock.advance(2)
        d.run_once()

    [post, reply] = slack.on("/api/chat.postMessage")
    [update] = slack.on("/api/chat.update")
    assert post.headers["Authorization"] == f"Bearer {TOKEN}"
    first = post.json
    assert first["channel"] == "#data-alerts"
    assert first["blocks"][0]["type"] == "header"
    assert first["blocks"][0]["text"]["text"].startswith(":rotating_light: FIRING: Check")
    section = first["blocks"][1]["text"]["text"]
    assert "• failing_rows: 3" in section and "• rows: 17, 50" in section
    check_url = "http://dagster:3000/assets/stg/patients?view=checks&checkDetail=gender_is_valid"
    assert f"<{check_url}|Check gender_is_valid>" in section
    assert first["metadata"]["event_payload"]["delivery_key"] == outbox(engine)[0].delivery_key
    with engine.connect() as conn:
        thread = conn.execute(sa.select(notification_threads)).one()
    assert (thread.alert_id, thread.conversation) == (alert.alert_id, "C0ALERTS")
    assert reply.json["thread_ts"] == thread.thread_ref and reply.json["channel"] == "C0ALERTS"
    assert reply.json["text"].startswith(":white_check_mark: *RESOLVED*: Check gender_is_valid")
    assert "after 2m" in reply.json["text"]
    assert update.json["ts"] == thread.thread_ref
    assert update.json["blocks"][0]["text"]["text"].startswith(":white_check_mark: RESOLVED")
    assert [r.status for r in outbox(engine)] == ["sent", "sent"]


def test_acknowledgement_replies_in_the_thread_of_each_alert(engine: Engine) -> None:
    clock = Clock(T0)
    a = open_alert(engine, channels=["alerts"], labels={"rule_id": "r", "asset": "raw/patients"})
    b = open_alert(engine, channels=["alerts"], labels={"rule_id": "r", "asset": "stg/patients"})
    with slack_server() as slack:
        d = slack_dispatcher(engine, slack.url, clock)
        d.run_once()  # two groups: two messages, two threads
        clock.advance(60)
        for alert in (a, b):
            add_event(
                engine,
                alert,
                AlertEventKind.ACKNOWLEDGED,
                ["alerts"],
                at=clock.now,
                actor="cli:ana",
                note="looking into it",
            )
        d.run_once()

    posts = slack.on("/api/chat.postMessage")
    assert len(posts) == 4 and len(slack.on("/api/chat.update")) == 2
    with engine.connect() as conn:
        refs = set(conn.execute(sa.select(notification_threads.c.thread_ref)).scalars())
    assert {p.json["thread_ts"] for p in posts[2:]} == refs and len(refs) == 2
    assert all("acknowledged by cli:ana" in p.json["text"] for p in posts[2:])
    assert all("looking into it" in p.json["text"] for p in posts[2:])


def test_slack_limits_50_blocks_and_3000_characters_a_section(engine: Engine) -> None:
    for i in range(60):
        open_alert(
            engine,
            channels=["alerts"],
            labels={"rule_id": "r", "asset": "stg/patients", "check": f"c{i}"},
            group_key="one-group",
            description="x" * (5000 if i == 0 else 10),
        )
    with slack_server() as slack:
        slack_dispatcher(engine, slack.url, Clock(T0)).run_once()

    [post] = slack.on("/api/chat.postMessage")
    blocks = post.json["blocks"]
    assert len(blocks) == 50
    assert all(len(b["text"]["text"]) <= 3000 for b in blocks[1:])
    assert blocks[1]["text"]["text"].endswith("|see the full view>")
    assert blocks[-1]["text"]["text"].startswith("…and 12 more alert(s)")
    assert "<http://dagster:3000|in the Dagster UI>" in blocks[-1]["text"]["text"]


@pytest.mark.parametrize(
    ("answer", "status", "error"),
    [
        (Answer(500, b"upstream error"), "pending", "HTTP 500; will retry"),
        (
            Answer(429, {"ok": False, "error": "ratelimited"}, {"Retry-After": "3"}),
            "pending",
            "rate limited (429)",
        ),
        (
            Answer(200, {"ok": False, "error": "internal_error"}),
            "pending",
            "internal_error; will retry",
        ),
        (Answer(200, {"ok": True}, delay=LATE), "pending", "timed out after 0.5s"),
        (Answer(200, {"ok": False, "error": "channel_not_found"}), "failed", "channel_not_found"),
        (Answer(200, {"ok": False, "error": "invalid_auth"}), "failed", "invalid_auth"),
    ],
    ids=["500", "429", "internal_error", "timeout", "channel_not_found", "invalid_auth"],
)
def test_slack_failures_retry_or_fail_with_slacks_reason(
    engine: Engine, answer: Answer, status: str, error: str
) -> None:
    open_alert(engine, channels=["alerts"])
    clock = Clock(T0)
    with slack_server() as slack:
        slack.then(answer)
        report = slack_dispatcher(engine, slack.url, clock).run_once()

    [row] = outbox(engine)
    assert row.status == status and error in row.last_error, row.last_error
    assert TOKEN not in row.last_error
    assert report.ok is (status != "failed")
    if answer.status == 429:
        assert row.not_before.replace(tzinfo=None) == (T0 + timedelta(seconds=3)).replace(
            tzinfo=None
        )
        assert row.attempts == 0


def test_slack_refused_and_not_configured(engine: Engine) -> None:
    open_alert(engine, channels=["alerts"])
    closed = HttpStub()
    closed.server.server_close()
    refused = slack_dispatcher(engine, closed.url, Clock(T0)).run_once()
    [row] = outbox(engine)
    assert refused.channel("alerts").retrying == 1 and "Connection refused" in row.last_error

    missing = slack_dispatcher(
        engine, closed.url, Clock(T0 + timedelta(hours=1)), SLACK_BOT_TOKEN=""
    )
    assert missing.notifier("alerts").configured() == [
        "SLACK_BOT_TOKEN is not set (the bot token of Slack 'alerts')"
    ]
    report = missing.run_once()
    assert report.channel("alerts").failed == 1
    assert "SLACK_BOT_TOKEN is not set" in outbox(engine)[0].last_error


def settle(engine: Engine, dispatcher: Dispatcher, clock: Clock, passes: int = 6) -> None:
    """Run passes, each past every backoff and Retry-After, until nothing is pending."""
    for _ in range(passes):
        if all(r.status != "pending" for r in outbox(engine)):
            return
        clock.advance(120)
        dispatcher.run_once()


@pytest.mark.parametrize(
    "failure",
    [
        Answer(500, b"upstream error"),
        Answer(429, {"ok": False, "error": "ratelimited"}, {"Retry-After": "3"}),
        Answer(200, {"ok": False, "error": "internal_error"}),
        # Slack posted the message, the answer came too late.
        Answer(200, {"ok": True}, delay=LATE, accept=True),
        # Slack never got to it (a stalled load balancer).
        Answer(200, {"ok": True}, delay=LATE),
        None,  # nothing listens: connection refused
    ],
    ids=["500", "429", "internal_error", "timeout-posted", "timeout-not-posted", "refused"],
)
def test_each_failure_ends_with_one_message_and_one_reply_in_its_thread(
    engine: Engine, failure: Answer | None
) -> None:
    alert = open_alert(engine, channels=["alerts"])
    clock = Clock(T0)
    closed = SlackStub()  # never started: its port refuses connections until the real one
    closed.server.server_close()
    if failure is None:
        first = slack_dispatcher(engine, closed.url, clock).run_once()
        assert first.channel("alerts").retrying == 1
    with slack_server(closed.port) as slack:
        d = slack_dispatcher(engine, slack.url, clock)
        if failure is not None:
            slack.then(Answer(**{**failure.__dict__, "path": "chat.postMessage"}))
            first = d.run_once()
            assert first.channel("alerts").retrying == 1, outbox(engine)[0].last_error
        settle(engine, d, clock)
        add_event(engine, alert, AlertEventKind.RESOLVED, ["alerts"], at=clock.now)
        clock.advance(5)
        d.run_once()

    [firing, resolved] = outbox(engine)
    assert (firing.status, resolved.status) == ("sent", "sent")
    [post] = slack.workspace.posts()  # exactly one message in the channel
    assert post["metadata"]["event_payload"]["delivery_key"] == firing.delivery_key
    with engine.connect() as conn:
        thread = conn.execute(sa.select(notification_threads)).one()
    assert (thread.thread_ref, thread.conversation) == (post["ts"], "C0ALERTS")
    [reply] = slack.workspace.replies(post["ts"])
    assert reply["metadata"]["event_payload"]["delivery_key"] == resolved.delivery_key
    assert post["blocks"][0]["text"]["text"].startswith(":white_check_mark: RESOLVED")
    if failure is not None and failure.status == 429:
        # Slack refused the post: the retry is not in doubt and looks for nothing.
        assert slack.on("/api/conversations.history") == []
        return
    # The retry looked first (any earlier attempt may have reached Slack), the first did not;
    # the #name was resolved to its id once.
    [lookup] = slack.on("/api/conversations.history")
    assert len(slack.on("/api/conversations.list")) == 1
    assert lookup.params["channel"] == "C0ALERTS" and lookup.params["include_all_metadata"] == "1"
    assert float(lookup.params["oldest"]) == T0.timestamp() - 60  # the row's creation, less skew
    if failure is not None and failure.accept:
        assert len(slack.on("/api/chat.postMessage")) == 2  # the post and the reply: no repost


def test_a_reply_whose_answer_timed_out_is_found_in_the_thread_not_posted_again(
    engine: Engine,
) -> None:
    alert = open_alert(engine, channels=["alerts"])
    clock = Clock(T0)
    with slack_server() as slack:
        d = slack_dispatcher(engine, slack.url, clock, channel="C0ALERTS")
        d.run_once()
        add_event(engine, alert, AlertEventKind.RESOLVED, ["alerts"], at=clock.now)
        clock.advance(5)
        slack.then(Answer(200, {"ok": True}, delay=LATE, accept=True, path="chat.postMessage"))
        assert d.run_once().channel("alerts").retrying == 1
        settle(engine, d, clock)

    [post] = slack.workspace.posts()
    [reply] = slack.workspace.replies(post["ts"])
    assert [r.status for r in outbox(engine)] == ["sent", "sent"]
    [lookup] = slack.on("/api/conversations.replies")
    assert lookup.params["ts"] == post["ts"] and lookup.params["include_all_metadata"] == "1"
    assert not slack.on("/api/conversations.list")  # an id needs no resolving
    assert len(slack.on("/api/chat.update")) == 1  # the original rewritten once, when it went out


def test_the_lookup_pages_back_through_newer_messages_up_to_its_bound(engine: Engine) -> None:
    open_alert(engine, channels=["alerts"], labels={"rule_id": "r", "asset": "a"})
    open_alert(engine, channels=["alerts"], labels={"rule_id": "r", "asset": "b"})
    clock = Clock(T0)
    with slack_server() as slack:
        # Both posts reach Slack, neither answer arrives; then the channel gets busy.
        slack.then(*[Answer(200, {"ok": True}, delay=LATE, accept=True)] * 2)
        d = slack_dispatcher(engine, slack.url, clock, channel="C0ALERTS", lookup_messages=300)
        assert d.run_once().channel("alerts").retrying == 2
        for i in range(250):
            slack.workspace.say(f"chatter {i}")
        settle(engine, d, clock)
        found_pages = len(slack.on("/api/conversations.history"))
        # With a bound below the chatter the copy is not found: posted again (README says so).
        narrow = open_alert(engine, channels=["alerts"], labels={"rule_id": "r", "asset": "c"})
        slack.then(Answer(200, {"ok": True}, delay=LATE, accept=True))
        d2 = slack_dispatcher(engine, slack.url, clock, channel="C0ALERTS", lookup_messages=50)
        assert d2.run_once().channel("alerts").retrying == 1
        for i in range(60):
            slack.workspace.say(f"more chatter {i}")
        settle(engine, d2, clock)

    rows = outbox(engine)
    assert [r.status for r in rows] == ["sent"] * 3
    assert [len(slack.workspace.with_key(r.delivery_key)) for r in rows[:2]] == [1, 1]
    assert found_pages == 4  # two lookups, each 200 newest then the rest
    assert len(slack.workspace.with_key(rows[2].delivery_key)) == 2
    assert rows[2].alert_id == narrow.alert_id


def test_a_lookup_slack_refuses_posts_again_rather_than_miss(engine: Engine) -> None:
    open_alert(engine, channels=["alerts"])
    clock = Clock(T0)
    with slack_server() as slack:
        slack.then(
            Answer(200, {"ok": True}, delay=LATE, accept=True, path="chat.postMessage"),
            Answer(200, {"ok": False, "error": "missing_scope"}, path="conversations.history"),
        )
        d = slack_dispatcher(engine, slack.url, clock)
        d.run_once()
        settle(engine, d, clock)

    [row] = outbox(engine)
    assert row.status == "sent"
    assert len(slack.workspace.with_key(row.delivery_key)) == 2  # the duplicate README admits


def test_a_429_pause_leaves_the_messages_it_held_back_out_of_doubt(engine: Engine) -> None:
    """Before: the messages a 429 held back kept the delivery key they were claimed with, so
    the next pass took them for "in doubt" and read the channel's history before posting each
    (a bot outside the Marketplace may get 1 history request a minute: a storm at 1 message a
    minute). A 429 is Slack refusing the post: that message is not in doubt either."""
    for asset in ("a", "b", "c"):
        open_alert(engine, channels=["alerts"], labels={"rule_id": "r", "asset": asset})
    clock = Clock(T0)
    with slack_server() as slack:
        slack.then(
            Answer(429, {"ok": False, "error": "ratelimited"}, {"Retry-After": "3"}),
        )
        d = slack_dispatcher(engine, slack.url, clock, concurrency=1)
        paused = d.run_once()
        held = outbox(engine)
        clock.advance(4)
        after = d.run_once()

    assert paused.channel("alerts").retrying == 1 and paused.channel("alerts").deferred == 2
    assert [r.delivery_key for r in held] == [None] * 3
    assert after.channel("alerts").sent == 3
    assert len(slack.workspace.posts()) == 3
    assert slack.on("/api/conversations.history") == []  # nothing was in doubt: no lookup


@pytest.mark.parametrize(
    "failure",
    [
        Answer(200, {"ok": True}, delay=LATE, accept=True, path="chat.postMessage"),
        Answer(500, b"upstream error", path="chat.postMessage"),
    ],
    ids=["timeout-posted", "500"],
)
def test_a_resolve_after_a_failed_firing_replies_in_the_firings_thread(
    engine: Engine, failure: Answer
) -> None:
    """Before: the resolve cancelled the firing's retry and, knowing no thread, posted at top
    level: after a timeout Slack showed FIRING and RESOLVED as two messages, the first never
    updated; after a 500 it showed RESOLVED for an alert it had never shown. Now the firing's
    retry goes first (finding the post Slack kept, or posting it) and the resolve replies in its
    thread and rewrites it."""
    alert = open_alert(engine, channels=["alerts"])
    clock = Clock(T0)
    with slack_server() as slack:
        slack.then(failure)
        d = slack_dispatcher(engine, slack.url, clock)
        assert d.run_once().channel("alerts").retrying == 1
        actions.resolve(engine, alert.alert_id, "ana", "fixed the file", clock.now)
        settle(engine, d, clock)

    firing, resolved = outbox(engine)
    assert (firing.kind, firing.status, resolved.kind, resolved.status) == (
        "firing",
        "sent",
        "resolved",
        "sent",
    )
    [post] = slack.workspace.posts()  # one message in the channel
    assert post["metadata"]["event_payload"]["delivery_key"] == firing.delivery_key
    [reply] = slack.workspace.replies(post["ts"])
    assert reply["metadata"]["event_payload"]["delivery_key"] == resolved.delivery_key
    assert post["blocks"][0]["text"]["text"].startswith(":white_check_mark: RESOLVED")
    assert len(slack.on("/api/chat.update")) == 1
    posted = len(slack.on("/api/chat.postMessage"))
    assert posted == (2 if failure.accept else 3)  # a post Slack kept is found, not reposted


def _fail_for_good_timing_out(
    engine: Engine, slack: SlackStub, d: Dispatcher, clock: Clock
) -> None:
    """Every attempt at the firing times out (the post, then each retry's lookup of it) until
    its retries run out: ``failed``, its delivery key kept."""
    assert d.run_once().channel("alerts").retrying == 1
    while outbox(engine)[0].status == "pending":
        slack.then(Answer(200, {"ok": True}, delay=LATE, path="conversations.history"))
        clock.advance(120)
        d.run_once()
    [firing] = outbox(engine)
    assert firing.status == "failed" and "gave up" in firing.last_error
    assert firing.delivery_key is not None


@pytest.mark.parametrize("reply_fails", [False, True], ids=["replied", "reply-retried"])
def test_the_resolve_of_a_firing_that_failed_for_good_replies_where_slack_kept_it(
    engine: Engine, reply_fails: bool
) -> None:
    """Before: the firing's post timed out, every retry too, so it failed for good with no ts
    recorded, although Slack had posted it; its resolve then posted a second message at the
    top level and the first one showed FIRING for ever. Now the resolve looks the firing up by
    its key, once, and replies in its thread (again there after a failed reply)."""
    alert = open_alert(engine, channels=["alerts"])
    clock = Clock(T0)
    with slack_server() as slack:
        d = slack_dispatcher(engine, slack.url, clock, channel="C0ALERTS", retry_for_minutes=5)
        slack.then(Answer(200, {"ok": True}, delay=LATE, accept=True, path="chat.postMessage"))
        _fail_for_good_timing_out(engine, slack, d, clock)
        looked_before = len(slack.on("/api/conversations.history"))
        actions.resolve(engine, alert.alert_id, "ana", "fixed the file", clock.now)
        if reply_fails:
            slack.then(Answer(500, b"upstream error", path="chat.postMessage"))
            assert d.run_once().channel("alerts").retrying == 1
        settle(engine, d, clock)

    firing, resolved = outbox(engine)
    assert (firing.status, resolved.status) == ("failed", "sent")
    [post] = slack.workspace.posts()  # one message in the channel: the firing Slack kept
    assert post["metadata"]["event_payload"]["delivery_key"] == firing.delivery_key
    [reply] = slack.workspace.replies(post["ts"])
    assert reply["metadata"]["event_payload"]["delivery_key"] == resolved.delivery_key
    assert reply["text"].startswith(":white_check_mark: *RESOLVED*")
    [update] = slack.on("/api/chat.update")
    assert update.params["ts"] == post["ts"]
    assert post["blocks"][0]["text"]["text"].startswith(":white_check_mark: RESOLVED")
    with engine.connect() as conn:
        thread = conn.execute(sa.select(notification_threads)).one()
    assert (thread.alert_id, thread.thread_ref) == (alert.alert_id, post["ts"])
    # One lookup for the resolve, from the firing's creation on; none for its retry.
    [lookup] = slack.on("/api/conversations.history")[looked_before:]
    assert float(lookup.params["oldest"]) == T0.timestamp() - 60


def test_the_thread_found_by_a_resolve_serves_every_alert_its_firing_announced(
    engine: Engine,
) -> None:
    """A firing announcing two alerts failed for good, Slack kept it. Before: the first alert's
    resolve found it by its key and recorded the thread for that alert only, so the second
    one's resolve looked it up in the history again (one lookup per resolve, where a bot
    outside the Marketplace may get one a minute). Now the thread is recorded for both."""
    first = open_alert(engine, channels=["alerts"], group_key="g")
    second = open_alert(
        engine,
        channels=["alerts"],
        group_key="g",
        labels={"rule_id": "check_failed", "asset": "stg/patients", "check": "other"},
    )
    clock = Clock(T0)
    with slack_server() as slack:
        d = slack_dispatcher(engine, slack.url, clock, channel="C0ALERTS", retry_for_minutes=5)
        slack.then(Answer(200, {"ok": True}, delay=LATE, accept=True, path="chat.postMessage"))
        assert d.run_once().channel("alerts").retrying == 2
        while any(r.status == "pending" for r in outbox(engine)):
            slack.then(Answer(200, {"ok": True}, delay=LATE, path="conversations.history"))
            clock.advance(120)
            d.run_once()
        assert len({(r.status, r.delivery_key) for r in outbox(engine)}) == 1  # one request
        looked_before = len(slack.on("/api/conversations.history"))
        actions.resolve(engine, first.alert_id, "ana", "fixed", clock.now)
        settle(engine, d, clock)
        with engine.connect() as conn:
            threads = conn.execute(
                sa.select(notification_threads.c.alert_id, notification_threads.c.thread_ref)
            ).all()
        actions.resolve(engine, second.alert_id, "ana", "fixed", clock.now)
        settle(engine, d, clock)

    [post] = slack.workspace.posts()  # the firing Slack kept
    assert sorted(threads) == [(first.alert_id, post["ts"]), (second.alert_id, post["ts"])]
    assert len(slack.workspace.replies(post["ts"])) == 2  # each resolve replied in its thread
    assert len(slack.on("/api/conversations.history")) == looked_before + 1  # the first's only
    assert post["blocks"][0]["text"]["text"].startswith(":white_check_mark: RESOLVED")
    assert [r.status for r in outbox(engine)] == ["failed", "failed", "sent", "sent"]


@pytest.mark.parametrize("lookup_times_out", [False, True], ids=["found", "lookup-retried"])
def test_a_resolve_killed_after_replying_in_the_thread_it_found_is_not_replied_twice(
    engine: Engine, monkeypatch: pytest.MonkeyPatch, lookup_times_out: bool
) -> None:
    """Before: the resolve found the failed firing by its key and replied in its thread, then
    its dispatcher died before recording either; the next attempt (in doubt) found the firing
    again and, the thread being "found just now", replied without looking in it: two replies.
    Now an attempt in doubt always looks in the thread first; when that lookup fails, the
    thread is recorded all the same."""
    alert = open_alert(engine, channels=["alerts"])
    clock = Clock(T0)
    with slack_server() as slack:
        d = slack_dispatcher(engine, slack.url, clock, channel="C0ALERTS", retry_for_minutes=5)
        slack.then(Answer(200, {"ok": True}, delay=LATE, accept=True, path="chat.postMessage"))
        _fail_for_good_timing_out(engine, slack, d, clock)
        actions.resolve(engine, alert.alert_id, "ana", "fixed the file", clock.now)
        killed = slack_dispatcher(engine, slack.url, clock, channel="C0ALERTS", retry_for_minutes=5)
        monkeypatch.setattr(killed, "_mark_sent", lambda *args, **kwargs: None)  # dies here
        killed.run_once()
        [post] = slack.workspace.posts()
        assert len(slack.workspace.replies(post["ts"])) == 1
        with engine.connect() as conn:
            assert conn.execute(sa.select(notification_threads)).all() == []
        looked_before = len(slack.on("/api/conversations.history"))
        clock.advance(600)  # past the lease: another dispatcher takes the resolve, in doubt
        d2 = slack_dispatcher(engine, slack.url, clock, channel="C0ALERTS", retry_for_minutes=5)
        if lookup_times_out:
            slack.then(Answer(200, {"ok": True}, delay=LATE, path="conversations.replies"))
            assert d2.run_once().channel("alerts").retrying == 1
            with engine.connect() as conn:
                thread = conn.execute(sa.select(notification_threads)).one()
            assert thread.thread_ref == post["ts"]  # recorded although the lookup failed
        settle(engine, d2, clock)

    firing, resolved = outbox(engine)
    assert (firing.status, resolved.status) == ("failed", "sent")
    [reply] = slack.workspace.replies(post["ts"])
    assert reply["metadata"]["event_payload"]["delivery_key"] == resolved.delivery_key
    # The firing was looked up once after the kill; its thread, on each attempt in doubt.
    assert len(slack.on("/api/conversations.history")) == looked_before + 1
    assert len(slack.on("/api/conversations.replies")) == (2 if lookup_times_out else 1)


def test_the_resolve_of_a_firing_slack_never_kept_is_posted_saying_which_alert(
    engine: Engine,
) -> None:
    alert = open_alert(engine, channels=["alerts"])
    clock = Clock(T0)
    with slack_server() as slack:
        d = slack_dispatcher(engine, slack.url, clock, channel="C0ALERTS", retry_for_minutes=5)
        slack.then(Answer(200, {"ok": True}, delay=LATE, path="chat.postMessage"))  # not kept
        _fail_for_good_timing_out(engine, slack, d, clock)
        looked_before = len(slack.on("/api/conversations.history"))
        actions.resolve(engine, alert.alert_id, "ana", "fixed the file", clock.now)
        settle(engine, d, clock)

    firing, resolved = outbox(engine)
    assert (firing.status, resolved.status) == ("failed", "sent")
    [post] = slack.workspace.posts()
    assert post["metadata"]["event_payload"]["delivery_key"] == resolved.delivery_key
    section = post["blocks"][1]["text"]["text"]
    assert post["blocks"][0]["text"]["text"].startswith(":white_check_mark: RESOLVED")
    assert f"_About alert {alert.alert_id} (fingerprint {alert.fingerprint[:12]}):" in section
    assert len(slack.on("/api/conversations.history")) == looked_before + 1
    assert not slack.on("/api/chat.update")
