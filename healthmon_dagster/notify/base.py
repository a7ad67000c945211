"""What every notification channel shares: the message, the one protocol, the errors.

A :class:`Message` is one notification to one channel about a group of alerts (Alertmanager's
meaning: alerts whose ``group_by`` labels are equal), all of one :class:`NotificationKind`. It is
built by the dispatcher from the outbox rows, the alerts and their events; it carries only what
the alert engine stored: labels, title, description and details (counts, rates, column names,
row numbers; never a field value), plus links to the Dagster UI.

A channel is a :class:`Notifier`: ``configured()`` lists what stops it from sending (an unset
variable is named, never its value) and ``send()`` returns a :class:`Delivery` once the receiver
accepted the message, or raises :class:`RetryableError` (5xx, timeouts, refused connections, 429
with ``Retry-After``) or :class:`PermanentError` (another 4xx, a rejected token or channel).
"""

import hashlib
import json
import math
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, ClassVar, Protocol
from urllib.parse import quote, urlencode, urlsplit

from pydantic import BaseModel, ConfigDict, Field

from healthmon_dagster.enums import AlertSeverity, AlertState, ChannelType, NotificationKind

# Kinds that follow up on an alert already announced: threaded channels reply in its thread.
FOLLOW_UP_KINDS = frozenset(
    {NotificationKind.RESOLVED, NotificationKind.ACKNOWLEDGED, NotificationKind.UPDATED}
)
# The longest a receiver's Retry-After is obeyed (an hour; a larger or malformed value is cut to
# it) and the shortest wait after a 429 (a "Retry-After: 0" must not make a busy loop).
MAX_RETRY_AFTER = 3600.0
MIN_RETRY_AFTER = 1.0
_ZERO_TIME = "0001-01-01T00:00:00Z"  # Alertmanager's endsAt of an alert still firing


class DeliveryError(Exception):
    """A channel did not accept a message. The text is one line, names no secret and says what to
    do; ``retry_after`` is the receiver's ``Retry-After`` in seconds when it gave one.
    ``threads``: threads the channel found for alerts before it failed (Slack's lookup of their
    first message), recorded anyway so that the retry replies there without looking again."""

    retryable: ClassVar[bool] = False

    def __init__(self, message: str, *, retry_after: float | None = None) -> None:
        super().__init__(" ".join(message.split()))
        self.retry_after = retry_after
        self.threads: Mapping[int, ThreadRef] = {}


class RetryableError(DeliveryError):
    """Try again later: a 5xx, a timeout, a refused connection, a 429 (``rate_limited``).

    ``timed_out``: the request went out and no answer came in time, so the receiver may have
    acted on it (the next attempt is "in doubt": Slack looks for the message before posting)."""

    retryable = True

    def __init__(
        self,
        message: str,
        *,
        retry_after: float | None = None,
        rate_limited: bool = False,
        timed_out: bool = False,
    ) -> None:
        super().__init__(message, retry_after=retry_after)
        self.rate_limited = rate_limited
        self.timed_out = timed_out


class PermanentError(DeliveryError):
    """Retrying cannot help: the receiver rejected the request (a 4xx other than 429)."""


class NotConfigured(PermanentError):
    """The channel lacks configuration (an unset environment variable, named in the message)."""


def classify_http(
    status: int, where: str, retry_after: str | None = None, reason: str = ""
) -> DeliveryError:
    """The error for an HTTP answer other than 2xx: 429 and 5xx are retryable (429 with its
    ``Retry-After`` seconds, see :func:`rate_limit_wait`), every other status is permanent."""
    said = f" ({reason})" if reason else ""
    if status == 429:
        return RetryableError(
            f"{where} answered 429 Too Many Requests{said}",
            retry_after=rate_limit_wait(retry_after),
            rate_limited=True,
        )
    if status >= 500 or status in (408,):
        return RetryableError(f"{where} answered HTTP {status}{said}; will retry")
    return PermanentError(
        f"{where} answered HTTP {status}{said}; the request was rejected, check the channel's "
        "configuration"
    )


