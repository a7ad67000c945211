"""Helpers of the notify tests: alerts written to the store the way the alert engine writes them,
and real servers on free loopback ports standing in for Slack's Web API, a webhook receiver,
PagerDuty's events endpoint, a Teams workflow (one HTTP server class with injectable failures) and
an SMTP server (aiosmtpd)."""

import asyncio
import base64
import ipaddress
import json
import ssl
import threading
import time
from collections import defaultdict
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from email import message_from_bytes, policy
from email.message import EmailMessage
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, Self
from urllib.parse import parse_qsl

import sqlalchemy as sa
from aiosmtpd.controller import Controller
from sqlalchemy.engine import Engine

from healthmon_dagster.alerting.labels import fingerprint
from healthmon_dagster.config.models import HealthConfiguration
from healthmon_dagster.enums import AlertEventKind, NotificationKind, NotificationStatus
from healthmon_dagster.store.tables import alert_events, alerts, notifications
from healthmon_dagster_tests.fixtures import free_port

T0 = datetime(2026, 1, 5, 12, 0, tzinfo=UTC)
FINGERPRINT_LEN = 64


# --- alerts in the store, as the alert engine writes them ---------------------------------------


@dataclass
class StoredAlert:
    alert_id: int
    fingerprint: str
    event_ids: list[int] = field(default_factory=list)


def fingerprint_of(labels: Mapping[str, str]) -> str:
    return fingerprint(labels)


def open_alert(
    engine: Engine,
    *,
    channels: Sequence[str],
    labels: Mapping[str, str] | None = None,
    title: str = "Check gender_is_valid failed on stg/patients",
    description: str = "3 of 100 rows break the rule (rate 0.03)",
    details: Mapping[str, Any] | None = None,
    severity: str = "error",
    group_key: str | None = None,
    at: datetime = T0,
    value: float | None = 0.03,
    component: str | None = "staging_transformer",
) -> StoredAlert:
    """A firing alert with its ``firing`` event and one pending notification per channel."""
    labels = dict(
        labels or {"rule_id": "check_failed", "asset": "stg/patients", "check": "gender_is_valid"}
    )
    labels.setdefault("severity", severity)
    fingerprint = fingerprint_of(labels)
    group_key = group_key or "{}:" + json.dumps(
        {k: labels[k] for k in ("rule_id", "asset") if k in labels}, sort_keys=True
    )
    with engine.begin() as conn:
        alert_id = conn.execute(
            alerts.insert()
            .values(
                fingerprint=fingerprint,
                rule_id=labels.get("rule_id", "check_failed"),
                state="firing",
                status="active",
                severity=severity,
                component=component,
                labels=labels,
                title=title,
                description=description,
                details=dict(details or {"failing_rows": 3, "columns": ["GENDER"]}),
                value=value,
                group_key=group_key,
                started_at=at,
                fired_at=at,
                last_active_at=at,
                last_evaluated_at=at,
            )
            .returning(alerts.c.alert_id)
        ).scalar_one()
    stored = StoredAlert(int(alert_id), fingerprint)
    add_event(engine, stored, AlertEventKind.FIRING, channels, at=at)
    return stored


def add_event(
    engine: Engine,
    alert: StoredAlert,
    kind: AlertEventKind,
    channels: Sequence[str],
    *,
    at: datetime,
    actor: str = "sensor",
    note: str | None = None,
    details: Mapping[str, Any] | None = None,
    **alert_values: Any,
) -> int:
    """An event on ``alert`` (and the alert's new values), with its outbox rows, in one
    transaction; the notification kind is the event's."""
    state_of = {AlertEventKind.RESOLVED: "resolved"}
    with engine.begin() as conn:
        if kind == AlertEventKind.RESOLVED:
            alert_values = {
                "state": "resolved",
                "status": "resolved",
                "resolved_at": at,
                **alert_values,
            }
        if kind == AlertEventKind.ACKNOWLEDGED:
            alert_values = {
                "status": "acknowledged",
                "acknowledged_by": actor,
                "acknowledged_at": at,
                "ack_note": note,
                **alert_values,
            }
        if alert_values:
            conn.execute(
                alerts.update().where(alerts.c.alert_id == alert.alert_id).values(**alert_values)
            )
        group_key = conn.execute(
            sa.select(alerts.c.group_key).where(alerts.c.alert_id == alert.alert_id)
        ).scalar_one()
        event_id = conn.execute(
            alert_events.insert()
            .values(
                alert_id=alert.alert_id,
                at=at,
                kind=kind,
                from_state="firing" if kind == AlertEventKind.RESOLVED else None,
                to_state=state_of.get(kind),
                actor=actor,
                note=note,
                details=dict(details or {}),
            )
            .returning(alert_events.c.event_id)
        ).scalar_one()
        if channels:
            conn.execute(
                notifications.insert(),
                [
                    {
                        "event_id": event_id,
                        "alert_id": alert.alert_id,
                        "channel": channel,
                        "kind": NotificationKind(kind.value),
                        "group_key": group_key,
                        "status": NotificationStatus.PENDING,
                        "not_before": at,
                        "created_at": at,
                    }
                    for channel in channels
                ],
            )
    alert.event_ids.append(int(event_id))
    return int(event_id)


