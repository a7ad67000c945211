"""Correlation: which incidents and alerts belong with an incident, how strongly, why, and which
of them is the likely root cause (the plan's ``CorrelationResult``).

Candidates are the incidents and alerts active within ``window`` of the incident (selected in SQL).
A candidate is correlated when it shares at least one structural factor with the incident:

=====================  ======  ==========================================================
factor                 weight  when
=====================  ======  ==========================================================
same asset             0.6     both failed on one asset
lineage                0.5     an asset of one is upstream of an asset of the other
shared resource        0.5     both name one resource (``database:...``, ``s3:<bucket>``; a
                               dependency alert's ``dependency`` label names its kind)
same component         0.4     both are on one health component
close in time          <= 0.3  0.3 when their active periods overlap, falling linearly to 0
                               at ``window`` apart (never enough on its own)
=====================  ======  ==========================================================

Strength is the noisy-OR of the factor weights, ``1 - prod(1 - w)``: each factor is independent
evidence, more factors are stronger, and the result stays in 0..1. The result's strength is the
strongest candidate's (0 when none).

Candidates are at most the :data:`MAX_CANDIDATES` newest incidents and alerts around it; an
incident's own announcement alert (the rules ``incident_*`` of ``incidents/announce.py``) is no
candidate: it says the incident exists, not why.

Links are recorded (:func:`link_correlated`, each once: the link tables' unique keys decide) for
candidates at least :data:`MIN_LINK_STRENGTH` strong: by the failure hook and the run-failure
sensor for the incident they opened or fed (:func:`correlate_and_link`), and at every alert
evaluation for the open incidents (:func:`link_open_incidents`), which catches the alerts that
fire later and the incidents other reporters open.

The suggested root cause is the most upstream failure among the incident and its correlated
incidents: a shared resource an incident's failures blame (its root key ``resource:...``) first,
then an infrastructure component (database, network, filesystem, system resources), since every
asset depends on them; otherwise the failing asset no other failing asset is upstream
of (by the asset graph); otherwise the component earliest in the pipeline. Ties go to the incident
that started first. The asset graph is plain data (:class:`~healthmon_dagster.alerting.lineage.Lineage`),
as the alert engine takes it.
"""

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from math import prod
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Engine

from healthmon_dagster.alerting.lineage import Lineage
from healthmon_dagster.enums import HealthComponent, IncidentSource
from healthmon_dagster.formatting import human_duration
from healthmon_dagster.incidents.alerts import INCIDENT_RULE_PREFIX, unlinked_critical_alerts
from healthmon_dagster.incidents.lifecycle import link_alert, link_incidents
from healthmon_dagster.incidents.records import (
    OPEN,
    Actor,
    Incident,
    linked_alert_ids,
    load_incident,
    related_incident_ids,
)
from healthmon_dagster.store.metrics import as_utc, utcnow
from healthmon_dagster.store.tables import alerts, incidents

DEFAULT_WINDOW = timedelta(hours=1)
W_SAME_ASSET = 0.6
W_LINEAGE = 0.5
W_RESOURCE = 0.5
W_COMPONENT = 0.4
W_TIME = 0.3
MIN_LINK_STRENGTH = 0.5
"""Correlated incidents and alerts at least this strong are recorded as links: one structural
factor with closeness in time (lineage 0.65, component 0.58 when active together), or two."""
MAX_CANDIDATES = 200
"""At most this many incidents and as many alerts (the newest around the incident) are compared:
an incident open for days meets every alert of those days otherwise."""
SWEEP_LIMIT = 50
""":func:`link_open_incidents` correlates at most this many open incidents (the newest) a call."""
ACTOR = Actor("sensor:incident_correlation", IncidentSource.SENSOR)

C = HealthComponent
RESOURCE = "resource:"
INFRASTRUCTURE = (C.DATABASE, C.NETWORK, C.FILESYSTEM, C.SYSTEM_RESOURCES)
PIPELINE_ORDER = (C.S3_DISCOVERY, C.RAW_LOADER, C.STAGING_TRANSFORMER, C.CORE_MERGER)


@dataclass(frozen=True)
class Factor:
    """One reason two things are related: ``kind``, its ``weight`` and the reason in words."""

    kind: str
    weight: float
    explanation: str


@dataclass(frozen=True)
class Correlated:
    """An incident or alert correlated with the incident, with its strength and reasons."""

    kind: str  # "incident" | "alert"
    id: int
    title: str
    component: str | None
    started_at: datetime
    strength: float
    factors: tuple[Factor, ...]

    def to_dict(self) -> dict[str, Any]:
        return {
            "kind": self.kind,
            "id": self.id,
            "title": self.title,
            "component": self.component,
            "started_at": self.started_at.isoformat(),
            "strength": round(self.strength, 3),
            "factors": [f.explanation for f in self.factors],
        }


