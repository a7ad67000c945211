"""``healthmon incidents``: list, show, update, assign, note, resolve, close and report incidents.

Every change is recorded on the incident's timeline with the person (``--by``, default the login
name) and the source ``cli``. Correlation in ``show`` uses the bundled pipeline's asset graph.
Anything that cannot be done (an unknown incident, a status the lifecycle does not allow, a
missing resolution) is one line on stderr and exit code 1.
"""

import getpass
import json
import sys
from collections.abc import Callable
from datetime import datetime
from pathlib import Path
from typing import Any, TypeVar

import click
from sqlalchemy import exc as sa_exc
from sqlalchemy.engine import Engine

from healthmon_dagster.enums import (
    HealthComponent,
    IncidentImpact,
    IncidentSeverity,
    IncidentSource,
    IncidentStatus,
)
from healthmon_dagster.incidents import lifecycle
from healthmon_dagster.incidents.correlation import CorrelationResult, correlate
from healthmon_dagster.incidents.records import (
    Actor,
    Incident,
    IncidentError,
    get_incident,
    list_incidents,
    timeline,
)
from healthmon_dagster.incidents.report import IncidentReport, incident_report
from healthmon_dagster.settings import get_settings, redact_url
from healthmon_dagster.store.db import DatabaseUnavailable, describe_unavailable, open_for_reading
from healthmon_dagster.store.metrics import as_utc

T = TypeVar("T")


def _use_store(use: Callable[[Engine], T]) -> T:
    """``use(engine)`` on the existing health store; a one-line message and exit 1 when the
    store cannot be used or the action cannot be done."""
    url = get_settings().health_database_url
    try:
        engine = open_for_reading(url)
    except DatabaseUnavailable as exc:
        click.echo(str(exc), err=True)
        sys.exit(1)
    try:
        return use(engine)
    except IncidentError as exc:
        click.echo(str(exc), err=True)
    except sa_exc.DBAPIError as exc:
        click.echo(str(describe_unavailable(redact_url(url), exc, "")), err=True)
    finally:
        engine.dispose()
    sys.exit(1)


def _actor(by: str | None) -> Actor:
    if by:
        return Actor(by, IncidentSource.CLI)
    try:
        name = getpass.getuser()
    except (KeyError, OSError):  # no login name in a container
        name = "unknown"
    return Actor(name, IncidentSource.CLI)


def _when(ts: datetime | None) -> str:
    return "-" if ts is None else f"{as_utc(ts):%Y-%m-%d %H:%M:%S}"


def _choice(enum: type[Any]) -> "click.Choice[str]":
    return click.Choice([m.value for m in enum], case_sensitive=False)


def _by_option(f: Callable[..., Any]) -> Callable[..., Any]:
    return click.option("--by", default=None, help="Who does it (default: the login name).")(f)


@click.group("incidents")
def incidents() -> None:
    """Incidents: list, show, update, assign, note, resolve, close, report."""


@incidents.command("list")
@click.option("--all", "include_ended", is_flag=True, help="Include resolved and closed ones.")
@click.option("--component", type=_choice(HealthComponent), help="Only this component.")
@click.option("--severity", type=_choice(IncidentSeverity), help="Only this severity.")
@click.option("--json", "as_json", is_flag=True, help="Print JSON for scripts.")
def list_cmd(
    include_ended: bool, component: str | None, severity: str | None, as_json: bool
) -> None:
    """Open incidents (with --all, every incident), newest first."""
    sev = IncidentSeverity(severity) if severity else None
    rows = _use_store(lambda e: list_incidents(e, include_ended, component, sev))
    if as_json:
        click.echo(json.dumps([i.to_dict() for i in rows], indent=2))
        return
    if not rows:
        click.echo("no incidents recorded" if include_ended else "no open incidents")
        return
    for i in rows:
        who = f"  @{i.assigned_to}" if i.assigned_to else ""
        click.echo(
            f"{i.incident_id:>6}  {i.status:<13}  {i.severity:<8}  {i.component:<19}  "
            f"{_when(i.start_time)}  x{i.failure_count:<3} {i.title}{who}"
        )


def _print_incident(i: Incident) -> None:
    click.echo(f"incident {i.incident_id}: {i.title}")
    click.echo(
        f"  status {i.status}, severity {i.severity}, impact {i.impact}, component "
        f"{i.component}, root key {i.root_key}"
    )
    if i.description:
        click.echo(f"  {i.description}")
    click.echo(
        f"  assets: {', '.join(i.asset_keys) or '-'}; resources: {', '.join(i.resources) or '-'}"
    )
    click.echo(
        f"  started {_when(i.start_time)}, recorded {_when(i.created_at)}, "
        f"{i.failure_count} failure(s), last {_when(i.last_failure_at)}"
    )
    click.echo(f"  assigned to {i.assigned_to or 'nobody'}; tags: {', '.join(i.tags) or '-'}")
    if i.end_time is not None:
        click.echo(f"  resolved {_when(i.end_time)} after {i.duration_minutes:.1f} min")
    if i.root_cause:
        click.echo(f"  root cause: {i.root_cause}")
    if i.resolution:
        click.echo(f"  resolution: {i.resolution}")
    if i.related_alerts:
        click.echo(f"  related alerts: {', '.join(map(str, i.related_alerts))}")
    if i.related_incidents:
        click.echo(f"  related incidents: {', '.join(map(str, i.related_incidents))}")


def _print_correlation(c: CorrelationResult) -> None:
    click.echo(f"correlation: {c.explanation}")
    for r in (*c.correlated_incidents, *c.correlated_alerts):
        click.echo(
            f"  {r.kind} {r.id} ({r.strength:.2f}): {'; '.join(f.explanation for f in r.factors)}"
        )
    click.echo(f"  suggested root cause: {c.suggested_root_cause}")


