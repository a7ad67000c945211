"""``healthmon alerts``: the alerts in the health store, acknowledging and resolving them,
``test-rule`` (what a rule would fire now, and why, without writing anything) and
``test-channel`` (a test notification through a channel's real notifier).

``healthmon silences``: add, list and expire silences (Alertmanager's matchers:
``label=value``, ``label!=value``, ``label=~regex``, ``label!~regex``).
"""

import getpass
import json
import sys
from collections.abc import Callable
from datetime import datetime
from typing import Any, TypeVar

import click
from sqlalchemy import exc as sa_exc
from sqlalchemy.engine import Engine

from healthmon_dagster.alerting import actions
from healthmon_dagster.alerting.labels import MatcherError, parse_matchers
from healthmon_dagster.alerting.signals import (
    EventContext,
    Signal,
    effective_rules,
    event_signals,
    latest_check_rows,
    metric_signals,
)
from healthmon_dagster.cli.config_cmd import _load_or_exit
from healthmon_dagster.cli.store_access import read_store
from healthmon_dagster.config import ConfigError, load_config
from healthmon_dagster.formatting import InvalidWindow, jsonable, parse_duration
from healthmon_dagster.notify.base import DeliveryError, one_line
from healthmon_dagster.notify.channels import build_notifier
from healthmon_dagster.notify.probe import send_test
from healthmon_dagster.settings import get_settings, redact_url
from healthmon_dagster.store.db import DatabaseUnavailable, describe_unavailable, get_engine
from healthmon_dagster.store.metrics import as_utc, utcnow

T = TypeVar("T")


def _write(change: Callable[[Engine], T]) -> T:
    """``change(engine)`` on the health store; a clear message and exit 1 when it cannot."""
    url = get_settings().health_database_url
    try:
        return change(get_engine(url))
    except actions.AlertActionError as exc:
        click.echo(str(exc), err=True)
    except DatabaseUnavailable as exc:
        click.echo(str(exc), err=True)
    except sa_exc.DBAPIError as exc:
        click.echo(str(describe_unavailable(redact_url(url), exc, "")), err=True)
    sys.exit(1)


def _me() -> str:
    try:
        return getpass.getuser()
    except (KeyError, OSError):  # no login name in a container
        return "unknown"


def _when(ts: Any) -> str:
    return "-" if ts is None else f"{as_utc(ts):%Y-%m-%d %H:%M:%S}"


@click.group("alerts")
def alerts() -> None:
    """Alerts: list, show, acknowledge, resolve; test a rule or a channel."""


@alerts.command("list")
@click.option("--all", "include_resolved", is_flag=True, help="Include resolved alerts.")
@click.option("--json", "as_json", is_flag=True, help="Print JSON for scripts.")
def list_cmd(include_resolved: bool, as_json: bool) -> None:
    """Open alerts (newest first): id, state, status, severity, title."""
    url = get_settings().health_database_url
    rows = read_store(url, lambda e: actions.list_alerts(e, include_resolved))
    if as_json:
        click.echo(json.dumps([jsonable(dict(r._mapping)) for r in rows], indent=2))
        return
    if not rows:
        click.echo("no open alerts" if not include_resolved else "no alerts recorded")
        return
    for r in rows:
        extra = f"  [{r.suppressed_by}]" if r.suppressed_by else ""
        ack = f"  acked by {r.acknowledged_by}" if r.acknowledged_by else ""
        click.echo(
            f"{r.alert_id:>6}  {r.state:<8}  {r.status:<12}  {r.severity:<8}  "
            f"{_when(r.fired_at or r.started_at)}  {r.title}{ack}{extra}"
        )


@alerts.command("show")
@click.argument("alert_id", type=int)
@click.option("--json", "as_json", is_flag=True, help="Print JSON for scripts.")
def show_cmd(alert_id: int, as_json: bool) -> None:
    """One alert: labels, details, history, notifications and related alerts."""
    url = get_settings().health_database_url

    def read(engine: Engine) -> actions.AlertDetail | None:
        try:
            return actions.show_alert(engine, alert_id)
        except actions.AlertActionError as exc:
            click.echo(str(exc), err=True)
            return None

    detail = read_store(url, read)
    if detail is None:
        sys.exit(1)
    a = detail.alert
    if as_json:
        click.echo(
            json.dumps(
                jsonable(
                    {
                        **dict(a._mapping),
                        "history": [dict(h._mapping) for h in detail.history],
                        "notifications": [dict(n._mapping) for n in detail.notifications],
                        "related_alerts": detail.related,
                    }
                ),
                indent=2,
            )
        )
        return
    click.echo(f"alert {a.alert_id}: {a.title}")
    click.echo(f"  state {a.state}, status {a.status}, severity {a.severity}, rule {a.rule_id}")
    click.echo(f"  labels: {', '.join(f'{k}={v}' for k, v in sorted(a.labels.items()))}")
    if a.description:
        click.echo(f"  {a.description}")
    if a.suppressed_by:
        click.echo(f"  suppressed: {a.suppressed_by}")
    if a.acknowledged_by:
        note = f" ({a.ack_note})" if a.ack_note else ""
        click.echo(f"  acknowledged by {a.acknowledged_by} at {_when(a.acknowledged_at)}{note}")
    if a.resolution:
        click.echo(f"  resolution ({a.resolved_by}): {a.resolution}")
    click.echo("history:")
    for h in detail.history:
        note = f": {h.note}" if h.note else ""
        click.echo(f"  {_when(h.at)}  {h.kind:<12} by {h.actor}{note}")
    if detail.notifications:
        click.echo("notifications:")
        for n in detail.notifications:
            err = f" ({n.last_error})" if n.last_error else ""
            click.echo(f"  {n.channel:<12} {n.kind:<12} {n.status:<9} attempts {n.attempts}{err}")
    if detail.related:
        click.echo(f"related alerts: {', '.join(map(str, detail.related))}")


