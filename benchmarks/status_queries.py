"""Time the status queries over 100,000 health-check results on Postgres.

Targets: the dashboard/status within 2 s, historical queries within 5 s.

    python benchmarks/status_queries.py [--url postgresql+psycopg2://postgres@127.0.0.1:5432/postgres]

Creates a scratch database, seeds 9 components x 4 checks (one critical per component flapping now and
then) = 100,000 rows over 7 days, times each query (best and median of 5) and drops the database.
"""

import argparse
import statistics
import time
import uuid
from collections.abc import Callable
from datetime import UTC, datetime, timedelta

import numpy as np
import sqlalchemy as sa
from sqlalchemy.engine import make_url

from healthmon_dagster.enums import HealthComponent, HealthStatus, RecordSource
from healthmon_dagster.health.history import get_health_history
from healthmon_dagster.health.record import severity_of
from healthmon_dagster.health.status import get_system_status
from healthmon_dagster.health.uptime import get_uptime, get_uptime_by_component
from healthmon_dagster.store.db import analyze, dispose_engines, get_engine
from healthmon_dagster.store.tables import check_results

ROWS = 100_000


def seed(engine: sa.Engine, now: datetime) -> None:
    rng = np.random.default_rng(1)
    checks = [(c.value, f"{c.value}_check_{i}", i == 0) for c in HealthComponent for i in range(4)]
    per_check = ROWS // len(checks)
    step = timedelta(days=7) / per_check
    rows = []
    for component, name, critical in checks:
        down_until = -1
        for i in range(per_check):
            if critical and i > down_until and rng.random() < 0.002:
                down_until = i + int(rng.integers(1, 30))
            status = (
                "critical" if i <= down_until else ("warning" if rng.random() < 0.01 else "healthy")
            )
            rows.append(
                {
                    "ts": now - timedelta(days=7) + i * step,
                    "source": RecordSource.HEALTH_CHECK.value,
                    "check_name": name,
                    "target": component,
                    "status": status,
                    "severity": s.value
                    if (s := severity_of(HealthStatus(status), critical))
                    else None,
                    "critical": critical,
                    "response_time_ms": float(rng.gamma(2, 10)),
                    "message": None,
                    "details": {},
                }
            )
    with engine.begin() as conn:
        for i in range(0, len(rows), 10_000):
            conn.execute(check_results.insert(), rows[i : i + 10_000])
    analyze(engine, check_results)


def timed(label: str, fn: Callable[[], object]) -> None:
    times = []
    for _ in range(5):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    print(
        f"{label:<48} best {min(times) * 1000:7.1f} ms   median {statistics.median(times) * 1000:7.1f} ms"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--url", default="postgresql+psycopg2://postgres@127.0.0.1:5432/postgres")
    args = parser.parse_args()
    admin = sa.create_engine(args.url, isolation_level="AUTOCOMMIT")
    name = f"healthmon_bench_{uuid.uuid4().hex[:8]}"
    with admin.connect() as conn:
        conn.execute(sa.text(f'CREATE DATABASE "{name}"'))
    try:
        url = make_url(args.url).set(database=name).render_as_string(hide_password=False)
        engine = get_engine(url)
        now = datetime.now(UTC).replace(microsecond=0)
        t = time.perf_counter()
        seed(engine, now)
        with engine.connect() as conn:
            n = conn.execute(sa.select(sa.func.count()).select_from(check_results)).scalar()
        print(f"seeded {n} check_results rows in {time.perf_counter() - t:.1f} s\n")
        timed("get_system_status (24h window)", lambda: get_system_status(engine, now=now))
        timed(
            "get_system_status (7d window)",
            lambda: get_system_status(engine, now=now, window=timedelta(days=7)),
        )
        timed(
            "get_uptime system, 7d (uptime/MTBF/MTTR)",
            lambda: get_uptime(engine, now - timedelta(days=7), now),
        )
        timed(
            "get_uptime_by_component, 7d",
            lambda: get_uptime_by_component(engine, now - timedelta(days=7), now),
        )
        timed(
            "get_health_history 7d, 1h buckets",
            lambda: get_health_history(
                engine, now - timedelta(days=7), now, bucket=timedelta(hours=1)
            ),
        )
        s = get_system_status(engine, now=now, window=timedelta(days=7))
        print(
            f"\n7d: overall {s.overall_health.value}, system uptime {s.uptime_percentage:.2f}%, "
            f"{s.uptime.failures} failures"
        )
    finally:
        dispose_engines()
        with admin.connect() as conn:
            conn.execute(sa.text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()


if __name__ == "__main__":
    main()
