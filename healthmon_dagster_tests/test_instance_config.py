"""The shipped Dagster instance files: the SQLite default and the Postgres deployment template."""

import shutil
from pathlib import Path

import dagster as dg
import pytest

from healthmon_dagster.definitions import build_defs
from healthmon_dagster.etl import catalog

ROOT = Path(__file__).resolve().parent.parent


def _instance(tmp_path: Path, source: Path) -> dg.DagsterInstance:
    home = tmp_path / "dagster_home"
    home.mkdir()
    shutil.copyfile(source, home / "dagster.yaml")
    return dg.DagsterInstance.from_config(str(home))


def test_default_instance_retries_runs_and_sends_no_telemetry(tmp_path: Path) -> None:
    instance = _instance(tmp_path, ROOT / "dagster.yaml")
    try:
        assert instance.run_retries_enabled and instance.run_retries_max_retries == 2
        assert instance.run_monitoring_enabled
        assert instance.get_settings("telemetry")["enabled"] is False
        limits = instance.get_settings("concurrency")["runs"]["tag_concurrency_limits"]
        assert limits == [{"key": "healthmon/pipeline", "value": "patients_etl", "limit": 1}]
    finally:
        instance.dispose()


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
