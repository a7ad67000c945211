"""Sensors: the landing sensor turns each new landing file into one ETL run."""

import dagster as dg

from healthmon_dagster.defs.pipeline.jobs import patients_etl_job, raw_file_run_config
from healthmon_dagster.defs.resources import (
    HealthmonConfigResource,
    LandingResource,
    WarehouseResource,
)
from healthmon_dagster.etl.landing import LandingError
from healthmon_dagster.etl.raw import unloaded_files
from healthmon_dagster.store.db import DatabaseUnavailable, using_engine

MAX_RUNS_PER_TICK = 100


@dg.sensor(
    job=patients_etl_job, minimum_interval_seconds=30, default_status=dg.DefaultSensorStatus.RUNNING
)
def landing_files_sensor(
    context: dg.SensorEvaluationContext,
    landing: LandingResource,
    warehouse: WarehouseResource,
    healthmon_config: HealthmonConfigResource,
) -> dg.SensorResult:
    """One run per new landing file: files not yet in etl.files with this key and fingerprint (S3 ETag,
    or size and mtime locally). The run key is key@fingerprint, so Dagster never launches a file twice
    while it is in flight; the loader's content hash is the last guard against a double load."""
    pattern = healthmon_config.load().landing.file_pattern
    try:
        pending = using_engine(warehouse.url(), unloaded_files, landing.source(), pattern)
    except LandingError as exc:
        return dg.SensorResult(skip_reason=dg.SkipReason(f"landing source unavailable: {exc}"))
    except DatabaseUnavailable as exc:
        return dg.SensorResult(skip_reason=dg.SkipReason(f"warehouse: {exc}"))
    if not pending:
        return dg.SensorResult(skip_reason=dg.SkipReason(f"no new files matching {pattern!r}"))
    requests = [
        dg.RunRequest(
            run_key=f"{f.key}@{f.fingerprint}",
            run_config=raw_file_run_config(f.key, f.fingerprint),
            tags={"healthmon/file_key": f.key},
        )
        for f in pending[:MAX_RUNS_PER_TICK]
    ]
    context.log.info(f"{len(pending)} new landing file(s); requesting {len(requests)} run(s)")
    return dg.SensorResult(run_requests=requests)


SENSORS = [landing_files_sensor]
