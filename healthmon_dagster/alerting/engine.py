"""The alert state machine: signals in, alert episodes, their history and outbox rows out.

An alert identity (its fingerprint, the hash of its labels) moves inactive -> pending -> firing ->
resolved, Prometheus's rule lifecycle: an active signal opens a ``pending`` episode that fires
once the rule's ``for`` has passed (at once when it is 0); an inactive signal resolves it, unless
``keep_firing_for`` has not passed since the condition was last true (anti-flap). A pending
episode that clears before it fires resolves without a notification.

Every transition is a conditional UPDATE (``WHERE state = <the state read>``) whose row count
decides who records the event, and the open episode of a fingerprint is unique by index, so two
sensor ticks or processes evaluating at once produce one alert and one history.

Notifications are decided after the transitions, by :func:`_notify_pass`: a firing alert that is
not silenced, muted (time intervals), inhibited by a root cause (firing, or resolved less than
``alerting.inhibit_hold_minutes`` ago) or in its rule's cooldown gets one outbox row per channel
of its rule, attached to its ``firing`` event; ``uq_notifications_event_channel`` makes that
exactly once whoever gets there first. Resolving cancels what no dispatcher has touched yet and
queues a resolve for every channel that was told, or may have been (a
notification in flight or attempted: see :func:`told`). When a silence, a mute interval or an
inhibition ends, a firing notification dropped meanwhile is queued again. Nothing here sends:
``notify/`` drains the outbox.
"""

from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection, Engine

from healthmon_dagster.alerting.inhibit import Inhibitor
from healthmon_dagster.alerting.labels import Matcher, all_match
from healthmon_dagster.alerting.lineage import Lineage
from healthmon_dagster.alerting.signals import (
    EventContext,
    Signal,
    effective_rules,
    event_signals,
    latest_check_rows,
    metric_signals,
)
from healthmon_dagster.alerting.timeintervals import active_intervals
from healthmon_dagster.config.models import AlertRule, HealthConfiguration
from healthmon_dagster.enums import (
    AlertEventKind,
    AlertState,
    AlertStatus,
    NotificationKind,
    NotificationStatus,
)
from healthmon_dagster.store.connection import write_transaction
from healthmon_dagster.store.dialect import insert_ignore
from healthmon_dagster.store.metrics import as_utc, utcnow
from healthmon_dagster.store.tables import alert_events, alerts, notifications, silences

OPEN = alerts.c.state != str(AlertState.RESOLVED)


@dataclass
class EvaluationReport:
    """What one evaluation did, for the sensor's log and tests."""

    signals: int = 0
    opened: list[int] = field(default_factory=list)  # alert ids, pending or firing
    fired: list[int] = field(default_factory=list)
    resolved: list[int] = field(default_factory=list)
    suppressed: list[int] = field(default_factory=list)
    unsuppressed: list[int] = field(default_factory=list)
    notifications: int = 0
    cursor: int | None = None
    titles: dict[int, str] = field(default_factory=dict)  # alert id -> title, of those above

    def summary(self) -> str:
        parts = [
            f"{self.signals} signal(s)",
            f"{len(self.opened)} opened",
            f"{len(self.fired)} fired",
            f"{len(self.resolved)} resolved",
            f"{len(self.suppressed)} suppressed",
            f"{self.notifications} notification(s) queued",
        ]
        return ", ".join(parts)


def enabled_channels(config: HealthConfiguration, names: Iterable[str]) -> list[str]:
    """``names`` without the channels turned off (``enabled: false``): nothing is queued for them."""
    return [n for n in names if n in config.channels and config.channels[n].enabled]


def group_key(labels: Mapping[str, str], group_by: Sequence[str]) -> str:
    return ",".join(f"{name}={labels.get(name, '')}" for name in group_by)


def record_event(
    conn: Connection,
    alert_id: int,
    kind: AlertEventKind,
    now: datetime,
    actor: str,
    from_state: str | None = None,
    to_state: str | None = None,
    note: str | None = None,
    details: Mapping[str, Any] | None = None,
) -> int:
    inserted = conn.execute(
        alert_events.insert().values(
            alert_id=alert_id,
            at=now,
            kind=str(kind),
            from_state=from_state,
            to_state=to_state,
            actor=actor,
            note=note,
            details=dict(details or {}),
        )
    ).inserted_primary_key
    assert inserted is not None
    return int(inserted[0])


