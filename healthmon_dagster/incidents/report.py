"""Incident reports (Markdown and JSON) and MTTR/MTBF of incidents by component.

A report has the summary, impact, timeline, related alerts and incidents, root cause, resolution
and three response times, computed in SQL from the incident's row:

- time to detect: the first failure (``started_at``) until the incident row was written
  (``created_at``);
- time to acknowledge: the row until a person first assigned it, changed its status or wrote a
  note (``acknowledged_at``);
- time to recover: the first failure until it was resolved (``ended_at``).

Reliability by component over a window ``[start, end)``:

- MTTR (mean time to recovery): the mean of ``ended_at - started_at`` of the component's incidents
  resolved in the window;
- MTBF (mean time between failures): the mean *operating* time between failures, ``(window -
  downtime) / failures``, where a failure is an incident of the component that started in the
  window and the downtime is the time inside the window during which at least one of its incidents
  was open (from ``started_at`` until resolved, or the window end); None without a failure. The
  health checks' MTBF (``health.uptime``) is the same quantity over a component's critical checks:
  up time / failures (:func:`healthmon_dagster.health.uptime.mean_time_between_failures`).
"""

from dataclasses import dataclass
from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Engine

from healthmon_dagster.formatting import human_duration
from healthmon_dagster.health.uptime import mean_time_between_failures
from healthmon_dagster.incidents.records import OPEN, Incident, load_incident
from healthmon_dagster.store.dialect import epoch
from healthmon_dagster.store.metrics import as_utc, utcnow
from healthmon_dagster.store.tables import alerts, incident_alerts, incident_events, incidents
from healthmon_dagster.store.tables import related_incidents as related_table


@dataclass(frozen=True)
class ResponseTimes:
    """Seconds; None while the moment has not come (not acknowledged, not resolved)."""

    time_to_detect: float | None
    time_to_acknowledge: float | None
    time_to_recover: float | None


