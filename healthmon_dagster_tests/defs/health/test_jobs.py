"""Health-check and benchmark jobs through Dagster (real instance) on SQLite and Postgres:
rows in etl.check_results and etl.metrics, schedules from the configured intervals."""

from datetime import UTC, datetime, timedelta
from pathlib import Path

import dagster as dg
import sqlalchemy as sa

from healthmon_dagster.config import load_config_text
from healthmon_dagster.defs.health import definitions as build_health_definitions
from healthmon_dagster.defs.health.jobs import build_benchmark_job
from healthmon_dagster.defs.health.schedules import cron_for_interval
from healthmon_dagster.defs.resources import (
    CONFIG_RESOURCE,
    HealthmonConfigResource,
    LandingResource,
    WarehouseResource,
)
from healthmon_dagster.enums import HealthComponent
from healthmon_dagster.store.db import get_engine
from healthmon_dagster.store.tables import check_results, load_runs, metrics
from healthmon_dagster_tests.fixtures import free_port

CONFIG = """
health_checks:
  - check_id: database_connectivity
    component: database
    kind: database
    interval_seconds: 60
    critical: true
  - check_id: broken_dependency
    component: network
    kind: network
    interval_seconds: 60
    critical: true
    custom_parameters: {{endpoints: ["127.0.0.1:{closed}"]}}
  - check_id: behind_broken
    component: network
    kind: network
    interval_seconds: 60
    dependencies: [broken_dependency]
    custom_parameters: {{endpoints: ["127.0.0.1:{closed}"]}}
  - check_id: landing_folder
    component: filesystem
    check_type: capacity
    kind: landing_folder
    interval_seconds: 300
  - check_id: disabled_one
    component: network
    kind: smtp
    enabled: false
"""


def health_defs(db_url: str, landing: Path) -> dg.Definitions:
    config = load_config_text(CONFIG.format(closed=free_port()))
    return dg.Definitions.merge(
        build_health_definitions(config),
        dg.Definitions(
            resources={
                "warehouse": WarehouseResource(database_url=db_url),
                "landing": LandingResource(local_dir=str(landing)),
                # the alert fast path of the health-check jobs reads the alert rules
                CONFIG_RESOURCE: HealthmonConfigResource(),
            }
        ),
    )


def test_one_job_and_schedule_per_cadence(tmp_path: Path) -> None:
    defs = health_defs("sqlite:///unused.db", tmp_path)

    jobs = {j.name for j in defs.jobs if j.name.startswith("health_checks")}
    crons = {s.name: s.cron_schedule for s in defs.schedules}
    assert jobs == {"health_checks_every_60s_job", "health_checks_every_300s_job"}
    assert crons["health_checks_every_60s_schedule"] == "* * * * *"
    assert crons["health_checks_every_300s_schedule"] == "*/5 * * * *"
    assert (cron_for_interval(7200), cron_for_interval(86400)) == ("0 */2 * * *", "0 0 * * *")


def test_health_job_writes_results(
    db_url: str, engine: sa.Engine, tmp_path: Path, instance: dg.DagsterInstance
) -> None:
    # ``engine`` creates the warehouse: a missing SQLite file is itself reported critical.
    defs = health_defs(db_url, tmp_path)

    result = defs.resolve_job_def("health_checks_every_60s_job").execute_in_process(
        instance=instance
    )

    assert result.success
    with get_engine(db_url).connect() as conn:
        rows = {
            r.check_name: r
            for r in conn.execute(
                sa.select(check_results).where(check_results.c.source == "health_check")
            )
        }
        metric_names = set(conn.execute(sa.select(metrics.c.metric_name)).scalars())
    assert set(rows) == {"database_connectivity", "broken_dependency", "behind_broken"}
    db = rows["database_connectivity"]
    assert (db.target, db.status, db.severity, db.critical) == ("database", "healthy", None, True)
    assert db.details["check_type"] == "connectivity" and db.details["attempts"] == 1
    assert db.dagster_run_id == result.run_id
    broken = rows["broken_dependency"]
    assert (broken.status, broken.severity, broken.critical) == ("critical", "ERROR", True)
    assert "Connection refused" in broken.message
    behind = rows["behind_broken"]
    assert (behind.status, behind.severity, behind.critical) == ("unknown", "WARN", False)
    assert behind.message.startswith("dependency broken_dependency failed")
    assert {"database_connectivity.response_time_ms", "database_connectivity.query_time_ms"} <= (
        metric_names
    )
    evaluations = {
        e.check_name: e.metadata["health_status"].value
        for e in (result.get_asset_check_evaluations())
    }
    assert evaluations == {
        "database_connectivity": "healthy",
        "broken_dependency": "critical",
        "behind_broken": "unknown",
    }


def test_benchmark_job_scores_components_from_history(
    db_url: str, engine: sa.Engine, tmp_path: Path, instance: dg.DagsterInstance
) -> None:
    # ``engine`` creates the warehouse: a missing SQLite file is itself reported critical.
    defs = health_defs(db_url, tmp_path)
    for _ in range(2):
        defs.resolve_job_def("health_checks_every_60s_job").execute_in_process(instance=instance)

    result = defs.resolve_job_def("health_benchmark_job").execute_in_process(instance=instance)

    assert result.success
    network = result.output_for_node("benchmark_network")
    assert network["current_metrics"]["error_rate"] == 0.5  # 2 of 4 results critical
    assert network["score_terms"]["errors"] == 30.0
    assert network["performance_score"] == 70.0
    assert any("error rate is 50.0%" in r["message"] for r in network["recommendations"])
    with get_engine(db_url).connect() as conn:
        scores = conn.execute(
            sa.select(metrics.c.component, metrics.c.value).where(
                metrics.c.metric_name == "benchmark.performance_score"
            )
        ).all()
    assert ("network", 70.0) in [tuple(s) for s in scores]


def test_benchmark_reads_load_runs_from_the_warehouse_when_the_store_is_apart(
    tmp_path: Path, instance: dg.DagsterInstance
) -> None:
    # The embedded default: the health store is another database than the warehouse, where the
    # pipeline writes etl.load_runs.
    warehouse_url, store_url = (f"sqlite:///{tmp_path / n}" for n in ("healthmon.db", "health.db"))
    now = datetime.now(UTC)
    with get_engine(warehouse_url).begin() as conn:
        conn.execute(
            load_runs.insert(),
            [
                {
                    "layer": "raw",
                    "status": "success",
                    "rows_out": 1000,
                    "started_at": now - timedelta(minutes=m),
                    "finished_at": now - timedelta(minutes=m),
                    "duration_ms": 500.0,
                }
                for m in (5, 10)
            ],
        )
    defs = dg.Definitions(
        jobs=[build_benchmark_job([HealthComponent.RAW_LOADER])],
        resources={
            "warehouse": WarehouseResource(
                database_url=warehouse_url, health_database_url=store_url
            )
        },
    )

    result = defs.resolve_job_def("health_benchmark_job").execute_in_process(instance=instance)

    assert result.success
    raw = result.output_for_node("benchmark_raw_loader")
    assert raw["current_metrics"]["samples"] == 2
    assert raw["current_metrics"]["throughput_per_second"] == 2000.0
    with get_engine(store_url).connect() as conn:
        recorded = conn.execute(
            sa.select(metrics.c.component).where(
                metrics.c.metric_name == "benchmark.performance_score"
            )
        ).scalars()
        assert list(recorded) == ["raw_loader"]
