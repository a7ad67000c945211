"""Benchmark: the incident store under contention, and its queries over a large history.

    python benchmarks/incident_store.py                       # Postgres and SQLite
    python benchmarks/incident_store.py --database sqlite --history 20000 --processes 4

Postgres: a scratch database (``HEALTHMON_BENCH_POSTGRES_URL`` admin connection) created and
dropped; SQLite: a temporary file.

Reported:
- ``open``: ``open_or_absorb`` of a new root key, sequentially (ms per call, median and p95): the
  write that stands between a failure and its incident row (part of the time to detect).
- ``absorb``: ``open_or_absorb`` into one open incident, sequentially (ms per call).
- ``race``: ``--processes`` processes each reporting ``--failures`` failures of one root key at
  once: wall time, ms per call (median, p95), and the check that one incident holds them all.
- ``reliability``: ``reliability_by_component`` over a 30-day window of ``--history`` incidents.
- ``correlate`` and ``report``: one incident among ``--history`` (best of 3).
"""

import argparse
import multiprocessing
import os
import statistics
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import sqlalchemy as sa

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from healthmon_dagster.enums import HealthComponent, IncidentSource  # noqa: E402
from healthmon_dagster.incidents.correlation import correlate  # noqa: E402
from healthmon_dagster.incidents.records import Actor, Failure, open_or_absorb  # noqa: E402
from healthmon_dagster.incidents.report import (  # noqa: E402
    incident_report,
    reliability_by_component,
)
from healthmon_dagster.store.db import create_db_engine  # noqa: E402
from healthmon_dagster.store.migrate import upgrade  # noqa: E402
from healthmon_dagster.store.tables import incidents  # noqa: E402

ADMIN_URL = os.environ.get(
    "HEALTHMON_BENCH_POSTGRES_URL", "postgresql+psycopg2://postgres@127.0.0.1:5432/postgres"
)
NOW = datetime(2026, 12, 7, 12, 0, tzinfo=UTC)
ACTOR = Actor("sensor:bench", IncidentSource.SENSOR)
COMPONENTS = [c.value for c in HealthComponent]
ASSETS = ["raw/patients", "stg/patients", "core/dim_patient"]


