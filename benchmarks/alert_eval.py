"""Benchmark: evaluating many metric alert rules over a large metric history.

    python benchmarks/alert_eval.py                         # Postgres and SQLite, 10,000 rules, 1M points
    python benchmarks/alert_eval.py --rules 1000 --points 100000 --database sqlite

``etl.metrics`` is filled with ``--points`` samples over the last 24 hours, spread over 10
components and ``--rules / 10`` metric names each; ``--rules`` metric rules (one per component and
metric) use three window sizes (5, 15 and 60 minutes) and thresholds chosen so that about 1% fire.
Postgres: a scratch database (``HEALTHMON_BENCH_POSTGRES_URL`` admin connection) created and
dropped; SQLite: a temporary file.

Reported (best of ``--repeat``):
- ``signals``: the metric rules' SQL alone (``alerting.signals.metric_signals``): one grouped query
  per window size, not one per rule. Target: under 1 s for 10,000 rules over 1,000,000 points.
- ``first evaluate``: ``alerting.engine.evaluate`` when the ~1% firing alerts are opened (writes
  alerts, events and outbox rows).
- ``steady evaluate``: the same evaluation again (the firing alerts are refreshed, nothing new).
"""

import argparse
import os
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path

import sqlalchemy as sa

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from healthmon_dagster.alerting.engine import evaluate  # noqa: E402
from healthmon_dagster.alerting.signals import effective_rules, metric_signals  # noqa: E402
from healthmon_dagster.config.models import (  # noqa: E402
    AlertCondition,
    AlertingConfiguration,
    AlertRule,
    HealthConfiguration,
)
from healthmon_dagster.enums import Aggregation, HealthComponent  # noqa: E402
from healthmon_dagster.store.db import create_db_engine  # noqa: E402
from healthmon_dagster.store.migrate import upgrade  # noqa: E402
from healthmon_dagster.store.tables import alerts, notifications  # noqa: E402

ADMIN_URL = os.environ.get(
    "HEALTHMON_BENCH_POSTGRES_URL", "postgresql+psycopg2://postgres@127.0.0.1:5432/postgres"
)
COMPONENTS = [c.value for c in HealthComponent]
WINDOWS = (5, 15, 60)
NOW = datetime(2026, 12, 7, 12, 0, tzinfo=UTC)


