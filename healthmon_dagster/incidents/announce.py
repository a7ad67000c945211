"""Incidents announced through the alert channels: each open incident is an alert of its own.

An incident is announced as an alert with the labels ``alertname=incident``, ``incident_id``,
``component`` and ``severity``, raised and resolved by the alert engine like any other: this module
only makes the signals (:func:`incident_signals`) and the rules they belong to
(:func:`with_incident_rules`); ``alerting.engine.evaluate`` does the rest. So an incident gets the
engine's dedup (one open alert per fingerprint, by index), grouping, silences, routing to the
channels, the outbox's exactly-once delivery, escalation policies, acknowledgement, and the
PagerDuty and signed webhook (Alertmanager JSON) exports, with no second notification path.

- Opening an incident fires its alert (the rule ``incident_<severity>``: ``incident_low`` is an
  ``info`` alert ... ``incident_critical`` a ``critical`` one).
- Escalating (severity up) resolves the alert of the old severity and fires one of the new: the
  channels are told both, the second with the higher severity (Prometheus does the same when an
  alert's labels change; the fingerprint includes the severity).
- Resolving or closing the incident resolves its alert: the channels told are told it resolved.
- An incident whose root key blames a resource (``resource:database:warehouse``) is that
  resource's outage, as is the resource's own alert (``dependency_unreachable``, linked to the
  incident): the incident's alert carries the resource's ``dependency`` label, and of the two the
  one announced first mutes the other (``alerting/inhibit.py``; its details carry ``opened_at``):
  one page per outage, not two. Once every linked alert of the resource has resolved, the
  incident's alert resolves too, while the incident goes on to its end (monitoring, resolved) on
  its timeline. An incident of a resource that has no alert of its own (no connectivity check) is
  announced as any other.

The rules are built in (channels: ``alerting.builtin_channels``); a rule of the same id in
``alert_rules`` (event kind ``incident``) replaces one, e.g. to page on ``incident_critical``
through PagerDuty with an escalation policy.

:func:`record_sent` puts a ``notification_sent`` entry on an incident's timeline once the outbox
marks a notification of its alert sent (not when queued: a queued message may still be cancelled
or fail), once per notification: the entry's ``dedup_key`` ``notification:<id>`` is unique (an
index), so two processes recording at once add it once.

:func:`queue_updates` tells the channels of an incident's firing alert what changed since it
fired: a status change (investigating, identified, monitoring, a relapse), an assignment, an
edit (not each absorbed failure: an outage absorbs dozens). One ``updated`` notification per
timeline entry (an alert event keyed ``incident_event:<id>``, unique by index), to the channels of
the incident's rule but PagerDuty that were told of its alert or have its firing notification
queued (the dispatcher sends the update after it), unless a firing notification queued there
after the entry was written shows the incident as it is now (its status). Nothing goes out while
the alert is suppressed (a silence, a mute interval, the dependency's alert that paged the
outage first): the entries written meanwhile wait, and an update queued before the suppression
waits in the outbox; once it ends, the channels told before it hear of them, however long it
lasted (a silence longer than :data:`UPDATE_LOOKBACK` too). Webhook receivers (an ITSM) get
Alertmanager JSON with the alert still firing and the annotations ``incident_update`` (the entry's
text) and ``incident_update_kind``; Slack and email reply in the alert's thread. PagerDuty's
Events API v2 has only trigger, acknowledge and resolve (a trigger with the same ``dedup_key`` is
dropped as a duplicate), so it gets no update: the incident's PagerDuty alert opens, escalates
and resolves.

:func:`announce` is the fast path's half: the failure hook that opens an incident evaluates that
incident's signals at once (the same evaluation, rules and outbox as the sensor's, over no check
result), so its notification is queued in the run rather than at the next sensor tick.
"""

from collections.abc import Sequence
from datetime import datetime, timedelta
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection, Engine

