"""The ``webhook`` channel: Alertmanager's webhook v4 JSON, signed, with an idempotency key.

Existing Alertmanager receivers accept the body as is: ``version`` "4", ``groupKey``,
``truncatedAlerts``, ``status``, ``receiver``, ``groupLabels``, ``commonLabels``,
``commonAnnotations``, ``externalURL`` and ``alerts[]`` (``status``, ``labels``, ``annotations``,
``startsAt``, ``endsAt``, ``generatorURL``, ``fingerprint``).

Headers: ``Idempotency-Key`` (the same on every retry of the same notification: a receiver that
remembers keys drops repeats), and with ``secret_env`` set, ``X-Healthmon-Timestamp`` (Unix
seconds) and ``X-Healthmon-Signature: sha256=<hex>``, the HMAC-SHA256 with the secret of
``<timestamp>.<body>``: a receiver recomputes it over the raw body and rejects a mismatch or a
timestamp older than it tolerates (replays).

Configuration: ``url_env`` (the variable holding the URL; required), ``secret_env``,
``max_alerts`` (0: all; more are counted in ``truncatedAlerts``), ``receiver`` (default: the
channel's name).
"""

import hashlib
import hmac
import json
import time
from collections.abc import Mapping
from typing import Any

from pydantic import Field

from healthmon_dagster.enums import ChannelType
from healthmon_dagster.notify.base import (
    AlertView,
    ChannelConfig,
    Delivery,
    Message,
    NotConfigured,
    env_value,
    receiver_url_problem,
    rfc3339,
)
from healthmon_dagster.notify.http import post

SIGNATURE_HEADER = "X-Healthmon-Signature"
TIMESTAMP_HEADER = "X-Healthmon-Timestamp"


class WebhookConfig(ChannelConfig):
    url_env: str | None = Field(default=None, pattern=r"^[A-Z_][A-Z0-9_]*$")
    secret_env: str | None = Field(default=None, pattern=r"^[A-Z_][A-Z0-9_]*$")
    max_alerts: int = Field(default=0, ge=0)
    receiver: str | None = None


def sign(secret: str, timestamp: str, body: bytes) -> str:
    """The signature header's value for ``body`` sent at ``timestamp``."""
    mac = hmac.new(secret.encode(), timestamp.encode() + b"." + body, hashlib.sha256)
    return "sha256=" + mac.hexdigest()


def alert_payload(alert: AlertView) -> dict[str, Any]:
    return {
        "status": "resolved" if alert.is_resolved else "firing",
        "labels": dict(alert.labels),
        "annotations": alert.annotations,
        "startsAt": rfc3339(alert.starts_at),
        "endsAt": rfc3339(alert.resolved_at),
        "generatorURL": alert.generator_url,
        "fingerprint": alert.fingerprint,
    }


def payload(message: Message, receiver: str, max_alerts: int = 0) -> dict[str, Any]:
    """The Alertmanager webhook v4 body of ``message``."""
    alerts = list(message.alerts)
    kept = alerts[:max_alerts] if max_alerts else alerts
    return {
        "version": "4",
        "groupKey": message.group_key,
        "truncatedAlerts": len(alerts) - len(kept),
        "status": message.status,
        "receiver": receiver,
        "groupLabels": dict(message.group_labels),
        "commonLabels": message.common_labels,
        "commonAnnotations": message.common_annotations,
        "externalURL": message.external_url or "",
        "alerts": [alert_payload(a) for a in kept],
    }


class WebhookNotifier:
    type = ChannelType.WEBHOOK
    threaded = False
    one_alert_per_request = False

    def __init__(
        self,
        name: str,
        config: WebhookConfig,
        *,
        timeout: float = 10,
        env: Mapping[str, str] | None = None,
    ) -> None:
        self.name, self.config, self.timeout, self.env = name, config, timeout, env
        self.where = f"webhook channel '{name}' ({config.url_env or 'no url_env'})"

    def configured(self) -> list[str]:
        missing = []
        if not self.config.url_env:
            missing.append(f"configuration.url_env is not set (webhook '{self.name}' has no URL)")
        elif (url := env_value(self.config.url_env, self.env)) is None:
            missing.append(f"{self.config.url_env} is not set (the URL of webhook '{self.name}')")
        elif problem := receiver_url_problem(url):
            missing.append(
                f"{self.config.url_env} (the URL of webhook '{self.name}') is unusable: {problem}"
            )
        secret_env = self.config.secret_env
        if secret_env and env_value(secret_env, self.env) is None:
            missing.append(f"{secret_env} is not set (the signing secret of webhook '{self.name}')")
        return missing

    def secret_values(self) -> list[str]:
        names = [self.config.url_env, self.config.secret_env]
        return [v for n in names if n and (v := env_value(n, self.env))]

    def send(self, message: Message) -> Delivery:
        problems = self.configured()
        if problems:
            raise NotConfigured("; ".join(problems))
        url = env_value(self.config.url_env or "", self.env) or ""
        receiver = self.config.receiver or self.name
        body = json.dumps(
            payload(message, receiver, self.config.max_alerts), separators=(",", ":")
        ).encode()
        headers = {
            "Content-Type": "application/json",
            "User-Agent": "healthmon-dagster",
            "Idempotency-Key": message.delivery_key,
        }
        if self.config.secret_env:
            secret = env_value(self.config.secret_env, self.env) or ""
            timestamp = str(int(time.time()))
            headers[TIMESTAMP_HEADER] = timestamp
            headers[SIGNATURE_HEADER] = sign(secret, timestamp, body)
        answer = post(url, body, headers, self.timeout, self.where)
        return Delivery(detail=f"HTTP {answer.status}")