@dataclass(frozen=True)
class IncidentReport:
    incident: Incident
    timeline: list[dict[str, Any]]
    alerts: list[dict[str, Any]]
    related: list[dict[str, Any]]
    times: ResponseTimes
    generated_at: datetime

    def to_dict(self) -> dict[str, Any]:
        i = self.incident
        return {
            "incident_id": i.incident_id,
            "generated_at": self.generated_at.isoformat(),
            "summary": {
                "title": i.title,
                "description": i.description,
                "status": str(i.status),
                "severity": str(i.severity),
                "component": i.component,
                "root_key": i.root_key,
                "assigned_to": i.assigned_to,
                "tags": list(i.tags),
                "start_time": i.start_time.isoformat(),
                "end_time": _iso(i.end_time),
                "duration_minutes": i.duration_minutes,
            },
            "impact": {
                "level": str(i.impact),
                "assets": list(i.asset_keys),
                "resources": list(i.resources),
                "failures": i.failure_count,
                "error_classes": list(i.metadata.get("error_classes", [])),
            },
            "timeline": [_jsonable_row(e) for e in self.timeline],
            "related_alerts": [_jsonable_row(a) for a in self.alerts],
            "related_incidents": [_jsonable_row(r) for r in self.related],
            "root_cause": i.root_cause,
            "resolution": i.resolution,
            "time_to_detect_seconds": self.times.time_to_detect,
            "time_to_acknowledge_seconds": self.times.time_to_acknowledge,
            "time_to_recover_seconds": self.times.time_to_recover,
        }

    def to_markdown(self) -> str:
        i = self.incident
        lines = [
            f"# Incident {i.incident_id}: {i.title}",
            "",
            f"**Status** {i.status} · **Severity** {i.severity} · **Impact** {i.impact} · "
            f"**Component** {i.component}",
            "",
            "## Summary",
            "",
            *([i.description, ""] if i.description else []),
            f"- Root key: `{i.root_key}`",
            f"- Started: {_when(i.start_time)}; ended: {_when(i.end_time)}"
            + (f" ({human_duration(i.duration_minutes * 60)})" if i.duration_minutes else ""),
            f"- Assigned to: {i.assigned_to or 'nobody'}",
            f"- Tags: {', '.join(i.tags) or 'none'}",
            "",
            "## Impact",
            "",
            f"- Impact: {i.impact}",
            f"- Assets: {', '.join(i.asset_keys) or 'none'}",
            f"- Resources: {', '.join(i.resources) or 'none'}",
            f"- Failures: {i.failure_count}; error classes: "
            f"{', '.join(i.metadata.get('error_classes', [])) or 'none'}",
            "",
            "## Response times",
            "",
            f"- Time to detect: {human_duration(self.times.time_to_detect)}",
            f"- Time to acknowledge: {_or_not_yet(self.times.time_to_acknowledge)}",
            f"- Time to recover: {_or_not_yet(self.times.time_to_recover)}",
            "",
            "## Timeline",
            "",
            "| Time (UTC) | Event | By | Source | What |",
            "|---|---|---|---|---|",
            *(
                f"| {_when(e['at'])} | {e['kind']} | {_cell(e['actor'])} | {e['source']} | "
                f"{_cell(e['text'])} |"
                for e in self.timeline
            ),
            "",
            "## Related alerts",
            "",
            *(
                [
                    f"- Alert {a['alert_id']} ({a['severity']}, {a['state']}): {a['title']}"
                    for a in self.alerts
                ]
                or ["None."]
            ),
            "",
            "## Related incidents",
            "",
            *(
                [
                    f"- Incident {r['incident_id']} ({r['status']}, strength "
                    f"{r['strength']:.2f}): {r['title']}; {r['reason']}"
                    for r in self.related
                ]
                or ["None."]
            ),
            "",
            "## Root cause",
            "",
            i.root_cause or "Not identified yet.",
            "",
            "## Resolution",
            "",
            i.resolution or "Not resolved yet.",
            "",
        ]
        return "\n".join(lines)


def _iso(ts: datetime | None) -> str | None:
    return None if ts is None else ts.isoformat()


def _when(ts: datetime | None) -> str:
    return "-" if ts is None else f"{as_utc(ts):%Y-%m-%d %H:%M:%S}"


def _or_not_yet(seconds: float | None) -> str:
    return "not yet" if seconds is None else human_duration(seconds)


def _cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def _jsonable_row(row: dict[str, Any]) -> dict[str, Any]:
    return {k: (as_utc(v).isoformat() if isinstance(v, datetime) else v) for k, v in row.items()}


def _seconds(later: Any, earlier: Any) -> Any:
    return epoch(later) - epoch(earlier)


def incident_report(
    engine: Engine, incident_id: int, now: datetime | None = None
) -> IncidentReport:
    """The report of one incident (the plan's generateIncidentReport)."""
    c, e, ia, a, r = (
        incidents.c,
        incident_events.c,
        incident_alerts.c,
        alerts.c,
        related_table.c,
    )
    with engine.connect() as conn:
        incident = load_incident(conn, incident_id)
        times = conn.execute(
            sa.select(
                _seconds(c.created_at, c.started_at),
                _seconds(c.acknowledged_at, c.created_at),
                _seconds(c.ended_at, c.started_at),
            ).where(c.incident_id == incident_id)
        ).one()
        events = conn.execute(
            sa.select(e.at, e.kind, e.actor, e.source, e.from_status, e.to_status, e.text)
            .where(e.incident_id == incident_id)
            .order_by(e.at, e.event_id)
        )
        linked_alerts = conn.execute(
            sa.select(a.alert_id, a.title, a.rule_id, a.severity, a.state, a.started_at)
            .join(incident_alerts, ia.alert_id == a.alert_id)
            .where(ia.incident_id == incident_id)
            .order_by(a.alert_id)
        )
        other = sa.case((r.incident_id == incident_id, r.related_id), else_=r.incident_id)
        related = conn.execute(
            sa.select(c.incident_id, c.title, c.status, r.strength, r.reason)
            .join(related_table, c.incident_id == other)
            .where(sa.or_(r.incident_id == incident_id, r.related_id == incident_id))
            .order_by(c.incident_id)
        )
        return IncidentReport(
            incident=incident,
            timeline=[dict(x._mapping) for x in events],
            alerts=[dict(x._mapping) for x in linked_alerts],
            related=[dict(x._mapping) for x in related],
            times=ResponseTimes(*(None if t is None else max(0.0, float(t)) for t in times)),
            generated_at=as_utc(now or utcnow()),
        )