@dataclass(frozen=True)
class CorrelationResult:
    """The plan's CorrelationResult: correlated incidents, correlation strength (0..1), common
    factors and the suggested root cause, each in words; also the correlated alerts."""

    incident_id: int
    correlated_incidents: tuple[Correlated, ...]
    correlated_alerts: tuple[Correlated, ...]
    correlation_strength: float
    common_factors: tuple[str, ...]
    suggested_root_cause: str
    root_cause_incident_id: int
    root_cause_key: str  # "resource:<resource>", "asset:<key>" or "component:<name>"
    explanation: str  # the strength in words

    def to_dict(self) -> dict[str, Any]:
        return {
            "incident_id": self.incident_id,
            "correlated_incidents": [c.to_dict() for c in self.correlated_incidents],
            "correlated_alerts": [c.to_dict() for c in self.correlated_alerts],
            "correlation_strength": round(self.correlation_strength, 3),
            "common_factors": list(self.common_factors),
            "suggested_root_cause": self.suggested_root_cause,
            "root_cause_incident_id": self.root_cause_incident_id,
            "root_cause_key": self.root_cause_key,
            "explanation": self.explanation,
        }


@dataclass(frozen=True)
class _Subject:
    """What correlation compares: an incident or an alert reduced to its facts."""

    id: int
    title: str
    component: str | None
    assets: frozenset[str]
    resources: frozenset[str]
    start: datetime
    end: datetime  # ended, or now while open


def _strength(factors: Iterable[Factor]) -> float:
    return 1.0 - prod(1.0 - f.weight for f in factors)


def _lineage_factor(a: _Subject, b: _Subject, lineage: Lineage, label: str) -> Factor | None:
    for x in sorted(a.assets):
        for y in sorted(b.assets):
            if lineage.is_downstream(y, x):
                return Factor("lineage", W_LINEAGE, f"{y} ({label}) is downstream of {x}")
            if lineage.is_downstream(x, y):
                return Factor("lineage", W_LINEAGE, f"{x} is downstream of {y} ({label})")
    return None


def _time_factor(a: _Subject, b: _Subject, window: timedelta) -> Factor | None:
    gap = max(timedelta(0), max(a.start, b.start) - min(a.end, b.end))
    if gap >= window:
        return None
    closeness = 1.0 - gap / window
    words = (
        "active at the same time"
        if gap == timedelta(0)
        else (f"{human_duration(gap.total_seconds())} apart")
    )
    return Factor("time", W_TIME * closeness, words)


def _shared_resources(a: frozenset[str], b: frozenset[str]) -> list[str]:
    """Resources named by both: the same name, or a bare kind (``database``, as a dependency
    alert names it) and a resource of that kind (``database:warehouse``)."""
    found = set(a & b)
    for x, y in ((x, y) for x in a for y in b):
        if ":" not in x and y.split(":", 1)[0] == x:
            found.add(y)
        elif ":" not in y and x.split(":", 1)[0] == y:
            found.add(x)
    return sorted(found)


def factors_between(
    a: _Subject, b: _Subject, lineage: Lineage, window: timedelta, label: str
) -> tuple[Factor, ...]:
    """Why ``b`` (named ``label`` in the explanations) relates to ``a``; empty when it has no
    structural factor (closeness in time alone correlates nothing)."""
    found: list[Factor] = []
    same_assets = sorted(a.assets & b.assets)
    if same_assets:
        found.append(Factor("asset", W_SAME_ASSET, f"both failed on {', '.join(same_assets)}"))
    else:
        link = _lineage_factor(a, b, lineage, label)
        if link is not None:
            found.append(link)
    shared = _shared_resources(a.resources, b.resources)
    if shared:
        found.append(Factor("resource", W_RESOURCE, f"both use {', '.join(shared)}"))
    if a.component is not None and a.component == b.component:
        found.append(Factor("component", W_COMPONENT, f"both on component {a.component}"))
    if not found:
        return ()
    near = _time_factor(a, b, window)
    return tuple(sorted([*found, *([near] if near else [])], key=lambda f: -f.weight))


def _incident_subject(inc: Incident, now: datetime) -> _Subject:
    return _Subject(
        inc.incident_id,
        inc.title,
        inc.component,
        frozenset(inc.asset_keys),
        frozenset(inc.resources),
        inc.start_time,
        inc.end_time or max(now, inc.last_failure_at),
    )


def _candidate_incidents(
    engine: Engine, me: _Subject, window: timedelta, now: datetime
) -> list[Incident]:
    c = incidents.c
    query = sa.select(incidents).where(
        c.incident_id != me.id,
        c.started_at <= me.end + window,
        sa.func.coalesce(c.ended_at, now) >= me.start - window,
    )
    query = query.order_by(c.started_at.desc(), c.incident_id.desc()).limit(MAX_CANDIDATES)
    with engine.connect() as conn:
        return [Incident.from_row(r) for r in conn.execute(query)]