def outbox(engine: Engine, channel: str | None = None) -> list[Any]:
    """Every outbox row, oldest first."""
    query = sa.select(notifications).order_by(notifications.c.notification_id)
    if channel is not None:
        query = query.where(notifications.c.channel == channel)
    with engine.connect() as conn:
        return list(conn.execute(query))


def statuses(engine: Engine, channel: str | None = None) -> list[str]:
    return [r.status for r in outbox(engine, channel)]


def config_with(
    channels: Mapping[str, Mapping[str, Any]],
    *,
    group_wait: int = 0,
    group_interval: int = 1,
    rate: Mapping[str, int] | None = None,
    group_wait_by_severity: Mapping[str, int] | None = None,
    **dispatch: Any,
) -> HealthConfiguration:
    """A configuration with these channels, grouping timing and dispatch settings;
    ``group_wait`` holds for every severity unless ``group_wait_by_severity`` says otherwise."""
    return HealthConfiguration.model_validate(
        {
            "channels": channels,
            "alerting": {
                "grouping": {
                    "group_wait_seconds": group_wait,
                    "group_wait_by_severity": dict(group_wait_by_severity or {}),
                    "group_interval_seconds": group_interval,
                },
                "dispatch": {
                    "backoff_initial_seconds": 1,
                    "request_timeout_seconds": 2,
                    **({"rate_per_minute": dict(rate)} if rate is not None else {}),
                    **dispatch,
                },
            },
        }
    )


class Clock:
    """A clock the test moves."""

    def __init__(self, now: datetime = T0) -> None:
        self.now = now

    def __call__(self) -> datetime:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += timedelta(seconds=seconds)


# --- HTTP stand-ins ------------------------------------------------------------------------------


@dataclass
class Request:
    path: str
    headers: dict[str, str]
    body: bytes
    at: float = field(default_factory=time.time)  # arrival, seconds since the epoch

    @property
    def json(self) -> Any:
        return json.loads(self.body)

    @property
    def method(self) -> str:
        """The API method: the path's last part (``chat.postMessage``)."""
        return self.path.split("?")[0].rsplit("/", 1)[-1]

    @property
    def params(self) -> dict[str, Any]:
        """The request's arguments: a JSON body, a form body or the query string (Slack's Web
        API takes all three)."""
        query = dict(parse_qsl(self.path.partition("?")[2]))
        kind = self.headers.get("Content-Type", "")
        if kind.startswith("application/json"):
            return {**query, **json.loads(self.body or b"{}")}
        return {**query, **dict(parse_qsl(self.body.decode()))}


@dataclass
class Answer:
    status: int = 200
    body: Any = None  # JSON-able, or bytes
    headers: dict[str, str] = field(default_factory=dict)
    delay: float = 0.0  # seconds before answering (a timeout when longer than the client waits)
    # The receiver acts on the request first (the default answer's effect: the message is
    # posted, the event processed), then answers this way: a timeout or a 5xx after the fact.
    accept: bool = False
    path: str = ""  # a queued answer waits for a request whose path (no query) ends with this


