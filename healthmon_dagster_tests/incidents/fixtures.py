"""Helpers shared by the incident tests: failures, actors and a fixed clock."""

from datetime import UTC, datetime, timedelta
from typing import Any

from healthmon_dagster.enums import HealthComponent, IncidentSeverity, IncidentSource
from healthmon_dagster.incidents.records import Actor, Failure

T0 = datetime(2026, 12, 1, 8, 0, tzinfo=UTC)
SENSOR = Actor("sensor:run_failure", IncidentSource.SENSOR)
HOOK = Actor("hook:patients_etl_job", IncidentSource.HOOK)
ALICE = Actor("cli:alice", IncidentSource.CLI)


def failure(
    at: datetime = T0,
    *,
    component: str = HealthComponent.RAW_LOADER,
    assets: tuple[str, ...] = ("raw/patients",),
    resources: tuple[str, ...] = ("database:warehouse",),
    severity: IncidentSeverity = IncidentSeverity.MEDIUM,
    error_class: str = "database_unavailable",
    **details: Any,
) -> Failure:
    return Failure(
        title=f"{assets[0] if assets else component} failed",
        component=component,
        occurred_at=at,
        severity=severity,
        asset_keys=assets,
        resources=resources,
        error_class=error_class,
        details=details,
    )


def minutes(n: float) -> timedelta:
    return timedelta(minutes=n)
