"""What people and schedules do to alerts: acknowledge, resolve, silence, and the periodic
escalation and repeat of firing alerts nobody acknowledged.

Acknowledging stops escalation and repeats and is forwarded (an ``acknowledged`` notification to
every channel that was told or has its firing notification queued or in flight, sent after it;
PagerDuty turns it into an acknowledge event). Resolving by hand
ends the episode; if its condition is still true the next evaluation opens a new one.
"""

from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection, Engine

from healthmon_dagster.alerting.engine import (
    OPEN,
    enabled_channels,
    queue,
    record_event,
    resolve_in,
    told,
)
from healthmon_dagster.alerting.labels import Matcher
from healthmon_dagster.alerting.signals import effective_rules
from healthmon_dagster.config.models import EscalationPolicy, HealthConfiguration
from healthmon_dagster.enums import (
    AlertEventKind,
    AlertState,
    AlertStatus,
    NotificationKind,
)
from healthmon_dagster.store.connection import write_transaction
from healthmon_dagster.store.metrics import as_utc, utcnow
from healthmon_dagster.store.tables import alert_events, alerts, notifications, silences


class AlertActionError(Exception):
    """An action that cannot be done, with what to do instead."""


def _get(conn: Connection, alert_id: int) -> Any:
    row = conn.execute(sa.select(alerts).where(alerts.c.alert_id == alert_id)).first()
    if row is None:
        raise AlertActionError(f"no alert {alert_id}; `healthmon alerts list` shows the open ones")
    return row


def acknowledge(
    engine: Engine, alert_id: int, by: str, note: str | None = None, now: datetime | None = None
) -> None:
    now = as_utc(now or utcnow())
    a = alerts.c
    with write_transaction(engine) as conn:
        alert = _get(conn, alert_id)
        if alert.state == str(AlertState.RESOLVED):
            raise AlertActionError(f"alert {alert_id} is resolved; nothing to acknowledge")
        if alert.acknowledged_at is not None:
            raise AlertActionError(
                f"alert {alert_id} was acknowledged by {alert.acknowledged_by} at "
                f"{as_utc(alert.acknowledged_at):%Y-%m-%d %H:%M} UTC"
            )
        conn.execute(
            alerts.update()
            .where(a.alert_id == alert_id, OPEN, a.acknowledged_at.is_(None))
            .values(
                acknowledged_by=by,
                acknowledged_at=now,
                ack_note=note,
                next_escalation_at=None,
                status=sa.case(
                    (a.status == str(AlertStatus.SUPPRESSED), a.status),
                    else_=str(AlertStatus.ACKNOWLEDGED),
                ),
            )
        )
        event_id = record_event(conn, alert_id, AlertEventKind.ACKNOWLEDGED, now, by, note=note)
        # Every channel told or about to be: the dispatcher sends the acknowledgement after the
        # firing notification still under way there.
        for channel, group in told(conn, alert_id, queued=True):
            queue(conn, event_id, alert_id, [channel], NotificationKind.ACKNOWLEDGED, group, now)


def resolve(
    engine: Engine, alert_id: int, by: str, resolution: str, now: datetime | None = None
) -> None:
    now = as_utc(now or utcnow())
    if not resolution.strip():
        raise AlertActionError("say how it was resolved (--resolution TEXT)")
    with write_transaction(engine) as conn:
        alert = _get(conn, alert_id)
        if alert.state == str(AlertState.RESOLVED):
            raise AlertActionError(f"alert {alert_id} is resolved already")
        resolve_in(
            conn,
            alert_id,
            alert.state,
            now,
            by,
            note="resolved by hand",
            resolved_by=by,
            resolution=resolution,
        )


# --- silences --------------------------------------------------------------------------------


def add_silence(
    engine: Engine,
    matchers: Sequence[Matcher],
    ends_at: datetime,
    created_by: str,
    comment: str,
    starts_at: datetime | None = None,
) -> int:
    now = utcnow()
    starts = as_utc(starts_at or now)
    if not matchers:
        raise AlertActionError("a silence needs at least one matcher, e.g. asset=stg/patients")
    if as_utc(ends_at) <= starts:
        raise AlertActionError("a silence must end after it starts")
    if not comment.strip():
        raise AlertActionError("say why (--comment TEXT): the next on-call reads it")
    with write_transaction(engine) as conn:
        inserted = conn.execute(
            silences.insert().values(
                matchers=[m.as_json() for m in matchers],
                starts_at=starts,
                ends_at=as_utc(ends_at),
                created_by=created_by,
                comment=comment,
                created_at=now,
            )
        ).inserted_primary_key
    assert inserted is not None
    return int(inserted[0])


