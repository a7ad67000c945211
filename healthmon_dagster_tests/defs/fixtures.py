"""Helpers shared by the tests of ``healthmon_dagster.defs``: asset keys, a sensor tick and an ETL run
on the code location, what a run materialized, why it failed, which steps ran, what the warehouse
holds, the patient values that must never leave it, and healthmon.yaml with short retry delays."""

import csv
import io
from pathlib import Path
from typing import Any

import dagster as dg
import pytest
import sqlalchemy as sa
import yaml

from healthmon_dagster.definitions import defs
from healthmon_dagster.defs.pipeline.sensors import landing_files_sensor
from healthmon_dagster.etl.sample import SampleFile
from healthmon_dagster.store.db import get_engine
from healthmon_dagster.store.tables import metrics, raw_patients
from healthmon_dagster_tests.fixtures import free_port

PROJECT_CONFIG = Path(__file__).resolve().parents[2] / "healthmon.yaml"
# landing.retry for tests: step retries in fractions of a second, attempts a second apart.
FAST_RETRY = {
    "step_retries": 2,
    "step_retry_delay_seconds": 0.05,
    "initial_delay_seconds": 1,
    "max_delay_seconds": 1,
}

RAW = dg.AssetKey(["raw", "patients"])
STG = dg.AssetKey(["stg", "patients"])
STG_REJECTED = dg.AssetKey(["stg", "patients_rejected"])
CORE = dg.AssetKey(["core", "dim_patient"])
DOWNSTREAM_STEPS = {"stg_patients", "core__dim_patient"}
# The asset checks of each layer (defs/quality/checks.py) run in the same job, and skip with their
# asset.
CHECK_STEPS = {
    "raw__patients__quality_checks",
    "raw__patients_landing_files_are_not_stuck",  # the pipeline's own check (defs/pipeline)
    "stg__patients__quality_checks",
    "stg__patients_rejected__quality_checks",
    "core__dim_patient__quality_checks",
}
# Columns whose values identify a patient; none of them may leave the warehouse.
PHI_COLUMNS = (
    "Id",
    "BIRTHDATE",
    "SSN",
    "DRIVERS",
    "PASSPORT",
    "FIRST",
    "LAST",
    "MAIDEN",
    "ADDRESS",
)


def materialized(result: dg.ExecuteInProcessResult) -> dict[dg.AssetKey, dict[str, Any]]:
    """Metadata of each asset the run materialized, as plain values."""
    return {
        event.asset_key: {k: v.value for k, v in event.materialization.metadata.items()}
        for event in result.get_asset_materialization_events()
        if event.asset_key is not None
    }


def failure_descriptions(result: dg.ExecuteInProcessResult) -> list[str]:
    """What a user reads for each failed step: the Failure's description, else the error."""
    out = []
    for event in result.get_step_failure_events():
        data = event.step_failure_data
        if data.user_failure_data is not None and data.user_failure_data.description:
            out.append(data.user_failure_data.description)
        else:
            out.append(data.error.message if data.error else "")
    return out


def ran_steps(result: dg.ExecuteInProcessResult) -> set[str]:
    return {
        e.step_key
        for e in [*result.get_step_success_events(), *result.get_step_failure_events()]
        if e.step_key is not None
    }


def patient_values(samples: list[SampleFile]) -> set[str]:
    values: set[str] = set()
    for sample in samples:
        text = sample.data.decode("utf-8", errors="replace")
        for row in csv.DictReader(io.StringIO(text)):
            values.update(row[c] for c in PHI_COLUMNS if row.get(c))
    return values


def evaluate_sensor(instance: dg.DagsterInstance, cursor: str | None = None) -> dg.SensorResult:
    result = landing_files_sensor(
        dg.build_sensor_context(instance=instance, resources=defs.resources, cursor=cursor)
    )
    assert isinstance(result, dg.SensorResult)
    return result


def run_job(
    instance: dg.DagsterInstance, run_config: dict[str, Any] | None = None
) -> dg.ExecuteInProcessResult:
    return defs.resolve_job_def("patients_etl_job").execute_in_process(
        run_config=run_config or {}, instance=instance, raise_on_error=False
    )


def raw_rows(db_url: str, file_key: str | None = None) -> int:
    query = sa.select(sa.func.count()).select_from(raw_patients)
    if file_key is not None:
        query = query.where(raw_patients.c._file == file_key)
    with get_engine(db_url).connect() as conn:
        return int(conn.execute(query).scalar_one())


def metric_components(db_url: str) -> set[str]:
    with get_engine(db_url).connect() as conn:
        return set(conn.execute(sa.select(metrics.c.component).distinct()).scalars())


def is_number(value: object) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def run_request(instance: dg.DagsterInstance, request: dg.RunRequest) -> dg.ExecuteInProcessResult:
    """Run what a sensor requested, in process, with its tags (as ``healthmon demo`` does)."""
    return defs.resolve_job_def("patients_etl_job").execute_in_process(
        run_config=request.run_config,
        instance=instance,
        tags=request.tags,
        raise_on_error=False,
    )


def use_retry_config(
    monkeypatch: pytest.MonkeyPatch, folder: Path, **retry: float
) -> dict[str, float]:
    """The project's healthmon.yaml with ``landing.retry`` set to :data:`FAST_RETRY` updated by
    ``retry``, written to ``folder`` and named by HEALTHMON_CONFIG; returns the retry section."""
    data = yaml.safe_load(PROJECT_CONFIG.read_text())
    section = {**FAST_RETRY, **retry}
    data["landing"]["retry"] = section
    path = folder / "healthmon.yaml"
    path.write_text(yaml.safe_dump(data))
    monkeypatch.setenv("HEALTHMON_CONFIG", str(path))
    return section


def unreachable_url(db_url: str, folder: Path) -> str:
    """A database URL of ``db_url``'s kind that cannot be opened: Postgres on a closed loopback
    port (with a password, which must never be shown), SQLite at a path that is a folder."""
    if db_url.startswith("sqlite"):
        target = folder / "unavailable.db"
        target.mkdir(exist_ok=True)
        return f"sqlite:///{target}"
    return f"postgresql+psycopg2://etl:s3cret@127.0.0.1:{free_port()}/warehouse"


def step_retries(result: dg.ExecuteInProcessResult) -> int:
    """How often a step of the run was retried inside the run (Dagster's STEP_UP_FOR_RETRY)."""
    return sum(e.event_type == dg.DagsterEventType.STEP_UP_FOR_RETRY for e in result.all_events)


def failure_metadata(result: dg.ExecuteInProcessResult) -> dict[str, Any]:
    """The metadata of the run's step failures, as plain values (the failure of the raw step
    first)."""
    out: dict[str, Any] = {}
    for event in sorted(
        result.get_step_failure_events(), key=lambda e: e.step_key != "raw__patients"
    ):
        user = event.step_failure_data.user_failure_data
        for k, v in (user.metadata if user else {}).items():
            out.setdefault(k, v.value)
    return out
