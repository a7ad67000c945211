"""The alert engine in Dagster: a sensor that evaluates the rules, escalates and repeats, and a
sensor that starts the dispatch job when notifications are due, at the intervals of
``alerting`` in healthmon.yaml."""

import dagster as dg

from healthmon_dagster.config import HealthConfiguration
from healthmon_dagster.defs.alerting.jobs import JOBS
from healthmon_dagster.defs.alerting.sensors import sensor_definitions


def definitions(config: HealthConfiguration) -> dg.Definitions:
    return dg.Definitions(jobs=JOBS, sensors=sensor_definitions(config))