@alerts.command("ack")
@click.argument("alert_id", type=int)
@click.option("--by", default=None, help="Who acknowledges (default: the login name).")
@click.option("--note", default=None, help="What you are doing about it.")
def ack_cmd(alert_id: int, by: str | None, note: str | None) -> None:
    """Acknowledge an alert: stops its escalation and repeats, tells the channels it reached."""
    _write(lambda e: actions.acknowledge(e, alert_id, by or _me(), note))
    click.echo(f"alert {alert_id} acknowledged")


@alerts.command("resolve")
@click.argument("alert_id", type=int)
@click.option("--resolution", required=True, help="How it was resolved.")
@click.option("--by", default=None, help="Who resolves (default: the login name).")
def resolve_cmd(alert_id: int, resolution: str, by: str | None) -> None:
    """Resolve an alert by hand (if its condition still holds, a new alert opens)."""
    _write(lambda e: actions.resolve(e, alert_id, by or _me(), resolution))
    click.echo(f"alert {alert_id} resolved")


@alerts.command("test-rule")
@click.argument("rule_id")
def test_rule_cmd(rule_id: str) -> None:
    """Evaluate one rule against the stored data now; say what would fire and why (writes nothing)."""
    try:
        config = load_config(get_settings().config_path)
    except ConfigError as exc:
        click.echo(str(exc), err=True)
        sys.exit(1)
    rules = {r.rule_id: r for r in effective_rules(config)}
    rule = rules.get(rule_id)
    if rule is None:
        click.echo(f"unknown rule {rule_id!r}; rules: {', '.join(sorted(rules))}", err=True)
        sys.exit(1)

    def signals(engine: Engine) -> list[Signal]:
        with engine.connect() as conn:
            if rule.condition is not None:
                return metric_signals(conn, [rule], utcnow())
            rows = latest_check_rows(conn, None)
        return event_signals([rule], rows, EventContext(config))

    found = read_store(get_settings().health_database_url, signals)
    active = [s for s in found if s.active]
    if rule.event is not None and rule.event.kind == "run_failure":
        click.echo("run_failure rules read the Dagster instance; the sensor evaluates them")
    click.echo(f"rule {rule_id}: {len(active)} of {len(found)} signal(s) would fire now")
    for s in found:
        word = "FIRES" if s.active else "ok   "
        labels = ", ".join(f"{k}={v}" for k, v in sorted(s.labels.items()) if k != "rule_id")
        click.echo(f"  {word}  {labels}")
        if s.active and s.description:
            click.echo(f"         {s.description}")


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


@click.group("silences")
def silences() -> None:
    """Silences: mute notifications of matching alerts for a while."""


@silences.command("add")
@click.argument("matchers", nargs=-1, required=True)
@click.option("--duration", default="2h", show_default=True, help="How long, e.g. 30m, 2h, 1d.")
@click.option("--comment", required=True, help="Why: the next on-call reads it.")
@click.option("--by", default=None, help="Who (default: the login name).")
def silence_add(matchers: tuple[str, ...], duration: str, comment: str, by: str | None) -> None:
    """Add a silence, e.g. `healthmon silences add asset=stg/patients --comment backfill`."""
    try:
        parsed = parse_matchers(matchers)
        length = parse_duration(duration, "--duration")
    except (MatcherError, InvalidWindow) as exc:
        click.echo(str(exc), err=True)
        sys.exit(1)
    ends: datetime = utcnow() + length
    sid = _write(lambda e: actions.add_silence(e, parsed, ends, by or _me(), comment))
    click.echo(f"silence {sid} until {ends:%Y-%m-%d %H:%M} UTC: {' '.join(matchers)}")


@silences.command("list")
@click.option("--all", "include_expired", is_flag=True, help="Include expired silences.")
def silence_list(include_expired: bool) -> None:
    """Active and future silences (with --all, expired ones too)."""
    url = get_settings().health_database_url
    rows = read_store(url, lambda e: actions.list_silences(e, include_expired))
    if not rows:
        click.echo("no silences")
        return
    for s in rows:
        click.echo(
            f"{s['silence_id']:>5}  {s['state']:<8}  {_when(s['starts_at'])} -> "
            f"{_when(s['ends_at'])}  {' '.join(s['matchers'])}  by {s['created_by']}: "
            f"{s['comment']}"
        )


@silences.command("expire")
@click.argument("silence_id", type=int)
def silence_expire(silence_id: int) -> None:
    """End a silence now."""
    _write(lambda e: actions.expire_silence(e, silence_id))
    click.echo(f"silence {silence_id} expired")
