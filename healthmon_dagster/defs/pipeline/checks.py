"""Checks that come with the bundled pipeline (not configured in healthmon.yaml): no landing file is
stuck. The ETL job runs it with every load (it checks raw/patients), and the daily quality sweep."""

import dagster as dg
from sqlalchemy import exc as sa_exc

from healthmon_dagster.defs.pipeline.assets import RAW_PATIENTS
from healthmon_dagster.defs.quality.checks import to_dagster
from healthmon_dagster.defs.resources import WarehouseResource
from healthmon_dagster.etl.failures import classify, failure_metadata
from healthmon_dagster.quality import record_results
from healthmon_dagster.quality.kinds.landing_file import (
    LANDING_FILES_ARE_NOT_STUCK,
    STUCK_FILES_DESCRIPTION,
    stuck_files_result,
)
from healthmon_dagster.store.errors import error_text


@dg.asset_check(
    asset=RAW_PATIENTS,
    name=LANDING_FILES_ARE_NOT_STUCK,
    description=STUCK_FILES_DESCRIPTION,
    blocking=False,
)
def landing_files_are_not_stuck(
    context: dg.AssetCheckExecutionContext, warehouse: WarehouseResource
) -> dg.AssetCheckResult:
    """Fails (ERROR) while a landing file is stuck, naming it and its last error class."""
    try:
        result = stuck_files_result(warehouse.engine())
        record_results(warehouse.health_engine(), [result], context.run.run_id)
    except sa_exc.DBAPIError as exc:
        raise dg.Failure(
            description=f"could not read or record the landing files' attempts: {error_text(exc)}",
            metadata=failure_metadata(classify(exc)),  # an outage joins the outage's incident
        ) from None
    return to_dagster(result, RAW_PATIENTS)


CHECKS = [landing_files_are_not_stuck]