def parse_retry_after(value: str | None, now: datetime | None = None) -> float | None:
    """``Retry-After`` in seconds: a number of seconds or an HTTP date, at most
    :data:`MAX_RETRY_AFTER`; None when absent or not a finite number or a date."""
    if not value:
        return None
    value = value.strip()
    try:
        seconds = float(value)
    except ValueError:
        from email.utils import parsedate_to_datetime

        try:
            when = parsedate_to_datetime(value)
        except (TypeError, ValueError, IndexError):
            return None
        if when.tzinfo is None:
            when = when.replace(tzinfo=UTC)
        seconds = (when - (now or datetime.now(UTC))).total_seconds()
    if not math.isfinite(seconds):  # "inf", "nan": no wait the dispatcher could schedule
        return None
    return min(MAX_RETRY_AFTER, max(0.0, seconds))


def rate_limit_wait(retry_after: str | None, now: datetime | None = None) -> float | None:
    """The wait a 429 asks for: its ``Retry-After``, at least :data:`MIN_RETRY_AFTER` and at most
    :data:`MAX_RETRY_AFTER` seconds. None when the 429 gave no usable ``Retry-After``: then the
    dispatcher's exponential backoff with jitter (a finite wait) applies."""
    seconds = parse_retry_after(retry_after, now)
    return None if seconds is None else max(MIN_RETRY_AFTER, seconds)


def env_value(name: str, env: Mapping[str, str] | None = None) -> str | None:
    """The value of environment variable ``name`` (None when unset or empty)."""
    value = (os.environ if env is None else env).get(name)
    return value or None


def receiver_url_problem(url: str) -> str | None:
    """What makes ``url`` unusable as a receiver's address (None when it is usable): only
    ``http://`` and ``https://`` URLs with a host are posted to. The standard library's client
    would also open ``file://`` and ``ftp://`` URLs, which read local files or leave through
    another protocol. Plain http stays allowed (a receiver on loopback, an internal relay). The
    text never quotes the URL (it may carry a secret, as Teams' signature)."""
    try:
        parts = urlsplit(url.strip())
        parts.port  # noqa: B018 - raises on a port that is not a number
    except ValueError:
        return "it is not a URL"
    if parts.scheme.lower() not in ("http", "https"):
        what = f"its scheme is {parts.scheme}:" if parts.scheme else "it is not a URL"
        return f"{what}; only http:// and https:// URLs are allowed"
    if not parts.hostname:
        return "it has no host; write http(s)://host[:port]/path"
    return None


class ChannelConfig(BaseModel):
    """Keys every channel's ``configuration`` may hold. Each channel type extends it; secrets are
    names of environment variables (``*_env`` keys), never values."""

    model_config = ConfigDict(extra="forbid")

    # Requests per minute for this channel; overrides alerting.dispatch.rate_per_minute[type].
    rate_per_minute: int | None = Field(default=None, ge=1, le=1_000_000)


@dataclass(frozen=True)
class Link:
    title: str
    url: str


@dataclass(frozen=True)
class ThreadRef:
    """Where an alert's conversation lives: a Slack message (``ref`` = ts, ``conversation`` = the
    channel id) or an email (``ref`` = Message-ID)."""

    ref: str
    conversation: str | None = None


@dataclass(frozen=True)
class AlertEvent:
    """The transition or action a notification is about (a row of ``etl.alert_events``)."""

    kind: str
    at: datetime
    actor: str
    note: str | None = None
    details: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class MutedAlert:
    """An alert a root cause mutes, by name: its rule and the asset, check or component it is
    about (labels, never a value)."""

    alert_id: int
    rule_id: str
    asset: str | None = None
    check: str | None = None
    component: str | None = None

    @property
    def name(self) -> str:
        about = self.asset or self.component or ""
        return (
            f"{self.rule_id}"
            + (f" on {about}" if about else "")
            + (f" ({self.check})" if self.check else "")
        )


