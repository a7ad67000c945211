"""Test helper: writes health-store rows exactly as the health-check jobs and asset checks do."""

from collections.abc import Iterable
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy.engine import Engine

from healthmon_dagster.store.tables import check_results, load_runs, metrics

T0 = datetime(2026, 3, 2, 0, 0, tzinfo=UTC)
H = timedelta(hours=1)
M = timedelta(minutes=1)
NOW = T0 + 10 * H


def result(
    ts: datetime,
    component: str,
    check: str,
    status: str,
    critical: bool = True,
    response_time_ms: float | None = 10.0,
    message: str | None = None,
) -> dict[str, Any]:
    """One ``etl.check_results`` row of a health check (source='health_check')."""
    return {
        "ts": ts,
        "source": "health_check",
        "check_name": check,
        "target": component,
        "status": status,
        "severity": {"critical": "ERROR", "warning": "WARN"}.get(status),
        "critical": critical,
        "response_time_ms": response_time_ms,
        "message": message,
        "details": {},
    }


def series(
    component: str,
    check: str,
    start: datetime,
    end: datetime,
    every: timedelta,
    status_at: Any,
    critical: bool = True,
    response_time_ms: float = 10.0,
) -> list[dict[str, Any]]:
    """A result every ``every`` in ``[start, end)``; ``status_at(ts)`` gives each status."""
    rows, ts = [], start
    while ts < end:
        rows.append(result(ts, component, check, status_at(ts), critical, response_time_ms))
        ts += every
    return rows


def insert_results(engine: Engine, rows: Iterable[dict[str, Any]]) -> None:
    rows = list(rows)
    with engine.begin() as conn:
        for i in range(0, len(rows), 5000):
            conn.execute(check_results.insert(), rows[i : i + 5000])


def insert_load_run(engine: Engine, layer: str, rows_out: int, finished_at: datetime) -> None:
    with engine.begin() as conn:
        conn.execute(
            load_runs.insert(),
            [
                {
                    "layer": layer,
                    "status": "success",
                    "rows_in": rows_out,
                    "rows_out": rows_out,
                    "started_at": finished_at - timedelta(seconds=5),
                    "finished_at": finished_at,
                    "duration_ms": 5000.0,
                }
            ],
        )


def insert_metrics(
    engine: Engine,
    component: str,
    metric_name: str,
    points: Iterable[tuple[datetime, float]],
    unit: str = "",
    tags: dict[str, str] | None = None,
) -> None:
    with engine.begin() as conn:
        conn.execute(
            metrics.insert(),
            [
                {
                    "ts": ts,
                    "component": component,
                    "metric_name": metric_name,
                    "value": v,
                    "unit": unit,
                    "tags": tags or {},
                }
                for ts, v in points
            ],
        )


def database_timeline() -> list[dict[str, Any]]:
    """db_ping every 10 min from T0-1h: critical 2:00-3:00, 6:00-6:30, and from 9:00 on."""

    def db_status(ts: datetime) -> str:
        t = ts - T0
        down = (2 * H <= t < 3 * H) or (6 * H <= t < 6.5 * H) or t >= 9 * H
        return "critical" if down else "healthy"

    rows = series("database", "db_ping", T0 - H, NOW, 10 * M, db_status)
    # A non-critical check failing all the time does not count as downtime.
    rows += series("database", "db_size", T0 - H, NOW, 10 * M, lambda ts: "critical", False)
    return rows