def queue(
    conn: Connection,
    event_id: int,
    alert_id: int,
    channels: Iterable[str],
    kind: NotificationKind,
    group: str,
    now: datetime,
) -> int:
    """Outbox rows for ``event_id``, one per channel; a row that exists already is kept (the
    unique (event, channel) constraint), so queueing twice queues once."""
    rows = [
        {
            "event_id": event_id,
            "alert_id": alert_id,
            "channel": channel,
            "kind": str(kind),
            "group_key": group,
            "status": str(NotificationStatus.PENDING),
            "not_before": now,
            "created_at": now,
        }
        for channel in dict.fromkeys(channels)
    ]
    queued = 0
    for row in rows:
        queued += conn.execute(insert_ignore(notifications, conn).values(**row)).rowcount
    return queued


def evaluate(
    engine: Engine,
    config: HealthConfiguration,
    now: datetime | None = None,
    *,
    cursor: int | None = None,
    extra_signals: Sequence[Signal] = (),
    lineage: Lineage | None = None,
    actor: str = "sensor",
    include_metric_rules: bool = True,
) -> EvaluationReport:
    """Evaluate every rule once and reconcile the open alerts with what the signals say.

    ``cursor`` is the last ``etl.check_results.result_id`` an earlier evaluation saw: event rules
    look at the newest result of each check after it; the report's ``cursor`` is the next one.
    ``extra_signals`` come from the Dagster instance (run failures, freshness states);
    ``lineage`` is the asset graph for lineage-aware inhibition (default: the bundled pipeline's).
    ``include_metric_rules=False`` judges only the new check results (the alert fast path: metric
    rules stay with the sensor, whose evaluation covers every window).
    """
    now = as_utc(now or utcnow())
    rules = effective_rules(config)
    report = EvaluationReport(cursor=cursor)
    with engine.connect() as conn:
        open_alerts = {row.fingerprint: row for row in conn.execute(sa.select(alerts).where(OPEN))}
        # An inactive signal of a rule without an open alert changes nothing: metric rules do
        # not even make one, and the others are skipped unhashed.
        open_rules = {row.rule_id for row in open_alerts.values()}
        metric_rules = [r for r in rules if r.condition is not None] if include_metric_rules else []
        signals = metric_signals(conn, metric_rules, now, open_rules) if metric_rules else []
        report.signals = len(metric_rules)
        rows = latest_check_rows(conn, cursor)
        signals += event_signals(
            [r for r in rules if r.event is not None], rows, EventContext(config)
        )
    signals += list(extra_signals)
    if rows:
        report.cursor = max(r.result_id for r in rows)
    report.signals += len(signals) - sum(s.rule.condition is not None for s in signals)
    group_by = config.alerting.grouping.group_by
    relevant = [s for s in signals if s.active or s.rule.rule_id in open_rules]
    refresh = _Refresh(now)
    for signal in _one_per_fingerprint(relevant):
        current = open_alerts.get(signal.fingerprint)
        _apply(engine, signal, current, now, actor, group_by, report, refresh)
    refresh.write(engine)
    _notify_pass(engine, config, rules, now, lineage or Lineage.bundled(), report)
    return report


class _Refresh:
    """The writes that change no state (an open alert still active, a firing alert kept by
    ``keep_firing_for``), gathered over an evaluation and written in one transaction, one
    statement per kind of change: they need no history and no conditional transition."""

    def __init__(self, now: datetime) -> None:
        self.now = now
        self.active: list[int] = []  # still active: last_active_at and last_evaluated_at
        self.kept: list[int] = []  # inactive but kept firing: last_evaluated_at
        self.changed: list[dict[str, Any]] = []  # still active with a new value or text

    def still_active(self, current: Any, signal: Signal) -> None:
        self.active.append(int(current.alert_id))
        content = {
            "value": signal.value,
            "title": signal.title[:500],
            "description": signal.description,
            "details": dict(signal.details),
        }
        if any(getattr(current, k) != v for k, v in content.items()):
            self.changed.append({"b_id": int(current.alert_id), **content})

    def write(self, engine: Engine) -> None:
        if not (self.active or self.kept):
            return
        a = alerts.c
        with write_transaction(engine) as conn:
            for ids, values in (
                (self.active, {"last_active_at": self.now, "last_evaluated_at": self.now}),
                (self.kept, {"last_evaluated_at": self.now}),
            ):
                for start in range(0, len(ids), 500):
                    chunk = ids[start : start + 500]
                    conn.execute(alerts.update().where(a.alert_id.in_(chunk), OPEN).values(values))
            if self.changed:
                conn.execute(
                    alerts.update()
                    .where(a.alert_id == sa.bindparam("b_id"), OPEN)
                    .values(
                        value=sa.bindparam("value"),
                        title=sa.bindparam("title"),
                        description=sa.bindparam("description"),
                        details=sa.bindparam("details"),
                    ),
                    self.changed,
                )


