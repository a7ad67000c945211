"""The bundled pipeline: landing -> raw/patients -> stg/patients -> core/dim_patient, its ETL job,
the landing sensor that starts it, and the check that no landing file is stuck."""

import dagster as dg

from healthmon_dagster.config import HealthConfiguration
from healthmon_dagster.defs.pipeline.assets import ASSETS
from healthmon_dagster.defs.pipeline.checks import CHECKS
from healthmon_dagster.defs.pipeline.jobs import JOBS
from healthmon_dagster.defs.pipeline.sensors import sensor_definitions


def definitions(config: HealthConfiguration) -> dg.Definitions:
    """The pipeline's definitions; only the landing sensor's interval depends on ``config`` (the
    rest is read at run time)."""
    return dg.Definitions(
        assets=ASSETS, asset_checks=CHECKS, jobs=JOBS, sensors=sensor_definitions(config)
    )
