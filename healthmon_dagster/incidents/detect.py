"""From a classified failure to the :class:`~healthmon_dagster.incidents.records.Failure` that opens
(or joins) an incident: which shared resource it blames, how severe it is, its title and details.

The failure hooks (a failed step of an asset or check), the run-failure sensor (a run that died
outside its steps) and the alert adapter (a critical alert) build their failures here, so that one
root cause reported by several of them lands on one root key. No Dagster here, and no field value:
a failure is described by asset keys, step keys, the error class, the rule that classified it and
an exception rendered by :func:`healthmon_dagster.store.errors.error_text`.
"""

from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Engine

from healthmon_dagster.enums import IncidentEventKind, IncidentImpact, IncidentSeverity
from healthmon_dagster.etl import catalog
from healthmon_dagster.etl.failures import Classification
from healthmon_dagster.incidents.records import Failure
from healthmon_dagster.settings import get_settings
from healthmon_dagster.store.tables import incident_events

WAREHOUSE = "database:warehouse"

# Rules of etl.failures whose error is the database's (the warehouse or the health store, one
# database server here), and those that are S3's. The OS rules (os_refused, ...) name no resource.
_DATABASE_RULE_PREFIXES = ("pg_", "driver_", "sqlite_", "sqlalchemy_")
_DATABASE_RULES = {"database_unavailable"}
_S3_RULES = {"s3_unreachable", "s3_retryable"}

RUN_COMPONENT = "dagster_runs"
"""The component of a run that failed before or outside its steps (no asset to blame)."""


def s3_resource(bucket: str | None = None) -> str:
    """The S3 landing bucket as a shared resource, ``s3:<bucket>``: ``bucket``, else the one the
    settings name (``HEALTHMON_S3_BUCKET``), else ``s3:landing``. Every reporter of an S3 outage
    (failure hooks, the run-failure and self-healing sensors, a dependency alert) names it here, so
    that one outage has one root key."""
    return f"s3:{bucket or get_settings().s3_bucket or 'landing'}"


def blamed_resource(found: Classification, s3_bucket: str | None = None) -> str | None:
    """The shared resource a transient failure blames (``database:warehouse``, ``s3:<bucket>``),
    None when the failure is the asset's own (a data or configuration error) or names none."""
    if not found.transient:
        return None
    if found.rule.startswith(_DATABASE_RULE_PREFIXES) or found.rule in _DATABASE_RULES:
        return WAREHOUSE
    if found.rule in _S3_RULES:
        return s3_resource(s3_bucket)
    return None


def severity_of(found: Classification, resource: str | None) -> IncidentSeverity:
    """A shared resource down stops every asset: high. A transient error of one asset, or a data
    error (one file or table is wrong, the rest of the pipeline runs): medium."""
    return IncidentSeverity.HIGH if resource else IncidentSeverity.MEDIUM


def component_of(asset_keys: Sequence[str]) -> str:
    """The component of the most upstream pipeline layer among ``asset_keys``."""
    for key in sorted(asset_keys, key=lambda k: (_layer_rank(k), k)):
        return catalog.component_for(key)
    return RUN_COMPONENT


def _layer_rank(key: str) -> int:
    order = [str(layer) for layer in catalog.LAYER_COMPONENTS]
    layer = key.split("/", 1)[0]
    return order.index(layer) if layer in order else len(order)


def classified_failure(
    *,
    title: str,
    asset_keys: Sequence[str],
    found: Classification,
    occurred_at: datetime,
    details: Mapping[str, Any],
    text: str = "",
    s3_bucket: str | None = None,
    dedup_key: str | None = None,
) -> Failure:
    """The failure of ``asset_keys`` classified ``found``: the resource it blames, its severity and
    impact, and the component of its most upstream asset."""
    resource = blamed_resource(found, s3_bucket)
    return Failure(
        title=title[:500],
        component=component_of(asset_keys),
        occurred_at=occurred_at,
        severity=severity_of(found, resource),
        impact=IncidentImpact.MAJOR if resource else IncidentImpact.MINOR,
        asset_keys=tuple(sorted(asset_keys)),
        error_class=found.error_class,
        text=text,
        details=details,
        tags=("transient",) if found.transient else ("permanent",),
        cause_resource=resource,
        dedup_key=dedup_key,
    )


def step_failure(
    *,
    job_name: str,
    run_id: str,
    step_key: str,
    asset_keys: Sequence[str],
    found: Classification,
    occurred_at: datetime,
    error: str = "",
    is_check: bool = False,
    s3_bucket: str | None = None,
) -> Failure:
    """The failure of one step (an asset's, or an asset check's when ``is_check``) of a run. Its
    timeline entry is unique by run and step (``dedup_key``): the failure hook and the run-failure
    sensor reporting the same step record it once."""
    what = "check step" if is_check else "step"
    return classified_failure(
        title=f"{what} {step_key} of {job_name} failed ({found.error_class})",
        asset_keys=asset_keys,
        found=found,
        occurred_at=occurred_at,
        details=_details(job_name, run_id, found, step_key=step_key),
        text=error,
        s3_bucket=s3_bucket,
        dedup_key=f"failure:step:{run_id}:{step_key}",
    )


def run_failure(
    *,
    job_name: str,
    run_id: str,
    found: Classification,
    occurred_at: datetime,
    asset_keys: Sequence[str] = (),
    reason: str = "",
) -> Failure:
    """A run that failed without a failed step: its worker died, it never started, or it crashed
    outside the steps. Its planned assets name the incident's root key; without any, the runs."""
    title = f"run {run_id[:8]} of {job_name} failed without a failed step ({found.error_class})"
    return Failure(
        title=title[:500],
        component=component_of(asset_keys),
        occurred_at=occurred_at,
        severity=IncidentSeverity.HIGH,
        impact=IncidentImpact.MAJOR,
        asset_keys=tuple(sorted(asset_keys)),
        error_class=found.error_class,
        text=reason,
        details=_details(job_name, run_id, found),
        tags=("transient",) if found.transient else ("permanent",),
        dedup_key=f"failure:run:{run_id}",
    )


def _details(
    job_name: str, run_id: str, found: Classification, step_key: str | None = None
) -> Mapping[str, Any]:
    out: dict[str, Any] = {
        "job": job_name,
        "run_id": run_id,
        "transient": found.transient,
        "rule": found.rule,
    }
    if step_key is not None:
        out["step_key"] = step_key
    return out


def recorded_steps(engine: Engine, run_id: str) -> set[str]:
    """Steps of run ``run_id`` whose failure is on an incident's timeline already (a failure hook
    recorded it); ``""`` stands for the run's own failure (the run-failure sensor recorded it)."""
    e = incident_events.c
    with engine.connect() as conn:
        rows = conn.execute(
            sa.select(e.details["step_key"].as_string()).where(
                e.kind == str(IncidentEventKind.FAILURE),
                e.details["run_id"].as_string() == run_id,
            )
        ).scalars()
        return {r or "" for r in rows}