from healthmon_dagster.alerting.engine import (
    EvaluationReport,
    enabled_channels,
    evaluate,
    queue,
    told_firing_at,
)
from healthmon_dagster.alerting.signals import Signal, alert_labels
from healthmon_dagster.config.models import AlertRule, EventCondition, HealthConfiguration
from healthmon_dagster.enums import (
    AlertEventKind,
    AlertSeverity,
    AlertState,
    AlertStatus,
    ChannelType,
    EventKind,
    IncidentEventKind,
    IncidentSeverity,
    IncidentSource,
    NotificationKind,
    NotificationStatus,
)
from healthmon_dagster.incidents.alerts import INCIDENT_RULE_PREFIX, dependency_of
from healthmon_dagster.incidents.records import OPEN, Actor, record_unique_event
from healthmon_dagster.store.connection import write_transaction
from healthmon_dagster.store.dialect import insert_ignore
from healthmon_dagster.store.metrics import as_utc, utcnow
from healthmon_dagster.store.tables import (
    alert_events,
    alerts,
    check_results,
    incident_alerts,
    incident_events,
    incidents,
    notifications,
)

ALERTNAME = "incident"
RULE_PREFIX = INCIDENT_RULE_PREFIX
ALERT_SEVERITY = {
    IncidentSeverity.LOW: AlertSeverity.INFO,
    IncidentSeverity.MEDIUM: AlertSeverity.WARNING,
    IncidentSeverity.HIGH: AlertSeverity.ERROR,
    IncidentSeverity.CRITICAL: AlertSeverity.CRITICAL,
}
ENDED_LOOKBACK = timedelta(days=7)
"""Ended incidents younger than this still send an inactive signal (resolving their alert)."""
ACTOR = Actor("sensor:incident_notifications", IncidentSource.SENSOR)
UPDATE_KINDS = (
    IncidentEventKind.STATUS_CHANGED,
    IncidentEventKind.ASSIGNED,
    IncidentEventKind.UPDATED,
)
"""Timeline entries the channels hear of as an update (opening, escalating and resolving an
incident fire and resolve its alerts instead). An absorbed failure is not one: an outage absorbs a
failure from every step and check that meets it, and the page already said the outage is on; they
are on the timeline (``healthmon incidents show``)."""
UPDATE_KEY = "incident_event:"
"""The ``dedup_key`` of the alert event of an update: ``incident_event:<timeline entry id>``."""
UPDATE_LOOKBACK = timedelta(days=1)
"""Timeline entries older than this are not announced any more (a health store that was down),
but those held by a suppression of the incident's alert that has ended since."""
NOTIFICATION_KEY = "notification:"
"""The ``dedup_key`` of a notification's ``notification_sent`` entry: ``notification:<id>``."""


def rule_id(severity: IncidentSeverity) -> str:
    return f"{RULE_PREFIX}{severity}"


def builtin_incident_rules(config: HealthConfiguration) -> list[AlertRule]:
    """One rule per incident severity, sending to ``alerting.builtin_channels``."""
    return [
        AlertRule(
            rule_id=rule_id(sev),
            name=f"Incident ({sev})",
            description="built in: an incident is open (incidents/announce.py)",
            event=EventCondition(kind=EventKind.INCIDENT),
            severity=ALERT_SEVERITY[sev],
            channels=list(config.alerting.builtin_channels),
            cooldown_period_minutes=0,
        )
        for sev in IncidentSeverity
    ]


def with_incident_rules(config: HealthConfiguration) -> HealthConfiguration:
    """``config`` with the incident rules its ``alert_rules`` do not define themselves."""
    taken = {r.rule_id for r in config.alert_rules}
    missing = [r for r in builtin_incident_rules(config) if r.rule_id not in taken]
    if not missing:
        return config
    return config.model_copy(update={"alert_rules": [*config.alert_rules, *missing]})


