"""Incidents in the health store: one open incident per root cause, and the timeline.

A failure (reported by a failure hook, the run-failure sensor, an alert or a person) names its
root cause with a *root key*, e.g. ``resource:database:warehouse`` or ``asset:raw/patients``.
:func:`open_or_absorb` opens an incident for it, or, when one is already open for that root key,
appends the failure to that incident's timeline. The database decides which: the partial unique
index ``uq_incidents_open_root_key`` admits one incident per root key that is neither resolved nor
closed, and the insert is ``ON CONFLICT DO NOTHING``; the loser of a race (another sensor process,
a hook in a parallel step) finds the winner's row and absorbs into it. Two processes can never
open two incidents for one root cause, whatever their timing.
A failure that names itself (:attr:`Failure.dedup_key`) and a sent notification are one timeline
entry however many processes report them: the unique index ``uq_incident_events_dedup_key``
decides (:func:`record_unique_event`).

No Dagster here: the hooks and sensors in ``defs/`` adapt Dagster's events into :class:`Failure`.
Texts on the timeline are built from asset keys, counts, column names and error classes; an
exception is rendered with :func:`healthmon_dagster.store.errors.error_text`, which drops values.
Which root key a failure belongs to is :func:`healthmon_dagster.incidents.rootkey.root_key_for`.
"""

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection, Engine, Row

from healthmon_dagster.alerting.lineage import Lineage
from healthmon_dagster.enums import (
    HealthComponent,
    IncidentEventKind,
    IncidentImpact,
    IncidentSeverity,
    IncidentSource,
    IncidentStatus,
)
from healthmon_dagster.store.connection import write_transaction
from healthmon_dagster.store.dialect import insert_ignore
from healthmon_dagster.store.metrics import as_utc, utcnow
from healthmon_dagster.store.tables import (
    incident_alerts,
    incident_events,
    incidents,
    related_incidents,
)

ENDED_STATUSES = (IncidentStatus.RESOLVED, IncidentStatus.CLOSED)
OPEN = incidents.c.status.not_in([str(s) for s in ENDED_STATUSES])
"""Incidents that are neither resolved nor closed: the ones that absorb new failures."""

ABSORB_ATTEMPTS = 5
"""How often :func:`open_or_absorb` tries again when the open incident it lost a race to was
resolved before it could absorb into it (each try either inserts or finds an open one)."""


class IncidentError(Exception):
    """Something that cannot be done to an incident; the message says why and what to do."""


class IncidentNotFound(IncidentError):
    """No incident with that id."""


@dataclass(frozen=True)
class Actor:
    """Who acts on an incident (``cli:alice``, ``sensor:run_failure``, ``hook:patients_etl_job``)
    and from which part of the system."""

    name: str
    source: IncidentSource

    def __post_init__(self) -> None:
        if not self.name.strip():
            raise IncidentError("an incident action needs an actor name (who did it)")


@dataclass(frozen=True)
class Failure:
    """One failure reported to the incident store.

    ``title`` and ``text`` are written by the adapter from asset keys, step names, counts and the
    error class (an exception through :func:`healthmon_dagster.store.errors.error_text`), never
    from field values; ``details`` holds the same kind of facts (run id, step key, counts) for
    machines. ``cause_resource`` is the shared resource the error points at (``database:<name>``
    when the database is unreachable, ``s3:<bucket>`` when S3 is), None for a failure of the
    asset itself; :func:`healthmon_dagster.incidents.rootkey.root_key_for` uses it.
    """

    title: str
    component: HealthComponent | str
    occurred_at: datetime
    severity: IncidentSeverity = IncidentSeverity.MEDIUM
    impact: IncidentImpact = IncidentImpact.MINOR
    asset_keys: Sequence[str] = ()
    resources: Sequence[str] = ()
    error_class: str | None = None
    text: str = ""
    details: Mapping[str, Any] = field(default_factory=dict)
    tags: Sequence[str] = ()
    description: str = ""
    cause_resource: str | None = None
    dedup_key: str | None = None
    """Names the failure itself (``failure:step:<run>:<step>``, ``failure:alert:<id>``): its
    timeline entry is unique by it (a unique index), so a failure two reporters see (the failure
    hook and the run-failure sensor, two processes linking one critical alert) is recorded once."""

    @property
    def all_resources(self) -> set[str]:
        """The resources it uses, with the one it blames."""
        return set(self.resources) | ({self.cause_resource} if self.cause_resource else set())


