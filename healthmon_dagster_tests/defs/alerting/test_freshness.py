"""FreshnessPolicy states as alert signals, SQLite and Postgres: a real ``dagster-daemon`` (its
freshness daemon every second) judges raw/patients, whose fail window is one minute, FAIL a minute
after its load, and stg/patients, whose window is days, PASS; alert_evaluation_sensor then fires
a freshness alert for raw/patients and none for stg/patients."""

from pathlib import Path

import dagster as dg
import pytest
import sqlalchemy as sa
import yaml

from healthmon_dagster.alerting.signals import FRESHNESS_POLICY_CHECK
from healthmon_dagster.config.loader import load_config
from healthmon_dagster.definitions import build_defs
from healthmon_dagster.defs.alerting.sensors import alert_evaluation_sensor
from healthmon_dagster.defs.pipeline.sensors import landing_files_sensor
from healthmon_dagster.etl.landing import LocalLandingSource
from healthmon_dagster.etl.sample import generate_sample, write_to
from healthmon_dagster.store.db import get_engine
from healthmon_dagster.store.tables import alerts
from healthmon_dagster_tests.defs.fixtures import PROJECT_CONFIG
from healthmon_dagster_tests.defs.pipeline.fixtures import running_daemon, wait_for, write_instance

RAW = dg.AssetKey(["raw", "patients"])
STG = dg.AssetKey(["stg", "patients"])


def write_config(folder: Path) -> Path:
    """healthmon.yaml with a one-minute fail window on raw/patients and no health checks."""
    data = yaml.safe_load(PROJECT_CONFIG.read_text())
    data["freshness"]["raw/patients"] = {"fail_window_minutes": 1}
    data["health_checks"] = []
    path = folder / "healthmon.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


def state_of(instance: dg.DagsterInstance, key: dg.AssetKey) -> str | None:
    record = instance.get_freshness_state_records([key]).get(key)
    if record is None:
        return None
    return str(getattr(record.freshness_state, "value", record.freshness_state))


def test_a_stale_asset_alerts_from_its_freshness_state_and_a_fresh_one_does_not(
    healthmon_env: Path, db_url: str, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    config_path = write_config(tmp_path)
    monkeypatch.setenv("HEALTHMON_CONFIG", str(config_path))
    defs = build_defs(load_config(config_path))
    dagster_home = tmp_path / "dagster"
    write_instance(dagster_home)
    instance = dg.DagsterInstance.from_config(str(dagster_home))
    write_to(LocalLandingSource(healthmon_env / "landing"), generate_sample(100, files=1, seed=3))
    sensed = landing_files_sensor(
        dg.build_sensor_context(instance=instance, resources=defs.resources)
    )
    assert isinstance(sensed, dg.SensorResult) and sensed.run_requests
    for request in sensed.run_requests:
        run = defs.resolve_job_def("patients_etl_job").execute_in_process(
            run_config=request.run_config, instance=instance, tags=request.tags
        )
        assert run.success
    env = {
        "DAGSTER_HOME": str(dagster_home),
        "HEALTHMON_HOME": str(healthmon_env),
        "HEALTHMON_DATABASE_URL": db_url,
        "HEALTHMON_CONFIG": str(config_path),
        "FRESHNESS_DAEMON_INTERVAL_SECONDS": "1",
    }
    with running_daemon(env, tmp_path / "daemon.log", stop_grace_seconds=0):
        wait_for("raw/patients judged FAIL", lambda: state_of(instance, RAW) == "FAIL" or None, 240)
    assert state_of(instance, STG) == "PASS"

    context = dg.build_sensor_context(
        instance=instance, resources=defs.resources, repository_def=defs.get_repository_def()
    )
    alert_evaluation_sensor(context)

    with get_engine(db_url).connect() as conn:
        rows = conn.execute(sa.select(alerts).where(alerts.c.rule_id == "asset_not_fresh")).all()
    by_asset = {
        r.labels["asset"]: r for r in rows if r.labels.get("check") == FRESHNESS_POLICY_CHECK
    }
    assert set(by_asset) == {"raw/patients"}, by_asset
    stale = by_asset["raw/patients"]
    assert (stale.state, stale.severity) == ("firing", "warning")
    assert "FAIL" in stale.description