@contextmanager
def database(kind: str) -> Iterator[sa.Engine]:
    if kind == "sqlite":
        with tempfile.TemporaryDirectory() as tmp:
            engine = create_db_engine(f"sqlite:///{tmp}/bench.db")
            upgrade(engine)
            try:
                yield engine
            finally:
                engine.dispose()
        return
    admin = sa.create_engine(ADMIN_URL, isolation_level="AUTOCOMMIT")
    name = f"healthmon_alerts_{uuid.uuid4().hex[:8]}"
    with admin.connect() as conn:
        conn.execute(sa.text(f'CREATE DATABASE "{name}"'))
    url = sa.engine.make_url(ADMIN_URL).set(database=name).render_as_string(hide_password=False)
    engine = create_db_engine(url)
    try:
        upgrade(engine)
        yield engine
    finally:
        engine.dispose()
        with admin.connect() as conn:
            conn.execute(sa.text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()


def fill(engine: sa.Engine, points: int, names: int) -> None:
    """``points`` samples, by SQL: sample i belongs to component i % len(COMPONENTS) and metric
    (i // len(COMPONENTS)) % names, at a time spread evenly over the last 24 h; its value is
    i % 1000 / 10 (0..99.9)."""
    n = len(COMPONENTS)
    component = "CASE i % {n} {whens} END".format(
        n=n, whens=" ".join(f"WHEN {k} THEN '{c}'" for k, c in enumerate(COMPONENTS))
    )
    if engine.dialect.name == "postgresql":
        sql = f"""
            INSERT INTO etl.metrics (ts, component, metric_name, value, unit, tags)
            SELECT timestamptz '{NOW.isoformat()}' - (i::bigint * 86400 / {points}) * interval '1 second',
                   {component}, 'm' || ((i / {n}) % {names}), (i % 1000) / 10.0, '', '{{}}'::json
            FROM generate_series(0, {points - 1}) AS i"""
    else:
        sql = f"""
            WITH RECURSIVE g(i) AS (SELECT 0 UNION ALL SELECT i + 1 FROM g WHERE i < {points - 1})
            INSERT INTO etl.metrics (ts, component, metric_name, value, unit, tags)
            SELECT strftime('%Y-%m-%d %H:%M:%S.000000',
                            datetime('{NOW:%Y-%m-%d %H:%M:%S}', '-' || (i * 86400 / {points})
                                     || ' seconds')),
                   {component}, 'm' || ((i / {n}) % {names}), (i % 1000) / 10.0, '', '{{}}'
            FROM g"""
    with engine.begin() as conn:
        conn.execute(sa.text(sql))
    with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
        conn.execute(
            sa.text(
                "VACUUM ANALYZE etl.metrics" if engine.dialect.name == "postgresql" else "ANALYZE"
            )
        )


def config(rules: int, names: int) -> HealthConfiguration:
    own = []
    for r in range(rules):
        component, name = COMPONENTS[r % len(COMPONENTS)], f"m{(r // len(COMPONENTS)) % names}"
        # max over the window is ~99.9 for every rule; 1 rule in 100 fires (threshold 50).
        threshold = 50.0 if r % 100 == 0 else 1000.0
        own.append(
            AlertRule(
                rule_id=f"rule_{r}",
                component=HealthComponent(component),
                condition=AlertCondition(
                    metric_name=name,
                    threshold=threshold,
                    aggregation=Aggregation.MAX,
                    window_minutes=WINDOWS[r % len(WINDOWS)],
                ),
                channels=["log"],
                cooldown_period_minutes=0,
            )
        )
    return HealthConfiguration(alert_rules=own, alerting=AlertingConfiguration(builtin_rules=False))


def best(fn: object, repeat: int) -> float:
    times = []
    for _ in range(repeat):
        t = time.perf_counter()
        fn()  # type: ignore[operator]
        times.append(time.perf_counter() - t)
    return min(times)


def run(kind: str, args: argparse.Namespace) -> None:
    names = max(1, -(-args.rules // len(COMPONENTS)))
    with database(kind) as engine:
        t = time.perf_counter()
        fill(engine, args.points, names)
        fill_s = time.perf_counter() - t
        cfg = config(args.rules, names)
        rules = [r for r in effective_rules(cfg) if r.condition is not None]

        def signals() -> None:
            with engine.connect() as conn:
                found = metric_signals(conn, rules, NOW)
            assert len(found) == args.rules

        signals_s = best(signals, args.repeat)
        t = time.perf_counter()
        first = evaluate(engine, cfg, NOW)
        first_s = time.perf_counter() - t
        steady_s = best(lambda: evaluate(engine, cfg, NOW + timedelta(seconds=1)), args.repeat)
        with engine.connect() as conn:
            n_alerts = conn.execute(sa.select(sa.func.count()).select_from(alerts)).scalar_one()
            n_out = conn.execute(sa.select(sa.func.count()).select_from(notifications)).scalar_one()
    print(
        f"{kind:<9} rules={args.rules:>6} points={args.points:>9}  fill {fill_s:6.1f} s  "
        f"signals {signals_s * 1000:7.1f} ms  first evaluate {first_s * 1000:7.1f} ms "
        f"({len(first.fired)} fired, {n_alerts} alerts, {n_out} outbox rows)  "
        f"steady evaluate {steady_s * 1000:7.1f} ms"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rules", type=int, default=10_000)
    parser.add_argument("--points", type=int, default=1_000_000)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--database", choices=["postgres", "sqlite", "both"], default="both")
    args = parser.parse_args()
    kinds = ["postgres", "sqlite"] if args.database == "both" else [args.database]
    for kind in kinds:
        run(kind, args)


if __name__ == "__main__":
    main()
