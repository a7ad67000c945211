"""The outbox dispatcher: sends what the alert engine wrote to ``etl.notifications``, exactly once
per (alert event, channel) as far as any receiver can tell.

One pass (:meth:`Dispatcher.run_once`), per channel, in one write transaction (a Postgres advisory
lock per channel; SQLite's ``BEGIN IMMEDIATE``), so dispatchers in several processes share the
work and the rate limit:

1. Take the due rows: ``pending``, ``not_before <= now``, no live lease (``claimed_until`` empty or
   past; on Postgres ``FOR UPDATE SKIP LOCKED``). A row that went out before (it has a
   ``delivery_key``) brings every pending row with its key, due or not and whatever the batch
   size: a request is sent again whole, so one key never carries two contents (a receiver that
   drops a key it has seen would lose the part sent later).
2. Cancel what must not go out: a firing and a resolve of the same alert both still unsent (it
   resolved within the group's wait: Alertmanager sends neither), an announcement (firing,
   repeat, escalation) of an alert resolved since, in retry or due (its resolve supersedes it;
   but on a threaded channel an attempted one of an alert with no thread there yet is retried
   first, so the resolve can reply in the thread it starts or that Slack kept), a notification
   of an alert that is suppressed now (an incident's update waits instead, not due, until the
   alert engine releases it at the suppression's end), rows of a disabled channel. Hold a
   resolve or an acknowledgement while an announcement of its alert is still under way on the
   channel (in flight in another process, in this pass, or queued): it follows it, never
   overtakes it; likewise an update while an older update of its alert is still pending there
   (in another request).
3. Group them, Alertmanager's way: one message per (group_key, kind). A new group waits
   ``group_wait_seconds`` after its first notification (the shortest ``group_wait_by_severity``
   of its alerts' severities: 0 for errors by default); a group notified recently waits until
   ``group_interval_seconds`` after its last one (their ``not_before`` is moved there: deferred).
   Acknowledgements, escalations and repeats go out at once. Threaded channels send a follow-up
   (resolve, acknowledgement) once per alert thread; PagerDuty once per alert.
4. Take as many messages as the channel's rate limit allows now: requests in the last 60 s and
   the last second (``rate_per_minute`` and ``ceil(rate_per_minute / 60)``), counted from the store
   (live leases, and ``etl.notification_requests``: each request, sent or failed, from when it
   ended; one cut off by a kill, from its lease's end), so a storm is queued, never dropped,
   and no window at the receiver holds more.
5. Claim them: ``claimed_by``/``claimed_until`` (the lease) and the ``delivery_key``, the
   deterministic idempotency key of the request, written BEFORE anything is sent.

Then each message is sent and its rows are marked ``sent`` only after the channel accepted it;
while a pass sends, a heartbeat renews its lease every third of ``lease_seconds``, so however long
an answer takes (a trickling body, a Slack reply and update, an SMTP session) no other dispatcher
takes the rows of a live one. An outcome is recorded only on rows this dispatcher still holds
(``claimed_by``): a row whose lease passed to another is that one's to record.

Retries are bounded by time, not by a count: a failure (a 5xx, a timeout, a refused connection, a
429) adds an attempt and waits (exponential backoff with equal jitter from
``backoff_initial_seconds`` or the channel's ``retry_delay_minutes``, capped at
``backoff_max_seconds``; or the receiver's ``Retry-After``, which uses no attempt and pauses the
whole channel). The first failure sets the rows' ``retry_until`` (``retry_for_minutes``, 60 by
default); the last try is at that time, and a failure then marks the rows ``failed``, as does a
``Retry-After`` past it. A permanent error (another 4xx, a channel not configured) fails them at
once. So an outage of the receiver shorter than ``retry_for_minutes`` delays the page, never loses
it; a row failed for good fails the dispatch step, and the alert's repeat and escalation still go
out. A channel's ``retry_attempts`` is deprecated and ignored (a warning says so).

A dispatcher killed mid-send leaves its rows claimed: once the lease ends another takes them and
sends the same rows again with the same ``delivery_key`` (the webhook's ``Idempotency-Key``, the
email's ``Message-ID``; PagerDuty dedups by the alert's fingerprint): nothing is lost, and what is
sent twice the receiver can recognise. Such a resend, and the retry after a timeout or a 5xx, is
marked ``in_doubt``: Slack then looks for a message carrying the key before posting again. Teams
has no key and no lookup: there a send cut off by a kill or a timeout may show twice
(Alertmanager's choice too: a duplicate rather than a miss).

A key left on a row that was not sent means "the receiver may have it". So the key is cleared
where nothing went out under it: rows a 429 pause gave back before their turn, and a request the
receiver refused outright (a 4xx or a 429) on its first attempt. A ``failed`` announcement that
keeps its key counts as told (``alerting.engine.told``): its resolve and acknowledgement are sent,
and on a threaded channel where the alert has no thread they carry that key
(``Message.announced_key``): Slack looks for the message it may have kept and replies there.
"""

import hashlib
import logging
import math
import os
import random
import socket
import threading
import time
import uuid
from collections import defaultdict
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import Connection, Engine, RowMapping

from healthmon_dagster.alerting.lineage import Lineage
from healthmon_dagster.config.models import HealthConfiguration, NotificationChannel
from healthmon_dagster.enums import (
    AlertSeverity,
    AlertState,
    AlertStatus,
    NotificationKind,
    NotificationStatus,
)
from healthmon_dagster.notify.base import (
    FOLLOW_UP_KINDS,
    AlertEvent,
    AlertView,
    Delivery,
    DeliveryError,
    Message,
    Notifier,
    PermanentError,
    RetryableError,
    ThreadRef,
    dagster_links,
    delivery_key,
    one_line,
)
from healthmon_dagster.notify.channels import build_notifier, channel_config
from healthmon_dagster.notify.rootcause import root_causes
from healthmon_dagster.settings import get_settings
from healthmon_dagster.store.connection import is_sqlite, write_transaction
from healthmon_dagster.store.tables import (
    alert_events,
    alerts,
    notification_requests,
    notification_threads,
    notifications,
)

if TYPE_CHECKING:
    from dagster_slack import SlackResource

LOGGER = logging.getLogger("healthmon.notify.dispatch")
SUPERSEDED = "alert resolved: its resolve supersedes this notification"
N = notifications.c
A = alerts.c
# Kinds that Alertmanager's grouping times (group_wait / group_interval); the others are
# per-alert actions that go out at once.
GROUPED_KINDS = frozenset({NotificationKind.FIRING, NotificationKind.RESOLVED})
# Kinds that announce an alert that is firing: none goes out for an alert suppressed now.
ANNOUNCING_KINDS = frozenset(
    {NotificationKind.FIRING, NotificationKind.REPEATED, NotificationKind.ESCALATED}
)
# Kinds that are not sent while their alert is suppressed: the announcements (cancelled: the
# suppression's end announces the alert again) and an incident's updates (an incident muted by
# the dependency's alert that paged its outage stays quiet), which wait for the suppression's
# end: the channels told of the incident before it hear what changed meanwhile.
SUPPRESSIBLE_KINDS = ANNOUNCING_KINDS | {NotificationKind.UPDATED}
SUPPRESSED_RECHECK = timedelta(hours=1)
"""How long an update of a suppressed alert waits before the dispatcher looks at it again. The
suppression's end releases it at once (the alert engine makes it due then): this is only a
backstop, long enough that a silence of hours starts no dispatch run a minute for nothing."""


