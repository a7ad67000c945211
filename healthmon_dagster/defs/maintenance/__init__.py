"""Maintenance of the health store: the daily retention job."""

import dagster as dg

from healthmon_dagster.config import HealthConfiguration
from healthmon_dagster.defs.maintenance.jobs import JOBS
from healthmon_dagster.defs.maintenance.schedules import SCHEDULES


def definitions(config: HealthConfiguration) -> dg.Definitions:
    """The retention job and schedule; the retention itself is read from the config at run time."""
    return dg.Definitions(jobs=JOBS, schedules=SCHEDULES)