def _one_per_fingerprint(signals: Iterable[Signal]) -> list[Signal]:
    """Two signals of one identity in one evaluation: the active one counts."""
    chosen: dict[str, Signal] = {}
    for s in signals:
        fp = s.fingerprint
        if fp not in chosen or (s.active and not chosen[fp].active):
            chosen[fp] = s
    return list(chosen.values())


def _apply(
    engine: Engine,
    signal: Signal,
    current: Any,
    now: datetime,
    actor: str,
    group_by: Sequence[str],
    report: EvaluationReport,
    refresh: _Refresh,
) -> None:
    """Reconcile one identity with its open alert (``current``, read at the start of the
    evaluation; every transition below is conditional on the state it read). What changes no
    state goes to ``refresh``, written once for the whole evaluation."""
    fp = signal.fingerprint
    if current is None and not signal.active:
        return  # inactive and nothing open: nothing to do, nothing written
    rule = signal.rule
    if current is not None and signal.active and not _fires_now(current, rule, now):
        refresh.still_active(current, signal)
        return
    if current is not None and not signal.active and _kept_firing(current, rule, now):
        refresh.kept.append(int(current.alert_id))
        return
    with write_transaction(engine) as conn:
        if current is None:
            _open(conn, signal, fp, now, actor, group_by, report)
        elif signal.active:
            _fire(conn, current, signal, rule, now, actor, report)
        else:
            _resolve(conn, current, rule, now, actor, report)


def _fires_now(current: Any, rule: AlertRule, now: datetime) -> bool:
    """A pending alert whose condition has held for the rule's ``for``."""
    return current.state == str(AlertState.PENDING) and now - as_utc(
        current.started_at
    ) >= timedelta(minutes=rule.pending_minutes)


def _kept_firing(current: Any, rule: AlertRule, now: datetime) -> bool:
    """A firing alert whose condition cleared less than ``keep_firing_for`` ago (anti-flap)."""
    keep = timedelta(minutes=rule.keep_firing_for_minutes)
    return current.state == str(AlertState.FIRING) and now - as_utc(current.last_active_at) < keep


def _open(
    conn: Connection,
    signal: Signal,
    fp: str,
    now: datetime,
    actor: str,
    group_by: Sequence[str],
    report: EvaluationReport,
) -> None:
    rule = signal.rule
    fires_now = rule.pending_minutes == 0
    state = AlertState.FIRING if fires_now else AlertState.PENDING
    values = {
        "fingerprint": fp,
        "rule_id": rule.rule_id,
        "state": str(state),
        "status": str(AlertStatus.ACTIVE),
        "severity": str(rule.severity),
        "component": signal.labels.get("component"),
        "labels": dict(signal.labels),
        "title": signal.title[:500],
        "description": signal.description,
        "details": dict(signal.details),
        "value": signal.value,
        "group_key": group_key(signal.labels, group_by)[:500],
        "started_at": now,
        "fired_at": now if fires_now else None,
        "last_active_at": now,
        "last_evaluated_at": now,
    }
    # The partial unique index on open fingerprints: a concurrent evaluation that opened this
    # alert first wins, this insert does nothing.
    result = conn.execute(insert_ignore(alerts, conn).values(**values))
    if result.rowcount != 1:
        return
    alert_id = int(
        conn.execute(
            sa.select(alerts.c.alert_id).where(alerts.c.fingerprint == fp, OPEN)
        ).scalar_one()
    )
    report.opened.append(alert_id)
    report.titles[alert_id] = signal.title
    record_event(
        conn,
        alert_id,
        AlertEventKind.PENDING,
        now,
        actor,
        None,
        str(AlertState.PENDING),
        note=signal.description or None,
        details=signal.details,
    )
    if fires_now:
        record_event(
            conn,
            alert_id,
            AlertEventKind.FIRING,
            now,
            actor,
            str(AlertState.PENDING),
            str(AlertState.FIRING),
        )
        report.fired.append(alert_id)


