"""Benchmark: notifications through the outbox to a local webhook receiver.

    python benchmarks/outbox_throughput.py                       # SQLite in a temporary folder
    python benchmarks/outbox_throughput.py --database-url postgresql+psycopg2://postgres@127.0.0.1:5432/bench
    python benchmarks/outbox_throughput.py --notifications 2000 --burst 300 --burst-rate 600

Two measurements, each on an empty outbox:

1. Throughput: ``--notifications`` alerts (10,000), each in its own group, so each is one request,
   are written to the outbox as the alert engine writes them, then one dispatcher drains it to a
   webhook receiver running in another process (the channel's rate limit raised out of the way).
   Printed: notifications per minute, and the receiver's count of requests and distinct
   Idempotency-Keys (equal: nothing sent twice).
2. Burst: ``--burst`` alerts (1,000) at once, drained by ``--dispatchers`` dispatchers (2, in
   threads) sharing the channel's limit of ``--burst-rate`` requests a minute (600, the webhook
   default). Printed: the most requests the receiver got in any 60-second window and in any
   second (the limits are the rate and ceil(rate / 60)), and that every notification arrived:
   the storm is queued, not dropped. It takes about ``burst / rate`` minutes.
"""

import argparse
import math
import multiprocessing
import sys
import tempfile
import threading
import time
from bisect import bisect_left
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Engine

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from healthmon_dagster.config.models import MAX_RATE_PER_MINUTE, HealthConfiguration  # noqa: E402
from healthmon_dagster.notify.dispatch import Dispatcher  # noqa: E402
from healthmon_dagster.store.db import get_engine  # noqa: E402
from healthmon_dagster.store.tables import alert_events, alerts, notifications  # noqa: E402

CHANNEL = "hook"


def receiver(port: int, log_path: str, ready: Any) -> None:
    """A webhook receiver (its own process): answers 200 and logs each request's arrival time
    and Idempotency-Key."""
    log = open(log_path, "a", buffering=1)  # noqa: SIM115 - open for the process's lifetime
    lock = threading.Lock()

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def do_POST(self) -> None:  # noqa: N802
            self.rfile.read(int(self.headers.get("Content-Length") or 0))
            with lock:
                log.write(f"{time.time():.6f} {self.headers.get('Idempotency-Key')}\n")
            self.send_response(200)
            self.send_header("Content-Length", "2")
            self.end_headers()
            self.wfile.write(b"{}")

        def log_message(self, format: str, *args: Any) -> None:
            pass

    ThreadingHTTPServer.request_queue_size = 1024  # the default backlog of 5 drops connections
    server = ThreadingHTTPServer(("127.0.0.1", port), Handler)
    server.daemon_threads = True
    ready.set()
    server.serve_forever()


def received(log_path: Path) -> list[tuple[float, str]]:
    out = []
    for line in log_path.read_text().splitlines():
        ts, key = line.split()
        out.append((float(ts), key))
    return out


def fill_outbox(engine: Engine, n: int, first_id: int) -> None:
    """``n`` firing alerts, their events and one outbox row each, in bulk."""
    now = datetime.now(UTC)
    ids = range(first_id, first_id + n)
    alert_rows = [
        {
            "alert_id": i,
            "fingerprint": f"{i:064x}",
            "rule_id": "bench",
            "state": "firing",
            "status": "active",
            "severity": "warning",
            "component": "staging_transformer",
            "labels": {"rule_id": "bench", "asset": f"bench/{i}", "severity": "warning"},
            "title": f"Benchmark alert {i}",
            "description": "rejection rate 0.0612 above 0.05",
            "details": {"failing_rows": 61, "total_rows": 1000, "columns": ["GENDER"]},
            "value": 0.0612,
            "group_key": f"{{}}:{{asset=bench/{i}}}",
            "started_at": now,
            "fired_at": now,
            "last_active_at": now,
            "last_evaluated_at": now,
        }
        for i in ids
    ]
    event_rows = [
        {"event_id": i, "alert_id": i, "at": now, "kind": "firing", "actor": "bench", "details": {}}
        for i in ids
    ]
    outbox_rows = [
        {
            "event_id": i,
            "alert_id": i,
            "channel": CHANNEL,
            "kind": "firing",
            "group_key": f"{{}}:{{asset=bench/{i}}}",
            "status": "pending",
            "not_before": now,
            "created_at": now,
        }
        for i in ids
    ]
    with engine.begin() as conn:
        for table, rows in ((alerts, alert_rows), (alert_events, event_rows)):
            for start in range(0, n, 1000):
                conn.execute(table.insert(), rows[start : start + 1000])
        for start in range(0, n, 1000):
            conn.execute(notifications.insert(), outbox_rows[start : start + 1000])


