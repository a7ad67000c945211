"""The ``teams`` channel: a Microsoft Teams Workflows webhook with an Adaptive Card.

The retired Office 365 connectors are not a target: a Workflows webhook ("When a Teams webhook
request is received") takes ``{"type": "message", "attachments": [{"contentType":
"application/vnd.microsoft.card.adaptive", "content": <AdaptiveCard>}]}`` and answers 202.

Retries and duplicates: a Workflows webhook has no idempotency key and no API to read what was
posted, so a request that timed out (the flow may have posted the card) or was cut off by a killed
dispatcher is sent again: the channel may show that card twice. Every request carries the
notification's delivery key in an ``Idempotency-Key`` header (the same on every retry), which a
flow can compare with the keys it posted recently (``triggerOutputs()['headers']``) to drop a
repeat. A duplicate is the price of never missing an alert (Alertmanager's choice too).

Configuration: ``url_env`` (the variable holding the workflow's URL, which carries its signature:
a secret; required).
"""

import json
from collections.abc import Mapping
from typing import Any

from pydantic import Field

from healthmon_dagster.enums import AlertSeverity, ChannelType
from healthmon_dagster.notify.base import (
    ChannelConfig,
    Delivery,
    Message,
    NotConfigured,
    env_value,
    receiver_url_problem,
)
from healthmon_dagster.notify.http import post
from healthmon_dagster.notify.templates import render

_COLORS = {
    AlertSeverity.CRITICAL: "Attention",
    AlertSeverity.ERROR: "Attention",
    AlertSeverity.WARNING: "Warning",
    AlertSeverity.INFO: "Accent",
}


class TeamsConfig(ChannelConfig):
    url_env: str | None = Field(default=None, pattern=r"^[A-Z_][A-Z0-9_]*$")


def card(message: Message) -> dict[str, Any]:
    """The Workflows webhook body: one Adaptive Card for the message."""
    color = "Good" if message.status == "resolved" else _COLORS[message.severity]
    body: list[dict[str, Any]] = [
        {
            "type": "TextBlock",
            "text": render("teams", message.kind, "title", message=message),
            "weight": "Bolder",
            "size": "Medium",
            "color": color,
            "wrap": True,
        }
    ]
    actions: list[dict[str, Any]] = []
    for alert in message.alerts:
        text = render("teams", message.kind, "alert", message=message, alert=alert)
        body.append({"type": "TextBlock", "text": text, "wrap": True, "separator": True})
        if alert.labels:
            facts = [{"title": k, "value": v} for k, v in sorted(alert.labels.items())]
            body.append({"type": "FactSet", "facts": facts})
        for link in alert.links:
            if len(actions) < 5:  # Teams shows a handful of actions
                actions.append({"type": "Action.OpenUrl", "title": link.title, "url": link.url})
    content: dict[str, Any] = {
        "$schema": "http://adaptivecards.io/schemas/adaptive-card.json",
        "type": "AdaptiveCard",
        "version": "1.4",
        "body": body,
    }
    if actions:
        content["actions"] = actions
    return {
        "type": "message",
        "attachments": [
            {
                "contentType": "application/vnd.microsoft.card.adaptive",
                "contentUrl": None,
                "content": content,
            }
        ],
    }


class TeamsNotifier:
    type = ChannelType.TEAMS
    threaded = False
    one_alert_per_request = False

    def __init__(
        self,
        name: str,
        config: TeamsConfig,
        *,
        timeout: float = 10,
        env: Mapping[str, str] | None = None,
    ) -> None:
        self.name, self.config, self.timeout, self.env = name, config, timeout, env
        self.where = f"Teams channel '{name}' ({config.url_env or 'no url_env'})"

    def configured(self) -> list[str]:
        if not self.config.url_env:
            return [f"configuration.url_env is not set (Teams '{self.name}' has no workflow URL)"]
        url = env_value(self.config.url_env, self.env)
        if url is None:
            return [f"{self.config.url_env} is not set (the workflow URL of Teams '{self.name}')"]
        if problem := receiver_url_problem(url):
            return [
                f"{self.config.url_env} (the workflow URL of Teams '{self.name}') is unusable: "
                f"{problem}"
            ]
        return []

    def secret_values(self) -> list[str]:
        value = env_value(self.config.url_env or "", self.env)
        return [value] if value else []

    def send(self, message: Message) -> Delivery:
        problems = self.configured()
        if problems:
            raise NotConfigured("; ".join(problems))
        url = env_value(self.config.url_env or "", self.env) or ""
        body = json.dumps(card(message)).encode()
        answer = post(
            url,
            body,
            {
                "Content-Type": "application/json",
                "User-Agent": "healthmon-dagster",
                "Idempotency-Key": message.delivery_key,
            },
            self.timeout,
            self.where,
        )
        again = " (sent before: it may show twice)" if message.in_doubt else ""
        return Delivery(detail=f"HTTP {answer.status}{again}")
