"""Dagster daemon heartbeats: the monitor monitors its own scheduler.

Reads the daemons' heartbeats through ``environment.dagster`` (the required daemons of the instance,
each healthy when its last heartbeat is recent). Parameters: ``daemon_types`` (default: the
instance's required daemons). Needs ``environment.dagster``.
"""

import time

from healthmon_dagster.health.context import CheckContext
from healthmon_dagster.health.kind import builtin
from healthmon_dagster.health.result import HealthCheck, Observation


@builtin(
    "daemon",
    params=("daemon_types",),
)
def daemon_check(check: HealthCheck, ctx: CheckContext) -> Observation:
    """Each required Dagster daemon (scheduler, sensors, ...) sent a recent heartbeat."""
    dagster = ctx.require_dagster(check)
    types = check.param("daemon_types")
    statuses = dagster.daemon_heartbeats(list(types) if types else None)
    obs = Observation(details={"daemons": {}})
    now = time.time()
    healthy = 0
    never: list[str] = []
    for daemon_type, status in sorted(statuses.items()):
        beat = status.last_heartbeat
        age = None if beat is None else now - beat
        obs.details["daemons"][daemon_type] = {"healthy": bool(status.healthy), "age_s": age}
        if age is not None:
            obs.metric(f"{daemon_type.lower()}.heartbeat_age_s", age)
        if status.healthy:
            healthy += 1
        elif beat is None:
            never.append(daemon_type)
        else:
            obs.error(
                f"Dagster daemon {daemon_type} last sent a heartbeat {age:.0f}s ago: it is down "
                "or stuck; check the dagster-daemon process and its logs"
            )
    if never:  # one line for all of them: with no daemon process, every type is silent
        obs.error(
            f"{len(never)} Dagster daemon(s) never sent a heartbeat ({', '.join(never)}): "
            "schedules and sensors do not run; start `dagster-daemon run` (or `dagster dev`) "
            "with this DAGSTER_HOME"
        )
    obs.metric("daemons_healthy", healthy)
    obs.metric("daemons_total", len(statuses))
    return obs