def _rules(config: HealthConfiguration) -> dict[str, AlertRule]:
    wanted = {rule_id(s) for s in IncidentSeverity}
    return {r.rule_id: r for r in with_incident_rules(config).alert_rules if r.rule_id in wanted}


def incident_signals(
    engine: Engine, config: HealthConfiguration, now: datetime | None = None
) -> list[Signal]:
    """An active signal for each open incident (under the rule of its severity) and inactive
    ones for its other severities and for recently ended incidents, which resolve their alerts."""
    now = as_utc(now or utcnow())
    rules = _rules(config)
    c = incidents.c
    with engine.connect() as conn:
        rows = conn.execute(
            sa.select(*_signal_columns())
            .where(
                sa.or_(OPEN, c.ended_at > now - ENDED_LOOKBACK, c.closed_at > now - ENDED_LOOKBACK)
            )
            .order_by(c.incident_id)
        ).all()
        announced = _announced_by_resource_alert(conn, rows)
    out: list[Signal] = []
    for row in rows:
        is_open = row.status not in ("resolved", "closed") and row.incident_id not in announced
        for sev in IncidentSeverity:
            rule = rules.get(rule_id(sev))
            if rule is None or not rule.enabled:
                continue
            out.append(_signal(rule, row, is_open and sev == IncidentSeverity(row.severity)))
    return out


def signals_of(engine: Engine, config: HealthConfiguration, incident_id: int) -> list[Signal]:
    """The signals :func:`incident_signals` makes for incident ``incident_id`` alone (none when
    it does not exist)."""
    rules = _rules(config)
    c = incidents.c
    with engine.connect() as conn:
        row = conn.execute(
            sa.select(*_signal_columns()).where(c.incident_id == incident_id)
        ).first()
        if row is None:
            return []
        announced = _announced_by_resource_alert(conn, [row])
    is_open = row.status not in ("resolved", "closed") and row.incident_id not in announced
    enabled = [(s, rules[rule_id(s)]) for s in IncidentSeverity if rule_id(s) in rules]
    return [
        _signal(rule, row, is_open and sev == IncidentSeverity(row.severity))
        for sev, rule in enabled
        if rule.enabled
    ]


def announce(
    engine: Engine,
    config: HealthConfiguration,
    incident_id: int,
    actor: str,
    now: datetime | None = None,
) -> EvaluationReport:
    """Evaluate incident ``incident_id``'s signals now, as the alert-evaluation sensor will at its
    next tick: its alert fires and its notifications are queued (group wait, silences and
    routing as usual). Only this incident's signals are judged: no metric rule, and no check
    result (the cursor starts past the newest), so nothing else changes state here; the alert
    and its outbox rows are unique by index, so the sensor finds them done."""
    config = with_incident_rules(config)
    with engine.connect() as conn:
        newest = conn.execute(sa.select(sa.func.max(check_results.c.result_id))).scalar()
    return evaluate(
        engine,
        config,
        now,
        cursor=int(newest) if newest is not None else None,
        extra_signals=signals_of(engine, config, incident_id),
        actor=actor,
        include_metric_rules=False,
    )


def _announced_by_resource_alert(conn: Connection, rows: Sequence[Any]) -> set[int]:
    """The incidents of a resource whose linked alerts of that resource have all resolved: the
    resource's alert announced the outage and its end; the incident's own alert says no more."""
    dependency = {int(r.incident_id): dependency_of(r.root_key or "") for r in rows}
    wanted = [i for i, d in dependency.items() if d is not None]
    if not wanted:
        return set()
    ia, a = incident_alerts.c, alerts.c
    linked: dict[int, list[bool]] = {}  # incident id -> whether each linked resource alert is open
    for incident_id, state, labels in conn.execute(
        sa.select(ia.incident_id, a.state, a.labels)
        .join(alerts, a.alert_id == ia.alert_id)
        .where(ia.incident_id.in_(wanted))
    ):
        if (labels or {}).get("dependency") == dependency[int(incident_id)]:
            linked.setdefault(int(incident_id), []).append(state != str(AlertState.RESOLVED))
    return {i for i, states in linked.items() if not any(states)}