def expire_silence(engine: Engine, silence_id: int) -> None:
    now = utcnow()
    s = silences.c
    with write_transaction(engine) as conn:
        moved = conn.execute(
            silences.update()
            .where(s.silence_id == silence_id, s.expired_at.is_(None), s.ends_at > now)
            .values(expired_at=now)
        ).rowcount
    if not moved:
        raise AlertActionError(f"no active silence {silence_id}; `healthmon silences list`")


def list_silences(engine: Engine, include_expired: bool = False) -> list[dict[str, Any]]:
    now = utcnow()
    s = silences.c
    query = sa.select(silences).order_by(s.silence_id)
    if not include_expired:
        query = query.where(s.expired_at.is_(None), s.ends_at > now)
    with engine.connect() as conn:
        rows = conn.execute(query).all()
    return [
        {
            "silence_id": r.silence_id,
            "matchers": [str(Matcher.from_json(m)) for m in r.matchers],
            "starts_at": as_utc(r.starts_at),
            "ends_at": as_utc(r.ends_at),
            "created_by": r.created_by,
            "comment": r.comment,
            "state": "expired"
            if r.expired_at is not None or as_utc(r.ends_at) <= now
            else ("active" if as_utc(r.starts_at) <= now else "pending"),
        }
        for r in rows
    ]


# --- reading ---------------------------------------------------------------------------------


def list_alerts(engine: Engine, include_resolved: bool = False, limit: int = 200) -> list[Any]:
    query = sa.select(alerts).order_by(alerts.c.alert_id.desc()).limit(limit)
    if not include_resolved:
        query = query.where(OPEN)
    with engine.connect() as conn:
        return list(conn.execute(query))


@dataclass
class AlertDetail:
    alert: Any
    history: list[Any] = field(default_factory=list)
    notifications: list[Any] = field(default_factory=list)
    related: list[int] = field(default_factory=list)  # same group, or muted by / muting it


def show_alert(engine: Engine, alert_id: int) -> AlertDetail:
    a, e, n = alerts.c, alert_events.c, notifications.c
    with engine.connect() as conn:
        alert = _get(conn, alert_id)
        history = list(
            conn.execute(sa.select(alert_events).where(e.alert_id == alert_id).order_by(e.event_id))
        )
        sent = list(
            conn.execute(
                sa.select(notifications).where(n.alert_id == alert_id).order_by(n.notification_id)
            )
        )
        related = conn.execute(
            sa.select(a.alert_id)
            .where(
                a.alert_id != alert_id,
                sa.or_(
                    sa.and_(a.group_key == alert.group_key, OPEN),
                    a.inhibited_by == alert_id,
                    a.alert_id == (alert.inhibited_by or -1),
                ),
            )
            .order_by(a.alert_id)
        ).scalars()
        return AlertDetail(alert, history, sent, [int(x) for x in related])


# --- escalation and repeats ------------------------------------------------------------------


@dataclass
class MaintenanceReport:
    escalated: list[int] = field(default_factory=list)
    repeated: list[int] = field(default_factory=list)
    notifications: int = 0


def _policy(config: HealthConfiguration, policy_id: str | None) -> EscalationPolicy | None:
    return next((p for p in config.escalation_policies if p.policy_id == policy_id), None)


