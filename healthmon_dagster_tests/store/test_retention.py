"""Retention: expired health-store rows are deleted, recent ones and the load audit are kept; the
load runs are pruned in the warehouse when the health store is a database of its own."""

from datetime import timedelta
from pathlib import Path

import dagster as dg
import pytest
import sqlalchemy as sa
from sqlalchemy.engine import Engine

from healthmon_dagster.config.models import RetentionConfiguration
from healthmon_dagster.definitions import build_defs
from healthmon_dagster.enums import IncidentSource
from healthmon_dagster.incidents.lifecycle import link_incidents, resolve
from healthmon_dagster.incidents.records import Actor, Failure, open_or_absorb
from healthmon_dagster.settings import get_settings
from healthmon_dagster.store.db import get_engine
from healthmon_dagster.store.metrics import MetricPoint, utcnow, write_metrics
from healthmon_dagster.store.retention import prune
from healthmon_dagster.store.tables import (
    check_results,
    incident_events,
    incidents,
    load_runs,
    metrics,
    related_incidents,
)


def _seed(engine: Engine) -> None:
    now = utcnow()
    write_metrics(
        engine,
        [MetricPoint("database", "q", 1.0, ts=now - timedelta(days=d)) for d in (1, 10, 100)],
    )
    with engine.begin() as conn:
        conn.execute(
            check_results.insert(),
            [
                {
                    "ts": now - timedelta(days=d),
                    "source": "health_check",
                    "check_name": "c",
                    "target": "database",
                    "status": "healthy",
                    "details": {},
                }
                for d in (1, 100)
            ],
        )
        conn.execute(
            load_runs.insert(),
            [
                {
                    "layer": "raw",
                    "status": "success",
                    "started_at": now - timedelta(days=d),
                    "finished_at": now - timedelta(days=d),
                    "duration_ms": 1.0,
                }
                for d in (1, 400)
            ],
        )


def _count(engine: Engine, table: sa.Table) -> int:
    with engine.connect() as conn:
        return conn.execute(sa.select(sa.func.count()).select_from(table)).scalar_one()


def test_prune_deletes_only_rows_older_than_their_retention(engine: Engine) -> None:
    _seed(engine)
    deleted = prune(engine, RetentionConfiguration(metrics_days=30, check_results_days=30))
    assert deleted == {
        "etl.metrics": 1,
        "etl.check_results": 1,
        "etl.load_runs": 1,
        "etl.incidents": 0,
    }
    assert (_count(engine, metrics), _count(engine, check_results), _count(engine, load_runs)) == (
        2,
        1,
        1,
    )
    assert prune(engine, RetentionConfiguration(metrics_days=5))["etl.metrics"] == 1


def test_incidents_resolved_long_ago_go_with_their_timeline_and_links(engine: Engine) -> None:
    now = utcnow()
    actor = Actor("sensor:test", IncidentSource.SENSOR)
    ids = []
    for key, days_ago in (("old", 800), ("recent", 10), ("open", 900)):
        at = now - timedelta(days=days_ago)
        f = Failure(f"{key} failed", "raw_loader", at, asset_keys=("raw/patients",))
        ids.append(open_or_absorb(engine, f"asset:{key}", f, actor, at).incident_id)
    old, recent, still_open = ids
    link_incidents(engine, old, recent, 0.7, "same asset", actor, now - timedelta(days=800))
    for iid, days_ago in ((old, 799), (recent, 9)):
        resolve(engine, iid, "fixed", actor, now=now - timedelta(days=days_ago))
    deleted = prune(engine, RetentionConfiguration(incidents_days=730))
    assert deleted["etl.incidents"] == 1
    with engine.connect() as conn:
        left = conn.execute(sa.select(incidents.c.incident_id).order_by("incident_id")).scalars()
        assert list(left) == sorted([recent, still_open])
        events = conn.execute(sa.select(incident_events.c.incident_id).distinct()).scalars()
        assert sorted(events) == sorted([recent, still_open])
        assert _count(engine, related_incidents) == 0


def test_retention_job_runs_through_dagster(engine: Engine, healthmon_env: Path) -> None:
    _seed(engine)
    with dg.instance_for_test() as instance:
        result = build_defs().resolve_job_def("retention_job").execute_in_process(instance=instance)
    assert result.success
    # healthmon.yaml keeps metrics 90 days: the 100-day-old point is gone, the others stay.
    assert _count(engine, metrics) == 2


def test_the_load_runs_are_pruned_in_the_warehouse_when_the_store_is_apart(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The embedded default: no database variable, the health store beside the warehouse.
    monkeypatch.setenv("HEALTHMON_HOME", str(tmp_path / "home"))
    monkeypatch.delenv("HEALTHMON_DATABASE_URL", raising=False)
    monkeypatch.delenv("HEALTHMON_HEALTH_DATABASE_URL", raising=False)
    monkeypatch.delenv("HEALTHMON_CONFIG", raising=False)
    settings = get_settings()
    warehouse, store = get_engine(settings.database_url), get_engine(settings.health_database_url)
    _seed(warehouse)  # its metrics and check results stand for rows no one writes there
    _seed(store)

    with dg.instance_for_test() as instance:
        result = build_defs().resolve_job_def("retention_job").execute_in_process(instance=instance)

    assert result.success
    # healthmon.yaml: metrics and check results 90 days (store), load runs 365 days (warehouse).
    assert (_count(store, metrics), _count(store, check_results)) == (2, 1)
    assert _count(warehouse, load_runs) == 1
    assert (_count(warehouse, metrics), _count(warehouse, check_results)) == (3, 2)