class HttpStub:
    """A real HTTP server on a loopback port (a free one unless ``port`` is given). Every request
    is recorded; the answer is the first one queued with :meth:`then` (failure injection) that
    fits its path, else ``default(request)``."""

    def __init__(self, default: Any = None, port: int | None = None) -> None:
        self.requests: list[Request] = []
        self.answered: list[Request] = []  # requests that got their answer written
        self._queue: list[Answer] = []
        self._lock = threading.Lock()
        self._default = default or (lambda request: Answer(200, {"ok": True}))
        stub = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_POST(self) -> None:  # noqa: N802 - http.server's name
                length = int(self.headers.get("Content-Length") or 0)
                request = Request(self.path, dict(self.headers.items()), self.rfile.read(length))
                with stub._lock:
                    stub.requests.append(request)
                    answer = stub._next(request)
                if answer is None:
                    answer = stub._default(request)
                elif answer.accept:
                    stub._default(request)
                if answer.delay:
                    time.sleep(answer.delay)
                body = answer.body
                data = body if isinstance(body, bytes) else json.dumps(body).encode()
                try:
                    self.send_response(answer.status)
                    for k, v in answer.headers.items():
                        self.send_header(k, v)
                    self.send_header("Content-Type", "application/json")
                    self.send_header("Content-Length", str(len(data)))
                    self.end_headers()
                    self.wfile.write(data)
                    with stub._lock:
                        stub.answered.append(request)
                except OSError:
                    pass  # the client gave up (a timeout test)

            do_GET = do_POST  # noqa: N815 - Slack's Web API reads arguments of either

            def log_message(self, format: str, *args: Any) -> None:
                pass

        class Server(ThreadingHTTPServer):
            request_queue_size = 128  # socketserver's 5 would drop concurrent connections
            daemon_threads = True

        self.port = port or free_port()
        self.server = Server(("127.0.0.1", self.port), Handler)
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def then(self, *answers: Answer) -> "HttpStub":
        with self._lock:
            self._queue.extend(answers)
        return self

    def _next(self, request: Request) -> Answer | None:
        path = request.path.split("?")[0]
        for i, answer in enumerate(self._queue):
            if path.endswith(answer.path):
                return self._queue.pop(i)
        return None

    def on(self, path: str) -> list[Request]:
        return [r for r in self.requests if r.path.split("?")[0] == path]

    def __enter__(self) -> Self:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.shutdown()
        self.server.server_close()


def _flag(value: Any) -> bool:
    return str(value).lower() in ("1", "true")


def _cursor(offset: int) -> str:
    return base64.b64encode(f"next:{offset}".encode()).decode()


def _offset(cursor: str | None) -> int:
    return int(base64.b64decode(cursor).decode().split(":")[1]) if cursor else 0