def utcnow() -> datetime:
    return datetime.now(UTC)


def _utc(ts: datetime | None) -> datetime | None:
    if ts is None:
        return None
    return ts.replace(tzinfo=UTC) if ts.tzinfo is None else ts.astimezone(UTC)


@dataclass
class ChannelReport:
    """What one pass did for one channel, in outbox rows."""

    sent: int = 0
    failed: int = 0
    retrying: int = 0  # failed this time, tried again later
    deferred: int = 0  # waiting for the group's timing or the rate limit
    cancelled: int = 0
    errors: list[str] = field(default_factory=list)

    def add(self, other: "ChannelReport") -> None:
        self.sent += other.sent
        self.failed += other.failed
        self.retrying += other.retrying
        self.deferred += other.deferred
        self.cancelled += other.cancelled
        self.errors.extend(e for e in other.errors if e not in self.errors)


@dataclass
class DispatchReport:
    """Sent / failed / deferred per channel; ``ok`` is False when a delivery failed for good, so
    the Dagster step that drains the outbox can fail."""

    channels: dict[str, ChannelReport] = field(default_factory=dict)

    def channel(self, name: str) -> ChannelReport:
        return self.channels.setdefault(name, ChannelReport())

    def add(self, other: "DispatchReport") -> None:
        for name, report in other.channels.items():
            self.channel(name).add(report)

    @property
    def sent(self) -> int:
        return sum(r.sent for r in self.channels.values())

    @property
    def failed(self) -> int:
        return sum(r.failed for r in self.channels.values())

    @property
    def ok(self) -> bool:
        return self.failed == 0

    def summary(self) -> str:
        """One line per channel: ``slack: 3 sent, 1 failed (...)``."""
        lines = []
        for name, r in sorted(self.channels.items()):
            counts = [
                f"{n} {what}"
                for n, what in (
                    (r.sent, "sent"),
                    (r.failed, "failed"),
                    (r.retrying, "retrying"),
                    (r.deferred, "deferred"),
                    (r.cancelled, "cancelled"),
                )
                if n
            ]
            errors = f" ({'; '.join(r.errors[:3])})" if r.errors else ""
            lines.append(f"{name}: {', '.join(counts) or 'nothing due'}{errors}")
        return "\n".join(lines) or "nothing due"


@dataclass
class _Unit:
    """The outbox rows one request carries."""

    kind: NotificationKind
    group_key: str
    rows: list[RowMapping]
    key: str = ""
    in_doubt: bool = False

    @property
    def ids(self) -> list[int]:
        return [int(r["notification_id"]) for r in self.rows]

    @property
    def oldest(self) -> datetime:
        return min(_utc(r["created_at"]) or utcnow() for r in self.rows)


def _owner() -> str:
    return f"{socket.gethostname()[:60]}:{os.getpid()}:{uuid.uuid4().hex[:8]}"


def _lock_key(channel: str) -> int:
    digest = hashlib.sha256(f"healthmon.notify:{channel}".encode()).digest()
    return int.from_bytes(digest[:8], "big", signed=True)