@dataclass(frozen=True)
class Opened:
    """What :func:`open_or_absorb` did: ``created`` a new incident, or absorbed the failure into
    the open incident ``incident_id`` of the same root key."""

    incident_id: int
    created: bool


def _failure_text(failure: Failure) -> str:
    parts = [failure.title]
    if failure.error_class:
        parts.append(f"error class {failure.error_class}")
    if failure.asset_keys:
        parts.append(f"assets {', '.join(sorted(failure.asset_keys))}")
    text = "; ".join(parts)
    return f"{text}: {failure.text}" if failure.text else text


def _failure_details(failure: Failure) -> dict[str, Any]:
    return {
        **dict(failure.details),
        "component": str(failure.component),
        "severity": str(failure.severity),
        "error_class": failure.error_class,
        "asset_keys": sorted(failure.asset_keys),
        "resources": sorted(failure.all_resources),
        "cause_resource": failure.cause_resource,
        "occurred_at": as_utc(failure.occurred_at).isoformat(),
    }


def record_event(
    conn: Connection,
    incident_id: int,
    kind: IncidentEventKind,
    actor: Actor,
    at: datetime,
    text: str,
    *,
    from_status: str | None = None,
    to_status: str | None = None,
    details: Mapping[str, Any] | None = None,
) -> int:
    """Append one entry to an incident's timeline (in the caller's transaction); its event id."""
    event_id = record_unique_event(
        conn,
        incident_id,
        kind,
        actor,
        at,
        text,
        None,
        from_status=from_status,
        to_status=to_status,
        details=details,
    )
    assert event_id is not None  # without a dedup key nothing conflicts
    return event_id


def record_unique_event(
    conn: Connection,
    incident_id: int,
    kind: IncidentEventKind,
    actor: Actor,
    at: datetime,
    text: str,
    dedup_key: str | None,
    *,
    from_status: str | None = None,
    to_status: str | None = None,
    details: Mapping[str, Any] | None = None,
) -> int | None:
    """Append one entry unless an entry with ``dedup_key`` exists (the unique index
    ``uq_incident_events_dedup_key`` decides, ``ON CONFLICT DO NOTHING``, so concurrent writers
    add it once); its event id, None when it was there already. No key: always appended."""
    insert = incident_events.insert() if dedup_key is None else insert_ignore(incident_events, conn)
    found = conn.execute(
        insert.values(
            incident_id=incident_id,
            at=at,
            kind=str(kind),
            actor=actor.name,
            source=str(actor.source),
            from_status=from_status,
            to_status=to_status,
            text=text,
            details=dict(details or {}),
            dedup_key=dedup_key,
        ).returning(incident_events.c.event_id)
    ).scalar()
    return None if found is None else int(found)


def add_event(
    engine: Engine,
    incident_id: int,
    kind: IncidentEventKind,
    actor: Actor,
    text: str,
    details: Mapping[str, Any] | None = None,
    now: datetime | None = None,
    dedup_key: str | None = None,
) -> int | None:
    """Append a timeline entry in its own transaction (a notification sent, a self-heal attempt
    and its outcome); :class:`IncidentNotFound` for an unknown incident. With ``dedup_key``, once:
    None when an entry with that key exists."""
    with write_transaction(engine) as conn:
        get_row(conn, incident_id)
        return record_unique_event(
            conn,
            incident_id,
            kind,
            actor,
            as_utc(now or utcnow()),
            text,
            dedup_key,
            details=details,
        )


def _new_row(root_key: str, failure: Failure, now: datetime) -> dict[str, Any]:
    started = as_utc(failure.occurred_at)
    return {
        "root_key": root_key,
        "title": failure.title,
        "description": failure.description,
        "severity": str(failure.severity),
        "status": str(IncidentStatus.OPEN),
        "component": str(failure.component),
        "asset_keys": sorted(set(failure.asset_keys)),
        "resources": sorted(failure.all_resources),
        "impact": str(failure.impact),
        "tags": sorted(set(failure.tags)),
        "metadata": {"error_classes": [failure.error_class] if failure.error_class else []},
        "failure_count": 1,
        "started_at": min(started, now),
        "created_at": now,
        "last_failure_at": started,
        "updated_at": now,
    }


