"""Data quality: asset checks generated from ``quality.assets`` and ``freshness`` in healthmon.yaml,
the external assets they name, and the daily full sweep."""

import dagster as dg

from healthmon_dagster.config import HealthConfiguration
from healthmon_dagster.defs.quality.assets import external_asset_specs, validate_targets
from healthmon_dagster.defs.quality.checks import build_asset_checks
from healthmon_dagster.defs.quality.jobs import JOBS
from healthmon_dagster.defs.quality.schedules import SCHEDULES


def definitions(config: HealthConfiguration) -> dg.Definitions:
    validate_targets(config)  # an unknown asset key or column stops the load
    return dg.Definitions(
        assets=external_asset_specs(config),
        asset_checks=build_asset_checks(config),
        jobs=JOBS,
        schedules=SCHEDULES,
    )