def config(url_env: str, rate: int) -> HealthConfiguration:
    return HealthConfiguration.model_validate(
        {
            "channels": {CHANNEL: {"type": "webhook", "configuration": {"url_env": url_env}}},
            "alerting": {
                "grouping": {"group_wait_seconds": 0, "group_interval_seconds": 1},
                "dispatch": {"rate_per_minute": {"webhook": rate}, "request_timeout_seconds": 10},
            },
        }
    )


def pending(engine: Engine) -> int:
    with engine.connect() as conn:
        return int(
            conn.execute(
                sa.select(sa.func.count())
                .select_from(notifications)
                .where(notifications.c.status == "pending")
            ).scalar_one()
        )


def max_in_window(times: list[float], window: float) -> int:
    times = sorted(times)
    return max((i - bisect_left(times, t - window) + 1 for i, t in enumerate(times)), default=0)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--database-url", help="default: SQLite in a temporary folder")
    parser.add_argument("--notifications", type=int, default=10_000)
    parser.add_argument("--burst", type=int, default=1_000)
    parser.add_argument("--burst-rate", type=int, default=600)
    parser.add_argument("--dispatchers", type=int, default=2)
    args = parser.parse_args()

    folder = Path(tempfile.mkdtemp(prefix="outbox-bench-"))
    url = args.database_url or f"sqlite:///{folder / 'healthmon.db'}"
    engine = get_engine(url)
    with engine.begin() as conn:  # an empty outbox
        for table in (notifications, alert_events, alerts):
            conn.execute(table.delete())

    log_path = folder / "received.log"
    port = _free_port()
    ready = multiprocessing.Event()
    proc = multiprocessing.Process(target=receiver, args=(port, str(log_path), ready), daemon=True)
    proc.start()
    ready.wait(10)
    env = {"BENCH_HOOK_URL": f"http://127.0.0.1:{port}/alerts"}
    print(f"database: {engine.url.render_as_string(hide_password=True)} ({engine.dialect.name})")
    try:
        # 1. Throughput.
        t = time.perf_counter()
        fill_outbox(engine, args.notifications, 1)
        fill_s = time.perf_counter() - t
        # The highest rate a channel may have (1,000 a second): out of the way of 10,000 a minute.
        dispatcher = Dispatcher(engine, config("BENCH_HOOK_URL", MAX_RATE_PER_MINUTE), env=env)
        t = time.perf_counter()
        report = dispatcher.drain(max_seconds=3600)
        took = time.perf_counter() - t
        got = received(log_path)
        keys = {k for _, k in got}
        print(
            f"throughput: {report.sent} notifications sent in {took:.1f} s = "
            f"{report.sent / took * 60:,.0f} per minute (outbox written in {fill_s:.1f} s); "
            f"receiver: {len(got)} requests, {len(keys)} distinct Idempotency-Keys; "
            f"failed {report.failed}, still pending {pending(engine)}"
        )

        # 2. A burst under the channel's rate limit, two dispatchers sharing it.
        log_path.write_text("")
        fill_outbox(engine, args.burst, args.notifications + 1)
        cfg = config("BENCH_HOOK_URL", args.burst_rate)
        t = time.perf_counter()
        threads = [
            threading.Thread(target=Dispatcher(engine, cfg, env=env).drain, args=(3600,))
            for _ in range(args.dispatchers)
        ]
        for th in threads:
            th.start()
        for th in threads:
            th.join()
        took = time.perf_counter() - t
        times = [ts for ts, _ in received(log_path)]
        per_minute, per_second = max_in_window(times, 60.0), max_in_window(times, 1.0)
        print(
            f"burst: {args.burst} alerts, limit {args.burst_rate}/min "
            f"({math.ceil(args.burst_rate / 60)}/s), {args.dispatchers} dispatchers: "
            f"{len(times)} delivered in {took:.1f} s; observed max {per_minute} in any 60 s, "
            f"{per_second} in any 1 s; still pending {pending(engine)}"
        )
    finally:
        proc.terminate()
        proc.join(5)


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


if __name__ == "__main__":
    main()
