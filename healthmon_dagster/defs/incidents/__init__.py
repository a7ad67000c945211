"""Incidents in Dagster: the failure hook on every asset and check (applied by ``definitions.py``
through :func:`~healthmon_dagster.defs.incidents.hooks.with_incident_hooks`) and the run-failure
sensor for runs that never reach a hook."""

import dagster as dg

from healthmon_dagster.config import HealthConfiguration
from healthmon_dagster.defs.incidents.sensors import sensor_definitions


def definitions(config: HealthConfiguration) -> dg.Definitions:
    return dg.Definitions(sensors=sensor_definitions(config))
