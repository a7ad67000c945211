"""Lineage inhibition in notifications: what a root-cause alert mutes, and when an alert was
muted and by what, read from the store when a notification is built.

- A root cause (an alert that lineage inhibition rules take as a source: an unreachable
  dependency, an asset whose check failed with ERROR) says what it mutes: the alerts of every
  asset, or of the assets downstream of its asset in the asset graph, and the alerts it mutes
  now (``etl.alerts.inhibited_by``), by rule, asset and check names.
- An alert announced after its inhibition ended says which alert muted it, from when to when
  (its ``suppressed`` and ``unsuppressed`` events; the end of the episode when it resolved
  muted).

Names and times only: labels, titles (which the engine builds from check and asset names) and
event times; never a value.
"""

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from healthmon_dagster.alerting.inhibit import Inhibitor
from healthmon_dagster.alerting.lineage import Lineage
from healthmon_dagster.config.models import HealthConfiguration
from healthmon_dagster.enums import AlertEventKind, AlertState, AlertStatus
from healthmon_dagster.notify.base import MutedAlert, MutedSpan, Mutes
from healthmon_dagster.store.metrics import as_utc
from healthmon_dagster.store.tables import alert_events, alerts

_CHUNK = 500


@dataclass
class RootCauses:
    mutes: dict[int, Mutes] = field(default_factory=dict)
    muted_by: dict[int, tuple[MutedSpan, ...]] = field(default_factory=dict)

    def of(self, alert_id: int) -> dict[str, Any]:
        """The AlertView fields of ``alert_id``."""
        return {"mutes": self.mutes.get(alert_id), "muted_by": self.muted_by.get(alert_id, ())}


def root_causes(
    conn: Connection,
    config: HealthConfiguration,
    lineage: Lineage,
    rows: Iterable[Any],
) -> RootCauses:
    """For the alerts of ``rows`` (``etl.alerts`` rows): what each open one mutes and when each
    was muted. Three queries for all of them."""
    rows = list(rows)
    out = RootCauses()
    if not rows:
        return out
    ids = sorted({int(r["alert_id"]) for r in rows})
    a, e = alerts.c, alert_events.c

    muted: dict[int, list[MutedAlert]] = {}
    for chunk in _chunks(ids):
        for alert_id, rule_id, labels, component, root in conn.execute(
            sa.select(a.alert_id, a.rule_id, a.labels, a.component, a.inhibited_by)
            .where(
                a.inhibited_by.in_(chunk),
                a.state == str(AlertState.FIRING),
                a.status == str(AlertStatus.SUPPRESSED),
            )
            .order_by(a.alert_id)
        ):
            labels = labels or {}
            muted.setdefault(int(root), []).append(
                MutedAlert(
                    int(alert_id),
                    str(rule_id),
                    labels.get("asset") or None,
                    labels.get("check") or None,
                    component,
                )
            )
    inhibitor = Inhibitor(config, lineage, [])
    for r in rows:
        alert_id = int(r["alert_id"])
        if r["state"] == str(AlertState.RESOLVED):
            continue
        every, below = inhibitor.scope(_Labelled(r["labels"] or {}))
        now_muted = tuple(muted.get(alert_id, ()))
        if every or below or now_muted:
            out.mutes[alert_id] = Mutes(every, tuple(below), now_muted)

    spans: dict[int, list[list[Any]]] = {}  # alert id -> [root id, since, until]
    for chunk in _chunks(ids):
        for alert_id, kind, at, details in conn.execute(
            sa.select(e.alert_id, e.kind, e.at, e.details)
            .where(
                e.alert_id.in_(chunk),
                e.kind.in_([str(AlertEventKind.SUPPRESSED), str(AlertEventKind.UNSUPPRESSED)]),
            )
            .order_by(e.alert_id, e.at, e.event_id)
        ):
            mine = spans.setdefault(int(alert_id), [])
            root = (details or {}).get("inhibited_by")
            if kind == str(AlertEventKind.SUPPRESSED):
                if isinstance(root, int):
                    mine.append([root, as_utc(at), None])
            elif mine and mine[-1][2] is None:
                mine[-1][2] = as_utc(at)
    if not any(spans.values()):
        return out
    ended = {int(r["alert_id"]): r["resolved_at"] for r in rows}
    roots = sorted({s[0] for ss in spans.values() for s in ss})
    titles: dict[int, str] = {}
    for chunk in _chunks(roots):
        for root_id, title in conn.execute(
            sa.select(a.alert_id, a.title).where(a.alert_id.in_(chunk))
        ):
            titles[int(root_id)] = str(title)
    for alert_id, ss in spans.items():
        if not ss:
            continue
        resolved_at = ended.get(alert_id)
        out.muted_by[alert_id] = tuple(
            MutedSpan(
                root,
                titles.get(root, ""),
                since,
                until if until is not None else _utc_or_none(resolved_at),
            )
            for root, since, until in ss
        )
    return out


@dataclass(frozen=True)
class _Labelled:
    labels: Mapping[str, str]


def _utc_or_none(ts: datetime | None) -> datetime | None:
    return None if ts is None else as_utc(ts)


def _chunks(ids: list[int]) -> Iterable[list[int]]:
    for start in range(0, len(ids), _CHUNK):
        yield ids[start : start + _CHUNK]