def _candidate_alerts(
    engine: Engine, me: _Subject, window: timedelta, now: datetime
) -> list[_Subject]:
    a = alerts.c
    query = sa.select(
        a.alert_id, a.title, a.component, a.labels, a.started_at, a.resolved_at
    ).where(
        a.started_at <= me.end + window,
        sa.func.coalesce(a.resolved_at, now) >= me.start - window,
        # An incident's own alert (incidents/announce.py) announces it, it is no evidence: every
        # incident would correlate with its announcement.
        ~a.rule_id.startswith(INCIDENT_RULE_PREFIX),
    )
    query = query.order_by(a.started_at.desc(), a.alert_id.desc()).limit(MAX_CANDIDATES)
    with engine.connect() as conn:
        rows = list(conn.execute(query))
    return [
        _Subject(
            int(r.alert_id),
            r.title,
            r.component,
            frozenset([r.labels["asset"]] if r.labels.get("asset") else []),
            frozenset([r.labels["dependency"]] if r.labels.get("dependency") else []),
            as_utc(r.started_at),
            as_utc(r.resolved_at) if r.resolved_at is not None else now,
        )
        for r in rows
    ]


def _component_rank(component: str | None) -> int:
    if component in INFRASTRUCTURE:
        return 0
    if component in PIPELINE_ORDER:
        return 1 + PIPELINE_ORDER.index(C(component))
    return len(PIPELINE_ORDER) + 1


def suggest_root_cause(members: Sequence[Incident], lineage: Lineage) -> tuple[int, str, str]:
    """``(incident id, key, explanation)`` of the most upstream failure among ``members``."""
    ordered = sorted(members, key=lambda i: (i.start_time, i.incident_id))
    blamed = [i for i in ordered if i.root_key.startswith(RESOURCE)]
    if blamed:
        first = blamed[0]
        resource = first.root_key.removeprefix(RESOURCE)
        return (
            first.incident_id,
            first.root_key,
            f"resource {resource} (incident {first.incident_id}): its failures blame it, and "
            "every asset that uses it fails with it",
        )
    infra = [i for i in ordered if _component_rank(i.component) == 0]
    if infra:
        first = infra[0]
        return (
            first.incident_id,
            f"component:{first.component}",
            f"component {first.component} (incident {first.incident_id}): every pipeline asset "
            f"depends on it, so its failure explains the failures downstream",
        )
    failing = {a for i in ordered for a in i.asset_keys}
    roots = sorted(a for a in failing if not any(lineage.is_downstream(a, b) for b in failing))
    if roots:
        owner = next(i for i in ordered if set(i.asset_keys) & set(roots))
        root = next(a for a in roots if a in owner.asset_keys)
        below = sorted(a for a in failing if lineage.is_downstream(a, root))
        tail = (
            f"; {', '.join(below)} failed downstream of it"
            if below
            else "; no failing asset is upstream of it"
        )
        return (
            owner.incident_id,
            f"asset:{root}",
            f"asset {root} (incident {owner.incident_id}), the most upstream failing asset{tail}",
        )
    first = min(ordered, key=lambda i: _component_rank(i.component))
    return (
        first.incident_id,
        f"component:{first.component}",
        f"component {first.component} (incident {first.incident_id}), the earliest in the "
        "pipeline of the failing components",
    )


def correlate(
    engine: Engine,
    incident_id: int,
    lineage: Lineage | None = None,
    window: timedelta = DEFAULT_WINDOW,
    now: datetime | None = None,
) -> CorrelationResult:
    """Correlate the incident with the incidents and alerts around it (the plan's
    correlateIncidents); nothing is written (:func:`link_correlated` records the links)."""
    lineage = lineage or Lineage.bundled()
    now = as_utc(now or utcnow())
    with engine.connect() as conn:
        incident = load_incident(conn, incident_id)
    me = _incident_subject(incident, now)
    found_incidents: list[tuple[Incident, Correlated]] = []
    for other in _candidate_incidents(engine, me, window, now):
        subject = _incident_subject(other, now)
        fs = factors_between(me, subject, lineage, window, f"incident {other.incident_id}")
        if fs:
            found_incidents.append((other, _correlated("incident", subject, fs)))
    found_alerts = []
    for subject in _candidate_alerts(engine, me, window, now):
        fs = factors_between(me, subject, lineage, window, f"alert {subject.id}")
        if fs:
            found_alerts.append(_correlated("alert", subject, fs))
    related = sorted((c for _, c in found_incidents), key=lambda c: (-c.strength, c.id))
    common = dict.fromkeys(f.explanation for c in related for f in c.factors if f.kind != "time")
    root_id, root_key, root_words = suggest_root_cause(
        [incident, *(i for i, _ in found_incidents)], lineage
    )
    return CorrelationResult(
        incident_id=incident_id,
        correlated_incidents=tuple(related),
        correlated_alerts=tuple(sorted(found_alerts, key=lambda c: (-c.strength, c.id))),
        correlation_strength=max((c.strength for c in related), default=0.0),
        common_factors=tuple(common),
        suggested_root_cause=root_words,
        root_cause_incident_id=root_id,
        root_cause_key=root_key,
        explanation=_explain(related, window),
    )


