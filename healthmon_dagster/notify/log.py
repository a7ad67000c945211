"""The ``log`` channel: every alert as one line on the ``healthmon.notify`` logger.

Always configured and always on: it is the embedded default, so an alert is visible in the Dagster
run log (and the daemon's) before any other channel is set up. The level follows the severity
(critical and error: ERROR, warning: WARNING, info and every resolve: INFO).
"""

import logging

from healthmon_dagster.enums import AlertSeverity, ChannelType, NotificationKind
from healthmon_dagster.notify.base import ChannelConfig, Delivery, Message, one_line
from healthmon_dagster.notify.templates import render

LOGGER = logging.getLogger("healthmon.notify")
_LEVELS = {
    AlertSeverity.CRITICAL: logging.ERROR,
    AlertSeverity.ERROR: logging.ERROR,
    AlertSeverity.WARNING: logging.WARNING,
    AlertSeverity.INFO: logging.INFO,
}


class LogConfig(ChannelConfig):
    """The log channel has nothing to configure but the optional rate limit."""


class LogNotifier:
    type = ChannelType.LOG
    threaded = False
    one_alert_per_request = False

    def __init__(self, name: str, config: LogConfig | None = None) -> None:
        self.name = name
        self.config = config or LogConfig()

    def configured(self) -> list[str]:
        return []

    def secret_values(self) -> list[str]:
        return []

    def lines(self, message: Message) -> list[str]:
        return [
            one_line(render("log", message.kind, "line", message=message, alert=a), limit=4000)
            for a in message.alerts
        ]

    def send(self, message: Message) -> Delivery:
        for alert, line in zip(message.alerts, self.lines(message), strict=True):
            quiet = message.kind == NotificationKind.RESOLVED
            LOGGER.log(logging.INFO if quiet else _LEVELS[alert.severity], "%s", line)
        return Delivery(detail=f"logged {len(message.alerts)} line(s)")
