"""Self-healing: the sensor that re-runs pipeline assets whose failure was transient, within the
bounds of ``self_healing`` in healthmon.yaml, with every decision on the incident's timeline. The
deciding is ``healthmon_dagster.incidents.selfheal``; this package only adapts Dagster's runs."""

import dagster as dg

from healthmon_dagster.config import HealthConfiguration
from healthmon_dagster.defs.selfheal.sensors import sensor_definitions


def definitions(config: HealthConfiguration) -> dg.Definitions:
    """The self-healing sensor every ``sensor_intervals.self_healing_sensor`` seconds; it reads
    ``self_healing`` at each tick (a change there needs no reload)."""
    return dg.Definitions(sensors=sensor_definitions(config))
