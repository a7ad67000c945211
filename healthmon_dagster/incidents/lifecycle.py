"""The incident lifecycle: status changes, assignment, notes, edits, links, resolve and close.

Statuses and the moves between them (:data:`TRANSITIONS`)::

    open ---------> investigating <--> identified
      |  \\               |   ^            |
      |   \\              v   | relapse    v
      |    `---------> monitoring <--------'
      v                   |
    resolved <------------'      (every status before resolved may go straight to resolved)
      |   \\
      |    `-> open (reopen: the fix did not hold)
      v
    closed (final: reviewed and done; a new failure opens a new incident)

``open`` may skip ahead to any later status (a person who knows the cause at once says so);
``identified`` may go back to ``investigating`` (the cause was wrong), ``monitoring`` back to
``investigating`` (a relapse; :func:`~healthmon_dagster.incidents.records.open_or_absorb` does this
itself when a failure arrives while monitoring). Resolving needs a resolution text. Reopening
fails while another incident is open for the same root key (one per root cause).

Every change is a conditional ``UPDATE ... WHERE status = <the status it was read in>`` plus a
timeline entry with the actor and source, in one transaction: two people (or a person and the
self-healing sensor) changing one incident at once cannot both win; the loser gets an error
naming the status it now has.

*Acknowledged* (for the time to acknowledge) is the first time a person (CLI or API) assigned the
incident, changed its status or wrote a note on it.
"""

from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy import exc as sa_exc
from sqlalchemy.engine import Connection, Engine, Row

from healthmon_dagster.enums import (
    HealthComponent,
    IncidentEventKind,
    IncidentImpact,
    IncidentSeverity,
    IncidentSource,
    IncidentStatus,
)
from healthmon_dagster.incidents.records import (
    OPEN,
    Actor,
    IncidentError,
    get_row,
    record_event,
)
from healthmon_dagster.store.connection import write_transaction
from healthmon_dagster.store.dialect import insert_ignore
from healthmon_dagster.store.metrics import as_utc, utcnow
from healthmon_dagster.store.tables import alerts, incident_alerts, incidents, related_incidents

S = IncidentStatus
TRANSITIONS: Mapping[IncidentStatus, tuple[IncidentStatus, ...]] = {
    S.OPEN: (S.INVESTIGATING, S.IDENTIFIED, S.MONITORING, S.RESOLVED),
    S.INVESTIGATING: (S.IDENTIFIED, S.MONITORING, S.RESOLVED),
    S.IDENTIFIED: (S.INVESTIGATING, S.MONITORING, S.RESOLVED),
    S.MONITORING: (S.INVESTIGATING, S.RESOLVED),
    S.RESOLVED: (S.OPEN, S.CLOSED),
    S.CLOSED: (),
}
PEOPLE = (IncidentSource.CLI, IncidentSource.API)
EDITABLE = ("title", "description", "severity", "impact", "root_cause", "tags", "component")


class InvalidTransition(IncidentError):
    """A status change the lifecycle does not allow; the message names the allowed ones."""


class ConcurrentChange(IncidentError):
    """The incident changed between reading and writing it; try again."""


def allowed_from(status: IncidentStatus) -> tuple[IncidentStatus, ...]:
    return TRANSITIONS[status]


def check_transition(incident_id: int, current: IncidentStatus, to: IncidentStatus) -> None:
    """:class:`InvalidTransition` unless ``current -> to`` is allowed."""
    allowed = TRANSITIONS[current]
    if to in allowed:
        return
    if not allowed:
        raise InvalidTransition(
            f"incident {incident_id} is closed, which is final; a new failure opens a new incident"
        )
    raise InvalidTransition(
        f"incident {incident_id} is {current}: it cannot move to {to}; allowed from {current}: "
        f"{', '.join(allowed)}"
    )


def _now(now: datetime | None) -> datetime:
    return as_utc(now or utcnow())


def _ack(actor: Actor, now: datetime) -> dict[str, Any]:
    if actor.source not in PEOPLE:
        return {}
    return {"acknowledged_at": sa.func.coalesce(incidents.c.acknowledged_at, now)}


def _conditional_update(
    conn: Connection, row: Row[Any], values: Mapping[str, Any], extra: Sequence[Any] = ()
) -> None:
    """UPDATE the incident only if its status is still the one read in ``row``."""
    c = incidents.c
    done = conn.execute(
        incidents.update()
        .where(c.incident_id == row.incident_id, c.status == row.status, *extra)
        .values(**values)
    )
    if done.rowcount != 1:
        now_status = conn.execute(
            sa.select(c.status).where(c.incident_id == row.incident_id)
        ).scalar()
        raise ConcurrentChange(
            f"incident {row.incident_id} changed while this was being done (it is {now_status} "
            "now); look at it again (`healthmon incidents show`) and retry"
        )


