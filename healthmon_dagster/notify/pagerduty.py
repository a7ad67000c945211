"""The ``pagerduty`` channel: PagerDuty Events API v2.

Every alert is its own event, ``dedup_key`` = the alert's fingerprint, all through one routing key:
firing, repeated and escalated notifications ``trigger`` (PagerDuty dedups a trigger for an open
incident), an acknowledgement in healthmon ``acknowledge``s the incident, a resolve ``resolve``s
it. A trigger after a resolve opens a new incident, as a new alert episode should.

Configuration: ``routing_key_env`` (default ``PAGERDUTY_ROUTING_KEY``; the 32-character integration
key), ``url`` (default PagerDuty's enqueue endpoint; tests point it at a local server), ``source``
(``payload.source``, default ``healthmon``). PagerDuty takes about 120 events per minute per
routing key (``alerting.dispatch.rate_per_minute.pagerduty``); a 429 is retried.
"""

import json
from collections.abc import Mapping
from typing import Any

from pydantic import Field, field_validator

from healthmon_dagster.enums import ChannelType, NotificationKind
from healthmon_dagster.notify.base import (
    AlertView,
    ChannelConfig,
    Delivery,
    Message,
    NotConfigured,
    env_value,
    mutes_text,
    receiver_url_problem,
    rfc3339,
)
from healthmon_dagster.notify.http import post
from healthmon_dagster.notify.templates import render

EVENTS_URL = "https://events.pagerduty.com/v2/enqueue"
_ACTIONS = {
    NotificationKind.FIRING: "trigger",
    NotificationKind.REPEATED: "trigger",
    NotificationKind.ESCALATED: "trigger",
    NotificationKind.ACKNOWLEDGED: "acknowledge",
    NotificationKind.RESOLVED: "resolve",
}


class PagerDutyConfig(ChannelConfig):
    routing_key_env: str = Field(default="PAGERDUTY_ROUTING_KEY", pattern=r"^[A-Z_][A-Z0-9_]*$")
    url: str = EVENTS_URL
    source: str = "healthmon"

    @field_validator("url")
    @classmethod
    def _http_url(cls, value: str) -> str:
        problem = receiver_url_problem(value)
        if problem:
            raise ValueError(problem)
        return value


def event(
    message: Message, alert: AlertView, routing_key: str, source: str
) -> dict[str, Any] | None:
    """The Events API v2 body for one alert of ``message``; None for an incident update
    (``updated``): the Events API has trigger, acknowledge and resolve only, no event that adds
    to an open alert, so nothing is sent (the incident rules do not queue updates to PagerDuty)."""
    action = _ACTIONS.get(message.kind)
    if action is None:
        return None
    body: dict[str, Any] = {
        "routing_key": routing_key,
        "event_action": action,
        "dedup_key": alert.fingerprint,
    }
    if action != "trigger":
        return body
    summary = render("pagerduty", message.kind, "summary", message=message, alert=alert)
    details: dict[str, Any] = {**alert.details, "labels": dict(alert.labels)}
    if alert.description:
        details["description"] = alert.description
    if alert.mutes is not None:
        details["mutes"] = {"text": mutes_text(alert.mutes), **alert.mutes.as_json()}
    if alert.muted_by:
        details["muted_by"] = [s.as_json() for s in alert.muted_by]
    body["payload"] = {
        "summary": summary[:1024],
        "source": source,
        "severity": alert.severity.value,  # critical | error | warning | info, as PagerDuty's
        "timestamp": rfc3339(alert.starts_at),
        "component": alert.component or alert.labels.get("component", ""),
        "group": alert.labels.get("asset", ""),
        "class": alert.rule_id,
        "custom_details": details,
    }
    body["client"] = "healthmon"
    if message.external_url:
        body["client_url"] = message.external_url
    if alert.links:
        body["links"] = [{"href": link.url, "text": link.title} for link in alert.links]
    return body


class PagerDutyNotifier:
    type = ChannelType.PAGERDUTY
    threaded = False
    one_alert_per_request = True

    def __init__(
        self,
        name: str,
        config: PagerDutyConfig,
        *,
        timeout: float = 10,
        env: Mapping[str, str] | None = None,
    ) -> None:
        self.name, self.config, self.timeout, self.env = name, config, timeout, env
        self.where = f"PagerDuty channel '{name}'"

    def configured(self) -> list[str]:
        if env_value(self.config.routing_key_env, self.env) is None:
            return [
                f"{self.config.routing_key_env} is not set (the routing key of PagerDuty "
                f"channel '{self.name}')"
            ]
        return []

    def secret_values(self) -> list[str]:
        value = env_value(self.config.routing_key_env, self.env)
        return [value] if value else []

    def send(self, message: Message) -> Delivery:
        problems = self.configured()
        if problems:
            raise NotConfigured("; ".join(problems))
        key = env_value(self.config.routing_key_env, self.env) or ""
        status = []
        for alert in message.alerts:
            found = event(message, alert, key, self.config.source)
            if found is None:
                return Delivery(detail=f"nothing sent: PagerDuty has no {message.kind} event")
            body = json.dumps(found).encode()
            answer = post(
                self.config.url,
                body,
                {"Content-Type": "application/json", "User-Agent": "healthmon-dagster"},
                self.timeout,
                self.where,
            )
            status.append(answer.status)
        return Delivery(detail=f"{_ACTIONS[message.kind]}: HTTP {status}")
