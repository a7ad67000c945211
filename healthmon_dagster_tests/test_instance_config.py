"""The shipped Dagster instance files: the SQLite default and the Postgres deployment template."""

import shutil
from pathlib import Path

import dagster as dg
import pytest
import yaml

from healthmon_dagster.definitions import build_defs
from healthmon_dagster.etl import catalog

ROOT = Path(__file__).resolve().parent.parent


def _instance(tmp_path: Path, source: Path) -> dg.DagsterInstance:
    home = tmp_path / "dagster_home"
    home.mkdir()
    shutil.copyfile(source, home / "dagster.yaml")
    return dg.DagsterInstance.from_config(str(home))


def test_default_instance_retries_lost_workers_only_and_sends_no_telemetry(tmp_path: Path) -> None:
    instance = _instance(tmp_path, ROOT / "dagster.yaml")
    try:
        # run_retries re-executes a run whose worker died, once; a failed step is left to the
        # step retries inside the run and to the landing sensor's next attempt.
        assert instance.run_retries_enabled and instance.run_retries_max_retries == 1
        assert instance.run_retries_retry_on_asset_or_op_failure is False
        assert instance.run_monitoring_enabled
        assert instance.run_monitoring_cancel_timeout_seconds == 180
        assert instance.get_settings("telemetry")["enabled"] is False
        limits = instance.get_settings("concurrency")["runs"]["tag_concurrency_limits"]
        assert limits == [{"key": "healthmon/pipeline", "value": "patients_etl", "limit": 1}]
    finally:
        instance.dispose()


def test_postgres_template_retries_and_monitors_runs_as_the_default_does() -> None:
    default = yaml.safe_load((ROOT / "dagster.yaml").read_text())
    template = yaml.safe_load((ROOT / "deploy" / "dagster.postgres.yaml").read_text())
    for section in ("run_retries", "run_monitoring", "concurrency", "telemetry"):
        assert template[section] == default[section], section


@pytest.mark.postgres
def test_postgres_template_stores_runs_in_postgres(
    tmp_path: Path, postgres_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("DAGSTER_PG_URL", postgres_url)
    instance = _instance(tmp_path, ROOT / "deploy" / "dagster.postgres.yaml")
    try:
        assert type(instance.run_storage).__name__ == "PostgresRunStorage"

        @dg.op
        def ping() -> int:
            return 1

        @dg.job
        def ping_job() -> None:
            ping()

        result = ping_job.execute_in_process(instance=instance)
        assert result.success
        assert instance.get_run_by_id(result.run_id) is not None
    finally:
        instance.dispose()


def test_the_etl_job_carries_the_tag_its_run_limit_applies_to() -> None:
    job = build_defs().resolve_job_def(catalog.ETL_JOB)
    assert job.tags.get("healthmon/pipeline") == "patients_etl"
