"""Inhibition, with Alertmanager's meaning plus lineage: while a source alert fires, a target
alert that matches the rule's target matchers and has the same values of its ``equal`` labels is
muted. A lineage rule also needs the target downstream of the source in the asset graph: of the
source's asset, or of everything when the source has no asset (an unreachable database or
landing store is upstream of every asset).

Built in (``alerting.builtin_inhibit_rules``):

- an unreachable dependency (``dependency_unreachable``) mutes every alert about an asset;
- and the failed runs that blame it: a run whose failed steps all found that dependency down
  carries its ``dependency`` label;
- one outage, one page: the incident opened for a dependency's outage (root key ``resource:...``,
  its alert carries the ``dependency`` label) and the dependency's own alert
  (``dependency_unreachable``) are two announcements of one outage. Whichever was announced first
  stands (for the incident: when it opened, whatever severity it escalated to since) and mutes
  the other: the database check usually notices first, but a failed run's hook can open and
  announce the incident before it runs;
- an asset whose check failed with ERROR (or whose file broke the contract) mutes the alerts of
  the assets downstream of it: stale or failing downstream tables are its consequence;
- one staleness, two alerts: an asset with a ``freshness:`` entry has both a Dagster
  FreshnessPolicy (its alerts carry ``check=freshness_policy``) and the ``last_load_is_fresh``
  check. Whichever of the two alerts of one asset fired first stands for the staleness; the other
  is muted by it. Not one shared alert: the two are measured apart (the daemon sees
  materializations, the check the load audit, data loaded outside Dagster included) and may
  disagree, and one alert fed by both would flap between them. Not a fixed order either: the
  daemon usually notices first, but the check can, and the first one is the one already told.

An alert never inhibits itself, and the root cause reported is the most upstream source.

A source keeps inhibiting for ``alerting.inhibit_hold_minutes`` (10) after it resolved (a *held*
source): the alerts an outage caused mostly recover with the next run or load after it, and
announcing them the moment the outage ends would page for its echo. A firing source is preferred
to a held one; what still fires once the hold has passed is announced.
"""

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from healthmon_dagster.alerting.labels import Matcher, all_match, parse_matchers
from healthmon_dagster.alerting.lineage import Lineage
from healthmon_dagster.alerting.signals import FRESHNESS_POLICY_CHECK
from healthmon_dagster.config.models import HealthConfiguration, InhibitRule
from healthmon_dagster.store.metrics import as_utc

BUILTIN_INHIBIT_RULES: tuple[InhibitRule, ...] = (
    InhibitRule(
        name="dependency_unreachable_mutes_assets",
        source_matchers=["rule_id=dependency_unreachable"],
        target_matchers=["asset=~.+"],
        lineage=True,
    ),
    InhibitRule(
        name="dependency_unreachable_mutes_what_blames_it",
        source_matchers=["rule_id=dependency_unreachable"],
        target_matchers=[
            "dependency=~.+",
            "rule_id!=dependency_unreachable",
            "alertname!=incident",
        ],
        equal=["dependency"],
    ),
    InhibitRule(
        name="failed_upstream_asset_mutes_downstream",
        source_matchers=["asset=~.+", "severity=~error|critical"],
        target_matchers=["asset=~.+"],
        lineage=True,
    ),
)


# The check names of the two measures of one asset's staleness (the second is
# healthmon_dagster.quality.LAST_LOAD_IS_FRESH; named here to keep alerting/ free of quality/).
FRESHNESS_CHECKS = frozenset({FRESHNESS_POLICY_CHECK, "last_load_is_fresh"})


@dataclass(frozen=True)
class _Compiled:
    rule: InhibitRule
    source: list[Matcher]
    target: list[Matcher]


