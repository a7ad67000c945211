"""The code location loads: assets, job and sensor are there, `dagster definitions validate` passes,
every ``defs`` module contributes through ``definitions(config)``, and what the code location defines
matches the checked-in snapshot.

Snapshot: ``snapshots/code_location.json``, built from ``healthmon_dagster.definitions.defs`` loaded
in a subprocess with the project's healthmon.yaml (no other HEALTHMON_* variable), so it does not
depend on the machine. After an intended change, regenerate it with
``HEALTHMON_UPDATE_SNAPSHOTS=1 pytest healthmon_dagster_tests/test_definitions.py`` (or
``python -m healthmon_dagster_tests.test_definitions > healthmon_dagster_tests/snapshots/code_location.json``)
and review the diff.
"""

import difflib
import json
import os
import subprocess
import sys
import time
from pathlib import Path
from types import ModuleType
from typing import Any

import dagster as dg
import pytest

import healthmon_dagster.definitions as definitions_module
from healthmon_dagster.config import ConfigError, load_config
from healthmon_dagster.definitions import (
    MissingDefinitions,
    build_defs,
    defs,
    domain_definitions,
)
from healthmon_dagster.store.db import InvalidDatabaseUrl
from healthmon_dagster_tests.fixtures import free_port

PROJECT_ROOT = Path(__file__).resolve().parents[1]
PROJECT_CONFIG = PROJECT_ROOT / "healthmon.yaml"
SNAPSHOT = Path(__file__).resolve().parent / "snapshots" / "code_location.json"
UPDATE_VARIABLE = "HEALTHMON_UPDATE_SNAPSHOTS"
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


def test_each_sensor_runs_at_its_configured_interval() -> None:
    config = load_config(PROJECT_CONFIG)
    defaults = {
        name: defs.resolve_sensor_def(name).minimum_interval_seconds
        for name in type(config.sensor_intervals).model_fields
    }
    assert defaults == config.sensor_intervals.model_dump()  # healthmon.yaml states the defaults
    faster = {name: 5 + i for i, name in enumerate(defaults)}
    intervals = type(config.sensor_intervals)(**faster)

    tuned = build_defs(config.model_copy(update={"sensor_intervals": intervals}))

    assert {name: tuned.resolve_sensor_def(name).minimum_interval_seconds for name in faster} == (
        faster
    )
    assert {s.name for s in tuned.sensors or []} == {s.name for s in defs.sensors or []}


def test_a_defs_module_without_definitions_is_an_error(monkeypatch: pytest.MonkeyPatch) -> None:
    stray = ModuleType("healthmon_dagster.defs.stray")
    monkeypatch.setattr(definitions_module, "domain_modules", lambda: [stray])

    with pytest.raises(MissingDefinitions, match="healthmon_dagster.defs.stray"):
        domain_definitions(load_config(PROJECT_CONFIG))


def validate_cli(
    cwd: Path, dagster_home: Path | None, **variables: str
) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k != "DAGSTER_HOME"}
    if dagster_home is not None:
        env["DAGSTER_HOME"] = str(dagster_home)
    env.update(variables)
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


def test_a_database_url_that_can_never_work_stops_the_load_with_one_message(
    tmp_path: Path,
) -> None:
    # What the webserver shows as the code location's load error: our message, not a SQLAlchemy
    # trace, and never the password.
    proc = validate_cli(
        cwd=tmp_path,
        dagster_home=tmp_path,
        HEALTHMON_HOME=str(tmp_path / "home"),
        HEALTHMON_DATABASE_URL="postgresql+psycopg2://etl:s3cretpw@db:54x2/wh",
    )

    out = proc.stdout + proc.stderr
    assert proc.returncode != 0
    assert (
        "InvalidDatabaseUrl: HEALTHMON_DATABASE_URL (postgresql+psycopg2://<unparsable>) is not "
        "usable: its port is not a number" in out
    )
    assert "s3cretpw" not in out
    assert "site-packages/sqlalchemy" not in out


@pytest.mark.parametrize("variable", ["HEALTHMON_DATABASE_URL", "HEALTHMON_HEALTH_DATABASE_URL"])
def test_the_load_refuses_an_in_memory_database(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, variable: str
) -> None:
    monkeypatch.setenv("HEALTHMON_HOME", str(tmp_path))
    monkeypatch.delenv("HEALTHMON_DATABASE_URL", raising=False)
    monkeypatch.delenv("HEALTHMON_HEALTH_DATABASE_URL", raising=False)
    monkeypatch.setenv(variable, "sqlite://")

    with pytest.raises(InvalidDatabaseUrl, match=f"^{variable} \\(sqlite://\\) .*in-memory"):
        build_defs(load_config(PROJECT_CONFIG))


def test_an_unreachable_database_does_not_stop_the_load(monkeypatch: pytest.MonkeyPatch) -> None:
    # Only a URL that can never work is a configuration error; an outage is reported at run time
    # (the sensor skips with the reason, the database health check fails).
    monkeypatch.setenv(
        "HEALTHMON_DATABASE_URL", f"postgresql+psycopg2://etl@127.0.0.1:{free_port()}/wh"
    )
    monkeypatch.delenv("HEALTHMON_HEALTH_DATABASE_URL", raising=False)

    dg.Definitions.validate_loadable(build_defs(load_config(PROJECT_CONFIG)))