def _status_values(
    row: Row[Any], to: IncidentStatus, now: datetime, resolution: str | None
) -> dict[str, Any]:
    values: dict[str, Any] = {"status": str(to), "updated_at": now}
    if to == S.RESOLVED:
        started = as_utc(row.started_at)
        values |= {
            "ended_at": now,
            "duration_minutes": max(0.0, (now - started).total_seconds() / 60.0),
            "resolution": resolution,
        }
    elif to == S.OPEN:  # reopened: the earlier end was not the end
        values |= {"ended_at": None, "duration_minutes": None}
    elif to == S.CLOSED:
        values["closed_at"] = now
    return values


_KINDS = {
    S.RESOLVED: IncidentEventKind.RESOLVED,
    S.CLOSED: IncidentEventKind.CLOSED,
    S.OPEN: IncidentEventKind.REOPENED,
}


def set_status(
    engine: Engine,
    incident_id: int,
    to: IncidentStatus,
    actor: Actor,
    note: str | None = None,
    *,
    resolution: str | None = None,
    root_cause: str | None = None,
    now: datetime | None = None,
) -> None:
    """Move the incident to ``to`` (see :data:`TRANSITIONS`), with a timeline entry.

    Resolving needs ``resolution`` (how it was fixed); ``root_cause`` may be given with it.
    """
    now = _now(now)
    to = IncidentStatus(to)
    if to == S.RESOLVED and not (resolution or "").strip():
        raise IncidentError(
            f"resolving incident {incident_id} needs a resolution: say how it was fixed"
        )
    with write_transaction(engine) as conn:
        row = get_row(conn, incident_id)
        current = IncidentStatus(row.status)
        check_transition(incident_id, current, to)
        values = _status_values(row, to, now, resolution) | _ack(actor, now)
        if root_cause:
            values["root_cause"] = root_cause
        try:
            with conn.begin_nested():
                _conditional_update(conn, row, values)
        except sa_exc.IntegrityError:
            raise _reopen_conflict(conn, row) from None
        text = f"status {current} -> {to}"
        if to == S.RESOLVED:
            text += f"; resolution: {resolution}"
        if note:
            text += f"; {note}"
        record_event(
            conn,
            incident_id,
            _KINDS.get(to, IncidentEventKind.STATUS_CHANGED),
            actor,
            now,
            text,
            from_status=str(current),
            to_status=str(to),
            details={"root_cause": root_cause} if root_cause else None,
        )


def _reopen_conflict(conn: Connection, row: Row[Any]) -> IncidentError:
    other = conn.execute(
        sa.select(incidents.c.incident_id).where(incidents.c.root_key == row.root_key, OPEN)
    ).scalar()
    return IncidentError(
        f"incident {row.incident_id} cannot be reopened: incident {other} is open for the same "
        f"root cause ({row.root_key}); add to that one instead"
    )


def resolve(
    engine: Engine,
    incident_id: int,
    resolution: str,
    actor: Actor,
    root_cause: str | None = None,
    now: datetime | None = None,
) -> None:
    """Resolve the incident (the plan's resolveIncident): end time, duration and resolution."""
    set_status(
        engine,
        incident_id,
        S.RESOLVED,
        actor,
        resolution=resolution,
        root_cause=root_cause,
        now=now,
    )


def close(
    engine: Engine,
    incident_id: int,
    actor: Actor,
    note: str | None = None,
    now: datetime | None = None,
) -> None:
    """Close a resolved incident (reviewed; final)."""
    set_status(engine, incident_id, S.CLOSED, actor, note, now=now)


def _not_closed(incident_id: int, row: Row[Any], what: str) -> None:
    if row.status == str(S.CLOSED):
        raise IncidentError(
            f"incident {incident_id} is closed, which is final: it cannot be {what}; a note "
            "can still be added"
        )


def assign(
    engine: Engine, incident_id: int, assignee: str, actor: Actor, now: datetime | None = None
) -> None:
    """Assign the incident to ``assignee`` (a person or team)."""
    now = _now(now)
    if not assignee.strip():
        raise IncidentError("say who to assign the incident to")
    with write_transaction(engine) as conn:
        row = get_row(conn, incident_id)
        _not_closed(incident_id, row, "assigned")
        values = {"assigned_to": assignee, "updated_at": now} | _ack(actor, now)
        _conditional_update(conn, row, values)
        was = f" (was {row.assigned_to})" if row.assigned_to else ""
        record_event(
            conn,
            incident_id,
            IncidentEventKind.ASSIGNED,
            actor,
            now,
            f"assigned to {assignee}{was}",
            details={"assigned_to": assignee, "previous": row.assigned_to},
        )


def add_note(
    engine: Engine, incident_id: int, text: str, actor: Actor, now: datetime | None = None
) -> int:
    """A note on the timeline (also on a closed incident: a postmortem finding); its event id."""
    now = _now(now)
    if not text.strip():
        raise IncidentError("a note needs text")
    with write_transaction(engine) as conn:
        row = get_row(conn, incident_id)
        ack = _ack(actor, now)
        if ack:
            conn.execute(
                incidents.update().where(incidents.c.incident_id == row.incident_id).values(**ack)
            )
        return record_event(conn, incident_id, IncidentEventKind.NOTE, actor, now, text)


