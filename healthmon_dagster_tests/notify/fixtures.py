"""Helpers of the notify tests: alerts written to the store the way the alert engine writes them,
and real servers on free loopback ports standing in for Slack's Web API, a webhook receiver,
PagerDuty's events endpoint, a Teams workflow (one HTTP server class with injectable failures) and
an SMTP server (aiosmtpd)."""

import ipaddress
import json
import ssl
import threading
import time
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from email import message_from_bytes, policy
from email.message import EmailMessage
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

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


@dataclass
class Answer:
    status: int = 200
    body: Any = None  # JSON-able, or bytes
    headers: dict[str, str] = field(default_factory=dict)
    delay: float = 0.0  # seconds before answering (a timeout when longer than the client waits)


class HttpStub:
    """A real HTTP server on a free loopback port. Every request is recorded; the answer is the
    next one queued with :meth:`then` (failure injection), else ``default(request)``."""

    def __init__(self, default: Any = None) -> None:
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
                    answer = stub._queue.pop(0) if stub._queue else None
                answer = answer or stub._default(request)
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

            def log_message(self, format: str, *args: Any) -> None:
                pass

        class Server(ThreadingHTTPServer):
            request_queue_size = 128  # socketserver's 5 would drop concurrent connections
            daemon_threads = True

        self.port = free_port()
        self.server = Server(("127.0.0.1", self.port), Handler)
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def then(self, *answers: Answer) -> "HttpStub":
        with self._lock:
            self._queue.extend(answers)
        return self

    def on(self, path: str) -> list[Request]:
        return [r for r in self.requests if r.path.split("?")[0] == path]

    def __enter__(self) -> "HttpStub":
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.shutdown()
        self.server.server_close()


def slack_default(request: Request) -> Answer:
    """Slack's Web API: chat.postMessage answers a new ts and the channel's id."""
    if request.path.endswith("/chat.postMessage"):
        ts = f"{time.time():.6f}"
        return Answer(200, {"ok": True, "channel": "C0ALERTS", "ts": ts})
    return Answer(200, {"ok": True})


@contextmanager
def slack_server() -> Iterator[HttpStub]:
    with HttpStub(slack_default) as stub:
        yield stub


@contextmanager
def webhook_server() -> Iterator[HttpStub]:
    with HttpStub(lambda r: Answer(200, {"status": "ok"})) as stub:
        yield stub


@contextmanager
def pagerduty_server() -> Iterator[HttpStub]:
    def accept(request: Request) -> Answer:
        key = request.json.get("dedup_key")
        return Answer(202, {"status": "success", "message": "Event processed", "dedup_key": key})

    with HttpStub(accept) as stub:
        yield stub


@contextmanager
def teams_server() -> Iterator[HttpStub]:
    with HttpStub(lambda r: Answer(202, b"")) as stub:
        yield stub


# --- SMTP ------------------------------------------------------------------------------------------


class SmtpSink:
    """aiosmtpd handler keeping every message it accepted (parsed) and its envelope."""

    def __init__(self) -> None:
        self.messages: list[EmailMessage] = []
        self.envelopes: list[tuple[str, list[str]]] = []
        self.fail_next: list[str] = []  # SMTP answers to give to the next DATA commands

    async def handle_DATA(self, server: object, session: object, envelope: Any) -> str:  # noqa: N802
        if self.fail_next:
            return self.fail_next.pop(0)
        parsed = message_from_bytes(envelope.content, policy=policy.default)
        assert isinstance(parsed, EmailMessage)
        self.messages.append(parsed)
        self.envelopes.append((envelope.mail_from, list(envelope.rcpt_tos)))
        return "250 OK"


@contextmanager
def smtp_server(**controller_args: Any) -> Iterator[tuple[SmtpSink, int]]:
    """A real SMTP server (aiosmtpd) on a free loopback port: yields its sink and port."""
    sink = SmtpSink()
    port = free_port()
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
