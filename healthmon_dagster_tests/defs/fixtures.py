"""Helpers shared by the tests of ``healthmon_dagster.defs``: asset keys, a sensor tick and an ETL run
on the code location, what a run materialized, why it failed, which steps ran, what the warehouse
holds, and the patient values that must never leave it."""

import csv
import io
from typing import Any

import dagster as dg
import sqlalchemy as sa

from healthmon_dagster.definitions import defs
from healthmon_dagster.defs.pipeline.sensors import landing_files_sensor
from healthmon_dagster.etl.sample import SampleFile
from healthmon_dagster.store.db import get_engine
from healthmon_dagster.store.tables import metrics, raw_patients

RAW = dg.AssetKey(["raw", "patients"])
STG = dg.AssetKey(["stg", "patients"])
STG_REJECTED = dg.AssetKey(["stg", "patients_rejected"])
CORE = dg.AssetKey(["core", "dim_patient"])
DOWNSTREAM_STEPS = {"stg_patients", "core__dim_patient"}
# The asset checks of each layer (defs/quality/checks.py) run in the same job, and skip with their
# asset.
CHECK_STEPS = {
    "raw__patients__quality_checks",
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


def evaluate_sensor(instance: dg.DagsterInstance) -> dg.SensorResult:
    result = landing_files_sensor(
        dg.build_sensor_context(instance=instance, resources=defs.resources)
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