def _edit_values(
    row: Row[Any], changes: Mapping[str, Any]
) -> tuple[dict[str, Any], list[str], dict[str, Any]]:
    unknown = sorted(set(changes) - set(EDITABLE))
    if unknown:
        raise IncidentError(
            f"cannot edit {', '.join(unknown)} of an incident; editable: {', '.join(EDITABLE)} "
            "(status, assignment and resolution have their own commands)"
        )
    kinds = {
        "severity": IncidentSeverity,
        "impact": IncidentImpact,
        "component": HealthComponent,
    }
    values: dict[str, Any] = {}
    said: list[str] = []
    details: dict[str, Any] = {}
    for name, value in changes.items():
        if name in kinds:
            try:
                value = str(kinds[name](value))
            except ValueError:
                allowed = ", ".join(m.value for m in kinds[name])
                raise IncidentError(f"{name} {value!r} is not one of {allowed}") from None
        if name == "tags":
            value = sorted(set(value))
        if value == getattr(row, name):
            continue
        values[name] = value
        if name in kinds:
            said.append(f"{name} {getattr(row, name)} -> {value}")
            details[name] = {"from": getattr(row, name), "to": value}
        else:
            said.append(name.replace("_", " "))
            details[name] = "changed"
    return values, said, details


def update(
    engine: Engine,
    incident_id: int,
    actor: Actor,
    changes: Mapping[str, Any],
    now: datetime | None = None,
) -> list[str]:
    """Edit fields of the incident (the plan's updateIncident, without status: that is
    :func:`set_status`); what changed, in words. A higher severity is an ``escalated`` entry."""
    now = _now(now)
    with write_transaction(engine) as conn:
        row = get_row(conn, incident_id)
        _not_closed(incident_id, row, "edited")
        values, said, details = _edit_values(row, changes)
        if not values:
            return []
        _conditional_update(conn, row, values | {"updated_at": now} | _ack(actor, now))
        kind = IncidentEventKind.UPDATED
        if "severity" in values:
            old, new = IncidentSeverity(row.severity), IncidentSeverity(values["severity"])
            if new.rank > old.rank:
                kind = IncidentEventKind.ESCALATED
        record_event(
            conn, incident_id, kind, actor, now, "updated: " + ", ".join(said), details=details
        )
        return said


def link_alert(
    engine: Engine, incident_id: int, alert_id: int, actor: Actor, now: datetime | None = None
) -> bool:
    """Link an alert to the incident (once); False when it was linked already."""
    now = _now(now)
    with write_transaction(engine) as conn:
        get_row(conn, incident_id)
        alert = conn.execute(
            sa.select(alerts.c.rule_id, alerts.c.severity, alerts.c.title).where(
                alerts.c.alert_id == alert_id
            )
        ).first()
        if alert is None:
            raise IncidentError(
                f"no alert {alert_id}; `healthmon alerts list --all` shows every alert"
            )
        inserted = conn.execute(
            insert_ignore(incident_alerts, conn).values(
                incident_id=incident_id, alert_id=alert_id, linked_at=now, linked_by=actor.name
            )
        ).rowcount
        if inserted != 1:
            return False
        record_event(
            conn,
            incident_id,
            IncidentEventKind.ALERT_LINKED,
            actor,
            now,
            f"alert {alert_id} linked: {alert.title} (rule {alert.rule_id}, {alert.severity})",
            details={"alert_id": alert_id, "rule_id": alert.rule_id},
        )
        return True


def link_incidents(
    engine: Engine,
    incident_id: int,
    other_id: int,
    strength: float,
    reason: str,
    actor: Actor,
    now: datetime | None = None,
) -> bool:
    """Record that two incidents are related (once per pair), on both timelines; False when
    they were linked already."""
    now = _now(now)
    if incident_id == other_id:
        raise IncidentError(f"incident {incident_id} cannot be related to itself")
    low, high = sorted((incident_id, other_id))
    with write_transaction(engine) as conn:
        get_row(conn, low)
        get_row(conn, high)
        inserted = conn.execute(
            insert_ignore(related_incidents, conn).values(
                incident_id=low,
                related_id=high,
                strength=min(1.0, max(0.0, strength)),
                reason=reason,
                linked_at=now,
                linked_by=actor.name,
            )
        ).rowcount
        if inserted != 1:
            return False
        for this, that in ((incident_id, other_id), (other_id, incident_id)):
            record_event(
                conn,
                this,
                IncidentEventKind.INCIDENT_LINKED,
                actor,
                now,
                f"related to incident {that} (strength {strength:.2f}): {reason}",
                details={"incident_id": that, "strength": strength},
            )
        return True