class _AlreadyRecorded(Exception):
    """The failure's entry (by its dedup key) is on incident ``incident_id``: roll back."""

    def __init__(self, incident_id: int) -> None:
        super().__init__(incident_id)
        self.incident_id = incident_id


def _holder(conn: Connection, dedup_key: str | None) -> int | None:
    """The incident whose timeline holds the entry ``dedup_key``, if any."""
    if dedup_key is None:
        return None
    found = conn.execute(
        sa.select(incident_events.c.incident_id).where(incident_events.c.dedup_key == dedup_key)
    ).scalar()
    return None if found is None else int(found)


def open_or_absorb(
    engine: Engine,
    root_key: str,
    failure: Failure,
    actor: Actor,
    now: datetime | None = None,
    lineage: Lineage | None = None,
) -> Opened:
    """Open an incident for ``root_key``, or add ``failure`` to the one open for it.

    A new incident starts ``open`` with a ``created`` and a ``failure`` entry on its timeline. An
    absorbed failure adds a ``failure`` entry, counts, widens the incident's assets and resources,
    raises its severity when the failure is worse (an ``escalated`` entry), moves the incident's
    component to the failure's when it brings an asset upstream of the incident's failing assets
    (by ``lineage``, default the bundled pipeline's), and sends an incident in ``monitoring``
    back to ``investigating`` (a relapse).

    A failure with a ``dedup_key`` already on a timeline (another reporter recorded it, maybe at
    this very moment: the unique index decides) changes nothing: the incident holding it is
    returned, ``created`` False.
    """
    if not root_key.strip():
        raise IncidentError("a failure needs a root key (what it is a failure of)")
    now = as_utc(now or utcnow())
    lineage = lineage or Lineage.bundled()
    for _ in range(ABSORB_ATTEMPTS):
        try:
            with write_transaction(engine) as conn:
                holder = _holder(conn, failure.dedup_key)
                if holder is not None:
                    return Opened(holder, False)
                new_id = conn.execute(
                    insert_ignore(incidents, conn)
                    .values(**_new_row(root_key, failure, now))
                    .returning(incidents.c.incident_id)
                ).scalar()
                if new_id is not None:
                    _record_opening(conn, int(new_id), root_key, failure, actor, now)
                    return Opened(int(new_id), True)
                current = conn.execute(
                    sa.select(incidents)
                    .where(incidents.c.root_key == root_key, OPEN)
                    .with_for_update()
                ).first()
                if current is not None:
                    _absorb(conn, current, failure, actor, now, lineage)
                    return Opened(int(current.incident_id), False)
        except _AlreadyRecorded as won:
            return Opened(won.incident_id, False)
    raise IncidentError(
        f"could not open or absorb into an incident for {root_key} after {ABSORB_ATTEMPTS} "
        "attempts: its open incident kept being resolved concurrently; report the failure again"
    )


def _record_failure(
    conn: Connection, incident_id: int, failure: Failure, actor: Actor, now: datetime, text: str
) -> None:
    """The failure's entry; when its dedup key is taken (a concurrent reporter committed it
    first), :class:`_AlreadyRecorded` rolls the whole transaction back."""
    added = record_unique_event(
        conn,
        incident_id,
        IncidentEventKind.FAILURE,
        actor,
        now,
        text,
        failure.dedup_key,
        details=_failure_details(failure),
    )
    if added is None:
        holder = _holder(conn, failure.dedup_key)
        raise _AlreadyRecorded(incident_id if holder is None else holder)


def _record_opening(
    conn: Connection, incident_id: int, root_key: str, failure: Failure, actor: Actor, now: datetime
) -> None:
    record_event(
        conn,
        incident_id,
        IncidentEventKind.CREATED,
        actor,
        now,
        f"incident opened for {root_key}: {failure.title} "
        f"(severity {failure.severity}, component {failure.component})",
        to_status=str(IncidentStatus.OPEN),
        details={"root_key": root_key},
    )
    _record_failure(conn, incident_id, failure, actor, now, _failure_text(failure))


def _merged(current: Iterable[str], new: Iterable[str]) -> list[str]:
    return sorted(set(current) | set(new))