@dataclass(frozen=True)
class ComponentReliability:
    """Incidents of one component in a window: how many, how many open now, MTTR and MTBF."""

    component: str
    incidents: int  # started in the window
    open: int  # open now, whenever they started
    resolved: int  # resolved in the window
    mttr_seconds: float | None
    mtbf_seconds: float | None
    downtime_seconds: float = 0.0  # time in the window with an incident of the component open

    def to_dict(self) -> dict[str, Any]:
        return {
            "component": self.component,
            "incidents": self.incidents,
            "open": self.open,
            "resolved": self.resolved,
            "mttr_seconds": self.mttr_seconds,
            "mtbf_seconds": self.mtbf_seconds,
            "downtime_seconds": self.downtime_seconds,
        }


def reliability_by_component(
    engine: Engine, start: datetime, end: datetime
) -> list[ComponentReliability]:
    """MTTR and MTBF of incidents per component over ``[start, end)`` (as the module docstring
    defines them); every component with an incident in the window or open now."""
    start, end = as_utc(start), as_utc(end)
    c = incidents.c
    started_in = sa.and_(c.started_at >= start, c.started_at < end)
    ended_in = sa.and_(c.ended_at >= start, c.ended_at < end)
    per = (
        sa.select(
            c.component,
            sa.func.count().filter(started_in).label("n"),
            sa.func.count().filter(OPEN).label("open"),
            sa.func.count().filter(ended_in).label("resolved"),
            sa.func.avg(_seconds(c.ended_at, c.started_at)).filter(ended_in).label("mttr"),
        )
        .where(sa.or_(started_in, ended_in, OPEN))
        .group_by(c.component)
        .order_by(c.component)
    )
    # The incidents open at some time in the window: the component's downtime.
    overlapping = sa.select(c.component, c.started_at, c.ended_at).where(
        c.started_at < end, sa.or_(c.ended_at.is_(None), c.ended_at > start)
    )
    with engine.connect() as conn:
        rows = conn.execute(per).all()
        periods: dict[str, list[tuple[datetime, datetime]]] = {}
        for row in conn.execute(overlapping):
            ended = end if row.ended_at is None else min(as_utc(row.ended_at), end)
            periods.setdefault(row.component, []).append(
                (max(as_utc(row.started_at), start), ended)
            )
    window = (end - start).total_seconds()
    out: list[ComponentReliability] = []
    for row in rows:
        down = _union_seconds(periods.get(row.component, []))
        out.append(
            ComponentReliability(
                row.component,
                int(row.n),
                int(row.open),
                int(row.resolved),
                None if row.mttr is None else float(row.mttr),
                mean_time_between_failures(window - down, int(row.n)),
                down,
            )
        )
    return out


def _union_seconds(periods: list[tuple[datetime, datetime]]) -> float:
    """The length of the union of ``periods`` (overlapping incidents count once)."""
    total = 0.0
    reach: datetime | None = None
    for begin, finish in sorted(periods):
        if reach is not None and begin < reach:
            begin = reach
        if finish > begin:
            total += (finish - begin).total_seconds()
            reach = finish
    return total