@dataclass(frozen=True)
class Mutes:
    """What a root-cause alert mutes (lineage inhibition): every asset's alerts (an unreachable
    dependency) or those of the assets downstream of its asset, and the alerts it mutes now."""

    every_asset: bool = False
    downstream_assets: tuple[str, ...] = ()
    muted: tuple[MutedAlert, ...] = ()

    def as_json(self) -> dict[str, Any]:
        return {
            "scope": "every asset" if self.every_asset else list(self.downstream_assets),
            "muted_count": len(self.muted),
            "muted_alerts": [m.name for m in self.muted],
        }


@dataclass(frozen=True)
class MutedSpan:
    """A time this alert was muted by a root cause (``until`` None: it still is)."""

    by_alert_id: int
    by_title: str
    since: datetime
    until: datetime | None = None

    def as_json(self) -> dict[str, Any]:
        return {
            "alert_id": self.by_alert_id,
            "title": self.by_title,
            "since": rfc3339(self.since),
            "until": rfc3339(self.until) if self.until is not None else None,
        }


MAX_NAMED = 10  # muted alerts and downstream assets named in a notification; the rest counted


def utc_text(value: datetime | None) -> str:
    """``2026-12-07 10:00:00 UTC`` (a naive time is taken to be UTC); ``-`` for None."""
    if value is None:
        return "-"
    if value.tzinfo is None:
        value = value.replace(tzinfo=UTC)
    return value.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


def _named(names: Sequence[str]) -> str:
    shown = ", ".join(names[:MAX_NAMED])
    return shown + (f" and {len(names) - MAX_NAMED} more" if len(names) > MAX_NAMED else "")


def mutes_text(mutes: "Mutes | None") -> str:
    """One line saying what a root-cause alert mutes; empty for None."""
    if mutes is None:
        return ""
    if mutes.every_asset:
        scope = "Root cause: mutes the alerts of every asset"
    elif mutes.downstream_assets:
        n = len(mutes.downstream_assets)
        scope = (
            f"Root cause: mutes the alerts of the {n} asset{'s' if n != 1 else ''} downstream: "
            + _named(mutes.downstream_assets)
        )
    else:
        scope = "Root cause"
    n = len(mutes.muted)
    if not n:
        return f"{scope}; no alert muted now"
    return f"{scope}; muting {n} alert{'s' if n != 1 else ''} now: " + _named(
        [m.name for m in mutes.muted]
    )


def muted_by_text(spans: Sequence["MutedSpan"]) -> str:
    """One line saying when this alert was muted and by which root cause; empty for none."""
    parts = [
        f"alert {s.by_alert_id} ({s.by_title}) from {utc_text(s.since)}"
        + (f" to {utc_text(s.until)}" if s.until is not None else ", still")
        for s in spans
    ]
    return ("Muted by " + "; by ".join(parts)) if parts else ""


