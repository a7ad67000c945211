"""A dispatcher killed with SIGKILL in the middle of a send (a real subprocess, a slow receiver):
nothing is lost, and the one request sent twice carries the same Idempotency-Key."""

import json
import os
import signal
import subprocess
import sys
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

from sqlalchemy.engine import Engine

from healthmon_dagster.notify.dispatch import Dispatcher
from healthmon_dagster_tests.notify.fixtures import (
    Answer,
    Clock,
    config_with,
    open_alert,
    outbox,
    webhook_server,
)

ROOT = Path(__file__).resolve().parents[2]
CHANNELS = {"hook": {"type": "webhook", "configuration": {"url_env": "TEST_HOOK_URL"}}}
CHILD = """
import json, sys
from healthmon_dagster.config.models import HealthConfiguration
from healthmon_dagster.notify.dispatch import Dispatcher
from healthmon_dagster.store.db import get_engine

config = HealthConfiguration.model_validate(json.loads(sys.argv[2]))
Dispatcher(get_engine(sys.argv[1]), config).run_once()
"""


def test_a_dispatcher_killed_mid_send_loses_nothing_and_repeats_its_key(
    db_url: str, engine: Engine
) -> None:
    config = config_with(CHANNELS, lease_seconds=5, request_timeout_seconds=60)
    open_alert(engine, channels=["hook"])
    with webhook_server() as server:
        server.then(Answer(200, {"status": "ok"}, delay=60))  # the first request hangs
        env = {**os.environ, "TEST_HOOK_URL": f"{server.url}/hook", "PYTHONPATH": str(ROOT)}
        child = subprocess.Popen(
            [sys.executable, "-c", CHILD, db_url, json.dumps(config.model_dump(mode="json"))],
            env=env,
        )
        try:
            deadline = time.monotonic() + 60
            while not server.requests and time.monotonic() < deadline:
                time.sleep(0.05)
            assert server.requests, "the child never reached the receiver"
            os.kill(child.pid, signal.SIGKILL)
        finally:
            child.wait(timeout=30)
        assert child.returncode == -signal.SIGKILL
        [claimed] = outbox(engine)

        here = {"TEST_HOOK_URL": f"{server.url}/hook"}
        during_lease = Dispatcher(engine, config, env=here).run_once()
        after = Clock(
            datetime.now(UTC) + timedelta(seconds=300)
        )  # the lease (it covers a wave of sends) has run out
        retaken = Dispatcher(engine, config, env=here, clock=after).run_once()

    # The killed send left its row pending, claimed, with its key already written.
    assert claimed.status == "pending" and claimed.claimed_by is not None
    assert claimed.delivery_key is not None and claimed.attempts == 0
    assert during_lease.sent == 0  # a live lease is respected
    assert retaken.channel("hook").sent == 1
    [row] = outbox(engine)
    assert (row.status, row.claimed_by) == ("sent", None)
    keys = [r.headers["Idempotency-Key"] for r in server.requests]
    assert keys == [claimed.delivery_key, claimed.delivery_key]  # the receiver can drop the second
    assert server.requests[0].body == server.requests[1].body  # the same message, resent