class Dispatcher:
    """Drains the outbox for the channels of ``config`` (see the module docstring).

    ``notifiers`` replaces the notifiers built from the configuration (tests, the CLI);
    ``clock`` gives "now" (tests move it); ``env`` stands in for the process environment;
    ``alert_ids`` limits it to those alerts' notifications.
    """

    def __init__(
        self,
        engine: Engine,
        config: HealthConfiguration,
        *,
        notifiers: Mapping[str, Notifier] | None = None,
        clock: Callable[[], datetime] = utcnow,
        env: Mapping[str, str] | None = None,
        external_url: str | None = None,
        slack_resource: "SlackResource | None" = None,
        batch_size: int = 1000,
        owner: str | None = None,
        rng: random.Random | None = None,
        concurrency: int = 8,
        alert_ids: Iterable[int] | None = None,
        defer_timeouts: float | None = None,
        lineage: Lineage | None = None,
    ) -> None:
        self.engine = engine
        self.lineage = lineage or Lineage.bundled()  # what a root cause's notification mutes
        self.config = config
        self.dispatch = config.alerting.dispatch
        self.grouping = config.alerting.grouping
        self.clock = clock
        self.env = env
        self.external_url = (
            external_url if external_url is not None else get_settings().dagster_ui_url
        )
        self.batch_size = batch_size
        self.owner = owner or _owner()
        self.rng = rng or random.Random()
        self._slack_resource = slack_resource
        self._notifiers: dict[str, Notifier] = dict(notifiers or {})
        # Requests in flight at once per channel: receivers answer in milliseconds to seconds,
        # so sends overlap; the rate limit still bounds how many a second.
        self.concurrency = max(1, concurrency)
        self._pool = ThreadPoolExecutor(self.concurrency, thread_name_prefix="healthmon-notify")
        # Only these alerts' notifications (the alert fast path sends what it just fired).
        self.alert_ids = None if alert_ids is None else sorted(set(alert_ids))
        # Seconds to leave a timed-out request's rows for another dispatcher, costing no attempt
        # (the alert fast path's short timeout: the dispatch job, which waits longer, takes it).
        self.defer_timeouts = defer_timeouts
        _warn_deprecated(config)

    def _scope(self) -> list[sa.ColumnElement[bool]]:
        return [] if self.alert_ids is None else [N.alert_id.in_(self.alert_ids)]

    # --- channels ---------------------------------------------------------------------------

    def notifier(self, name: str) -> Notifier:
        if name not in self._notifiers:
            self._notifiers[name] = build_notifier(
                name,
                self.config.channels[name],
                timeout=self.dispatch.request_timeout_seconds,
                env=self.env,
                slack_resource=self._slack_resource,
            )
        return self._notifiers[name]

    def rate_per_minute(self, name: str) -> int | None:
        """Requests per minute allowed on channel ``name`` (None: unlimited)."""
        channel = self.config.channels.get(name)
        if channel is None:
            return None
        own = channel_config(channel).rate_per_minute
        return own if own is not None else self.dispatch.rate_per_minute.get(channel.type)

    def _backoff(self, channel: NotificationChannel, attempts: int) -> float:
        if "retry_delay_minutes" in channel.model_fields_set:
            initial = max(0.1, channel.retry_delay_minutes * 60)
        else:
            initial = self.dispatch.backoff_initial_seconds
        delay = min(self.dispatch.backoff_max_seconds, initial * 2 ** max(0, attempts - 1))
        return self.rng.uniform(delay / 2, delay)  # "equal jitter": spread retries apart

    # --- one pass ---------------------------------------------------------------------------

    def run_once(self) -> DispatchReport:
        """Claim what is due on every channel, send it, record each outcome."""
        report = DispatchReport()
        with self.engine.connect() as conn:
            names = list(
                conn.execute(
                    sa.select(N.channel)
                    .where(
                        N.status == NotificationStatus.PENDING,
                        N.not_before <= self.clock(),
                        *self._scope(),
                    )
                    .distinct()
                ).scalars()
            )
        for name in sorted(names):
            self._send_all(name, self._claim(name, report.channel(name)), report.channel(name))
        return report

    def _send_all(self, name: str, units: list[_Unit], report: ChannelReport) -> None:
        """Send ``units`` ``concurrency`` at a time (announcements before follow-ups, so a
        resolve never overtakes its firing)."""
        if not units:
            return
        units = sorted(units, key=lambda u: u.kind in FOLLOW_UP_KINDS)
        size = self.concurrency * 4  # one message query and one commit per wave
        # The lease must not lapse while this process is alive and sending, however long an
        # answer takes (a trickling body, a Slack reply and update, an SMTP session): another
        # dispatcher would send the same rows again. A heartbeat renews it until the pass ends.
        with self._heartbeat(name, [i for u in units for i in u.ids]):
            for start in range(0, len(units), size):
                wave = units[start : start + size]
                pause = self._send_wave(name, wave, report)
                if pause is not None:
                    # The receiver asked the channel to wait: give back what this pass claimed.
                    report.deferred += self._release(units[start + len(wave) :], pause)
                    return

    @contextmanager
    def _heartbeat(self, name: str, ids: list[int]) -> Iterator[None]:
        """Renew the lease of ``ids`` (those still claimed by this dispatcher) every third of
        ``lease_seconds`` until the block ends."""
        stop = threading.Event()
        every = self.dispatch.lease_seconds / 3

        def beat() -> None:
            while not stop.wait(every):
                try:
                    self._extend_lease(ids)
                except Exception:  # the database is away: try again at the next beat
                    LOGGER.warning(
                        "channel %s: renewing the send lease failed", name, exc_info=True
                    )

        thread = threading.Thread(target=beat, name=f"healthmon-lease-{name}", daemon=True)
        thread.start()
        try:
            yield
        finally:
            stop.set()
            thread.join()

    def close(self) -> None:
        """Stop the sending threads (a dispatcher is also usable as a context manager)."""
        self._pool.shutdown(wait=True)

    def __enter__(self) -> "Dispatcher":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _release(self, units: Sequence[_Unit], not_before: datetime) -> int:
        """Give back claimed units that were not sent (a 429 paused the channel first). One that
        was not in doubt before this pass loses the key it was claimed with: nothing went out
        under it, so its next pass is not "in doubt" (no Slack history lookup for it)."""
        with write_transaction(self.engine) as conn:
            for in_doubt in (True, False):
                ids = [i for unit in units if unit.in_doubt is in_doubt for i in unit.ids]
                values: dict[str, Any] = {
                    "claimed_by": None,
                    "claimed_until": None,
                    "not_before": not_before,
                }
                if not in_doubt:
                    values["delivery_key"] = None
                for chunk in _chunks(ids, 500):
                    conn.execute(
                        notifications.update()
                        .where(N.notification_id.in_(chunk), N.claimed_by == self.owner)
                        .values(**values)
                    )
        return sum(len(unit.rows) for unit in units)

    def _extend_lease(self, ids: Sequence[int]) -> None:
        lease_end = self.clock() + timedelta(seconds=self.dispatch.lease_seconds)
        with write_transaction(self.engine) as conn:
            for chunk in _chunks(ids, 500):
                conn.execute(
                    notifications.update()
                    .where(
                        N.notification_id.in_(chunk),
                        N.claimed_by == self.owner,
                        N.status == NotificationStatus.PENDING,
                    )
                    .values(claimed_until=lease_end)
                )

    def drain(self, max_seconds: float, *, stop_when_idle: bool = True) -> DispatchReport:
        """Run passes until nothing is due (or waits beyond ``max_seconds``); sleeps while the
        rate limit or a group's timing holds messages back."""
        deadline = time.monotonic() + max_seconds
        total = DispatchReport()
        while True:
            report = self.run_once()
            total.add(report)
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return total
            wait = self.next_due_in()
            if wait is None or wait > remaining:
                if stop_when_idle:
                    return total
                wait = min(remaining, 1.0)
            if report.sent and wait == 0:
                continue  # more is due: go on at once
            # Nothing went out although something is due: the rate limit holds it; look again
            # shortly rather than spin.
            time.sleep(min(remaining, max(wait, 0.02)))

    def next_due_in(self) -> float | None:
        """Seconds until the next pending row is due (0 when one is due now); None when the
        outbox holds nothing pending."""
        with self.engine.connect() as conn:
            first = conn.execute(
                sa.select(sa.func.min(N.not_before)).where(
                    N.status == NotificationStatus.PENDING, *self._scope()
                )
            ).scalar()
        if first is None:
            return None
        return max(0.0, ((_utc(first) or self.clock()) - self.clock()).total_seconds())

    # --- claiming ---------------------------------------------------------------------------

    def _claim(self, name: str, report: ChannelReport) -> list[_Unit]:
        now = self.clock()
        with write_transaction(self.engine) as conn:
            if not is_sqlite(conn):
                conn.execute(sa.select(sa.func.pg_advisory_xact_lock(_lock_key(name))))
            rows = self._due_rows(conn, name, now)
            if not rows:
                return []
            channel = self.config.channels.get(name)
            if channel is None:
                msg = (
                    f"channel '{name}' is not defined under channels: in the configuration; "
                    "add it back or resolve its alerts"
                )
                report.failed += self._finish(conn, rows, NotificationStatus.FAILED, now, msg)
                report.errors.append(msg)
                return []
            if not channel.enabled:
                msg = f"channel '{name}' is disabled (enabled: false)"
                report.cancelled += self._finish(conn, rows, NotificationStatus.CANCELLED, now, msg)
                return []
            notifier = self.notifier(name)
            problems = notifier.configured()
            if problems:
                msg = f"channel '{name}' is not configured: {'; '.join(problems)}"
                report.failed += self._finish(conn, rows, NotificationStatus.FAILED, now, msg)
                report.errors.append(msg)
                return []
            self._count_cut_off(conn, name, rows)
            rows = self._cancel_moot(conn, name, notifier, rows, now, report)
            rows = self._after_announcements(conn, name, rows, now, report)
            rows = self._after_older_updates(conn, name, notifier, rows, now, report)
            units = self._units(conn, name, notifier, rows)
            units = self._timed(conn, name, units, now, report)
            budget = self._budget(conn, name, now)
            if budget is not None and budget < len(units):
                held = units[budget:]
                units = units[:budget]
                report.deferred += sum(len(u.rows) for u in held)
            keys: dict[int, str] = {}
            for unit in units:
                unit.key = unit.key or delivery_key(name, unit.kind, unit.ids)
                keys.update(dict.fromkeys(unit.ids, unit.key))
            # One statement per 400 rows (not one per message): each row gets its message's key.
            ids = sorted(keys)
            for chunk in _chunks(ids, 400):
                conn.execute(
                    notifications.update()
                    .where(N.notification_id.in_(chunk))
                    .values(
                        claimed_by=self.owner,
                        claimed_until=now + timedelta(seconds=self.dispatch.lease_seconds),
                        delivery_key=sa.case({i: keys[i] for i in chunk}, value=N.notification_id),
                    )
                )
            return units

    def _due_rows(self, conn: Connection, name: str, now: datetime) -> list[RowMapping]:
        rows = list(
            conn.execute(
                self._row_query(
                    conn,
                    N.channel == name,
                    N.status == NotificationStatus.PENDING,
                    N.not_before <= now,
                    sa.or_(N.claimed_until.is_(None), N.claimed_until < now),
                    *self._scope(),
                )
                .order_by(N.not_before, N.notification_id)
                .limit(self.batch_size)
            ).mappings()
        )
        # A request that went out before is sent again with all of its rows or not at all: the
        # batch (or the fast path's scope) may have cut it, and a part sent with the whole's key
        # would be dropped by a receiver that has seen the key (another content, same key).
        keys = sorted({str(r["delivery_key"]) for r in rows if r["delivery_key"] is not None})
        if not keys:
            return rows
        taken = {int(r["notification_id"]) for r in rows}
        for chunk in _chunks(keys, 500):
            rows.extend(
                r
                for r in conn.execute(
                    self._row_query(
                        conn,
                        N.channel == name,
                        N.status == NotificationStatus.PENDING,
                        N.delivery_key.in_(chunk),
                        sa.or_(N.claimed_until.is_(None), N.claimed_until < now),
                    ).order_by(N.notification_id)
                ).mappings()
                if int(r["notification_id"]) not in taken
            )
        return rows

    def _row_query(self, conn: Connection, *where: sa.ColumnElement[bool]) -> sa.Select[Any]:
        query = (
            sa.select(
                N.notification_id,
                N.alert_id,
                N.kind,
                N.group_key,
                N.attempts,
                N.created_at,
                N.delivery_key,
                N.claimed_by,
                N.claimed_until,
                N.retry_until,
                A.state.label("alert_state"),
                A.status.label("alert_status"),
                A.suppressed_by,
                A.severity.label("alert_severity"),
            )
            .join(alerts, A.alert_id == N.alert_id)
            .where(*where)
        )
        if not is_sqlite(conn):
            query = query.with_for_update(skip_locked=True, of=notifications)
        return query

    def _finish(
        self,
        conn: Connection,
        rows: Sequence[RowMapping],
        status: NotificationStatus,
        now: datetime,
        error: str | None,
    ) -> int:
        ids = [int(r["notification_id"]) for r in rows]
        if ids:
            conn.execute(
                notifications.update()
                .where(N.notification_id.in_(ids))
                .values(
                    status=status,
                    last_error=error,
                    claimed_by=None,
                    claimed_until=None,
                    sent_at=None,
                )
            )
        return len(ids)

    def _cancel_moot(
        self,
        conn: Connection,
        name: str,
        notifier: Notifier,
        rows: list[RowMapping],
        now: datetime,
        report: ChannelReport,
    ) -> list[RowMapping]:
        """Drop rows that must not go out (see the module docstring, step 2)."""
        # On a threaded channel the resolve replies in the thread the alert's first message
        # started. An attempted announcement (it has a key) of an alert with no thread here yet
        # may have reached the channel: it is retried (Slack finds the copy it kept, or posts it)
        # and the resolve follows in its thread, rather than superseding it and posting at the
        # top level (two messages, the first never updated; or RESOLVED for an alert never
        # shown).
        unthreaded: set[int] = set()
        if notifier.threaded:
            resolved = {int(r["alert_id"]) for r in rows if r["alert_state"] == AlertState.RESOLVED}
            unthreaded = resolved - set(self._threads(conn, name, resolved))
        fresh = [r for r in rows if r["delivery_key"] is None]
        kinds: dict[int, set[str]] = defaultdict(set)
        for r in fresh:
            kinds[int(r["alert_id"])].add(str(r["kind"]))
        flapped = {
            alert_id
            for alert_id, k in kinds.items()
            if {NotificationKind.FIRING.value, NotificationKind.RESOLVED.value} <= k
        }
        moot: dict[str, list[RowMapping]] = defaultdict(list)
        keep = []
        for r in rows:
            if r["delivery_key"] is None and int(r["alert_id"]) in flapped:
                moot["resolved before its firing notification went out"].append(r)
            elif (
                r["kind"] in ANNOUNCING_KINDS
                and r["alert_state"] == AlertState.RESOLVED
                and not (r["delivery_key"] is not None and int(r["alert_id"]) in unthreaded)
            ):
                moot[SUPERSEDED].append(r)
            elif (
                r["alert_status"] == AlertStatus.SUPPRESSED
                and r["kind"] in SUPPRESSIBLE_KINDS
                and r["delivery_key"] is None
            ):
                why = one_line(str(r["suppressed_by"] or "a silence or an inhibition"), 200)
                if r["kind"] == NotificationKind.UPDATED:
                    report.deferred += 1
                    conn.execute(
                        notifications.update()
                        .where(N.notification_id == r["notification_id"])
                        .values(
                            not_before=now + SUPPRESSED_RECHECK,
                            last_error=f"waiting: alert suppressed by {why}",
                        )
                    )
                else:
                    moot[f"alert suppressed by {why}"].append(r)
            else:
                keep.append(r)
        for reason, cancelled in moot.items():
            report.cancelled += self._finish(
                conn, cancelled, NotificationStatus.CANCELLED, now, reason
            )
        # The announcements of alerts resolving now that wait for a retry (not due yet): the
        # resolve going out supersedes them; sent after it, they would show the alert firing.
        resolving = {int(r["alert_id"]) for r in keep if r["kind"] == NotificationKind.RESOLVED}
        for chunk in _chunks(sorted(resolving), 500):
            retried = sorted(unthreaded.intersection(chunk))
            report.cancelled += conn.execute(
                notifications.update()
                .where(
                    N.channel == name,
                    N.alert_id.in_(chunk),
                    N.status == NotificationStatus.PENDING,
                    N.kind.in_(ANNOUNCING_KINDS),
                    sa.or_(N.claimed_until.is_(None), N.claimed_until < now),
                    # An attempted announcement of an alert with no thread here goes first.
                    sa.not_(sa.and_(N.delivery_key.is_not(None), N.alert_id.in_(retried)))
                    if retried
                    else sa.true(),
                )
                .values(status=NotificationStatus.CANCELLED, last_error=SUPERSEDED)
            ).rowcount
        return keep

    def _after_announcements(
        self,
        conn: Connection,
        name: str,
        rows: list[RowMapping],
        now: datetime,
        report: ChannelReport,
    ) -> list[RowMapping]:
        """Hold a resolve or an acknowledgement while an announcement of its alert is still under
        way on this channel (in flight, in this pass, or queued): it goes out after it, never
        before (a resolve overtaking its firing leaves the alert firing at the receiver)."""
        follow_ups = {int(r["alert_id"]) for r in rows if r["kind"] in FOLLOW_UP_KINDS}
        if not follow_ups:
            return rows
        hold: dict[int, datetime] = {}
        for r in rows:
            if r["kind"] in ANNOUNCING_KINDS and int(r["alert_id"]) in follow_ups:
                hold[int(r["alert_id"])] = now  # sent in this pass: the next pass may follow
        batch = [int(r["notification_id"]) for r in rows]
        for chunk in _chunks(sorted(follow_ups), 500):
            for alert_id, not_before, claimed_until in conn.execute(
                sa.select(N.alert_id, N.not_before, N.claimed_until).where(
                    N.channel == name,
                    N.alert_id.in_(chunk),
                    N.status == NotificationStatus.PENDING,
                    N.kind.in_(ANNOUNCING_KINDS),
                    N.notification_id.not_in(batch),
                )
            ):
                lease = _utc(claimed_until)
                # In flight elsewhere: look again shortly (its answer usually takes a second).
                # Queued: when it is due.
                until = (
                    now + timedelta(seconds=1)
                    if lease is not None and lease > now
                    else max(now, _utc(not_before) or now)
                )
                hold[int(alert_id)] = max(until, hold.get(int(alert_id), until))
        held = {
            int(r["notification_id"]): hold[int(r["alert_id"])]
            for r in rows
            if r["kind"] in FOLLOW_UP_KINDS and int(r["alert_id"]) in hold
        }
        return self._hold(conn, rows, held, now, report)

    def _after_older_updates(
        self,
        conn: Connection,
        name: str,
        notifier: Notifier,
        rows: list[RowMapping],
        now: datetime,
        report: ChannelReport,
    ) -> list[RowMapping]:
        """Hold an update while an older update of its alert is still pending on this channel
        (waiting for a retry, in flight elsewhere, or going in another request of this pass):
        the receiver gets an alert's updates in the order they were made (an ITSM showing the
        older status last is wrong). An older one in the same request goes with it, first."""
        updates = [r for r in rows if r["kind"] == NotificationKind.UPDATED]
        if not updates:
            return rows
        batch = {int(r["notification_id"]): r for r in rows}
        pending: dict[int, list[tuple[int, datetime]]] = defaultdict(list)
        for chunk in _chunks(sorted({int(r["alert_id"]) for r in updates}), 500):
            for notification_id, alert_id, not_before, claimed_until in conn.execute(
                sa.select(N.notification_id, N.alert_id, N.not_before, N.claimed_until).where(
                    N.channel == name,
                    N.alert_id.in_(chunk),
                    N.status == NotificationStatus.PENDING,
                    N.kind == NotificationKind.UPDATED,
                )
            ):
                lease = _utc(claimed_until)
                # Sent in this pass: the next pass may follow. In flight elsewhere: look again
                # shortly. Queued: when it is due.
                if notification_id in batch:
                    until = now
                elif lease is not None and lease > now:
                    until = now + timedelta(seconds=1)
                else:
                    until = max(now, _utc(not_before) or now)
                pending[int(alert_id)].append((int(notification_id), until))

        def one_request(a: RowMapping, b: RowMapping) -> bool:
            if notifier.one_alert_per_request or a["delivery_key"] != b["delivery_key"]:
                return False
            return a["delivery_key"] is not None or a["group_key"] == b["group_key"]

        held: dict[int, datetime] = {}
        for r in updates:
            this = int(r["notification_id"])
            for older, until in pending[int(r["alert_id"])]:
                if older < this and not (older in batch and one_request(batch[older], r)):
                    held[this] = max(until, held.get(this, until))
        return self._hold(conn, rows, held, now, report)

    def _hold(
        self,
        conn: Connection,
        rows: list[RowMapping],
        held: Mapping[int, datetime],
        now: datetime,
        report: ChannelReport,
    ) -> list[RowMapping]:
        """``rows`` less those ``held`` (notification id: when it may go; now: the next pass),
        whose ``not_before`` moves there. A request that went out before waits as a whole (one
        key, one content)."""
        key_hold: dict[str, datetime] = {}
        for r in rows:
            until = held.get(int(r["notification_id"]))
            if until is not None and r["delivery_key"]:
                key_hold[r["delivery_key"]] = max(until, key_hold.get(r["delivery_key"], until))
        keep = []
        for r in rows:
            until = key_hold.get(r["delivery_key"]) or held.get(int(r["notification_id"]))
            if until is None:
                keep.append(r)
                continue
            report.deferred += 1
            if until > now:
                conn.execute(
                    notifications.update()
                    .where(N.notification_id == r["notification_id"])
                    .values(not_before=until)
                )
        return keep

    def _units(
        self, conn: Connection, name: str, notifier: Notifier, rows: list[RowMapping]
    ) -> list[_Unit]:
        """The requests the rows become: a row that already went out once (it has a
        delivery_key) is sent again with exactly its first companions; the others are grouped."""
        retried: dict[tuple[str, str], _Unit] = {}
        grouped: dict[tuple[str, str], _Unit] = {}
        for r in rows:
            kind = NotificationKind(r["kind"])
            if r["delivery_key"] is not None:
                unit = retried.setdefault(
                    (r["delivery_key"], kind),
                    _Unit(kind, str(r["group_key"]), [], key=str(r["delivery_key"])),
                )
            else:
                unit = grouped.setdefault(
                    (str(r["group_key"]), kind), _Unit(kind, str(r["group_key"]), [])
                )
            unit.rows.append(r)
            # It went out before (its key was written when it was first claimed): the receiver
            # may have it (a timeout, a kill mid-send); Slack looks for it before posting again.
            unit.in_doubt |= r["delivery_key"] is not None
        units = list(retried.values())
        threads: dict[int, ThreadRef] = {}
        announced: dict[int, tuple[str, datetime]] = {}
        if notifier.threaded:
            threads = self._threads(conn, name, [int(r["alert_id"]) for r in rows])
            follow_ups = {
                int(r["alert_id"])
                for u in grouped.values()
                if u.kind in FOLLOW_UP_KINDS
                for r in u.rows
            }
            announced = self._announced(conn, name, follow_ups - set(threads))
        for unit in grouped.values():
            if notifier.one_alert_per_request:
                units.extend(_Unit(unit.kind, unit.group_key, [r]) for r in unit.rows)
            elif notifier.threaded and unit.kind in FOLLOW_UP_KINDS:
                # One follow-up per thread; alerts with none yet, one per first message that may
                # have announced them (a reply can go in its thread if the receiver kept it).
                by_thread: dict[tuple[str, str | None], list[RowMapping]] = defaultdict(list)
                for r in unit.rows:
                    alert_id = int(r["alert_id"])
                    if (ref := threads.get(alert_id)) is not None:
                        by_thread["thread", ref.ref].append(r)
                    else:
                        key = announced.get(alert_id)
                        by_thread["announced", key[0] if key else None].append(r)
                units.extend(_Unit(unit.kind, unit.group_key, rs) for rs in by_thread.values())
            else:
                units.append(unit)
        return sorted(units, key=lambda u: (u.oldest, min(u.ids)))

    def _timed(
        self,
        conn: Connection,
        name: str,
        units: list[_Unit],
        now: datetime,
        report: ChannelReport,
    ) -> list[_Unit]:
        """Hold back grouped messages until their group is due; move their ``not_before``."""
        keys = {u.group_key for u in units if u.kind in GROUPED_KINDS and not u.key}
        if not keys:
            return units
        history: dict[str, tuple[datetime | None, bool]] = {}
        for chunk in _chunks(sorted(keys), 500):
            for group_key, last_sent, open_alerts in conn.execute(
                sa.select(
                    N.group_key,
                    sa.func.max(N.sent_at),
                    sa.func.max(sa.case((A.state != AlertState.RESOLVED, 1), else_=0)),
                )
                .join(alerts, A.alert_id == N.alert_id)
                .where(
                    N.channel == name,
                    N.status == NotificationStatus.SENT,
                    N.group_key.in_(chunk),
                )
                .group_by(N.group_key)
            ):
                history[group_key] = (_utc(last_sent), bool(open_alerts))
        interval = timedelta(seconds=self.grouping.group_interval_seconds)
        # A group's wait counts from its first pending notification, due now or not.
        first_pending: dict[str, datetime] = {}
        for chunk in _chunks(sorted(keys), 500):
            for group_key, first in conn.execute(
                sa.select(N.group_key, sa.func.min(N.created_at))
                .where(
                    N.channel == name,
                    N.status == NotificationStatus.PENDING,
                    N.group_key.in_(chunk),
                )
                .group_by(N.group_key)
            ):
                first_pending[group_key] = _utc(first) or now
        due_now, held = [], []
        for unit in units:
            if unit.kind not in GROUPED_KINDS or unit.key:
                due_now.append(unit)
                continue
            last_sent, open_alerts = history.get(unit.group_key, (None, False))
            active = last_sent is not None and (open_alerts or last_sent > now - interval)
            wait = self.grouping.group_wait_for(str(r["alert_severity"]) for r in unit.rows)
            due = (
                (last_sent + interval)
                if active and last_sent
                else first_pending[unit.group_key] + timedelta(seconds=wait)
            )
            if due <= now:
                due_now.append(unit)
            else:
                held.append((unit, due))
        for unit, due in held:
            conn.execute(
                notifications.update().where(N.notification_id.in_(unit.ids)).values(not_before=due)
            )
            report.deferred += len(unit.rows)
        return due_now

    def _budget(self, conn: Connection, name: str, now: datetime) -> int | None:
        """Requests the channel may still make now (None: no limit).

        A request counts from its claim (in flight: its rows' live lease) until a full window
        after it ended (``etl.notification_requests``: its answer or its failure came, retries
        and refusals too). It reached the receiver in between, so the requests the receiver gets
        in any window of 60 s (1 s) are at most ``rate`` (``ceil(rate / 60)``), however many
        dispatchers claim (they claim one at a time: the channel's lock), however the sends of a
        pass spread out. (Not counting by the send's start is the price: a storm goes out slower
        than the limit by the answers' latency. A request that timed out may, rarely, still
        reach the receiver later.) One statement reads both counts: a request whose outcome is
        recorded meanwhile is seen in flight or ended, never neither."""
        rate = self.rate_per_minute(name)
        if rate is None:
            return None
        per_second = max(1, math.ceil(rate / 60))
        R = notification_requests.c
        conn.execute(
            notification_requests.delete().where(
                R.channel == name, R.ended_at <= now - timedelta(seconds=60)
            )
        )
        in_flight = sa.select(sa.func.count(sa.distinct(N.delivery_key))).where(
            N.channel == name,
            N.status == NotificationStatus.PENDING,
            N.claimed_until > now,
            N.delivery_key.is_not(None),
        )

        def ended(seconds: int) -> sa.ScalarSelect[Any]:
            return (
                sa.select(sa.func.count())
                .select_from(notification_requests)
                .where(R.channel == name, R.ended_at > now - timedelta(seconds=seconds))
                .scalar_subquery()
            )

        flying, minute, second = (
            int(n)
            for n in conn.execute(sa.select(in_flight.scalar_subquery(), ended(60), ended(1))).one()
        )
        return max(0, min(rate - flying - minute, per_second - flying - second))

    def _count_requests(
        self, conn: Connection, name: str, ended: Sequence[datetime | None]
    ) -> None:
        """Record requests to channel ``name`` that ended (None: none went out), for its rate
        limit (:meth:`_budget`)."""
        values = [{"channel": name, "ended_at": at} for at in ended if at is not None]
        if values and self.rate_per_minute(name) is not None:
            conn.execute(notification_requests.insert(), values)

    def _count_cut_off(self, conn: Connection, name: str, rows: Sequence[RowMapping]) -> None:
        """Count the requests whose dispatcher died mid-send (their lease lapsed, nothing was
        recorded; before, they counted only while the lease lasted): each may have reached the
        receiver as late as its lease's end. Their lease is cleared (the owner kept: a late
        answer may still record it), so each counts once."""
        cut_off: dict[str, datetime] = {}
        ids = []
        for r in rows:
            lease = _utc(r["claimed_until"])
            if r["claimed_by"] is not None and lease is not None and r["delivery_key"]:
                key = str(r["delivery_key"])
                cut_off[key] = max(lease, cut_off.get(key, lease))
                ids.append(int(r["notification_id"]))
        if not cut_off:
            return
        self._count_requests(conn, name, list(cut_off.values()))
        for chunk in _chunks(ids, 500):
            conn.execute(
                notifications.update()
                .where(N.notification_id.in_(chunk))
                .values(claimed_until=None)
            )

    def _threads(
        self, conn: Connection, name: str, alert_ids: Iterable[int]
    ) -> dict[int, ThreadRef]:
        T = notification_threads.c
        out: dict[int, ThreadRef] = {}
        for chunk in _chunks(sorted(set(alert_ids)), 500):
            for alert_id, ref, conversation in conn.execute(
                sa.select(T.alert_id, T.thread_ref, T.conversation).where(
                    T.channel == name, T.alert_id.in_(chunk)
                )
            ):
                out[int(alert_id)] = ThreadRef(str(ref), conversation)
        return out

    def _announced(
        self, conn: Connection, name: str, alert_ids: Iterable[int]
    ) -> dict[int, tuple[str, datetime]]:
        """For alerts with no thread on threaded channel ``name``: the delivery key of the first
        announcement of each that went out, or may have (it is over and kept its key: a post
        that timed out and failed for good, or a dispatcher that died mid-send), and its
        creation (the request cannot be older)."""
        out: dict[int, tuple[str, datetime]] = {}
        for chunk in _chunks(sorted(set(alert_ids)), 500):
            for alert_id, key, created_at in conn.execute(
                sa.select(N.alert_id, N.delivery_key, N.created_at)
                .where(
                    N.channel == name,
                    N.alert_id.in_(chunk),
                    N.kind.in_(ANNOUNCING_KINDS),
                    N.status != NotificationStatus.PENDING,
                    N.delivery_key.is_not(None),
                )
                .order_by(N.created_at, N.notification_id)
            ):
                out.setdefault(int(alert_id), (str(key), _utc(created_at) or self.clock()))
        return out

    # --- sending ----------------------------------------------------------------------------

    def messages(self, name: str, units: Sequence[_Unit]) -> list[Message]:
        """The messages carrying ``units``' rows, from the alerts and events as stored now (one
        query for all of them)."""
        notifier = self.notifier(name)
        ids = [i for unit in units for i in unit.ids]
        E = alert_events.c
        by_id: dict[int, RowMapping] = {}
        with self.engine.connect() as conn:
            for chunk in _chunks(ids, 500):
                for r in conn.execute(
                    sa.select(
                        N.notification_id,
                        alerts,
                        E.kind.label("event_kind"),
                        E.at,
                        E.actor,
                        E.note,
                        E.details.label("event_details"),
                    )
                    .join(alerts, A.alert_id == N.alert_id)
                    .join(alert_events, E.event_id == N.event_id)
                    .where(N.notification_id.in_(chunk))
                ).mappings():
                    by_id[int(r["notification_id"])] = r
            alert_ids = [int(r["alert_id"]) for r in by_id.values()]
            threads = self._threads(conn, name, alert_ids) if notifier.threaded else {}
            unthreaded = {
                int(by_id[i]["alert_id"])
                for unit in units
                if notifier.threaded and unit.kind in FOLLOW_UP_KINDS
                for i in unit.ids
                if i in by_id
            } - set(threads)
            announced = self._announced(conn, name, unthreaded) if unthreaded else {}
            causes = root_causes(conn, self.config, self.lineage, by_id.values())
            out = []
            for unit in units:
                rows = [by_id[i] for i in sorted(unit.ids) if i in by_id]
                views = tuple(
                    self._view(r, threads.get(int(r["alert_id"])), causes.of(int(r["alert_id"])))
                    for r in rows
                )
                thread_alerts: tuple[AlertView, ...] = ()
                first: tuple[str, datetime] | None = None
                shared = {v.thread for v in views}
                if notifier.threaded and unit.kind in FOLLOW_UP_KINDS and len(shared) == 1:
                    ref = shared.pop()
                    if ref is not None:
                        thread_alerts = self._thread_alerts(conn, name, ref, views)
                    elif len(keys := {announced.get(v.alert_id) for v in views}) == 1:
                        first = keys.pop()
                        if first is not None:
                            thread_alerts = self._announced_alerts(conn, name, first[0], views)
                out.append(
                    Message(
                        channel=name,
                        kind=unit.kind,
                        group_key=unit.group_key,
                        alerts=views,
                        delivery_key=unit.key,
                        group_labels=self._group_labels(views),
                        external_url=self.external_url,
                        in_doubt=unit.in_doubt,
                        attempted_since=unit.oldest if unit.in_doubt else None,
                        announced_key=first[0] if first else None,
                        announced_since=first[1] if first else None,
                        thread_alerts=thread_alerts,
                    )
                )
        return out

    def _group_labels(self, views: Sequence[AlertView]) -> dict[str, str]:
        out = {}
        for label in self.grouping.group_by:
            values = {v.labels.get(label) for v in views}
            if len(values) == 1 and (value := values.pop()) is not None:
                out[label] = value
        return out

    def _view(
        self, r: RowMapping, thread: ThreadRef | None, extra: Mapping[str, Any] | None = None
    ) -> AlertView:
        labels = {str(k): str(v) for k, v in (r["labels"] or {}).items()}
        details = dict(r["details"] or {})
        event = AlertEvent(
            kind=str(r.get("event_kind") or r["state"]),
            at=_utc(r.get("at")) or _utc(r["last_evaluated_at"]) or self.clock(),
            actor=str(r.get("actor") or ""),
            note=r.get("note"),
            details=dict(r.get("event_details") or {}),
        )
        return AlertView(
            notification_id=int(r.get("notification_id") or 0),
            alert_id=int(r["alert_id"]),
            fingerprint=str(r["fingerprint"]),
            rule_id=str(r["rule_id"]),
            state=AlertState(r["state"]),
            status=str(r["status"]),
            severity=AlertSeverity(r["severity"]),
            component=r["component"],
            labels=labels,
            title=str(r["title"]),
            description=str(r["description"] or ""),
            details=details,
            value=r["value"],
            started_at=_utc(r["started_at"]) or self.clock(),
            event=event,
            fired_at=_utc(r["fired_at"]),
            resolved_at=_utc(r["resolved_at"]),
            resolved_by=r["resolved_by"],
            resolution=r["resolution"],
            acknowledged_by=r["acknowledged_by"],
            acknowledged_at=_utc(r["acknowledged_at"]),
            ack_note=r["ack_note"],
            escalation_level=int(r["escalation_level"] or 0),
            links=dagster_links(self.external_url, labels, details),
            thread=thread,
            **(extra or {}),
        )

    def _thread_alerts(
        self, conn: Connection, name: str, ref: ThreadRef, views: Sequence[AlertView]
    ) -> tuple[AlertView, ...]:
        T = notification_threads.c
        rows = conn.execute(
            sa.select(alerts)
            .join(notification_threads, T.alert_id == A.alert_id)
            .where(T.channel == name, T.thread_ref == ref.ref)
            .order_by(A.alert_id)
        ).mappings()
        mine = {v.alert_id: v for v in views}
        return tuple(mine.get(int(r["alert_id"])) or self._view(r, ref) for r in rows)

    def _announced_alerts(
        self, conn: Connection, name: str, key: str, views: Sequence[AlertView]
    ) -> tuple[AlertView, ...]:
        """Every alert the request with delivery key ``key`` announced, as it is now (what its
        message shows once a follow-up found it)."""
        rows = conn.execute(
            sa.select(alerts)
            .where(
                A.alert_id.in_(
                    sa.select(N.alert_id).where(N.channel == name, N.delivery_key == key)
                )
            )
            .order_by(A.alert_id)
        ).mappings()
        mine = {v.alert_id: v for v in views}
        return tuple(mine.get(int(r["alert_id"])) or self._view(r, None) for r in rows)

    def _deliver(
        self, notifier: Notifier, message: Message, paused: threading.Event
    ) -> tuple["Delivery | Exception | None", datetime | None]:
        """Send one message: its outcome, and when it came (the answer or the failure: the
        receiver got the request before). None and None when the channel was paused (a 429)
        before its turn."""
        if paused.is_set():
            return None, None
        outcome: Delivery | Exception
        try:
            outcome = notifier.send(message)
        except RetryableError as exc:
            if exc.rate_limited and exc.retry_after:
                paused.set()
            outcome = exc
        except Exception as exc:  # recorded by the caller, in the dispatching thread
            outcome = exc
        return outcome, self.clock()

    def _send_wave(
        self, name: str, wave: Sequence[_Unit], report: ChannelReport
    ) -> datetime | None:
        """Send ``wave`` (in parallel) and record every outcome; returns until when the receiver
        asked the channel to pause (a 429 with ``Retry-After``), else None."""
        notifier = self.notifier(name)
        channel = self.config.channels[name]
        outcomes: list[tuple[Delivery | Exception | None, datetime | None]]
        paused = threading.Event()
        # sent_at: when the wave started. The rate limit counts each request from when it ended
        # (see _budget), which is after the receiver got it.
        started = self.clock()
        try:
            messages = self.messages(name, wave)
        except Exception as exc:
            outcomes = [(exc, None)] * len(wave)  # nothing went out
        else:
            if len(wave) == 1:
                outcomes = [self._deliver(notifier, messages[0], paused)]
            else:
                outcomes = list(
                    self._pool.map(
                        self._deliver, [notifier] * len(wave), messages, [paused] * len(wave)
                    )
                )
        pause = None
        delivered: list[tuple[_Unit, Delivery, datetime | None]] = []
        skipped: list[_Unit] = []
        for unit, (outcome, ended) in zip(wave, outcomes, strict=True):
            if outcome is None:
                skipped.append(unit)
                continue
            if isinstance(outcome, Delivery):
                delivered.append((unit, outcome, ended))
                continue
            if not isinstance(outcome, DeliveryError):  # a bug, not the receiver: fail loudly
                LOGGER.error(
                    "channel %s: building or sending a notification failed",
                    name,
                    exc_info=outcome,
                )
                outcome = PermanentError(
                    f"healthmon could not build or send the notification "
                    f"({type(outcome).__name__}); see the dispatcher's log"
                )
            until = self._failed(
                name, channel, unit, outcome, notifier.secret_values(), report, ended
            )
            pause = max(pause, until) if pause and until else (pause or until)
        if delivered:
            self._mark_sent(name, delivered, report, started)
        if skipped:
            report.deferred += self._release(skipped, pause or self.clock())
        return pause

    def _mark_sent(
        self,
        name: str,
        delivered: Sequence[tuple[_Unit, Delivery, datetime | None]],
        report: ChannelReport,
        now: datetime,
    ) -> None:
        ids = [i for unit, _, _ in delivered for i in unit.ids]
        threads = {k: v for _, d, _ in delivered for k, v in d.threads.items()}
        marked = 0
        with write_transaction(self.engine) as conn:
            # In the transaction that ends the leases: a request is counted all along.
            self._count_requests(conn, name, [ended for _, _, ended in delivered])
            for chunk in _chunks(ids, 500):
                # Only rows still this dispatcher's: a row whose lease passed to another is that
                # one's to record (it sends the same request again; the receiver dedups).
                marked += conn.execute(
                    notifications.update()
                    .where(
                        N.notification_id.in_(chunk),
                        N.status == NotificationStatus.PENDING,
                        N.claimed_by == self.owner,
                    )
                    .values(
                        status=NotificationStatus.SENT,
                        sent_at=now,
                        attempts=N.attempts + 1,
                        last_error=None,
                        claimed_by=None,
                        claimed_until=None,
                        retry_until=None,
                    )
                ).rowcount
            if threads:
                self._record_threads(conn, name, threads, now)
        report.sent += marked
        if marked < len(ids):
            LOGGER.warning(
                "channel %s: %s sent notification(s) had passed to another dispatcher (the send "
                "outlived the lease); it records them",
                name,
                len(ids) - marked,
            )
        for unit, delivery, _ in delivered:
            LOGGER.info(
                "channel %s: sent %s notification(s) (%s, group %s): %s",
                name,
                len(unit.rows),
                unit.kind.value,
                unit.group_key,
                delivery.detail,
            )

    def _record_threads(
        self, conn: Connection, name: str, threads: Mapping[int, ThreadRef], now: datetime
    ) -> None:
        values = [
            {
                "channel": name,
                "alert_id": alert_id,
                "thread_ref": ref.ref[:255],
                "conversation": ref.conversation,
                "created_at": now,
            }
            for alert_id, ref in threads.items()
        ]
        dialect: Any = sqlite if is_sqlite(conn) else postgresql
        conn.execute(
            dialect.insert(notification_threads)
            .values(values)
            .on_conflict_do_nothing(index_elements=["channel", "alert_id"])
        )

    def _retry_for(self, channel: NotificationChannel) -> float:
        """Seconds a failing notification of ``channel`` is retried for."""
        minutes = channel.retry_for_minutes
        return 60 * (minutes if minutes is not None else self.dispatch.retry_for_minutes)

    def _failed(
        self,
        name: str,
        channel: NotificationChannel,
        unit: _Unit,
        exc: DeliveryError,
        secrets: Sequence[str],
        report: ChannelReport,
        ended: datetime | None = None,
    ) -> datetime | None:
        """Record a failed send: retry later (backoff or ``Retry-After``) until the rows'
        ``retry_until``, else ``failed``. Returns until when the receiver paused the channel.
        ``ended``: when the failure came (None: no request went out)."""
        now = self.clock()
        pause = None
        error = one_line(str(exc), 500, secrets)
        # A 429 with Retry-After is the receiver pacing us, not a failure: no attempt is used
        # (the wait is its own). Every other failure, a 429 without it included, backs off. A
        # timeout in the fast path (``defer_timeouts``) uses no attempt either: the dispatch job,
        # which waits longer, takes the rows over after that many seconds.
        paced = isinstance(exc, RetryableError) and exc.rate_limited and exc.retry_after is not None
        deferred = (
            self.defer_timeouts is not None and isinstance(exc, RetryableError) and exc.timed_out
        )
        free = paced or deferred
        attempts = max(int(r["attempts"]) for r in unit.rows) + (0 if free else 1)
        budget = self._retry_for(channel)
        first = [t for r in unit.rows if (t := _utc(r["retry_until"])) is not None]
        retry_until = min(first) if first else now + timedelta(seconds=budget)
        next_try: datetime | None = None
        if not exc.retryable:
            pass  # permanent: fails at once
        elif deferred and self.defer_timeouts is not None:
            next_try = now + timedelta(seconds=self.defer_timeouts)
        elif now >= retry_until:
            error = one_line(f"{error} (gave up after retrying for {budget / 60:g} min)", 500)
        elif exc.retry_after is not None:
            next_try = now + timedelta(seconds=exc.retry_after)
            if next_try > retry_until:
                error = one_line(
                    f"{error} (its Retry-After of {exc.retry_after:g}s is past the "
                    f"{budget / 60:g} min the channel retries for)",
                    500,
                )
                next_try = None
        else:
            # The last try is at the horizon itself, not a backoff step past it.
            next_try = min(now + timedelta(seconds=self._backoff(channel, attempts)), retry_until)
        gave_up = next_try is None
        with write_transaction(self.engine) as conn:
            # The receiver may have got the request (even one it refused): it counts against the
            # rate limit as a sent one does, from the transaction that ends the lease.
            self._count_requests(conn, name, [ended])
            if exc.threads:  # found before the failure (Slack's lookup of a first message)
                self._record_threads(conn, name, exc.threads, now)
            values: dict[str, Any] = {
                "attempts": N.attempts + (0 if free else 1),
                "last_error": error,
                "claimed_by": None,
                "claimed_until": None,
            }
            if gave_up:
                values["status"] = NotificationStatus.FAILED
                values["retry_until"] = None
            else:
                values["not_before"] = next_try
                values["retry_until"] = retry_until
            refused = not exc.retryable or (isinstance(exc, RetryableError) and exc.rate_limited)
            if refused and not unit.in_doubt:
                # The receiver refused the request (a 4xx, a 429) and no earlier attempt may
                # have reached it: nothing went out under this key. Without it the retry is not
                # "in doubt" (no Slack history lookup) and a failed row is not "told" (no
                # resolve follows it: see alerting.engine.told).
                values["delivery_key"] = None
            # Only rows still this dispatcher's: after its lease passed to another dispatcher,
            # recording this outcome would free a row that one is sending.
            recorded = conn.execute(
                notifications.update()
                .where(
                    N.notification_id.in_(unit.ids),
                    N.status == NotificationStatus.PENDING,
                    N.claimed_by == self.owner,
                )
                .values(**values)
            ).rowcount
            if isinstance(exc, RetryableError) and exc.rate_limited and exc.retry_after:
                # The receiver asked the whole channel to wait: hold its queued rows too.
                pause = now + timedelta(seconds=exc.retry_after)
                conn.execute(
                    notifications.update()
                    .where(
                        N.channel == name,
                        N.status == NotificationStatus.PENDING,
                        N.not_before < pause,
                        sa.or_(N.claimed_until.is_(None), N.claimed_until < now),
                    )
                    .values(not_before=pause)
                )
        if not recorded:
            LOGGER.warning(
                "channel %s: a failed send's %s notification(s) had passed to another dispatcher "
                "(the send outlived the lease); it records them: %s",
                name,
                len(unit.rows),
                error,
            )
        elif gave_up:
            report.failed += recorded
            report.errors.append(error)
            LOGGER.error("channel %s: %s notification(s) failed: %s", name, recorded, error)
        else:
            report.retrying += recorded
            LOGGER.warning(
                "channel %s: %s notification(s) will be retried (attempt %s, retrying until "
                "%s UTC): %s",
                name,
                recorded,
                attempts,
                f"{retry_until:%Y-%m-%d %H:%M:%S}",
                error,
            )
        return pause


_WARNED: set[tuple[str, int | None]] = set()


def _warn_deprecated(config: HealthConfiguration) -> None:
    """Say once per process that a channel's ``retry_attempts`` no longer ends its retries."""
    for name, channel in sorted(config.channels.items()):
        if "retry_attempts" not in channel.model_fields_set:
            continue
        if (name, channel.retry_attempts) in _WARNED:
            continue
        _WARNED.add((name, channel.retry_attempts))
        minutes = channel.retry_for_minutes or config.alerting.dispatch.retry_for_minutes
        LOGGER.warning(
            "channel %s: retry_attempts is deprecated and ignored: a failing notification is "
            "retried for retry_for_minutes (%g min here), then failed; remove retry_attempts "
            "(or set retry_for_minutes on the channel)",
            name,
            minutes,
        )


def _chunks(items: Sequence[Any], size: int) -> Iterable[Sequence[Any]]:
    for i in range(0, len(items), size):
        yield items[i : i + size]