@dataclass(frozen=True)
class AlertView:
    """One alert as a notification shows it (a row of ``etl.alerts`` and its event)."""

    notification_id: int
    alert_id: int
    fingerprint: str
    rule_id: str
    state: AlertState
    status: str
    severity: AlertSeverity
    component: str | None
    labels: Mapping[str, str]
    title: str
    description: str
    details: Mapping[str, Any]
    value: float | None
    started_at: datetime
    event: AlertEvent
    fired_at: datetime | None = None
    resolved_at: datetime | None = None
    resolved_by: str | None = None
    resolution: str | None = None
    acknowledged_by: str | None = None
    acknowledged_at: datetime | None = None
    ack_note: str | None = None
    escalation_level: int = 0
    links: tuple[Link, ...] = ()
    thread: ThreadRef | None = None
    # A root cause: what it mutes. An alert that was muted: by what, when (inhibition only).
    mutes: Mutes | None = None
    muted_by: tuple[MutedSpan, ...] = ()

    @property
    def is_resolved(self) -> bool:
        return self.state == AlertState.RESOLVED

    @property
    def starts_at(self) -> datetime:
        return self.fired_at or self.started_at

    @property
    def duration_seconds(self) -> float:
        """How long the alert has been (or was) firing."""
        end = self.resolved_at or self.event.at
        return max(0.0, (end - self.starts_at).total_seconds())

    @property
    def annotations(self) -> dict[str, str]:
        """Alertmanager's annotations: ``summary``, ``description`` and the details as text."""
        out = {"summary": self.title}
        if self.description:
            out["description"] = self.description
        if self.value is not None:
            out["value"] = format_value(self.value)
        if self.mutes is not None:
            out["mutes"] = mutes_text(self.mutes)
        if self.muted_by:
            out["muted_by"] = muted_by_text(self.muted_by)
        if self.event.details.get("incident_event_id") is not None and self.event.note:
            out["incident_update"] = self.event.note  # what changed (an update notification)
            out["incident_update_kind"] = str(self.event.details.get("change", ""))
        for key, item in self.details.items():
            out.setdefault(str(key), detail_text(item))
        return out

    @property
    def generator_url(self) -> str:
        return self.links[0].url if self.links else ""


def format_value(value: Any) -> str:
    """A number as people read it: ``12``, ``0.0612``, ``1.5e+06``; other values as text."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        return str(int(value)) if value.is_integer() and abs(value) < 1e15 else f"{value:.4g}"
    return str(value)


def detail_text(value: Any) -> str:
    """A detail's value as one line of text (lists joined with ``, ``; mappings as JSON)."""
    if isinstance(value, list | tuple):
        return ", ".join(detail_text(v) for v in value)
    if isinstance(value, Mapping):
        return json.dumps(value, sort_keys=True, default=str)
    return format_value(value)


@dataclass(frozen=True)
class Message:
    """One notification to one channel: the alerts of one group, all of one kind."""

    channel: str
    kind: NotificationKind
    group_key: str
    alerts: tuple[AlertView, ...]
    delivery_key: str
    group_labels: Mapping[str, str] = field(default_factory=dict)
    external_url: str | None = None
    # A request carrying this very message went out before (its rows already had their delivery
    # key: a timeout, a 5xx, a dispatcher killed mid-send) and the receiver may have it. Every
    # channel resends it with the same idempotency key; Slack first looks for a message whose
    # metadata carries the key (event_payload.delivery_key) and posts only if none is found.
    in_doubt: bool = False
    # When in doubt: no earlier attempt can have been made before this (the oldest row's
    # creation): where a lookup of the receiver's history starts.
    attempted_since: datetime | None = None
    # A follow-up of alerts with no thread on the channel although their first announcement went
    # out (it kept its delivery key: its post timed out, failed for good after a timeout or a
    # 5xx, or its dispatcher died), so the receiver may have it: that request's key, and no
    # earlier than when it can have been made. Slack looks for it and replies in its thread.
    announced_key: str | None = None
    announced_since: datetime | None = None
    # Every alert of the thread this follow-up replies in, as it is now: Slack rewrites the
    # original message from them.
    thread_alerts: tuple[AlertView, ...] = ()

    @property
    def firing(self) -> list[AlertView]:
        return [a for a in self.alerts if not a.is_resolved]

    @property
    def resolved(self) -> list[AlertView]:
        return [a for a in self.alerts if a.is_resolved]

    @property
    def status(self) -> str:
        """``firing`` while any alert of the message fires, else ``resolved`` (Alertmanager's)."""
        return "firing" if self.firing else "resolved"

    @property
    def common_labels(self) -> dict[str, str]:
        return _common([a.labels for a in self.alerts])

    @property
    def common_annotations(self) -> dict[str, str]:
        return _common([a.annotations for a in self.alerts])

    @property
    def thread(self) -> ThreadRef | None:
        """The thread every alert of this message belongs to (None unless they share one)."""
        refs = {a.thread for a in self.alerts}
        return refs.pop() if len(refs) == 1 else None

    @property
    def severity(self) -> AlertSeverity:
        order = list(AlertSeverity)
        return max((a.severity for a in self.alerts), key=order.index)