def _upstream_asset(current: Row[Any], failure: Failure, lineage: Lineage) -> str | None:
    """An asset of ``failure`` upstream of the incident's failing assets, none of which is
    upstream of (or is) it: the incident's most upstream failing asset is now the failure's."""
    old = set(current.asset_keys)
    for asset in sorted(set(failure.asset_keys) - old):
        below = any(lineage.is_downstream(o, asset) for o in old)
        if below and not any(lineage.is_downstream(asset, o) for o in old):
            return asset
    return None


def _absorb(
    conn: Connection,
    current: Row[Any],
    failure: Failure,
    actor: Actor,
    now: datetime,
    lineage: Lineage,
) -> None:
    incident_id = int(current.incident_id)
    upstream = _upstream_asset(current, failure, lineage)
    moved = upstream is not None and str(failure.component) != current.component
    text = f"failure absorbed (same root cause): {_failure_text(failure)}"
    if moved:
        text += (
            f"; component {current.component} -> {failure.component}: {upstream} is upstream of "
            "the incident's failing assets"
        )
    _record_failure(conn, incident_id, failure, actor, now, text)
    occurred = as_utc(failure.occurred_at)
    old_severity = IncidentSeverity(current.severity)
    severity = max(old_severity, IncidentSeverity(failure.severity), key=lambda s: s.rank)
    meta = dict(current.metadata)
    if failure.error_class:
        meta["error_classes"] = _merged(meta.get("error_classes", []), [failure.error_class])
    values: dict[str, Any] = {
        "failure_count": incidents.c.failure_count + 1,
        "last_failure_at": max(as_utc(current.last_failure_at), occurred),
        "started_at": min(as_utc(current.started_at), occurred),
        "asset_keys": _merged(current.asset_keys, failure.asset_keys),
        "resources": _merged(current.resources, failure.all_resources),
        "tags": _merged(current.tags, failure.tags),
        "metadata": meta,
        "severity": str(severity),
        "updated_at": now,
    }
    if moved:
        values["component"] = str(failure.component)
    relapse = current.status == str(IncidentStatus.MONITORING)
    if relapse:
        values["status"] = str(IncidentStatus.INVESTIGATING)
    conn.execute(incidents.update().where(incidents.c.incident_id == incident_id).values(**values))
    if severity != old_severity:
        record_event(
            conn,
            incident_id,
            IncidentEventKind.ESCALATED,
            actor,
            now,
            f"severity {old_severity} -> {severity} by an absorbed failure",
            details={"from": str(old_severity), "to": str(severity)},
        )
    if relapse:
        record_event(
            conn,
            incident_id,
            IncidentEventKind.STATUS_CHANGED,
            actor,
            now,
            "relapse: a new failure while monitoring; back to investigating",
            from_status=str(IncidentStatus.MONITORING),
            to_status=str(IncidentStatus.INVESTIGATING),
        )


# --- reading -----------------------------------------------------------------------------------


def get_row(conn: Connection, incident_id: int) -> Row[Any]:
    """The incident's row; :class:`IncidentNotFound` saying how to find the right id."""
    row = conn.execute(sa.select(incidents).where(incidents.c.incident_id == incident_id)).first()
    if row is None:
        raise IncidentNotFound(
            f"no incident {incident_id}; `healthmon incidents list --all` shows every incident"
        )
    return row