def maintain(
    engine: Engine, config: HealthConfiguration, now: datetime | None = None, actor: str = "sensor"
) -> MaintenanceReport:
    """Escalate firing, unacknowledged, unsuppressed alerts whose next level is due, and repeat
    the notification of alerts still firing unchanged after ``grouping.repeat_interval``."""
    now = as_utc(now or utcnow())
    report = MaintenanceReport()
    rules = {r.rule_id: r for r in effective_rules(config)}
    a = alerts.c
    active = (a.state == str(AlertState.FIRING), a.status == str(AlertStatus.ACTIVE))
    with engine.connect() as conn:
        due = conn.execute(
            sa.select(alerts).where(
                *active, a.next_escalation_at.is_not(None), a.next_escalation_at <= now
            )
        ).all()
        repeat_before = now - timedelta(minutes=config.alerting.grouping.repeat_interval_minutes)
        e = alert_events.c
        last_told = (
            sa.select(sa.func.max(e.at))
            .where(
                e.alert_id == a.alert_id,
                e.kind.in_(
                    [
                        str(AlertEventKind.FIRING),
                        str(AlertEventKind.REPEATED),
                        str(AlertEventKind.UNSUPPRESSED),
                    ]
                ),
            )
            .scalar_subquery()
        )
        stale = conn.execute(sa.select(alerts).where(*active, last_told < repeat_before)).all()
    for alert in due:
        rule = rules.get(alert.rule_id)
        policy = _policy(config, rule.escalation_policy if rule else None)
        if policy is None or not policy.escalation_levels:
            continue
        report.notifications += _escalate(engine, config, alert, policy, now, actor, report)
    for alert in stale:
        rule = rules.get(alert.rule_id)
        if rule is None:
            continue
        with write_transaction(engine) as conn:
            event_id = record_event(
                conn,
                alert.alert_id,
                AlertEventKind.REPEATED,
                now,
                actor,
                note=f"still firing after {config.alerting.grouping.repeat_interval_minutes} min",
            )
            report.notifications += queue(
                conn,
                event_id,
                alert.alert_id,
                enabled_channels(config, rule.channels),
                NotificationKind.REPEATED,
                alert.group_key,
                now,
            )
        report.repeated.append(alert.alert_id)
    return report


def _escalate(
    engine: Engine,
    config: HealthConfiguration,
    alert: Any,
    policy: EscalationPolicy,
    now: datetime,
    actor: str,
    report: MaintenanceReport,
) -> int:
    levels = policy.escalation_levels
    if alert.escalations >= policy.max_escalations:
        with write_transaction(engine) as conn:
            conn.execute(
                alerts.update()
                .where(alerts.c.alert_id == alert.alert_id)
                .values(next_escalation_at=None)
            )
        return 0
    level_no = min(alert.escalation_level + 1, len(levels))
    level = levels[level_no - 1]
    fired = as_utc(alert.fired_at or now)
    if level_no < len(levels):
        nxt: datetime | None = fired + timedelta(minutes=levels[level_no].delay_minutes)
    elif policy.repeat_interval_minutes and alert.escalations + 1 < policy.max_escalations:
        nxt = now + timedelta(minutes=policy.repeat_interval_minutes)
    else:
        nxt = None
    due_at = fired + timedelta(minutes=level.delay_minutes)
    if alert.escalation_level < len(levels) and now < due_at:
        with write_transaction(engine) as conn:  # not due yet: wait for this level's delay
            conn.execute(
                alerts.update()
                .where(
                    alerts.c.alert_id == alert.alert_id,
                    alerts.c.escalation_level == alert.escalation_level,
                )
                .values(next_escalation_at=due_at)
            )
        return 0
    a = alerts.c
    with write_transaction(engine) as conn:
        moved = conn.execute(
            alerts.update()
            .where(
                a.alert_id == alert.alert_id,
                a.escalations == alert.escalations,
                a.state == str(AlertState.FIRING),
                a.status == str(AlertStatus.ACTIVE),
            )
            .values(
                escalation_level=level_no, escalations=alert.escalations + 1, next_escalation_at=nxt
            )
        ).rowcount
        if not moved:
            return 0
        who = ", ".join([*level.notify_roles, *level.notify_users]) or "the level's channels"
        event_id = record_event(
            conn,
            alert.alert_id,
            AlertEventKind.ESCALATED,
            now,
            actor,
            note=f"level {level.level} of {policy.policy_id}: unacknowledged; notifying {who}",
            details={
                "level": level.level,
                "escalation": alert.escalations + 1,
                "roles": list(level.notify_roles),
                "users": list(level.notify_users),
            },
        )
        report.escalated.append(alert.alert_id)
        channels = enabled_channels(config, level.channels)
        return queue(
            conn,
            event_id,
            alert.alert_id,
            channels,
            NotificationKind.ESCALATED,
            alert.group_key,
            now,
        )
