"""The alert engine in Dagster: a sensor that evaluates the rules, escalates and repeats."""

import dagster as dg

from healthmon_dagster.config import HealthConfiguration
from healthmon_dagster.defs.alerting.sensors import SENSORS


def definitions(config: HealthConfiguration) -> dg.Definitions:
    return dg.Definitions(sensors=SENSORS)
