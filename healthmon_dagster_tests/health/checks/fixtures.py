"""Helpers for the health-check tests: run one check of a kind through the runner."""

from healthmon_dagster.enums import HealthComponent
from healthmon_dagster.health.context import CheckEnvironment
from healthmon_dagster.health.result import HealthCheck, HealthCheckResult
from healthmon_dagster.health.runner import HealthCheckRunner


def run(kind: str, env: CheckEnvironment | None = None, **params: object) -> HealthCheckResult:
    check = HealthCheck(
        f"{kind}_check",
        HealthComponent.NETWORK,
        kind,
        timeout_seconds=10,
        custom_parameters=params,
    )
    result = HealthCheckRunner(env or CheckEnvironment()).run_health_check(check)
    assert "Traceback" not in str(result.to_dict())
    return result