def _fire(
    conn: Connection,
    current: Any,
    signal: Signal,
    rule: AlertRule,
    now: datetime,
    actor: str,
    report: EvaluationReport,
) -> None:
    """pending -> firing: the condition held for the rule's ``for``."""
    a = alerts.c
    moved = conn.execute(
        alerts.update()
        .where(a.alert_id == current.alert_id, a.state == str(AlertState.PENDING))
        .values(
            state=str(AlertState.FIRING),
            fired_at=now,
            last_active_at=now,
            last_evaluated_at=now,
            value=signal.value,
            title=signal.title[:500],
            description=signal.description,
            details=dict(signal.details),
        )
    ).rowcount
    if moved:
        record_event(
            conn,
            current.alert_id,
            AlertEventKind.FIRING,
            now,
            actor,
            str(AlertState.PENDING),
            str(AlertState.FIRING),
            note=f"condition held for {rule.pending_minutes} min",
        )
        report.fired.append(current.alert_id)
        report.titles[current.alert_id] = signal.title


def _resolve(
    conn: Connection,
    current: Any,
    rule: AlertRule,
    now: datetime,
    actor: str,
    report: EvaluationReport,
) -> None:
    note = (
        f"condition cleared before it held for {rule.pending_minutes} min: never fired"
        if current.state == str(AlertState.PENDING)
        else "condition no longer true"
    )
    if resolve_in(conn, current.alert_id, current.state, now, actor, note=note):
        report.resolved.append(current.alert_id)
        report.titles[current.alert_id] = current.title


def resolve_in(
    conn: Connection,
    alert_id: int,
    from_state: str,
    now: datetime,
    actor: str,
    *,
    note: str,
    resolved_by: str | None = None,
    resolution: str | None = None,
) -> bool:
    """Resolve an open alert (in ``conn``'s transaction): cancel what was not sent yet and queue a
    ``resolved`` notification for every channel that was told it fired. False when another
    process resolved it first."""
    a = alerts.c
    moved = conn.execute(
        alerts.update()
        .where(a.alert_id == alert_id, a.state == from_state)
        .values(
            state=str(AlertState.RESOLVED),
            status=str(AlertStatus.RESOLVED),
            resolved_at=now,
            last_evaluated_at=now,
            next_escalation_at=None,
            resolved_by=resolved_by,
            resolution=resolution,
        )
    ).rowcount
    if not moved:
        return False
    event_id = record_event(
        conn,
        alert_id,
        AlertEventKind.RESOLVED,
        now,
        actor,
        from_state,
        str(AlertState.RESOLVED),
        note=resolution or note,
    )
    n = notifications.c
    # Only what no dispatcher has touched: a claimed row is being sent (it may reach the
    # receiver whatever is written here), an attempted one may have reached it already.
    conn.execute(
        notifications.update()
        .where(
            n.alert_id == alert_id,
            n.status == str(NotificationStatus.PENDING),
            n.kind != str(NotificationKind.RESOLVED),
            n.delivery_key.is_(None),
            n.claimed_by.is_(None),
        )
        .values(
            status=str(NotificationStatus.CANCELLED), last_error="alert resolved before it was sent"
        )
    )
    for channel, group in told(conn, alert_id):
        queue(conn, event_id, alert_id, [channel], NotificationKind.RESOLVED, group, now)
    return True


ANNOUNCING_KINDS = (
    str(NotificationKind.FIRING),
    str(NotificationKind.REPEATED),
    str(NotificationKind.ESCALATED),
)


