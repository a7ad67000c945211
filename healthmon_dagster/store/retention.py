"""Retention: delete health-store rows older than ``retention:`` in healthmon.yaml says.

The health jobs write check results and metrics every minute; without pruning the store grows
without bound. The load-run audit (``etl.load_runs``) is written by the pipeline in the warehouse,
which may be another database than the health store. Warehouse audit (``etl.files``) is never
pruned: it is what makes loads idempotent.
"""

from datetime import datetime, timedelta

import sqlalchemy as sa
from sqlalchemy.engine import Engine

from healthmon_dagster.config.models import RetentionConfiguration
from healthmon_dagster.store.connection import write_transaction
from healthmon_dagster.store.metrics import utcnow
from healthmon_dagster.store.tables import check_results, load_runs, metrics


def prune(
    engine: Engine,
    retention: RetentionConfiguration,
    now: datetime | None = None,
    warehouse: Engine | None = None,
) -> dict[str, int]:
    """Delete expired rows of the health store (``engine``) and the load runs of the warehouse
    (default: ``engine``, one database); returns rows deleted per table. Alerts and incidents are
    pruned by ``alerts_days``/``incidents_days`` once those tables exist."""
    now = now or utcnow()
    runs = warehouse or engine
    plan = [
        (engine, "etl.metrics", metrics, metrics.c.ts, retention.metrics_days),
        (
            engine,
            "etl.check_results",
            check_results,
            check_results.c.ts,
            retention.check_results_days,
        ),
        (runs, "etl.load_runs", load_runs, load_runs.c.started_at, retention.load_runs_days),
    ]
    deleted: dict[str, int] = {}
    for where, name, table, column, days in plan:
        with write_transaction(where) as conn:
            deleted[name] = conn.execute(
                sa.delete(table).where(column < now - timedelta(days=days))
            ).rowcount
    return deleted
