"""A dispatcher killed with SIGKILL in the middle of a send to Slack, PagerDuty or an SMTP server (a
real subprocess; a receiver that took the message and has not answered yet): once the lease ends
another dispatcher takes the row again. Slack ends with the message once (its copy is found by
its delivery key and not posted again) and PagerDuty with one incident (the repeated trigger is
merged into it); the mail server gets the message twice, identical and with the same Message-ID,
which mail systems and clients that drop a repeated id show once (README: "Timeouts and
duplicates")."""

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Mapping
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Engine

from healthmon_dagster.config.models import HealthConfiguration
from healthmon_dagster.notify.dispatch import Dispatcher
from healthmon_dagster.notify.email import message_id
from healthmon_dagster.store.tables import notification_threads
from healthmon_dagster_tests.notify.fixtures import (
    Answer,
    Clock,
    config_with,
    open_alert,
    outbox,
    pagerduty_server,
    slack_server,
    smtp_server,
)

ROOT = Path(__file__).resolve().parents[2]
HANG = 60.0  # the receiver's answer comes this late: the child is killed long before
CHILD = """
import json, sys
from healthmon_dagster.config.models import HealthConfiguration
from healthmon_dagster.notify.dispatch import Dispatcher
from healthmon_dagster.store.db import get_engine

config = HealthConfiguration.model_validate(json.loads(sys.argv[2]))
Dispatcher(get_engine(sys.argv[1]), config).run_once()
"""


def kill_mid_send(
    db_url: str, config: HealthConfiguration, env: Mapping[str, str], reached: Callable[[], bool]
) -> None:
    """Run a dispatcher in a child process; SIGKILL it once the receiver has the request."""
    child = subprocess.Popen(
        [sys.executable, "-c", CHILD, db_url, json.dumps(config.model_dump(mode="json"))],
        env={**os.environ, **env, "PYTHONPATH": str(ROOT)},
    )
    try:
        deadline = time.monotonic() + 60
        while not reached() and time.monotonic() < deadline:
            time.sleep(0.05)
        assert reached(), "the child never reached the receiver"
        os.kill(child.pid, signal.SIGKILL)
    finally:
        child.wait(timeout=30)
    assert child.returncode == -signal.SIGKILL


def retake(engine: Engine, config: HealthConfiguration, env: Mapping[str, str]) -> Any:
    """The claimed row as the kill left it, a pass during the lease (sends nothing) and one
    after it (sends it again)."""
    [claimed] = outbox(engine)
    assert claimed.status == "pending" and claimed.claimed_by is not None
    assert claimed.delivery_key is not None and claimed.attempts == 0
    assert Dispatcher(engine, config, env=env).run_once().sent == 0  # a live lease holds
    after = Clock(datetime.now(UTC) + timedelta(seconds=300))
    report = Dispatcher(engine, config, env=env, clock=after).run_once()
    [row] = outbox(engine)
    assert (row.status, row.claimed_by, report.sent) == ("sent", None, 1), row.last_error
    return claimed


def test_slack_killed_mid_post_is_found_not_posted_twice(db_url: str, engine: Engine) -> None:
    open_alert(engine, channels=["alerts"])
    with slack_server() as slack:
        channels = {
            "alerts": {
                "type": "slack",
                "configuration": {"channel": "#data-alerts", "base_url": f"{slack.url}/api/"},
            }
        }
        config = config_with(channels, lease_seconds=5, request_timeout_seconds=HANG)
        env = {"SLACK_BOT_TOKEN": "xoxb-kill-test"}
        slack.then(Answer(200, {"ok": True}, delay=HANG, accept=True, path="chat.postMessage"))
        kill_mid_send(db_url, config, env, lambda: bool(slack.workspace.posts()))
        claimed = retake(engine, config, env)

    [post] = slack.workspace.posts()
    assert post["metadata"]["event_payload"]["delivery_key"] == claimed.delivery_key
    assert len(slack.on("/api/chat.postMessage")) == 1
    assert len(slack.on("/api/conversations.history")) == 1
    with engine.connect() as conn:
        thread = conn.execute(sa.select(notification_threads)).one()
    assert (thread.thread_ref, thread.conversation) == (post["ts"], "C0ALERTS")


def test_pagerduty_killed_mid_trigger_keeps_one_incident(db_url: str, engine: Engine) -> None:
    alert = open_alert(engine, channels=["pd"])
    with pagerduty_server() as pd:
        channels = {"pd": {"type": "pagerduty", "configuration": {"url": f"{pd.url}/v2/enqueue"}}}
        config = config_with(channels, lease_seconds=5, request_timeout_seconds=HANG)
        env = {"PAGERDUTY_ROUTING_KEY": "R0UT1NGKEY0123456789abcdefABCDEF"}
        pd.then(Answer(202, {}, delay=HANG, accept=True))
        kill_mid_send(db_url, config, env, lambda: bool(pd.service.incidents))
        retake(engine, config, env)

    assert [r.json["dedup_key"] for r in pd.requests] == [alert.fingerprint] * 2
    [incident] = pd.service.of(alert.fingerprint)
    assert (incident["status"], incident["events"]) == ("triggered", 2)


def test_email_killed_mid_data_is_resent_with_the_same_message_id(
    db_url: str, engine: Engine
) -> None:
    open_alert(engine, channels=["mail"])
    with smtp_server() as (sink, port):
        configuration = {
            "host": "127.0.0.1",
            "port": port,
            "security": "none",
            "from_address": "healthmon@example.org",
            "to": ["oncall@example.org"],
        }
        channels = {"mail": {"type": "email", "configuration": configuration}}
        config = config_with(channels, lease_seconds=5, request_timeout_seconds=HANG)
        sink.stall_next.append(2)  # it keeps the message, then is slow to say so
        kill_mid_send(db_url, config, {}, lambda: bool(sink.messages))
        claimed = retake(engine, config, {})

    expected = message_id(claimed.delivery_key, "healthmon@example.org")
    assert [m["Message-ID"] for m in sink.messages] == [expected, expected]
    first, second = sink.messages
    assert second["Subject"] == first["Subject"] and "Check gender_is_valid" in first["Subject"]
    for part in ("plain", "html"):  # the same message, not just the same id
        body = first.get_body((part,))
        again = second.get_body((part,))
        assert body is not None and again is not None
        assert again.get_content() == body.get_content() and "gender_is_valid" in body.get_content()