def _common(maps: Sequence[Mapping[str, str]]) -> dict[str, str]:
    if not maps:
        return {}
    first = maps[0]
    return {k: v for k, v in first.items() if all(m.get(k) == v for m in maps[1:])}


@dataclass(frozen=True)
class Delivery:
    """The receiver accepted a message. ``threads``: the thread each alert's first message
    started (threaded channels); ``detail``: what the receiver answered, for logs."""

    detail: str = ""
    threads: Mapping[int, ThreadRef] = field(default_factory=dict)


class Notifier(Protocol):
    """One notification channel (a module in ``notify/``)."""

    name: str  # the channel's name under ``channels:``
    type: ChannelType
    # Replies for resolved/acknowledged go in the alert's thread: the dispatcher sends one
    # message per thread for those and records the threads a message starts.
    threaded: bool
    # Each alert is its own request (PagerDuty's events): the dispatcher sends and records each
    # alert of a group on its own.
    one_alert_per_request: bool

    def configured(self) -> list[str]:
        """What stops the channel from sending ("SLACK_BOT_TOKEN is not set"); empty when ready."""
        ...

    def secret_values(self) -> list[str]:
        """The values of the channel's secrets, masked wherever an error is recorded."""
        ...

    def send(self, message: Message) -> Delivery:
        """Deliver ``message``; raises :class:`DeliveryError` when the receiver did not accept it."""
        ...


def delivery_key(channel: str, kind: str, notification_ids: Sequence[int]) -> str:
    """The idempotency key of the request that carries these outbox rows: the same rows give the
    same key in every process and on every retry (64 hex characters)."""
    text = f"{channel}|{kind}|{','.join(str(i) for i in sorted(notification_ids))}"
    return hashlib.sha256(text.encode()).hexdigest()


# --- Links to the Dagster UI ------------------------------------------------------------------


def dagster_links(
    base_url: str | None, labels: Mapping[str, str], details: Mapping[str, Any]
) -> tuple[Link, ...]:
    """Links to the check, the asset and the run an alert is about, when the UI's URL is set
    (``HEALTHMON_DAGSTER_UI_URL``) and the labels/details name them."""
    if not base_url:
        return ()
    base = base_url.rstrip("/")
    links: list[Link] = []
    asset = labels.get("asset")
    path = "/".join(quote(p, safe="") for p in asset.split("/")) if asset else None
    check = labels.get("check")
    if path and check:
        query = urlencode({"view": "checks", "checkDetail": check})
        links.append(Link(f"Check {check}", f"{base}/assets/{path}?{query}"))
    if path:
        links.append(Link(f"Asset {asset}", f"{base}/assets/{path}"))
    run_id = labels.get("run_id") or details.get("run_id") or details.get("dagster_run_id")
    if isinstance(run_id, str) and run_id:
        links.append(Link(f"Run {run_id[:8]}", f"{base}/runs/{quote(run_id, safe='')}"))
    return tuple(links)


def rfc3339(ts: datetime | None) -> str:
    """UTC RFC 3339 with a ``Z`` (Alertmanager's format); the zero time for None."""
    if ts is None:
        return _ZERO_TIME
    if ts.tzinfo is None:
        ts = ts.replace(tzinfo=UTC)
    return ts.astimezone(UTC).isoformat().replace("+00:00", "Z")


def one_line(text: str, limit: int = 500, secrets: Sequence[str] = ()) -> str:
    """``text`` on one line, at most ``limit`` characters, with every secret value masked."""
    for secret in secrets:
        if secret:
            text = text.replace(secret, "***")
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 1] + "…"
