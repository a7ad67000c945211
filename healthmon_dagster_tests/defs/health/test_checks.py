"""Component health in Dagster: the ``health/<component>`` assets and one asset check evaluation per
health check on each run of a health-check job, read back from a real Dagster instance, with the
health store on SQLite and Postgres."""

import asyncio
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import dagster as dg
import pytest
import sqlalchemy as sa
from dagster._core.loader import LoadingContextForTest
from dagster._core.storage.asset_check_execution_record import (
    AssetCheckExecutionRecord,
    AssetCheckExecutionResolvedStatus,
)
from sqlalchemy.engine import make_url

from healthmon_dagster.config import load_config_text
from healthmon_dagster.definitions import defs as code_location
from healthmon_dagster.defs.health import definitions as build_health_definitions
from healthmon_dagster.defs.health.instance_facts import get_asset_health
from healthmon_dagster.defs.resources import (
    HealthmonConfigResource,
    LandingResource,
    WarehouseResource,
)
from healthmon_dagster.etl.landing import LocalLandingSource
from healthmon_dagster.etl.sample import generate_sample, write_to
from healthmon_dagster.store.db import get_engine
from healthmon_dagster.store.tables import check_results
from healthmon_dagster_tests.defs.fixtures import (
    evaluate_sensor,
    failure_descriptions,
    is_number,
    patient_values,
    run_job,
)
from healthmon_dagster_tests.fixtures import ADMIN_URL, free_port

DOWN_URL_ENV = "HEALTHMON_TEST_DOWN_DATABASE_URL"

CONFIG = f"""
health_checks:
  - check_id: warehouse_down
    component: database
    kind: database
    interval_seconds: 60
    critical: true
    custom_parameters: {{url_env: {DOWN_URL_ENV}}}
  - check_id: warehouse_up
    component: database
    kind: database
    interval_seconds: 60
    critical: true
    custom_parameters: {{target: warehouse}}
  - check_id: warehouse_slow
    component: database
    kind: database
    interval_seconds: 60
    custom_parameters: {{target: warehouse, query_time_warning_ms: 0}}
  - check_id: endpoint_down
    component: network
    kind: network
    interval_seconds: 60
    custom_parameters: {{endpoints: ["127.0.0.1:1"]}}
  - check_id: behind_down
    component: network
    kind: network
    interval_seconds: 60
    dependencies: [warehouse_down]
    custom_parameters: {{endpoints: ["127.0.0.1:1"]}}
  - check_id: s3_landing
    component: s3_discovery
    kind: s3
    interval_seconds: 60
    critical: true
  - check_id: landing_folder
    component: filesystem
    check_type: capacity
    kind: landing_folder
    interval_seconds: 300
  - check_id: smtp_off
    component: system_resources
    kind: smtp
    enabled: false
"""

DATABASE = dg.AssetKey(["health", "database"])
JOB = "health_checks_every_60s_job"


def health_defs(db_url: str, landing: Path, health_url: str | None = None) -> dg.Definitions:
    return dg.Definitions.merge(
        build_health_definitions(load_config_text(CONFIG)),
        dg.Definitions(
            resources={
                "warehouse": WarehouseResource(database_url=db_url, health_database_url=health_url),
                "landing": LandingResource(local_dir=str(landing)),
                "healthmon_config": HealthmonConfigResource(),  # the jobs' alert fast path
            }
        ),
    )


@pytest.fixture
def down_url(monkeypatch: pytest.MonkeyPatch) -> str:
    """A Postgres URL on a closed local port, in the environment variable ``warehouse_down`` reads."""
    url = f"postgresql+psycopg2://postgres@127.0.0.1:{free_port()}/healthmon"
    monkeypatch.setenv(DOWN_URL_ENV, url)
    monkeypatch.delenv("HEALTHMON_S3_BUCKET", raising=False)
    return url