def test_a_yaml_bomb_stops_the_load_in_under_a_second(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    lines = ['lol: &l0 ["lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol"]']
    lines += [f"l{i}: &l{i} [{', '.join([f'*l{i - 1}'] * 9)}]" for i in range(1, 10)]
    bomb = tmp_path / "healthmon.yaml"
    bomb.write_text("\n".join(lines) + "\n")
    monkeypatch.setenv("HEALTHMON_CONFIG", str(bomb))

    start = time.process_time()  # CPU time: other work on the machine says nothing about the load
    with pytest.raises(ConfigError, match="YAML too complex"):
        build_defs()
    assert time.process_time() - start < 1


def test_the_quality_full_sweep_runs_daily_over_every_check() -> None:
    schedule = defs.resolve_schedule_def("quality_full_sweep_schedule")
    assert schedule.cron_schedule == "30 3 * * *"
    job = defs.resolve_job_def("quality_full_sweep_job")
    assert schedule.job_name == job.name
    assert job.tags.get("healthmon/quality_mode") == "full"


def _key(key: dg.AssetKey) -> str:
    return "/".join(key.path)


def _minutes(window: Any) -> float | None:
    return None if window is None else window.to_timedelta().total_seconds() / 60


def describe(code_location: dg.Definitions) -> dict[str, Any]:
    """What the code location defines, as plain sorted data (no descriptions: they are prose)."""
    graph = code_location.resolve_asset_graph()
    assets: dict[str, dict[str, Any]] = {}
    for spec in code_location.resolve_all_asset_specs():
        policy = spec.freshness_policy
        assets[_key(spec.key)] = {
            "group": spec.group_name,
            "kinds": sorted(spec.kinds),
            "deps": sorted(_key(d.asset_key) for d in spec.deps),
            "freshness_minutes": None
            if policy is None
            else {
                "fail": _minutes(getattr(policy, "fail_window", None)),
                "warn": _minutes(getattr(policy, "warn_window", None)),
            },
            "checks": {},
        }
    for check_key in graph.asset_check_keys:
        check = graph.get_check_spec(check_key)
        assets[_key(check_key.asset_key)]["checks"][check_key.name] = {"blocking": check.blocking}
    jobs = {
        job.name: {"tags": dict(job.tags)}
        for job in code_location.resolve_all_job_defs()
        if not job.name.startswith("__")  # Dagster's implicit asset job
    }
    schedules = {
        s.name: {
            "cron": s.cron_schedule,
            "default_status": s.default_status.value,
            "job": s.job_name,
        }
        for s in code_location.schedules or []
        if isinstance(s, dg.ScheduleDefinition)
    }
    sensors = {
        s.name: {
            "default_status": s.default_status.value,
            "minimum_interval_seconds": s.minimum_interval_seconds,
            "jobs": sorted(t.job_name for t in s.targets),
        }
        for s in code_location.sensors or []
        if isinstance(s, dg.SensorDefinition)
    }
    return {"assets": assets, "jobs": jobs, "schedules": schedules, "sensors": sensors}


def snapshot_text(code_location: dg.Definitions) -> str:
    return json.dumps(describe(code_location), indent=2, sort_keys=True) + "\n"


def current_snapshot(tmp_path: Path) -> str:
    """The snapshot of ``healthmon_dagster.definitions.defs`` as a fresh process with the project's
    healthmon.yaml and no other healthmon setting loads it."""
    env = {
        k: v for k, v in os.environ.items() if not k.startswith(("HEALTHMON_", "AWS_", "DAGSTER_"))
    }
    env.update(
        HEALTHMON_CONFIG=str(PROJECT_CONFIG),
        HEALTHMON_HOME=str(tmp_path / "home"),
        PYTHONPATH=os.pathsep.join([str(PROJECT_ROOT), env.get("PYTHONPATH", "")]).rstrip(
            os.pathsep
        ),
    )
    proc = subprocess.run(
        [sys.executable, "-m", "healthmon_dagster_tests.test_definitions"],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=tmp_path,
        env=env,
    )
    assert proc.returncode == 0, proc.stderr
    return proc.stdout


def test_code_location_matches_the_snapshot(tmp_path: Path) -> None:
    current = current_snapshot(tmp_path)
    if os.environ.get(UPDATE_VARIABLE) == "1":
        SNAPSHOT.parent.mkdir(exist_ok=True)
        SNAPSHOT.write_text(current)
    expected = SNAPSHOT.read_text() if SNAPSHOT.exists() else ""
    if current != expected:
        diff = "".join(
            difflib.unified_diff(
                expected.splitlines(keepends=True),
                current.splitlines(keepends=True),
                fromfile=f"{SNAPSHOT.name} (checked in)",
                tofile=f"{SNAPSHOT.name} (current code location)",
            )
        )
        pytest.fail(
            f"The code location differs from {SNAPSHOT}:\n{diff}\n"
            f"If the change is intended, regenerate the snapshot with {UPDATE_VARIABLE}=1 "
            "pytest healthmon_dagster_tests/test_definitions.py and commit it.",
            pytrace=False,
        )


if __name__ == "__main__":  # prints the snapshot: see the module docstring
    sys.stdout.write(snapshot_text(defs))
