"""A test notification: proves a channel's configuration end to end without an alert in the store.

``healthmon alerts test-channel CHANNEL`` sends it through the channel's real notifier (the same
code, credentials and endpoint the dispatcher uses), and with ``--resolve`` the resolve after it, in
the same thread on Slack and email.
"""

import hashlib
import uuid
from dataclasses import replace
from datetime import UTC, datetime

from healthmon_dagster.enums import AlertSeverity, AlertState, NotificationKind
from healthmon_dagster.notify.base import AlertEvent, AlertView, Delivery, Message, Notifier

TEST_RULE = "healthmon_test_notification"


def probe_message(channel: str, actor: str, now: datetime | None = None) -> Message:
    """A firing message about one info-level alert that says it is a test."""
    now = now or datetime.now(UTC)
    run = uuid.uuid4().hex
    labels = {"rule_id": TEST_RULE, "channel": channel, "severity": AlertSeverity.INFO.value}
    alert = AlertView(
        notification_id=0,
        alert_id=0,
        fingerprint=hashlib.sha256(f"{channel}:{run}".encode()).hexdigest(),
        rule_id=TEST_RULE,
        state=AlertState.FIRING,
        status="active",
        severity=AlertSeverity.INFO,
        component=None,
        labels=labels,
        title=f"healthmon test notification for channel {channel}",
        description=(
            f"Sent by `healthmon alerts test-channel {channel}`: if you can read this, the "
            "channel works. No action needed."
        ),
        details={"sent_by": actor},
        value=None,
        started_at=now,
        fired_at=now,
        event=AlertEvent(NotificationKind.FIRING.value, now, actor),
    )
    return Message(
        channel=channel,
        kind=NotificationKind.FIRING,
        group_key=f"{{}}:{{rule_id={TEST_RULE!r}}}",
        alerts=(alert,),
        delivery_key=hashlib.sha256(f"test:{channel}:{run}".encode()).hexdigest(),
        group_labels={"rule_id": TEST_RULE},
    )


def resolved(message: Message, delivery: Delivery, now: datetime | None = None) -> Message:
    """The resolve that follows ``message``, in the thread its delivery started."""
    now = now or datetime.now(UTC)
    alerts = tuple(
        replace(
            a,
            state=AlertState.RESOLVED,
            status="resolved",
            resolved_at=now,
            resolved_by=a.event.actor,
            resolution="test finished",
            event=AlertEvent(NotificationKind.RESOLVED.value, now, a.event.actor),
            thread=delivery.threads.get(a.alert_id),
        )
        for a in message.alerts
    )
    key = hashlib.sha256(f"resolved:{message.delivery_key}".encode()).hexdigest()
    return replace(message, kind=NotificationKind.RESOLVED, alerts=alerts, delivery_key=key)


def send_test(notifier: Notifier, actor: str, resolve: bool = False) -> list[Delivery]:
    """Send the test message (and its resolve); raises DeliveryError as the dispatcher would see."""
    message = probe_message(notifier.name, actor)
    first = notifier.send(message)
    if not resolve:
        return [first]
    return [first, notifier.send(resolved(message, first))]