@pytest.fixture
def dagster_instance(db_url: str) -> Iterator[dg.DagsterInstance]:
    """A Dagster instance on the warehouse's database system: SQLite storage next to a SQLite
    warehouse, Postgres storage (a database of its own, dropped after) next to a Postgres one."""
    if not db_url.startswith("postgresql"):
        with dg.instance_for_test() as instance:
            yield instance
        return
    admin = sa.create_engine(ADMIN_URL, isolation_level="AUTOCOMMIT")
    name = f"healthmon_dagster_{uuid.uuid4().hex[:10]}"
    with admin.connect() as conn:
        conn.execute(sa.text(f'CREATE DATABASE "{name}"'))
    url = make_url(ADMIN_URL).set(database=name)  # +psycopg2, as deploy/dagster.postgres.yaml says
    storage = {"postgres": {"postgres_url": url.render_as_string(hide_password=False)}}
    try:
        with dg.instance_for_test(overrides={"storage": storage}) as instance:
            assert type(instance.event_log_storage).__name__ == "PostgresEventLogStorage"
            yield instance
    finally:
        with admin.connect() as conn:
            conn.execute(sa.text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()


def evaluations(result: dg.ExecuteInProcessResult) -> dict[str, dg.AssetCheckEvaluation]:
    return {e.check_name: e for e in result.get_asset_check_evaluations()}


def plain(evaluation: dg.AssetCheckEvaluation) -> dict[str, object]:
    return {k: v.value for k, v in evaluation.metadata.items()}


def resolved(
    instance: dg.DagsterInstance, record: AssetCheckExecutionRecord
) -> AssetCheckExecutionResolvedStatus:
    """The status the UI shows for an execution record (Dagster's own resolution)."""
    return asyncio.run(record.resolve_status(LoadingContextForTest(instance)))


def test_one_asset_per_component_with_its_checks(tmp_path: Path) -> None:
    defs = health_defs("sqlite:///unused.db", tmp_path)
    graph = defs.resolve_asset_graph()

    components = {
        key: graph.get(key) for key in graph.get_all_asset_keys() if key.path[0] == "health"
    }
    assert {k.to_user_string() for k in components} == {
        "health/database",
        "health/network",
        "health/s3_discovery",
        "health/filesystem",
    }  # system_resources has only a disabled check: no asset
    for key, node in components.items():
        assert node.group_name == "health" and not node.is_materializable
        assert node.description and key.path[1] in node.description
    checks = {(k.asset_key.to_user_string(), k.name) for k in graph.asset_check_keys}
    assert checks == {
        ("health/database", "warehouse_down"),
        ("health/database", "warehouse_up"),
        ("health/database", "warehouse_slow"),
        ("health/network", "endpoint_down"),
        ("health/network", "behind_down"),
        ("health/s3_discovery", "s3_landing"),
        ("health/filesystem", "landing_folder"),
    }
    job = defs.resolve_job_def(JOB)
    assert {k.name for k in job.asset_layer.asset_graph.asset_check_keys} == {
        "warehouse_down",
        "warehouse_up",
        "warehouse_slow",
        "endpoint_down",
        "behind_down",
        "s3_landing",
    }


def test_each_health_check_is_one_evaluation_on_its_component(
    db_url: str,
    engine: sa.Engine,
    down_url: str,
    tmp_path: Path,
    instance: dg.DagsterInstance,
) -> None:
    # ``engine`` creates the warehouse: a missing SQLite file is itself reported critical.
    defs = health_defs(db_url, tmp_path)

    result = defs.resolve_job_def(JOB).execute_in_process(instance=instance)

    assert result.success
    found = evaluations(result)
    assert set(found) == {
        "warehouse_down",
        "warehouse_up",
        "warehouse_slow",
        "endpoint_down",
        "behind_down",
    }
    down = found["warehouse_down"]
    assert down.asset_key == DATABASE
    assert (down.passed, down.severity) == (False, dg.AssetCheckSeverity.ERROR)
    assert "is unavailable" in (down.description or "")
    assert "Connection refused" in (down.description or "")
    meta = plain(down)
    assert (meta["health_status"], meta["status_rank"], meta["critical"]) == ("critical", 3, True)
    assert is_number(meta["response_time_ms"]) and meta["attempts"] == 1
    up = found["warehouse_up"]
    assert (up.asset_key, up.passed, up.description) == (DATABASE, True, "ok")
    up_meta = plain(up)
    assert up_meta["health_status"] == "healthy" and up_meta["status_rank"] == 0
    assert is_number(up_meta["query_time_ms"]) and is_number(up_meta["database_size_bytes"])
    slow = found["warehouse_slow"]  # not critical, over its warning threshold
    assert (slow.passed, slow.severity) == (False, dg.AssetCheckSeverity.WARN)
    assert "above the warning threshold" in (slow.description or "")
    assert (plain(slow)["health_status"], plain(slow)["critical"]) == ("warning", False)
    endpoint = found["endpoint_down"]  # not critical: it warns at most, as in healthmon status
    assert (endpoint.passed, endpoint.severity) == (False, dg.AssetCheckSeverity.WARN)
    assert (plain(endpoint)["health_status"], plain(endpoint)["critical"]) == ("critical", False)
    behind = found["behind_down"]  # not run: its dependency failed
    assert behind.asset_key == dg.AssetKey(["health", "network"])
    assert (behind.passed, behind.severity) == (False, dg.AssetCheckSeverity.WARN)
    assert (behind.description or "").startswith("dependency warehouse_down failed")
    assert plain(behind)["health_status"] == "unknown"
    with get_engine(db_url).connect() as conn:  # the health store still gets every result
        stored = set(
            conn.execute(
                sa.select(check_results.c.check_name).where(
                    check_results.c.dagster_run_id == result.run_id
                )
            ).scalars()
        )
    assert stored == {
        "warehouse_down",
        "warehouse_up",
        "warehouse_slow",
        "endpoint_down",
        "behind_down",
        "s3_landing",
    }


def test_latest_evaluation_and_history_are_read_from_the_instance(
    db_url: str,
    engine: sa.Engine,
    down_url: str,
    tmp_path: Path,
    dagster_instance: dg.DagsterInstance,
) -> None:
    instance = dagster_instance
    defs = health_defs(db_url, tmp_path)
    runs = [defs.resolve_job_def(JOB).execute_in_process(instance=instance) for _ in range(2)]

    storage = instance.event_log_storage
    keys = [dg.AssetCheckKey(DATABASE, n) for n in ("warehouse_down", "warehouse_up")]
    latest = storage.get_latest_asset_check_execution_by_key(keys)

    down, up = latest[keys[0]], latest[keys[1]]
    assert down.run_id == up.run_id == runs[1].run_id
    assert resolved(instance, down) == AssetCheckExecutionResolvedStatus.FAILED
    assert resolved(instance, up) == AssetCheckExecutionResolvedStatus.SUCCEEDED
    assert down.event is not None and down.event.asset_check_evaluation is not None
    evaluation = down.event.asset_check_evaluation
    assert evaluation.severity == dg.AssetCheckSeverity.ERROR
    assert is_number(evaluation.metadata["response_time_ms"].value)
    history = storage.get_asset_check_execution_history(keys[0], limit=10)
    assert [h.run_id for h in history] == [runs[1].run_id, runs[0].run_id]


def test_a_skipped_check_is_not_monitored_never_passed(
    db_url: str,
    engine: sa.Engine,
    down_url: str,
    tmp_path: Path,
    dagster_instance: dg.DagsterInstance,
) -> None:
    instance = dagster_instance
    # No S3 bucket: landing is the local folder, so the S3 check has nothing to reach.
    defs = health_defs(db_url, tmp_path)

    result = defs.resolve_job_def(JOB).execute_in_process(instance=instance)

    assert "s3_landing" not in evaluations(result)
    key = dg.AssetCheckKey(dg.AssetKey(["health", "s3_discovery"]), "s3_landing")
    record = instance.event_log_storage.get_latest_asset_check_execution_by_key([key])[key]
    assert record.run_id == result.run_id
    assert resolved(instance, record) == AssetCheckExecutionResolvedStatus.SKIPPED
    logs = [e.user_message for e in instance.all_logs(result.run_id)]
    assert any(m.startswith("s3_landing: not monitored (no S3 bucket configured") for m in logs)


def test_health_store_down_still_reports_to_dagster(
    db_url: str,
    engine: sa.Engine,
    down_url: str,
    tmp_path: Path,
    instance: dg.DagsterInstance,
) -> None:
    # The warehouse is up; the health store is the closed port.
    defs = health_defs(db_url, tmp_path, health_url=down_url)

    result = defs.resolve_job_def(JOB).execute_in_process(instance=instance, raise_on_error=False)

    assert not result.success
    (failure,) = failure_descriptions(result)
    assert "The results of this run are in Dagster and the run log only." in failure
    found = evaluations(result)
    assert set(found) == {
        "warehouse_down",
        "warehouse_up",
        "warehouse_slow",
        "endpoint_down",
        "behind_down",
    }
    assert found["warehouse_up"].passed and not found["warehouse_down"].passed
    keys = [dg.AssetCheckKey(DATABASE, n) for n in ("warehouse_down", "warehouse_up")]
    latest = instance.event_log_storage.get_latest_asset_check_execution_by_key(keys)
    assert [resolved(instance, latest[k]) for k in keys] == [
        AssetCheckExecutionResolvedStatus.FAILED,
        AssetCheckExecutionResolvedStatus.SUCCEEDED,
    ]


def test_one_selected_check_runs_alone(
    db_url: str,
    engine: sa.Engine,
    down_url: str,
    tmp_path: Path,
    instance: dg.DagsterInstance,
) -> None:
    # What "Execute" on one check in the UI launches: a subset of the cadence's op.
    defs = health_defs(db_url, tmp_path)
    job = defs.resolve_job_def(JOB)
    first = job.execute_in_process(instance=instance)
    assert first.success

    only = job.get_subset(
        asset_check_selection={dg.AssetCheckKey(dg.AssetKey(["health", "network"]), "behind_down")}
    ).execute_in_process(instance=instance)

    # warehouse_down is outside the selection: judged by its latest stored result (critical).
    found = evaluations(only)
    assert set(found) == {"behind_down"}
    assert (found["behind_down"].description or "").startswith("dependency warehouse_down failed")


def test_no_patient_value_in_health_evaluations(
    healthmon_env: Path, db_url: str, instance: dg.DagsterInstance
) -> None:
    """Loads sample files through the ETL, then runs the code location's health-check jobs."""
    samples = generate_sample(100, files=2, defect="unknown_gender")
    write_to(LocalLandingSource(healthmon_env / "landing"), samples)
    values = patient_values(samples)
    loads = [run_job(instance, r.run_config) for r in evaluate_sensor(instance).run_requests or []]
    assert [r.success for r in loads] == [True, True]

    seen: list[str] = []
    reported = 0
    for job in code_location.resolve_all_job_defs():
        if not job.name.startswith("health_checks_every_"):
            continue
        result = job.execute_in_process(instance=instance, raise_on_error=False)
        for evaluation in result.get_asset_check_evaluations():
            reported += 1
            seen.append(evaluation.description or "")
            seen.extend(str(v.value) for v in evaluation.metadata.values())
        seen.extend(e.user_message for e in instance.all_logs(result.run_id))

    assert reported >= 5 and any("etl_pipeline" in s for s in seen)
    text = "\n".join(seen)
    leaked = sorted(v for v in values if v in text)
    assert not leaked, f"{len(leaked)} patient field value(s) found in health evaluations or logs"


def test_health_checks_run_only_in_health_check_jobs() -> None:
    health = {
        k
        for k in code_location.resolve_asset_graph().asset_check_keys
        if k.asset_key.path[0] == "health"
    }
    assert len(health) >= 5
    for job in code_location.resolve_all_job_defs():
        if job.name == "__ASSET_JOB":  # Dagster's implicit job of everything
            continue
        selected = set(job.asset_layer.asset_graph.asset_check_keys) & health
        if job.name.startswith("health_checks_every_"):
            assert selected, job.name
        else:
            assert not selected, f"{job.name} runs health checks"


def test_asset_rollup_leaves_the_component_assets_to_the_component_status(
    instance: dg.DagsterInstance,
) -> None:
    # They are never materialized: in the rollup they would read "never materialized" forever.
    keys = {h.asset_key for h in get_asset_health(instance, code_location)}

    assert {"raw/patients", "stg/patients", "core/dim_patient"} <= keys
    assert not [k for k in keys if k.startswith("health/")]


UI_LOCATION = """
import os

import dagster as dg

from healthmon_dagster.config import load_config_text
from healthmon_dagster.defs.health import definitions
from healthmon_dagster.defs.resources import (
    HealthmonConfigResource,
    LandingResource,
    WarehouseResource,
)

defs = dg.Definitions.merge(
    definitions(load_config_text(os.environ["HEALTHMON_TEST_HEALTH_CONFIG"])),
    dg.Definitions(
        resources={
            "warehouse": WarehouseResource(database_url=os.environ["HEALTHMON_TEST_DB_URL"]),
            "landing": LandingResource(local_dir=os.environ["HEALTHMON_TEST_LANDING"]),
            "healthmon_config": HealthmonConfigResource(),  # the jobs' alert fast path
        }
    ),
)
"""

UI_QUERY = """
query ($assetKey: AssetKeyInput!, $checkName: String!) {
  assetCheckExecutions(assetKey: $assetKey, checkName: $checkName, limit: 10) {
    runId
    status
    evaluation {
      success
      severity
      description
      metadataEntries { label ... on FloatMetadataEntry { floatValue } }
    }
  }
}
"""


def test_the_ui_shows_each_checks_history(
    db_url: str,
    engine: sa.Engine,
    down_url: str,
    tmp_path: Path,
    instance: dg.DagsterInstance,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Through the webserver's GraphQL API, with the code location loaded as ``dagster dev`` does."""
    from dagster_graphql.test.utils import define_out_of_process_context, execute_dagster_graphql

    location = tmp_path / "location.py"
    location.write_text(UI_LOCATION)
    monkeypatch.setenv("HEALTHMON_TEST_HEALTH_CONFIG", CONFIG)
    monkeypatch.setenv("HEALTHMON_TEST_DB_URL", db_url)
    monkeypatch.setenv("HEALTHMON_TEST_LANDING", str(tmp_path))
    runs = [
        health_defs(db_url, tmp_path).resolve_job_def(JOB).execute_in_process(instance=instance)
        for _ in range(2)
    ]

    with define_out_of_process_context(str(location), "defs", instance) as context:

        def executions(component: str, check: str) -> list[dict[str, Any]]:
            result = execute_dagster_graphql(
                context, UI_QUERY, {"assetKey": {"path": ["health", component]}, "checkName": check}
            )
            assert not result.errors, result.errors
            return result.data["assetCheckExecutions"]

        down = executions("database", "warehouse_down")
        up = executions("database", "warehouse_up")
        s3 = executions("s3_discovery", "s3_landing")

    newest_first = [r.run_id for r in reversed(runs)]
    assert [e["runId"] for e in down] == newest_first
    assert {e["status"] for e in down} == {"FAILED"}
    evaluation = down[0]["evaluation"]
    assert (evaluation["success"], evaluation["severity"]) == (False, "ERROR")
    assert "Connection refused" in evaluation["description"]
    figures = {m["label"]: m.get("floatValue") for m in evaluation["metadataEntries"]}
    assert is_number(figures["response_time_ms"])
    assert [e["status"] for e in up] == ["SUCCEEDED", "SUCCEEDED"]
    assert [(e["runId"], e["status"], e["evaluation"]) for e in s3] == [
        (run_id, "SKIPPED", None) for run_id in newest_first
    ]


def test_a_forecast_still_learning_passes_and_never_warns(
    db_url: str, engine: sa.Engine, tmp_path: Path, dagster_instance: dg.DagsterInstance
) -> None:
    # A fresh install: no history, so the capacity check cannot forecast yet.
    config = """
health_checks:
  - check_id: capacity_forecast
    component: system_resources
    check_type: capacity
    kind: capacity
    interval_seconds: 3600
"""
    defs = dg.Definitions.merge(
        build_health_definitions(load_config_text(config)),
        dg.Definitions(
            resources={
                "warehouse": WarehouseResource(database_url=db_url),
                "landing": LandingResource(local_dir=str(tmp_path)),
                "healthmon_config": HealthmonConfigResource(),  # the jobs' alert fast path
            }
        ),
    )

    result = defs.resolve_job_def("health_checks_every_3600s_job").execute_in_process(
        instance=dagster_instance
    )

    evaluation = evaluations(result)["capacity_forecast"]
    assert evaluation.passed, evaluation.description
    meta = plain(evaluation)
    assert (meta["health_status"], meta["status"]) == ("unknown", "insufficient_history")
    with get_engine(db_url).connect() as conn:
        row = conn.execute(
            sa.select(check_results).where(check_results.c.check_name == "capacity_forecast")
        ).one()
    assert (row.status, row.severity) == ("unknown", None)
    assert row.details["details"]["learning"] == "not enough history for a forecast yet"