def told(conn: Connection, alert_id: int, *, queued: bool = False) -> list[tuple[str, str]]:
    """The (channel, group key) pairs that were told about the alert, or may have been: a
    notification was sent there, or an announcement of it is in flight or was attempted (the
    receiver may have it; the dispatcher sends the follow-up after it). ``queued``: an
    announcement still queued counts too (an acknowledgement follows it).

    A ``failed`` announcement counts when it still carries its delivery key: some attempt may
    have reached the receiver (a timeout, a 5xx, a dispatcher killed mid-send), as a PagerDuty
    trigger whose every retry timed out may have opened an incident that only a resolve stops.
    The dispatcher clears the key of a request the receiver refused outright (a 4xx or a 429 on
    its first attempt) and rows that never went out have none: those do not count."""
    n = notifications.c
    return [
        (str(channel), str(group))
        for channel, group in conn.execute(
            sa.select(n.channel, n.group_key).where(_told(alert_id, queued)).distinct()
        )
    ]


def told_firing_at(
    conn: Connection, alert_id: int, *, queued: bool = False
) -> dict[str, datetime | None]:
    """Each channel :func:`told` names, with when the latest firing notification of the alert
    that counts there was queued (None: none does, the channel heard of the alert otherwise).
    A message is rendered from the alert when it is sent, so a firing notification queued after
    a change tells of it (an incident's status is in its alert's description)."""
    n = notifications.c
    firing = sa.case((n.kind == str(NotificationKind.FIRING), n.created_at))
    return {
        str(channel): as_utc(at) if at is not None else None
        for channel, at in conn.execute(
            sa.select(n.channel, sa.func.max(firing))
            .where(_told(alert_id, queued))
            .group_by(n.channel)
        )
    }


def _told(alert_id: int, queued: bool) -> sa.ColumnElement[bool]:
    """The notifications of the alert that tell its channel about it (see :func:`told`)."""
    n = notifications.c
    pending = sa.and_(n.status == str(NotificationStatus.PENDING), n.kind.in_(ANNOUNCING_KINDS))
    if not queued:
        pending = sa.and_(pending, n.delivery_key.is_not(None))
    maybe_delivered = sa.and_(
        n.status == str(NotificationStatus.FAILED),
        n.kind.in_(ANNOUNCING_KINDS),
        n.delivery_key.is_not(None),
    )
    return sa.and_(
        n.alert_id == alert_id,
        sa.or_(n.status == str(NotificationStatus.SENT), pending, maybe_delivered),
    )


# --- suppression and notification ------------------------------------------------------------


def active_silences(conn: Connection, now: datetime) -> list[tuple[int, list[Matcher]]]:
    s = silences.c
    rows = conn.execute(
        sa.select(s.silence_id, s.matchers).where(
            s.starts_at <= now, s.ends_at > now, s.expired_at.is_(None)
        )
    )
    return [(int(sid), [Matcher.from_json(m) for m in matchers]) for sid, matchers in rows]


def _notify_pass(
    engine: Engine,
    config: HealthConfiguration,
    rules: Sequence[AlertRule],
    now: datetime,
    lineage: Lineage,
    report: EvaluationReport,
) -> None:
    """Decide, for every firing alert, whether it is suppressed and why; queue the firing
    notifications of those that are not and were not queued yet."""
    by_id = {r.rule_id: r for r in rules}
    a = alerts.c
    with engine.connect() as conn:
        firing = conn.execute(
            sa.select(alerts).where(a.state == str(AlertState.FIRING)).order_by(a.alert_id)
        ).all()
        silenced = active_silences(conn, now)
        recent = _recent_firings(conn, list(firing), by_id, now)
        n = notifications.c
        # Per firing alert and channel, the statuses of its firing notifications.
        queued: dict[int, dict[str, set[str]]] = defaultdict(dict)
        for alert_id, channel, status in conn.execute(
            sa.select(n.alert_id, n.channel, n.status)
            .where(
                n.kind == str(NotificationKind.FIRING),
                n.alert_id.in_(sa.select(a.alert_id).where(a.state == str(AlertState.FIRING))),
            )
            .distinct()
        ):
            queued[int(alert_id)].setdefault(str(channel), set()).add(str(status))
    if not firing:
        return
    muted_globally = active_intervals(
        config.alerting.mute_time_intervals, config.alerting.time_intervals, now
    )
    inhibitor = Inhibitor(config, lineage, firing, _held_sources(engine, config, now))
    for alert in firing:
        rule = by_id.get(alert.rule_id)
        reason, root = _suppression(
            alert, rule, config, now, silenced, muted_globally, inhibitor, recent
        )
        channels = enabled_channels(config, rule.channels) if rule is not None else []
        queued_before = queued.get(alert.alert_id, {})
        _settle(engine, alert, rule, channels, queued_before, reason, root, now, report)