def _signal_columns() -> list[Any]:
    """The incident columns a signal is made of (:func:`_signal`)."""
    c = incidents.c
    return [c.incident_id, c.title, c.severity, c.component, c.status, c.root_key, c.created_at]


def _signal(rule: AlertRule, row: Any, active: bool) -> Signal:
    labels = alert_labels(
        rule,
        alertname=ALERTNAME,
        incident_id=str(row.incident_id),
        component=row.component,
        dependency=dependency_of(row.root_key or ""),
    )
    return Signal(
        rule=rule,
        labels=labels,
        active=active,
        title=f"incident {row.incident_id} ({row.severity}): {row.title}"[:500],
        description=f"root cause key {row.root_key}; status {row.status}",
        details={
            "incident_id": int(row.incident_id),
            "status": row.status,
            # When the incident opened (was written, not its earliest failure, which an absorbed
            # failure can move back): of an outage's incident and the dependency's own alert,
            # the one announced first stands (alerting/inhibit.py).
            "opened_at": as_utc(row.created_at).isoformat() if row.created_at else None,
        },
    )


def record_sent(engine: Engine, now: datetime | None = None) -> int:
    """A ``notification_sent`` timeline entry for each sent notification of an incident alert
    that has none yet; how many were added. The unique ``dedup_key`` decides, the ``NOT EXISTS``
    only spares the work."""
    now = as_utc(now or utcnow())
    n, a, e = notifications.c, alerts.c, incident_events.c
    done = sa.exists().where(
        e.dedup_key == sa.literal(NOTIFICATION_KEY) + sa.cast(n.notification_id, sa.String)
    )
    added = 0
    with write_transaction(engine) as conn:
        rows = conn.execute(
            sa.select(n.notification_id, n.channel, n.kind, n.sent_at, a.labels, a.rule_id)
            .join(alerts, a.alert_id == n.alert_id)
            .where(
                n.status == str(NotificationStatus.SENT),
                a.rule_id.startswith(RULE_PREFIX),
                ~done,
            )
            .order_by(n.notification_id)
        ).all()
        wanted = {i for i in (_incident_of(r.labels) for r in rows) if i is not None}
        c = incidents.c
        existing = set(
            conn.execute(sa.select(c.incident_id).where(c.incident_id.in_(wanted))).scalars()
        )
        for row in rows:
            incident_id = _incident_of(row.labels)
            if incident_id is None or incident_id not in existing:
                continue
            if (
                record_unique_event(
                    conn,
                    incident_id,
                    IncidentEventKind.NOTIFICATION_SENT,
                    ACTOR,
                    as_utc(row.sent_at or now),
                    f"{row.kind} notification sent through {row.channel} ({row.rule_id})",
                    f"{NOTIFICATION_KEY}{int(row.notification_id)}",
                    details={
                        "notification_id": int(row.notification_id),
                        "channel": row.channel,
                        "kind": row.kind,
                    },
                )
                is not None
            ):
                added += 1
    return added


def _incident_of(labels: Any) -> int | None:
    try:
        if dict(labels).get("alertname") != ALERTNAME:
            return None
        return int(dict(labels)["incident_id"])
    except (KeyError, TypeError, ValueError):
        return None


