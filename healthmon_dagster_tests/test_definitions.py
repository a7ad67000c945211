"""The code location loads: assets, job and sensor are there, and `dagster definitions validate` passes."""

import os
import subprocess
import sys
from pathlib import Path

import dagster as dg

from healthmon_dagster.definitions import defs

PROJECT_ROOT = Path(__file__).resolve().parents[1]
PIPELINE_ASSET_KEYS = {
    dg.AssetKey(["raw", "patients"]),
    dg.AssetKey(["stg", "patients"]),
    dg.AssetKey(["stg", "patients_rejected"]),
    dg.AssetKey(["core", "dim_patient"]),
}


def test_definitions_are_loadable() -> None:
    dg.Definitions.validate_loadable(defs)


def test_pipeline_assets_are_defined() -> None:
    assert set(defs.resolve_all_asset_keys()) >= PIPELINE_ASSET_KEYS


def test_landing_sensor_starts_the_etl_job() -> None:
    job = defs.resolve_job_def("patients_etl_job")
    sensor = defs.resolve_sensor_def("landing_files_sensor")

    assert sensor.job_name == job.name == "patients_etl_job"
    assert sensor.default_status == dg.DefaultSensorStatus.RUNNING


def validate_cli(cwd: Path, dagster_home: Path | None) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k != "DAGSTER_HOME"}
    if dagster_home is not None:
        env["DAGSTER_HOME"] = str(dagster_home)
    return subprocess.run(
        [
            sys.executable,
            "-m",
            "dagster",
            "definitions",
            "validate",
            "-m",
            "healthmon_dagster.definitions",
        ],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=cwd,
        env=env,
    )


def test_dagster_cli_validates_the_code_location(tmp_path: Path) -> None:
    proc = validate_cli(cwd=tmp_path, dagster_home=tmp_path)

    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_dagster_cli_validates_from_the_project_root_without_dagster_home() -> None:
    # What a developer types first. Without DAGSTER_HOME, the dagster CLI builds a temporary
    # instance from the dagster.yaml in the current directory, if there is one.
    proc = validate_cli(cwd=PROJECT_ROOT, dagster_home=None)

    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_the_quality_full_sweep_runs_daily_over_every_check() -> None:
    schedule = defs.resolve_schedule_def("quality_full_sweep_schedule")
    assert schedule.cron_schedule == "30 3 * * *"
    job = defs.resolve_job_def("quality_full_sweep_job")
    assert schedule.job_name == job.name
    assert job.tags.get("healthmon/quality_mode") == "full"