def _held_sources(engine: Engine, config: HealthConfiguration, now: datetime) -> list[Any]:
    """The alerts that fired and resolved within ``alerting.inhibit_hold_minutes``: they still
    inhibit (see ``alerting/inhibit.py``), newest first."""
    hold = config.alerting.inhibit_hold_minutes
    if not hold:
        return []
    a = alerts.c
    with engine.connect() as conn:
        return list(
            conn.execute(
                sa.select(alerts)
                .where(
                    a.state == str(AlertState.RESOLVED),
                    a.fired_at.is_not(None),
                    a.resolved_at > now - timedelta(minutes=hold),
                )
                .order_by(a.resolved_at.desc(), a.alert_id.desc())
            ).all()
        )


def _recent_firings(
    conn: Connection, firing: Sequence[Any], rules: Mapping[str, AlertRule], now: datetime
) -> dict[str, datetime]:
    """For cooldowns: when each firing fingerprint's previous episode fired, if it did recently."""
    longest = max((r.cooldown_period_minutes for r in rules.values()), default=0)
    fps = [f.fingerprint for f in firing]
    if not longest or not fps:
        return {}
    a = alerts.c
    rows = conn.execute(
        sa.select(a.fingerprint, sa.func.max(a.fired_at))
        .where(
            a.fingerprint.in_(fps),
            a.state == str(AlertState.RESOLVED),
            a.fired_at.is_not(None),
            a.fired_at > now - timedelta(minutes=longest),
        )
        .group_by(a.fingerprint)
    )
    return {fp: as_utc(ts) for fp, ts in rows}


def _suppression(
    alert: Any,
    rule: AlertRule | None,
    config: HealthConfiguration,
    now: datetime,
    silenced: Sequence[tuple[int, list[Matcher]]],
    muted_globally: Sequence[str],
    inhibitor: "Inhibitor",
    recent: Mapping[str, datetime],
) -> tuple[str | None, int | None]:
    """Why ``alert`` must not notify now (None: it may), and the root cause's alert id."""
    labels = alert.labels or {}
    for silence_id, matchers in silenced:
        if all_match(matchers, labels):
            return f"silence {silence_id}", None
    muted = list(muted_globally)
    if rule is not None:
        muted += active_intervals(rule.mute_time_intervals, config.alerting.time_intervals, now)
    if muted:
        return f"mute time interval {', '.join(dict.fromkeys(muted))}", None
    root = inhibitor.root_cause(alert)
    if root is not None:
        reason = f"inhibited by alert {root.alert_id} ({root.title})"
        if root.resolved_at is not None:  # a held source: resolved within the hold window
            until = as_utc(root.resolved_at) + timedelta(
                minutes=config.alerting.inhibit_hold_minutes
            )
            reason = (
                f"inhibited by alert {root.alert_id} (resolved at "
                f"{as_utc(root.resolved_at):%H:%M:%S} UTC, held until {until:%H:%M:%S} UTC): "
                f"{root.title}"
            )
        return reason[:500], int(root.alert_id)
    previous = recent.get(alert.fingerprint)
    if rule is not None and previous is not None and alert.fired_at is not None:
        until = previous + timedelta(minutes=rule.cooldown_period_minutes)
        if as_utc(alert.fired_at) < until and now < until:
            return f"cooldown until {until:%Y-%m-%d %H:%M} UTC (fired at {previous:%H:%M})", None
    return None, None


