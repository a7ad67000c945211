"""Critical alerts open incidents: every firing alert of severity ``critical`` that no incident
links yet opens (or joins) the incident of its root key, and is linked to it.

Whoever fired the alert (the evaluation sensor, the alert fast path in a run), the next call finds
it: the query is "firing, critical, not in ``incident_alerts``", the link is unique by its
primary key and the alert's ``failure`` entry by its ``dedup_key`` (``failure:alert:<id>``), so an
alert is linked and counted once however many processes call this at once. A dependency
alert blames its resource (``dependency=database`` -> ``database:warehouse``), so it meets the
failures of the steps that resource broke in one incident. No Dagster here.
"""

from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Engine, Row

from healthmon_dagster.enums import (
    AlertSeverity,
    AlertState,
    HealthComponent,
    IncidentImpact,
    IncidentSeverity,
    IncidentSource,
)
from healthmon_dagster.incidents.detect import WAREHOUSE, s3_resource
from healthmon_dagster.incidents.lifecycle import link_alert
from healthmon_dagster.incidents.records import Actor, Failure, open_or_absorb
from healthmon_dagster.incidents.rootkey import root_key_for
from healthmon_dagster.store.metrics import as_utc, utcnow
from healthmon_dagster.store.tables import alerts, incident_alerts

ACTOR = Actor("sensor:critical_alerts", IncidentSource.SENSOR)
INCIDENT_RULE_PREFIX = "incident_"  # the rules of incidents/announce.py


def _blamed(labels: dict[str, str], s3_bucket: str | None) -> str | None:
    dependency = labels.get("dependency")
    if dependency == HealthComponent.DATABASE:
        return WAREHOUSE
    if dependency == HealthComponent.S3_DISCOVERY:
        return s3_resource(s3_bucket)
    return None


def dependency_of(root_key: str) -> str | None:
    """The ``dependency`` label of the alert that stands for the resource a root key blames
    (``resource:database:warehouse`` -> ``database``; the inverse of :func:`_blamed`), None for a
    root key that blames no resource."""
    resource = root_key.removeprefix(RESOURCE) if root_key.startswith(RESOURCE) else ""
    if resource == WAREHOUSE:
        return str(HealthComponent.DATABASE)
    if resource.startswith("s3:"):
        return str(HealthComponent.S3_DISCOVERY)
    return None


RESOURCE = "resource:"


def alert_failure(row: Row[Any], s3_bucket: str | None = None) -> Failure:
    """The failure a critical alert reports (its title and labels carry no field value)."""
    labels = {str(k): str(v) for k, v in dict(row.labels).items()}
    asset = labels.get("asset")
    return Failure(
        title=f"critical alert {row.alert_id}: {row.title}"[:500],
        component=row.component or labels.get("component") or "alerts",
        occurred_at=as_utc(row.fired_at or row.started_at),
        severity=IncidentSeverity.CRITICAL,
        impact=IncidentImpact.MAJOR,
        asset_keys=(asset,) if asset else (),
        error_class=f"alert:{row.rule_id}",
        details={"alert_id": int(row.alert_id), "rule_id": row.rule_id},
        tags=("alert",),
        cause_resource=_blamed(labels, s3_bucket),
        dedup_key=f"failure:alert:{int(row.alert_id)}",
    )


def unlinked_critical_alerts(engine: Engine) -> list[Row[Any]]:
    a, ia = alerts.c, incident_alerts.c
    with engine.connect() as conn:
        return list(
            conn.execute(
                sa.select(alerts)
                .where(
                    a.state == str(AlertState.FIRING),
                    a.severity == str(AlertSeverity.CRITICAL),
                    ~sa.exists().where(ia.alert_id == a.alert_id),
                    # An incident's own alert (incidents/announce.py) announces it: no loop.
                    ~a.rule_id.startswith(INCIDENT_RULE_PREFIX),
                )
                .order_by(a.alert_id)
            )
        )


def open_for_critical_alerts(
    engine: Engine, s3_bucket: str | None = None, now: datetime | None = None
) -> dict[int, int]:
    """Open or join an incident for each firing critical alert no incident links; alert id ->
    incident id of those linked by this call."""
    now = as_utc(now or utcnow())
    linked: dict[int, int] = {}
    for row in unlinked_critical_alerts(engine):
        failure = alert_failure(row, s3_bucket)
        opened = open_or_absorb(engine, root_key_for(engine, failure), failure, ACTOR, now=now)
        if link_alert(engine, opened.incident_id, int(row.alert_id), ACTOR, now=now):
            linked[int(row.alert_id)] = opened.incident_id
    return linked
