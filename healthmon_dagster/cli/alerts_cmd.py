"""``healthmon alerts``: alerts and their channels. ``test-channel`` sends a test notification
through a channel's real notifier."""

import getpass

import click

from healthmon_dagster.cli.config_cmd import _load_or_exit
from healthmon_dagster.notify.base import DeliveryError, one_line
from healthmon_dagster.notify.channels import build_notifier
from healthmon_dagster.notify.probe import send_test
from healthmon_dagster.settings import get_settings


@click.group()
def alerts() -> None:
    """Alerts and notification channels."""


@alerts.command("test-channel")
@click.argument("channel")
@click.option(
    "--resolve", is_flag=True, help="Also send the resolve (a threaded reply on Slack and email)."
)
def test_channel(channel: str, resolve: bool) -> None:
    """Send a test notification through CHANNEL (a name under channels: in healthmon.yaml), the
    way the dispatcher sends alerts; exit 1 when it is not configured or the receiver refuses."""
    config = _load_or_exit(get_settings().config_path)
    if channel not in config.channels:
        known = ", ".join(sorted(config.channels))
        raise click.UsageError(f"no channel '{channel}' under channels: (defined: {known})")
    settings = config.channels[channel]
    notifier = build_notifier(
        channel, settings, timeout=config.alerting.dispatch.request_timeout_seconds
    )
    problems = notifier.configured()
    if problems:
        for problem in problems:
            click.echo(f"channel '{channel}' is not configured: {problem}", err=True)
        raise click.exceptions.Exit(1)
    if not settings.enabled:
        click.echo(f"note: channel '{channel}' is disabled (enabled: false); testing it anyway")
    try:
        deliveries = send_test(notifier, f"cli:{getpass.getuser()}", resolve=resolve)
    except DeliveryError as exc:
        click.echo(f"FAILED: {one_line(str(exc), 500, notifier.secret_values())}", err=True)
        raise click.exceptions.Exit(1) from None
    for what, delivery in zip(("firing", "resolved"), deliveries, strict=False):
        click.echo(
            f"OK: {channel} ({settings.type}) accepted the test {what} notification: "
            f"{delivery.detail}"
        )