@contextmanager
def database(kind: str) -> Iterator[str]:
    if kind == "sqlite":
        with tempfile.TemporaryDirectory() as tmp:
            url = f"sqlite:///{tmp}/bench.db"
            engine = create_db_engine(url)
            upgrade(engine)
            engine.dispose()
            yield url
        return
    admin = sa.create_engine(ADMIN_URL, isolation_level="AUTOCOMMIT")
    name = f"healthmon_incidents_{uuid.uuid4().hex[:8]}"
    with admin.connect() as conn:
        conn.execute(sa.text(f'CREATE DATABASE "{name}"'))
    url = sa.engine.make_url(ADMIN_URL).set(database=name).render_as_string(hide_password=False)
    try:
        engine = create_db_engine(url)
        upgrade(engine)
        engine.dispose()
        yield url
    finally:
        with admin.connect() as conn:
            conn.execute(sa.text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()


def failure(at: datetime, n: int) -> Failure:
    return Failure(
        title=f"{ASSETS[n % 3]} failed",
        component=COMPONENTS[n % len(COMPONENTS)],
        occurred_at=at,
        asset_keys=(ASSETS[n % 3],),
        resources=("database:warehouse",),
        error_class="connection_refused",
        details={"n": n},
    )


def timed_calls(engine: sa.Engine, keys: list[str]) -> list[float]:
    out = []
    for n, key in enumerate(keys):
        start = time.perf_counter()
        open_or_absorb(engine, key, failure(NOW, n), ACTOR, NOW)
        out.append((time.perf_counter() - start) * 1000)
    return out


def summary(ms: list[float]) -> str:
    ordered = sorted(ms)
    p95 = ordered[min(len(ordered) - 1, int(len(ordered) * 0.95))]
    return f"median {statistics.median(ordered):.2f} ms, p95 {p95:.2f} ms ({len(ms)} calls)"


def racer(url: str, barrier: Any, failures: int, queue: Any) -> None:
    engine = create_db_engine(url)
    barrier.wait()
    queue.put(timed_calls(engine, ["resource:s3:landing"] * failures))
    engine.dispose()


def race(url: str, processes: int, failures: int) -> tuple[float, list[float]]:
    ctx = multiprocessing.get_context("spawn")
    barrier, queue = ctx.Barrier(processes + 1), ctx.Queue()
    procs = [
        ctx.Process(target=racer, args=(url, barrier, failures, queue)) for _ in range(processes)
    ]
    for p in procs:
        p.start()
    barrier.wait()
    start = time.perf_counter()
    ms = [m for _ in procs for m in queue.get(timeout=600)]
    wall = time.perf_counter() - start
    for p in procs:
        p.join()
    return wall, ms


def fill_history(engine: sa.Engine, n: int) -> None:
    """``n`` resolved incidents over the last 30 days, every component, durations 1-120 min."""
    rows = []
    for i in range(n):
        start = NOW - timedelta(days=30) + timedelta(seconds=i * 30 * 86400 / n)
        end = start + timedelta(minutes=1 + i % 120)
        rows.append(
            {
                "root_key": f"hist:{i}",
                "title": f"{ASSETS[i % 3]} failed",
                "severity": "medium",
                "status": "resolved",
                "component": COMPONENTS[i % len(COMPONENTS)],
                "asset_keys": [ASSETS[i % 3]],
                "resources": ["database:warehouse"],
                "impact": "minor",
                "tags": [],
                "metadata": {},
                "started_at": start,
                "created_at": start,
                "last_failure_at": start,
                "ended_at": end,
                "duration_minutes": (end - start).total_seconds() / 60,
                "updated_at": end,
            }
        )
    with engine.begin() as conn:
        for chunk in range(0, n, 5000):
            conn.execute(incidents.insert(), rows[chunk : chunk + 5000])


def best(fn: Any, repeat: int = 3) -> float:
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return min(times) * 1000


def run(kind: str, args: argparse.Namespace) -> None:
    with database(kind) as url:
        engine = create_db_engine(url)
        print(f"== {kind}")
        print(f"open     : {summary(timed_calls(engine, [f'new:{i}' for i in range(200)]))}")
        print(f"absorb   : {summary(timed_calls(engine, ['one:key'] * 200))}")
        wall, ms = race(url, args.processes, args.failures)
        with engine.connect() as conn:
            raced = conn.execute(
                sa.select(incidents.c.incident_id, incidents.c.failure_count).where(
                    incidents.c.root_key == "resource:s3:landing"
                )
            ).all()
        total = args.processes * args.failures
        ok = len(raced) == 1 and raced[0].failure_count == total
        print(
            f"race     : {args.processes} processes x {args.failures} failures in {wall:.2f} s; "
            f"{summary(ms)}; one incident holding all {total}: {ok}"
        )
        fill_history(engine, args.history)
        end = NOW + timedelta(hours=1)
        ms_rel = best(lambda: reliability_by_component(engine, end - timedelta(days=30), end))
        print(f"reliab.  : {ms_rel:.1f} ms over {args.history} incidents, 30-day window")
        target = int(raced[0].incident_id)
        print(f"correlate: {best(lambda: correlate(engine, target, now=NOW)):.1f} ms")
        print(f"report   : {best(lambda: incident_report(engine, target)):.1f} ms")
        engine.dispose()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--processes", type=int, default=4)
    parser.add_argument("--failures", type=int, default=50)
    parser.add_argument("--history", type=int, default=50_000)
    parser.add_argument("--database", choices=["postgres", "sqlite", "both"], default="both")
    args = parser.parse_args()
    print(f"load average: {os.getloadavg()}")
    for kind in ["postgres", "sqlite"] if args.database == "both" else [args.database]:
        run(kind, args)


if __name__ == "__main__":
    main()