def queue_updates(engine: Engine, config: HealthConfiguration, now: datetime | None = None) -> int:
    """Queue an ``updated`` notification for each timeline entry of :data:`UPDATE_KINDS` written
    while its incident's alert was firing and not told yet; how many entries were announced. The
    notification goes to the channels of the alert's rule but PagerDuty that were told of the
    alert, or whose firing notification is queued (the dispatcher sends the update after it),
    and whose latest firing notification was queued before the entry was written (one queued
    since, e.g. when a silence ends, shows the incident's status as it is then). While the alert
    is suppressed, its entries wait (unmarked); they are announced once it no longer is. The
    alert event's unique ``dedup_key`` makes each entry announced once."""
    now = as_utc(now or utcnow())
    rules = _rules(config)
    e, a, ae = incident_events.c, alerts.c, alert_events.c
    announced_before = sa.exists().where(
        ae.dedup_key == sa.literal(UPDATE_KEY) + sa.cast(e.event_id, sa.String)
    )
    # Held by a suppression that has ended since: announced whatever its age.
    held = sa.exists().where(
        ae.alert_id == a.alert_id,
        ae.kind == str(AlertEventKind.UNSUPPRESSED),
        ae.at >= e.at,
    )
    announced = 0
    with write_transaction(engine) as conn:
        rows = conn.execute(
            sa.select(
                e.event_id,
                e.incident_id,
                e.kind,
                e.actor,
                e.at,
                e.text,
                a.alert_id,
                a.rule_id,
                a.group_key,
                a.status,
            )
            .join(
                alerts,
                sa.and_(
                    a.rule_id.startswith(RULE_PREFIX),
                    a.state == str(AlertState.FIRING),
                    a.labels["incident_id"].as_string() == sa.cast(e.incident_id, sa.String),
                    # Written after the alert fired: the firing notification told the rest.
                    e.at > sa.func.coalesce(a.fired_at, a.started_at),
                ),
            )
            .where(
                e.kind.in_([str(k) for k in UPDATE_KINDS]),
                sa.or_(e.at >= now - UPDATE_LOOKBACK, held),
                ~announced_before,
            )
            .order_by(e.event_id)
        ).all()
        heard: dict[int, dict[str, datetime | None]] = {}
        for row in rows:
            rule = rules.get(row.rule_id)
            if rule is None or row.status == str(AlertStatus.SUPPRESSED):
                # Nothing while the alert is suppressed (a silence, a mute interval, or the
                # dependency's alert that paged the outage first): the entry waits for its end.
                continue
            alert_id = int(row.alert_id)
            if alert_id not in heard:
                heard[alert_id] = told_firing_at(conn, alert_id, queued=True)
            at = as_utc(row.at)
            channels = [
                name
                for name in enabled_channels(config, rule.channels)
                if config.channels[name].type != ChannelType.PAGERDUTY
                and name in heard[alert_id]
                and _before(heard[alert_id][name], at)
            ]
            event_id = conn.execute(
                insert_ignore(alert_events, conn)
                .values(
                    alert_id=alert_id,
                    at=now,
                    kind=str(AlertEventKind.NOTE),
                    actor=row.actor,
                    note=f"incident {row.incident_id} {_change(row.kind)}: {row.text}"[:2000],
                    details={"incident_event_id": int(row.event_id), "change": row.kind},
                    dedup_key=f"{UPDATE_KEY}{int(row.event_id)}",
                )
                .returning(alert_events.c.event_id)
            ).scalar()
            if event_id is None or not channels:
                continue  # another process announced it, or nobody is to hear of it
            queue(
                conn,
                int(event_id),
                alert_id,
                channels,
                NotificationKind.UPDATED,
                row.group_key,
                now,
            )
            announced += 1
    return announced


def _before(firing_queued: datetime | None, at: datetime) -> bool:
    """Whether an entry written ``at`` is news to a channel whose latest firing notification
    was queued ``firing_queued`` (a tie sends it: twice told rather than never)."""
    return firing_queued is None or firing_queued <= at


def _change(kind: str) -> str:
    return {
        str(IncidentEventKind.STATUS_CHANGED): "status changed",
        str(IncidentEventKind.ASSIGNED): "assigned",
        str(IncidentEventKind.UPDATED): "updated",
        str(IncidentEventKind.FAILURE): "absorbed a failure",
    }.get(kind, kind)
