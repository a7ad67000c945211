"""The Jinja2 templates of the notifications, shipped in ``notify/templates/``.

One template per channel and kind (``slack/firing.j2``, ``email/resolved.j2``, ...), each extending
its channel's ``_base.j2``. A template renders one *part* of a message at a time (``part`` is
``"subject"``, ``"text"``, ``"html"``, ``"alert"``, ...), so a channel builds its payload (Block
Kit, an Adaptive Card, a MIME message) in code around text the templates own.

Templates see only the :class:`~healthmon_dagster.notify.base.Message` (labels, title,
description, details, links, and for lineage inhibition what a root cause mutes and what muted an
alert, by rule, asset and check names): nothing else reaches them, which is what keeps them PHI-safe.
Undefined names are errors (``StrictUndefined``), so a typo fails the template tests.
"""

from datetime import datetime
from functools import cache
from pathlib import Path
from typing import Any

import jinja2

from healthmon_dagster.enums import NotificationKind
from healthmon_dagster.formatting import human_duration
from healthmon_dagster.notify.base import (
    detail_text,
    format_value,
    muted_by_text,
    mutes_text,
    utc_text,
)

TEMPLATE_DIR = Path(__file__).parent / "templates"
# Channels whose messages come from templates (the webhook sends Alertmanager's JSON: data only).
TEMPLATED_CHANNELS = ("log", "slack", "email", "teams", "pagerduty")


def _ts(value: datetime | None) -> str:
    return utc_text(value)


def _slack_escape(value: Any) -> str:
    # Slack's mrkdwn: &, < and > are control characters (links, mentions) and must be escaped.
    return str(value).replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def _md_escape(value: Any) -> str:
    # Teams' Adaptive Card markdown: keep label and detail text literal.
    text = str(value)
    for ch in "\\*_[]`":
        text = text.replace(ch, "\\" + ch)
    return text


@cache
def environment() -> jinja2.Environment:
    env = jinja2.Environment(
        loader=jinja2.FileSystemLoader(str(TEMPLATE_DIR)),
        undefined=jinja2.StrictUndefined,
        autoescape=False,  # the email's HTML part turns it on for itself
        trim_blocks=True,
        lstrip_blocks=True,
    )
    env.filters.update(
        ts=_ts,
        duration=human_duration,
        value=format_value,
        detail=detail_text,
        slack=_slack_escape,
        md=_md_escape,
        mutes=mutes_text,  # what a root-cause alert mutes (AlertView.mutes)
        muted_by=muted_by_text,  # when an alert was muted, by which root cause
    )
    return env


def render(channel: str, kind: NotificationKind | str, part: str, **context: Any) -> str:
    """Render ``part`` of ``<channel>/<kind>.j2`` with ``context``, stripped of outer blank space."""
    template = environment().get_template(f"{channel}/{NotificationKind(kind).value}.j2")
    return template.render(part=part, kind=NotificationKind(kind).value, **context).strip()


def template_names() -> list[str]:
    """Every channel/kind template shipped (``slack/firing.j2``, ...)."""
    return [f"{c}/{k.value}.j2" for c in TEMPLATED_CHANNELS for k in NotificationKind]