class SlackWorkspace:
    """The part of Slack's Web API the channel uses, with the messages it keeps: a post is in
    its channel (its thread) from the moment Slack took it, whatever the client hears.

    ``chat.postMessage`` (to a channel id or ``#name``; ``thread_ts``, ``metadata``),
    ``chat.update``, ``conversations.history`` (channel ids only; top-level messages newest
    first; ``oldest``/``latest``/``inclusive``, ``limit``, ``cursor``; metadata only with
    ``include_all_metadata``), ``conversations.replies`` (the parent, then its replies) and
    ``conversations.list``. Errors as Slack gives them: HTTP 200 with ``ok: false``."""

    def __init__(self, channels: Mapping[str, str] | None = None) -> None:
        # name -> id; the tests' configurations call their one channel by either name.
        self.channels = dict(channels or {"data-alerts": "C0ALERTS", "alerts": "C0ALERTS"})
        self.messages: dict[str, list[dict[str, Any]]] = defaultdict(list)
        self._lock = threading.Lock()
        self._last_ts = 0.0

    def channel_id(self, channel: str) -> str | None:
        if channel in self.channels.values():
            return channel
        return self.channels.get(channel.lstrip("#"))

    def posts(self, channel: str = "C0ALERTS") -> list[dict[str, Any]]:
        """The channel's top-level messages, oldest first."""
        return [m for m in self.messages[channel] if m.get("thread_ts", m["ts"]) == m["ts"]]

    def replies(self, ts: str, channel: str = "C0ALERTS") -> list[dict[str, Any]]:
        return [m for m in self.messages[channel] if m.get("thread_ts") == ts and m["ts"] != ts]

    def with_key(self, key: str, channel: str = "C0ALERTS") -> list[dict[str, Any]]:
        """Every message (replies too) whose metadata carries delivery key ``key``."""
        return [
            m
            for m in self.messages[channel]
            if (m.get("metadata") or {}).get("event_payload", {}).get("delivery_key") == key
        ]

    def say(self, text: str, channel: str = "C0ALERTS") -> None:
        """Someone else posts in the channel."""
        with self._lock:
            self._post({"channel": channel, "text": text})

    def __call__(self, request: Request) -> Answer:
        handler = {
            "chat.postMessage": self._post,
            "chat.update": self._update,
            "conversations.history": self._history,
            "conversations.replies": self._replies,
            "conversations.list": self._list,
        }.get(request.method)
        if handler is None:
            return Answer(200, {"ok": True})
        with self._lock:
            return Answer(200, handler(request.params))

    def _post(self, p: Mapping[str, Any]) -> dict[str, Any]:
        channel = self.channel_id(str(p.get("channel", "")))
        if channel is None:
            return {"ok": False, "error": "channel_not_found"}
        self._last_ts = max(time.time(), self._last_ts + 0.000001)
        ts = f"{self._last_ts:.6f}"
        message = {"type": "message", "ts": ts, "bot_id": "B0HEALTHMON", "text": p.get("text")}
        for key in ("blocks", "thread_ts", "metadata"):
            if p.get(key):
                value = p[key]
                message[key] = (
                    json.loads(value) if isinstance(value, str) and key != "thread_ts" else value
                )
        self.messages[channel].append(message)
        return {"ok": True, "channel": channel, "ts": ts, "message": message}

    def _update(self, p: Mapping[str, Any]) -> dict[str, Any]:
        channel = self.channel_id(str(p.get("channel", "")))
        found = [m for m in self.messages.get(channel or "", []) if m["ts"] == p.get("ts")]
        if not found:
            return {"ok": False, "error": "message_not_found"}
        found[0].update({k: p[k] for k in ("text", "blocks") if k in p})
        return {"ok": True, "channel": channel, "ts": p["ts"]}

    def _page(self, p: Mapping[str, Any], messages: list[dict[str, Any]]) -> dict[str, Any]:
        inclusive = _flag(p.get("inclusive"))
        oldest, latest = float(p.get("oldest") or 0), float(p.get("latest") or "inf")

        def inside(m: Mapping[str, Any]) -> bool:
            ts = float(m["ts"])
            return (oldest <= ts if inclusive else oldest < ts) and (
                ts <= latest if inclusive else ts < latest
            )

        chosen = [m for m in messages if inside(m)]
        limit = min(int(p.get("limit") or 100), 999)
        start = _offset(p.get("cursor"))
        page = chosen[start : start + limit]
        keep_metadata = _flag(p.get("include_all_metadata"))
        more = start + limit < len(chosen)
        return {
            "ok": True,
            "messages": [
                m if keep_metadata else {k: v for k, v in m.items() if k != "metadata"}
                for m in page
            ],
            "has_more": more,
            "response_metadata": {"next_cursor": _cursor(start + limit) if more else ""},
        }

    def _history(self, p: Mapping[str, Any]) -> dict[str, Any]:
        channel = str(p.get("channel", ""))
        if channel not in self.channels.values():  # an id, never a name
            return {"ok": False, "error": "channel_not_found"}
        return self._page(p, list(reversed(self.posts(channel))))

    def _replies(self, p: Mapping[str, Any]) -> dict[str, Any]:
        channel = str(p.get("channel", ""))
        if channel not in self.channels.values():
            return {"ok": False, "error": "channel_not_found"}
        parent = [m for m in self.posts(channel) if m["ts"] == p.get("ts")]
        if not parent:
            return {"ok": False, "error": "thread_not_found"}
        return self._page(p, parent + self.replies(str(p["ts"]), channel))

    def _list(self, p: Mapping[str, Any]) -> dict[str, Any]:
        listed = [{"id": i, "name": n, "is_channel": True} for n, i in self.channels.items()]
        return {"ok": True, "channels": listed, "response_metadata": {"next_cursor": ""}}


class SlackStub(HttpStub):
    """Slack's Web API on a loopback port, with its :class:`SlackWorkspace`."""

    def __init__(self, port: int | None = None) -> None:
        self.workspace = SlackWorkspace()
        super().__init__(self.workspace, port)


@contextmanager
def slack_server(port: int | None = None) -> Iterator[SlackStub]:
    with SlackStub(port) as stub:
        yield stub


@contextmanager
def webhook_server() -> Iterator[HttpStub]:
    with HttpStub(lambda r: Answer(200, {"status": "ok"})) as stub:
        yield stub