@incidents.command("show")
@click.argument("incident_id", type=int)
@click.option("--json", "as_json", is_flag=True, help="Print JSON for scripts.")
def show_cmd(incident_id: int, as_json: bool) -> None:
    """One incident: its facts, timeline and correlation with incidents and alerts around it."""

    def read(engine: Engine) -> tuple[Incident, list[Any], CorrelationResult]:
        return (
            get_incident(engine, incident_id),
            timeline(engine, incident_id),
            correlate(engine, incident_id),
        )

    incident, events, correlation = _use_store(read)
    if as_json:
        data = incident.to_dict() | {
            "timeline": [{**e._mapping, "at": as_utc(e.at).isoformat()} for e in events],
            "correlation": correlation.to_dict(),
        }
        click.echo(json.dumps(data, indent=2))
        return
    _print_incident(incident)
    click.echo("timeline:")
    for e in events:
        click.echo(f"  {_when(e.at)}  {e.kind:<17} {e.actor} ({e.source}): {e.text}")
    _print_correlation(correlation)


@incidents.command("update")
@click.argument("incident_id", type=int)
@click.option("--status", type=_choice(IncidentStatus), help="Move to this status.")
@click.option(
    "--note",
    default=None,
    help="Why (on the timeline with the status change; without --status, a note of its own).",
)
@click.option("--title", default=None)
@click.option("--description", default=None)
@click.option("--severity", type=_choice(IncidentSeverity))
@click.option("--impact", type=_choice(IncidentImpact))
@click.option("--component", type=_choice(HealthComponent))
@click.option("--root-cause", default=None)
@click.option("--tag", "tags", multiple=True, help="Replace the tags (repeat for several).")
@_by_option
def update_cmd(
    incident_id: int, status: str | None, note: str | None, by: str | None, **fields: Any
) -> None:
    """Edit an incident and/or move it to another status (resolve and close have their own
    commands because they need more)."""
    changes = {k: v for k, v in fields.items() if v is not None and v != ()}
    if status is None and not changes and not note:
        raise click.UsageError(
            "nothing to update: give --status, --note or a field such as --severity"
        )
    if status == IncidentStatus.RESOLVED:
        raise click.UsageError(
            f"use `healthmon incidents resolve {incident_id} --resolution TEXT` to resolve"
        )
    actor = _actor(by)

    def change(engine: Engine) -> list[str]:
        said = lifecycle.update(engine, incident_id, actor, changes) if changes else []
        if status is not None:
            lifecycle.set_status(engine, incident_id, IncidentStatus(status), actor, note)
            said.append(f"status {status}")
        elif note:  # without a status change the note is a timeline entry of its own
            lifecycle.add_note(engine, incident_id, note, actor)
            said.append("note added")
        return said

    said = _use_store(change)
    click.echo(f"incident {incident_id}: {', '.join(said) or 'nothing changed'}")


@incidents.command("assign")
@click.argument("incident_id", type=int)
@click.argument("assignee")
@_by_option
def assign_cmd(incident_id: int, assignee: str, by: str | None) -> None:
    """Assign an incident to a person or team."""
    _use_store(lambda e: lifecycle.assign(e, incident_id, assignee, _actor(by)))
    click.echo(f"incident {incident_id} assigned to {assignee}")


@incidents.command("note")
@click.argument("incident_id", type=int)
@click.argument("text")
@_by_option
def note_cmd(incident_id: int, text: str, by: str | None) -> None:
    """Add a note to an incident's timeline (no patient data: counts, columns, row numbers)."""
    _use_store(lambda e: lifecycle.add_note(e, incident_id, text, _actor(by)))
    click.echo(f"note added to incident {incident_id}")


@incidents.command("resolve")
@click.argument("incident_id", type=int)
@click.option("--resolution", required=True, help="How it was fixed.")
@click.option("--root-cause", default=None, help="What caused it, if known now.")
@_by_option
def resolve_cmd(incident_id: int, resolution: str, root_cause: str | None, by: str | None) -> None:
    """Resolve an incident: its end time, duration and resolution are recorded."""
    _use_store(lambda e: lifecycle.resolve(e, incident_id, resolution, _actor(by), root_cause))
    click.echo(f"incident {incident_id} resolved")


@incidents.command("close")
@click.argument("incident_id", type=int)
@click.option("--note", default=None, help="E.g. where the postmortem is.")
@_by_option
def close_cmd(incident_id: int, note: str | None, by: str | None) -> None:
    """Close a resolved incident (final)."""
    _use_store(lambda e: lifecycle.close(e, incident_id, _actor(by), note))
    click.echo(f"incident {incident_id} closed")


@incidents.command("report")
@click.argument("incident_id", type=int)
@click.option("--json", "as_json", is_flag=True, help="JSON instead of Markdown.")
@click.option(
    "--output",
    type=click.Path(dir_okay=False, writable=True, path_type=Path),
    default=None,
    help="Write the report to this file instead of printing it.",
)
def report_cmd(incident_id: int, as_json: bool, output: Path | None) -> None:
    """The incident report: summary, impact, timeline, related alerts and incidents, root cause,
    resolution, time to detect, acknowledge and recover (Markdown, or JSON with --json)."""
    report: IncidentReport = _use_store(lambda e: incident_report(e, incident_id))
    text = json.dumps(report.to_dict(), indent=2) if as_json else report.to_markdown()
    if output is None:
        click.echo(text)
        return
    try:
        output.write_text(text + "\n", encoding="utf-8")
    except OSError as exc:
        click.echo(f"cannot write the report to {output}: {exc.strerror}", err=True)
        sys.exit(1)
    click.echo(f"report of incident {incident_id} written to {output}")