def _settle(
    engine: Engine,
    alert: Any,
    rule: AlertRule | None,
    channels: Sequence[str],
    queued_before: Mapping[str, set[str]],
    reason: str | None,
    root: int | None,
    now: datetime,
    report: EvaluationReport,
) -> None:
    """Record whether ``alert`` is suppressed now, and queue its firing notifications where
    they are due: on every channel never queued, and, when a suppression ends, again on every
    channel whose firing notification was dropped meanwhile (only cancelled ones: a ``failed``
    one is left to the repeat and the escalation, which announce a firing alert again, rather
    than fail once more at every suppression's end)."""
    a = alerts.c
    was = alert.status
    unsuppressed = (
        str(AlertStatus.ACKNOWLEDGED)
        if alert.acknowledged_at is not None
        else str(AlertStatus.ACTIVE)
    )
    want = str(AlertStatus.SUPPRESSED) if reason else unsuppressed
    changed = was != want or (reason or None) != alert.suppressed_by
    unsuppressing = was == str(AlertStatus.SUPPRESSED) and want != was
    # Not dropped: queued, sent, or failed for good (left to the repeat and the escalation).
    live = {
        str(NotificationStatus.PENDING),
        str(NotificationStatus.SENT),
        str(NotificationStatus.FAILED),
    }
    never = [c for c in dict.fromkeys(channels) if c not in queued_before]
    dropped = (
        [c for c in dict.fromkeys(channels) if c in queued_before and not queued_before[c] & live]
        if unsuppressing
        else []
    )
    # An acknowledged alert is known to someone: it is not announced again when a silence ends.
    needs_queue = (
        reason is None
        and rule is not None
        and alert.acknowledged_at is None
        and (
            bool(never or dropped)
            or (
                alert.next_escalation_at is None
                and alert.escalation_level == 0
                and rule.escalation_policy is not None
            )
        )
    )
    if not changed and not needs_queue:
        return
    with write_transaction(engine) as conn:
        if changed:
            moved = conn.execute(
                alerts.update()
                .where(
                    a.alert_id == alert.alert_id,
                    a.state == str(AlertState.FIRING),
                    a.status == was,
                )
                .values(status=want, suppressed_by=reason, inhibited_by=root)
            ).rowcount
            if not moved:
                return  # acknowledged, resolved or settled by another process meanwhile
            if want == str(AlertStatus.SUPPRESSED) and was != want:
                record_event(
                    conn,
                    alert.alert_id,
                    AlertEventKind.SUPPRESSED,
                    now,
                    "engine",
                    note=reason,
                    details={"inhibited_by": root} if root else {},
                )
                report.suppressed.append(alert.alert_id)
            elif unsuppressing:
                unsuppressed_event = record_event(
                    conn,
                    alert.alert_id,
                    AlertEventKind.UNSUPPRESSED,
                    now,
                    "engine",
                    note=f"no longer suppressed (was: {alert.suppressed_by})",
                )
                report.unsuppressed.append(alert.alert_id)
                _release_updates(conn, alert.alert_id, now)
                if needs_queue and dropped:
                    # The firing event's rows exist (dropped): announce it on this event.
                    report.notifications += queue(
                        conn,
                        unsuppressed_event,
                        alert.alert_id,
                        dropped,
                        NotificationKind.FIRING,
                        alert.group_key,
                        now,
                    )
        if needs_queue and rule is not None:
            report.notifications += _queue_firing(conn, alert, rule, never, now)


def _release_updates(conn: Connection, alert_id: int, now: datetime) -> None:
    """The updates the dispatcher held while the alert was suppressed (never attempted; parked
    for a long while) are due now: the channels told before hear what changed meanwhile."""
    n = notifications.c
    conn.execute(
        notifications.update()
        .where(
            n.alert_id == alert_id,
            n.status == str(NotificationStatus.PENDING),
            n.kind == str(NotificationKind.UPDATED),
            n.delivery_key.is_(None),
            n.not_before > now,
        )
        .values(not_before=now)
    )


def _queue_firing(
    conn: Connection, alert: Any, rule: AlertRule, channels: Sequence[str], now: datetime
) -> int:
    """The firing notifications of this episode, once: attached to its firing event."""
    e = alert_events.c
    event_id = conn.execute(
        sa.select(e.event_id).where(
            e.alert_id == alert.alert_id, e.kind == str(AlertEventKind.FIRING)
        )
    ).scalar()
    if event_id is None:
        return 0
    queued = queue(
        conn, event_id, alert.alert_id, channels, NotificationKind.FIRING, alert.group_key, now
    )
    if alert.next_escalation_at is None and alert.escalation_level == 0 and rule.escalation_policy:
        conn.execute(
            alerts.update()
            .where(alerts.c.alert_id == alert.alert_id, alerts.c.escalation_level == 0)
            .values(next_escalation_at=now)  # the policy's first level is due after its delay
        )
    return queued