def _explain(related: Sequence[Correlated], window: timedelta) -> str:
    if not related:
        return (
            f"no other incident within {human_duration(window.total_seconds())} shares an asset, "
            "lineage, resource or component with it"
        )
    best = related[0]
    reasons = "; ".join(f.explanation for f in best.factors)
    return (
        f"{len(related)} correlated incident(s); strongest: incident {best.id} at "
        f"{best.strength:.2f} ({reasons})"
    )


def _correlated(kind: str, s: _Subject, factors: tuple[Factor, ...]) -> Correlated:
    return Correlated(kind, s.id, s.title, s.component, s.start, _strength(factors), factors)


def link_correlated(
    engine: Engine,
    result: CorrelationResult,
    actor: Actor,
    min_strength: float = MIN_LINK_STRENGTH,
    now: datetime | None = None,
) -> tuple[list[int], list[int]]:
    """Record the correlated incidents and alerts at least ``min_strength`` strong as links (each
    once, on the timelines); the incident ids and alert ids newly linked. Links already recorded
    are skipped before any write (a call that finds nothing new writes nothing); the unique
    indexes of the link tables decide between concurrent callers.

    A firing critical alert no incident links yet is left to the critical-alert adapter
    (:func:`~healthmon_dagster.incidents.alerts.open_for_critical_alerts`), which records it as a
    failure of its root cause's incident (escalating it) and links it; it is linked here once
    that is done."""
    with engine.connect() as conn:
        known_incidents = set(related_incident_ids(conn, result.incident_id))
        known_alerts = set(linked_alert_ids(conn, result.incident_id))
    if result.correlated_alerts:
        known_alerts |= {int(r.alert_id) for r in unlinked_critical_alerts(engine)}
    new_incidents = [
        c.id
        for c in result.correlated_incidents
        if c.strength >= min_strength
        and c.id not in known_incidents
        and link_incidents(
            engine,
            result.incident_id,
            c.id,
            c.strength,
            "; ".join(f.explanation for f in c.factors),
            actor,
            now,
        )
    ]
    new_alerts = [
        c.id
        for c in result.correlated_alerts
        if c.strength >= min_strength
        and c.id not in known_alerts
        and link_alert(engine, result.incident_id, c.id, actor, now)
    ]
    return new_incidents, new_alerts


@dataclass(frozen=True)
class Linked:
    """What one correlation recorded for an incident: the incidents and alerts newly linked."""

    incident_id: int
    incidents: tuple[int, ...]
    alerts: tuple[int, ...]


def correlate_and_link(
    engine: Engine,
    incident_id: int,
    actor: Actor = ACTOR,
    lineage: Lineage | None = None,
    window: timedelta = DEFAULT_WINDOW,
    now: datetime | None = None,
) -> Linked:
    """Correlate the incident and record its links (:func:`correlate`, then
    :func:`link_correlated`): called when an incident opens or absorbs a failure (the failure hook,
    the run-failure sensor) and for every open incident at each alert evaluation
    (:func:`link_open_incidents`), so that incidents and alerts are linked when they happen, not
    only when someone looks."""
    result = correlate(engine, incident_id, lineage, window, now)
    new_incidents, new_alerts = link_correlated(engine, result, actor, now=now)
    return Linked(incident_id, tuple(new_incidents), tuple(new_alerts))


def link_open_incidents(
    engine: Engine,
    lineage: Lineage | None = None,
    window: timedelta = DEFAULT_WINDOW,
    now: datetime | None = None,
    limit: int = SWEEP_LIMIT,
) -> list[Linked]:
    """:func:`correlate_and_link` for each open incident (the ``limit`` newest): alerts that fired
    after an incident opened, and incidents opened by reporters that do not correlate themselves
    (critical alerts, the self-healing sensor), are linked at the next alert evaluation. Only
    the incidents that got a new link are returned."""
    lineage = lineage or Lineage.bundled()
    c = incidents.c
    with engine.connect() as conn:
        ids = list(
            conn.execute(
                sa.select(c.incident_id)
                .where(OPEN)
                .order_by(c.last_failure_at.desc(), c.incident_id.desc())
                .limit(limit)
            ).scalars()
        )
    found = [correlate_and_link(engine, int(i), ACTOR, lineage, window, now) for i in ids]
    return [x for x in found if x.incidents or x.alerts]
