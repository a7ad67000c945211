"""The code location: assembles Definitions from ``healthmon_dagster.defs``."""

import dagster as dg

from healthmon_dagster.defs import assets, jobs, sensors
from healthmon_dagster.defs.resources import resource_defs

defs = dg.Definitions(
    assets=dg.load_assets_from_modules([assets]),
    jobs=[jobs.patients_etl_job],
    sensors=[sensors.landing_files_sensor],
    resources=resource_defs(),
)