class PagerDutyService:
    """PagerDuty's Events API v2 as it treats events: an incident per open ``dedup_key`` (a
    trigger for an open incident is merged into it), acknowledge and resolve change it, a
    trigger after the resolve opens a new incident."""

    def __init__(self) -> None:
        self.incidents: list[dict[str, Any]] = []
        self._lock = threading.Lock()

    def open(self, key: str) -> dict[str, Any] | None:
        found = [i for i in self.incidents if i["dedup_key"] == key and i["status"] != "resolved"]
        return found[-1] if found else None

    def of(self, key: str) -> list[dict[str, Any]]:
        return [i for i in self.incidents if i["dedup_key"] == key]

    def __call__(self, request: Request) -> Answer:
        event = request.json
        key, action = event.get("dedup_key"), event.get("event_action")
        with self._lock:
            incident = self.open(key)
            if action == "trigger":
                if incident is None:
                    self.incidents.append({"dedup_key": key, "status": "triggered", "events": 1})
                else:
                    incident["events"] += 1
            elif incident is not None:  # acknowledge or resolve an open incident
                incident["events"] += 1
                incident["status"] = "resolved" if action == "resolve" else "acknowledged"
        return Answer(202, {"status": "success", "message": "Event processed", "dedup_key": key})


class PagerDutyStub(HttpStub):
    def __init__(self, port: int | None = None) -> None:
        self.service = PagerDutyService()
        super().__init__(self.service, port)


@contextmanager
def pagerduty_server(port: int | None = None) -> Iterator[PagerDutyStub]:
    with PagerDutyStub(port) as stub:
        yield stub


class TeamsChannel:
    """A Workflows webhook posting each card it receives to its channel (no dedup of its own)."""

    def __init__(self) -> None:
        self.cards: list[Request] = []

    def __call__(self, request: Request) -> Answer:
        self.cards.append(request)
        return Answer(202, b"")


class TeamsStub(HttpStub):
    def __init__(self, port: int | None = None) -> None:
        self.channel = TeamsChannel()
        super().__init__(self.channel, port)


@contextmanager
def teams_server(port: int | None = None) -> Iterator[TeamsStub]:
    with TeamsStub(port) as stub:
        yield stub


# --- SMTP ------------------------------------------------------------------------------------------


class SmtpSink:
    """aiosmtpd handler keeping every message it accepted (parsed) and its envelope."""

    def __init__(self) -> None:
        self.messages: list[EmailMessage] = []
        self.envelopes: list[tuple[str, list[str]]] = []
        self.fail_next: list[str] = []  # SMTP answers to give to the next DATA commands
        # Seconds the next DATA commands stall after the server took the message (it is kept)
        # and before it answers 250: a client that waits less times out.
        self.stall_next: list[float] = []

    async def handle_DATA(self, server: object, session: object, envelope: Any) -> str:  # noqa: N802
        if self.fail_next:
            return self.fail_next.pop(0)
        parsed = message_from_bytes(envelope.content, policy=policy.default)
        assert isinstance(parsed, EmailMessage)
        self.messages.append(parsed)
        self.envelopes.append((envelope.mail_from, list(envelope.rcpt_tos)))
        if self.stall_next:
            await asyncio.sleep(self.stall_next.pop(0))
        return "250 OK"


@contextmanager
def smtp_server(port: int | None = None, **controller_args: Any) -> Iterator[tuple[SmtpSink, int]]:
    """A real SMTP server (aiosmtpd) on a loopback port (a free one unless ``port`` is given):
    yields its sink and port."""
    sink = SmtpSink()
    port = port or free_port()
    controller = Controller(sink, hostname="127.0.0.1", port=port, **controller_args)
    controller.start()
    try:
        yield sink, port
    finally:
        controller.stop()


def self_signed_cert(folder: Path) -> tuple[Path, Path]:
    """A certificate and key for 127.0.0.1 (the server's), which the client trusts as its CA."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")])
    now = datetime.now(UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - timedelta(minutes=5))
        .not_valid_after(now + timedelta(days=1))
        .add_extension(
            x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
            critical=False,
        )
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    cert_path, key_path = folder / "smtp.crt", folder / "smtp.key"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return cert_path, key_path


def server_tls(cert: Path, key: Path) -> ssl.SSLContext:
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(cert, key)
    return context
