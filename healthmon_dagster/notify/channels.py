"""The channel types and their notifiers: ``channels:`` in ``healthmon.yaml`` -> :class:`Notifier`.

Each channel type has its configuration model (the keys its ``configuration`` may hold, checked by
``healthmon config validate``) and its notifier class, one module each.
"""

from collections.abc import Mapping
from typing import TYPE_CHECKING

from healthmon_dagster.config.models import NotificationChannel
from healthmon_dagster.enums import ChannelType
from healthmon_dagster.notify.base import ChannelConfig, Notifier
from healthmon_dagster.notify.email import EmailConfig, EmailNotifier
from healthmon_dagster.notify.log import LogConfig, LogNotifier
from healthmon_dagster.notify.pagerduty import PagerDutyConfig, PagerDutyNotifier
from healthmon_dagster.notify.slack import SlackConfig, SlackNotifier
from healthmon_dagster.notify.teams import TeamsConfig, TeamsNotifier
from healthmon_dagster.notify.webhook import WebhookConfig, WebhookNotifier

if TYPE_CHECKING:
    from dagster_slack import SlackResource

CONFIG_MODELS: dict[ChannelType, type[ChannelConfig]] = {
    ChannelType.LOG: LogConfig,
    ChannelType.SLACK: SlackConfig,
    ChannelType.EMAIL: EmailConfig,
    ChannelType.WEBHOOK: WebhookConfig,
    ChannelType.PAGERDUTY: PagerDutyConfig,
    ChannelType.TEAMS: TeamsConfig,
}


class UnsupportedChannel(ValueError):
    """A channel type without a notifier (``sms``)."""


def config_model(channel_type: ChannelType) -> type[ChannelConfig]:
    try:
        return CONFIG_MODELS[channel_type]
    except KeyError:
        supported = ", ".join(sorted(CONFIG_MODELS))
        raise UnsupportedChannel(
            f"channel type '{channel_type}' cannot send yet (supported: {supported}); an SMS "
            "gateway with an HTTP API can be reached through a webhook channel"
        ) from None


def channel_config(channel: NotificationChannel) -> ChannelConfig:
    """``channel.configuration`` validated by its type's model (raises ValidationError)."""
    return config_model(channel.type).model_validate(channel.configuration)


def build_notifier(
    name: str,
    channel: NotificationChannel,
    *,
    timeout: float = 10,
    env: Mapping[str, str] | None = None,
    slack_resource: "SlackResource | None" = None,
) -> Notifier:
    """The notifier of channel ``name``; ``env`` stands in for the process environment (tests)."""
    config = channel_config(channel)
    if isinstance(config, SlackConfig):
        return SlackNotifier(name, config, timeout=timeout, env=env, resource=slack_resource)
    if isinstance(config, EmailConfig):
        return EmailNotifier(name, config, timeout=timeout, env=env)
    if isinstance(config, WebhookConfig):
        return WebhookNotifier(name, config, timeout=timeout, env=env)
    if isinstance(config, PagerDutyConfig):
        return PagerDutyNotifier(name, config, timeout=timeout, env=env)
    if isinstance(config, TeamsConfig):
        return TeamsNotifier(name, config, timeout=timeout, env=env)
    assert isinstance(config, LogConfig)
    return LogNotifier(name, config)


__all__ = [
    "CONFIG_MODELS",
    "UnsupportedChannel",
    "build_notifier",
    "channel_config",
    "config_model",
]