@dataclass(frozen=True)
class Incident:
    """The plan's Incident: the stored record with its related alerts and incidents."""

    incident_id: int
    root_key: str
    title: str
    description: str
    severity: IncidentSeverity
    status: IncidentStatus
    component: str
    asset_keys: tuple[str, ...]
    resources: tuple[str, ...]
    impact: IncidentImpact
    root_cause: str | None
    resolution: str | None
    assigned_to: str | None
    tags: tuple[str, ...]
    metadata: Mapping[str, Any]
    failure_count: int
    start_time: datetime
    created_at: datetime
    last_failure_at: datetime
    acknowledged_at: datetime | None
    end_time: datetime | None
    duration_minutes: float | None
    closed_at: datetime | None
    related_alerts: tuple[int, ...] = ()
    related_incidents: tuple[int, ...] = ()

    @classmethod
    def from_row(
        cls, row: Row[Any], alerts: Sequence[int] = (), related: Sequence[int] = ()
    ) -> "Incident":
        def ts(value: datetime | None) -> datetime | None:
            return None if value is None else as_utc(value)

        return cls(
            incident_id=int(row.incident_id),
            root_key=row.root_key,
            title=row.title,
            description=row.description,
            severity=IncidentSeverity(row.severity),
            status=IncidentStatus(row.status),
            component=row.component,
            asset_keys=tuple(row.asset_keys),
            resources=tuple(row.resources),
            impact=IncidentImpact(row.impact),
            root_cause=row.root_cause,
            resolution=row.resolution,
            assigned_to=row.assigned_to,
            tags=tuple(row.tags),
            metadata=dict(row.metadata),
            failure_count=int(row.failure_count),
            start_time=as_utc(row.started_at),
            created_at=as_utc(row.created_at),
            last_failure_at=as_utc(row.last_failure_at),
            acknowledged_at=ts(row.acknowledged_at),
            end_time=ts(row.ended_at),
            duration_minutes=row.duration_minutes,
            closed_at=ts(row.closed_at),
            related_alerts=tuple(alerts),
            related_incidents=tuple(related),
        )

    @property
    def is_open(self) -> bool:
        return self.status not in ENDED_STATUSES

    def to_dict(self) -> dict[str, Any]:
        return {
            "incident_id": self.incident_id,
            "root_key": self.root_key,
            "title": self.title,
            "description": self.description,
            "severity": str(self.severity),
            "status": str(self.status),
            "component": self.component,
            "asset_keys": list(self.asset_keys),
            "resources": list(self.resources),
            "impact": str(self.impact),
            "root_cause": self.root_cause,
            "resolution": self.resolution,
            "assigned_to": self.assigned_to,
            "tags": list(self.tags),
            "metadata": dict(self.metadata),
            "failure_count": self.failure_count,
            "start_time": self.start_time.isoformat(),
            "created_at": self.created_at.isoformat(),
            "last_failure_at": self.last_failure_at.isoformat(),
            "acknowledged_at": _iso(self.acknowledged_at),
            "end_time": _iso(self.end_time),
            "duration_minutes": self.duration_minutes,
            "closed_at": _iso(self.closed_at),
            "related_alerts": list(self.related_alerts),
            "related_incidents": list(self.related_incidents),
        }


def _iso(ts: datetime | None) -> str | None:
    return None if ts is None else ts.isoformat()


def linked_alert_ids(conn: Connection, incident_id: int) -> list[int]:
    ia = incident_alerts.c
    return [
        int(a)
        for a in conn.execute(
            sa.select(ia.alert_id).where(ia.incident_id == incident_id).order_by(ia.alert_id)
        ).scalars()
    ]


def related_incident_ids(conn: Connection, incident_id: int) -> list[int]:
    r = related_incidents.c
    other = sa.case((r.incident_id == incident_id, r.related_id), else_=r.incident_id)
    return sorted(
        int(i)
        for i in conn.execute(
            sa.select(other).where(
                sa.or_(r.incident_id == incident_id, r.related_id == incident_id)
            )
        ).scalars()
    )


def load_incident(conn: Connection, incident_id: int) -> Incident:
    row = get_row(conn, incident_id)
    return Incident.from_row(
        row, linked_alert_ids(conn, incident_id), related_incident_ids(conn, incident_id)
    )


def get_incident(engine: Engine, incident_id: int) -> Incident:
    with engine.connect() as conn:
        return load_incident(conn, incident_id)


def list_incidents(
    engine: Engine,
    include_ended: bool = False,
    component: str | None = None,
    severity: IncidentSeverity | None = None,
    limit: int | None = None,
) -> list[Incident]:
    """Incidents newest first: the open ones (the plan's getActiveIncidents), or all of them."""
    c = incidents.c
    query = sa.select(incidents).order_by(c.started_at.desc(), c.incident_id.desc())
    if not include_ended:
        query = query.where(OPEN)
    if component is not None:
        query = query.where(c.component == component)
    if severity is not None:
        query = query.where(c.severity == str(severity))
    if limit is not None:
        query = query.limit(limit)
    with engine.connect() as conn:
        return [Incident.from_row(r) for r in conn.execute(query)]


def timeline(engine: Engine, incident_id: int) -> list[Row[Any]]:
    """The incident's timeline in order (event_id breaks ties of one instant)."""
    e = incident_events.c
    with engine.connect() as conn:
        get_row(conn, incident_id)
        return list(
            conn.execute(
                sa.select(incident_events)
                .where(e.incident_id == incident_id)
                .order_by(e.at, e.event_id)
            )
        )
