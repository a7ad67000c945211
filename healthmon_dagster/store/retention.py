"""Retention: delete health-store rows older than ``retention:`` in healthmon.yaml says.

The health jobs write check results and metrics every minute; without pruning the store grows
without bound. The load-run audit (``etl.load_runs``) is written by the pipeline in the warehouse,
which may be another database than the health store. Warehouse audit (``etl.files``) is never
pruned: it is what makes loads idempotent. An incident is deleted (with its timeline and links)
``incidents_days`` after it was resolved; open incidents are never deleted.
"""

from datetime import datetime, timedelta

import sqlalchemy as sa
from sqlalchemy.engine import Engine

from healthmon_dagster.config.models import RetentionConfiguration
from healthmon_dagster.store.connection import write_transaction
from healthmon_dagster.store.metrics import utcnow
from healthmon_dagster.store.tables import (
    check_results,
    incident_alerts,
    incident_events,
    incidents,
    load_runs,
    metrics,
    related_incidents,
)


def prune(
    engine: Engine,
    retention: RetentionConfiguration,
    now: datetime | None = None,
    warehouse: Engine | None = None,
) -> dict[str, int]:
    """Delete expired rows of the health store (``engine``) and the load runs of the warehouse
    (default: ``engine``, one database); returns rows deleted per table. Alerts are pruned by
    ``alerts_days`` once the alert engine does so; incidents by ``incidents_days``."""
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
    with write_transaction(engine) as conn:
        deleted["etl.incidents"] = _prune_incidents(
            conn, now - timedelta(days=retention.incidents_days)
        )
    return deleted


def _prune_incidents(conn: sa.Connection, cutoff: datetime) -> int:
    """Delete incidents resolved before ``cutoff`` with their timeline and links (explicitly:
    SQLite does not enforce the cascading foreign keys)."""
    c = incidents.c
    expired = sa.select(c.incident_id).where(
        c.status.in_(("resolved", "closed")), c.ended_at < cutoff
    )
    conn.execute(sa.delete(incident_events).where(incident_events.c.incident_id.in_(expired)))
    conn.execute(sa.delete(incident_alerts).where(incident_alerts.c.incident_id.in_(expired)))
    r = related_incidents.c
    conn.execute(
        sa.delete(related_incidents).where(
            sa.or_(r.incident_id.in_(expired), r.related_id.in_(expired))
        )
    )
    return int(conn.execute(sa.delete(incidents).where(c.incident_id.in_(expired))).rowcount)