class Inhibitor:
    def __init__(
        self,
        config: HealthConfiguration,
        lineage: Lineage,
        firing: Sequence[Any],
        held: Sequence[Any] = (),
    ) -> None:
        """``firing``: the firing alerts (sources and targets); ``held``: alerts resolved within
        the hold window, which still inhibit (not as the other measure of a staleness)."""
        rules = list(config.alerting.inhibit_rules)
        if config.alerting.builtin_inhibit_rules:
            rules += BUILTIN_INHIBIT_RULES
        self._rules = [
            _Compiled(r, parse_matchers(r.source_matchers), parse_matchers(r.target_matchers))
            for r in rules
        ]
        self._lineage = lineage
        self._firing = list(firing)
        self._held = list(held)
        self._same_staleness = config.alerting.builtin_inhibit_rules

    def _inhibits(self, rule: _Compiled, source: Any, target: Any) -> bool:
        s, t = source.labels or {}, target.labels or {}
        if source.alert_id == target.alert_id:
            return False
        if not (all_match(rule.source, s) and all_match(rule.target, t)):
            return False
        if any(s.get(name, "") != t.get(name, "") for name in rule.rule.equal):
            return False
        if not rule.rule.lineage:
            return True
        source_asset, target_asset = str(s.get("asset") or ""), str(t.get("asset") or "")
        if not source_asset:
            return True  # a dependency of everything
        return bool(target_asset) and self._lineage.is_downstream(target_asset, source_asset)

    def scope(self, source: Any) -> tuple[bool, list[str]]:
        """What ``source`` mutes through the lineage rules whose source matchers it matches:
        (every asset, when it has no asset: a dependency of everything), else the assets
        downstream of its asset, sorted. (False, []) when it is no lineage root."""
        labels = source.labels or {}
        asset = str(labels.get("asset") or "")
        every, below = False, set[str]()
        for rule in self._rules:
            if not rule.rule.lineage or not all_match(rule.source, labels):
                continue
            if not asset:
                every = True
            else:
                below |= self._lineage.downstream.get(asset, frozenset())
        return every, sorted(below)

    def _first_of_staleness(self, source: Any, target: Any) -> bool:
        """``source`` is the other measure of ``target``'s asset staleness and fired first."""
        s, t = source.labels or {}, target.labels or {}
        if not self._same_staleness or source.alert_id == target.alert_id:
            return False
        checks = {s.get("check"), t.get("check")}
        if checks != FRESHNESS_CHECKS or not s.get("asset") or s.get("asset") != t.get("asset"):
            return False
        return _fired(source) < _fired(target)

    def _first_of_outage(self, source: Any, target: Any) -> bool:
        """``source`` and ``target`` announce one dependency's outage (its alert and its
        incident's) and ``source`` was announced first."""
        s, t = source.labels or {}, target.labels or {}
        if not self._same_staleness or source.alert_id == target.alert_id:
            return False
        dependency = s.get("dependency")
        if not dependency or t.get("dependency") != dependency:
            return False
        if {_outage_role(s), _outage_role(t)} != {"alert", "incident"}:
            return False
        return self._announced(source) < self._announced(target)

    def _announced(self, alert: Any) -> tuple[datetime, int]:
        """When ``alert`` was first announced; for an incident's alert, when its incident opened
        (its ``opened_at``: when the incident was written, ``created_at``, not its earliest
        failure; an escalation resolves the alert of the old severity and fires one of the new:
        the incident was announced all along)."""
        opened = (alert.details or {}).get("opened_at")
        if _outage_role(alert.labels or {}) == "incident" and isinstance(opened, str):
            try:
                # A tie goes to the dependency's alert: an incident written at the instant the
                # alert fired (one clock for both, e.g. opened for that alert) did not page first.
                return (as_utc(datetime.fromisoformat(opened)), _AFTER_ANY_ID)
            except ValueError:
                pass
        return _fired(alert)

    def root_cause(self, target: Any) -> Any | None:
        """The most upstream firing alert that inhibits ``target``; without one, the most
        upstream held alert (resolved within the hold window) that would; else None."""
        sources = [
            src for src in self._firing for rule in self._rules if self._inhibits(rule, src, target)
        ] + [
            src
            for src in self._firing
            if self._first_of_staleness(src, target) or self._first_of_outage(src, target)
        ]
        if not sources:
            sources = [
                src
                for src in self._held
                if src.fingerprint != target.fingerprint
                and (
                    any(self._inhibits(rule, src, target) for rule in self._rules)
                    or self._first_of_outage(src, target)
                )
            ]
        if not sources:
            return None

        def depth(alert: Any) -> tuple[int, int]:
            asset = str((alert.labels or {}).get("asset") or "")
            # no asset (a dependency) is the most upstream; then the fewest ancestors
            ancestors = sum(
                1
                for other in self._lineage.downstream
                if asset and self._lineage.is_downstream(asset, other)
            )
            return (0 if not asset else 1 + ancestors, int(alert.alert_id))

        return min(sources, key=depth)


def _outage_role(labels: Any) -> str:
    """How an alert with a ``dependency`` label announces an outage: the dependency's own alert,
    the incident opened for it, or neither (e.g. a failed run)."""
    if labels.get("rule_id") == DEPENDENCY_RULE:
        return "alert"
    if labels.get("alertname") == "incident":
        return "incident"
    return ""


DEPENDENCY_RULE = "dependency_unreachable"
_AFTER_ANY_ID = 2**62


def _fired(alert: Any) -> tuple[datetime, int]:
    fired = alert.fired_at or alert.started_at
    return (as_utc(fired) if fired is not None else _EPOCH, int(alert.alert_id))


_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
