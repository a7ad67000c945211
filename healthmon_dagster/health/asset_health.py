"""Per-asset health rollup (what Dagster+ shows as "asset health"; open-source Dagster lacks it).

Each asset gets HEALTHY / WARNING / DEGRADED / UNKNOWN, the worst of three parts, and the reason in
words. The order is that of the component statuses (:attr:`AssetHealthStatus.rank` is the rank of
:meth:`AssetHealthStatus.as_health_status`): HEALTHY < UNKNOWN < WARNING < DEGRADED. The rollup
decides from plain data (:class:`AssetFacts`); ``healthmon_dagster.defs.health.instance_facts`` reads those
facts from a Dagster instance.

Materialization (the last materialization and the run that last planned the asset):
    DEGRADED when the latest run that planned the asset failed or was canceled without materializing
    it (OSS never records "failed to materialize": planned minus materialized is the failure);
    UNKNOWN when it was never materialized; HEALTHY otherwise (a run still in progress keeps the
    previous outcome; a successful run that chose not to emit an optional output is no failure).

Freshness (the asset's freshness policy):
    A time-window policy (``fail_window``, ``warn_window``) is evaluated here from the last
    materialization's age, exactly as the freshness daemon does, so the answer is current even when
    no daemon runs: older than ``fail_window`` -> DEGRADED, older than ``warn_window`` -> WARNING.
    Other policies (cron) use the daemon's last recorded state: FAIL -> DEGRADED, WARN -> WARNING,
    PASS -> HEALTHY, none yet -> UNKNOWN. No policy: not applicable.

Checks (the latest execution of each asset check):
    a failed evaluation with severity ERROR -> DEGRADED, WARN -> WARNING; a passed evaluation whose
    status is ``insufficient_history`` is *learning* (it lacks the history to judge yet): it counts as
    completed and never as a failure, and the reason names it, e.g. ``check row_count_volume_is_normal
    LEARNING (needs 4 more loads)``; a check recorded PLANNED
    whose run failed (the check raised) -> DEGRADED "execution failed"; PLANNED in a run still going
    -> in progress, PLANNED in a successful run -> skipped, never executed -> no effect (both named in
    the reason).
"""

from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime, timedelta
from enum import StrEnum
from typing import Any

from healthmon_dagster.enums import CheckSeverity, HealthStatus
from healthmon_dagster.formatting import human_duration, jsonable
from healthmon_dagster.quality.result import learning_label


class RunState(StrEnum):
    """What the rollup needs to know of a run's status."""

    SUCCEEDED = "succeeded"
    FAILED = "failed"
    CANCELED = "canceled"
    ACTIVE = "active"  # queued, starting, started or canceling
    OTHER = "other"


_FAILED_RUN = {RunState.FAILED, RunState.CANCELED}


class CheckExecution(StrEnum):
    """The latest execution of an asset check as the orchestrator records it."""

    SUCCEEDED = "SUCCEEDED"
    FAILED = "FAILED"  # evaluated and did not pass
    PLANNED = "PLANNED"  # requested, no evaluation (yet): running, or its run failed


class FreshnessState(StrEnum):
    """The freshness daemon's verdict on an asset."""

    PASS = "PASS"
    WARN = "WARN"
    FAIL = "FAIL"


@dataclass(frozen=True)
class MaterializationFacts:
    """The asset's last materialization and the run that last planned it."""

    last_materialized_at: datetime | None = None
    last_materialization_run_id: str | None = None
    planned_run_id: str | None = None
    planned_run_state: RunState | None = None  # None: no such run (any more)


@dataclass(frozen=True)
class FreshnessFacts:
    """A freshness policy: its windows (time-window policies), else the daemon's last state."""

    fail_window: timedelta | None = None
    warn_window: timedelta | None = None
    daemon_state: FreshnessState | None = (
        None  # None: not evaluated yet (or a state we do not know)
    )
    daemon_updated_at: datetime | None = None


@dataclass(frozen=True)
class CheckExecutionFacts:
    """The latest execution of one asset check (``status`` None: never executed)."""

    name: str
    status: CheckExecution | None = None
    run_id: str | None = None
    evaluated_at: datetime | None = None
    severity: CheckSeverity = CheckSeverity.ERROR
    description: str | None = None
    run_state: RunState | None = None
    # A passed evaluation with status insufficient_history: learning, and how many more loads it
    # needs (None when the metadata did not say).
    learning: bool = False
    loads_needed: int | None = None


@dataclass(frozen=True)
class AssetFacts:
    """What the rollup of one asset is decided from."""

    asset_key: str  # "stg/patients"
    materialization: MaterializationFacts
    freshness: FreshnessFacts | None = None  # None: no freshness policy
    checks: Sequence[CheckExecutionFacts] = ()


class AssetHealthStatus(StrEnum):
    HEALTHY = "healthy"
    WARNING = "warning"
    DEGRADED = "degraded"
    UNKNOWN = "unknown"

    def as_health_status(self) -> HealthStatus:
        """The component-level equivalent (DEGRADED is CRITICAL)."""
        return {
            AssetHealthStatus.HEALTHY: HealthStatus.HEALTHY,
            AssetHealthStatus.WARNING: HealthStatus.WARNING,
            AssetHealthStatus.DEGRADED: HealthStatus.CRITICAL,
            AssetHealthStatus.UNKNOWN: HealthStatus.UNKNOWN,
        }[self]

    @property
    def rank(self) -> int:
        """The rank of the component-level equivalent: HEALTHY < UNKNOWN < WARNING < DEGRADED."""
        return self.as_health_status().rank


_FRESHNESS = {
    FreshnessState.PASS: (AssetHealthStatus.HEALTHY, "fresh"),
    FreshnessState.WARN: (AssetHealthStatus.WARNING, "getting stale"),
    FreshnessState.FAIL: (AssetHealthStatus.DEGRADED, "stale"),
}


class CheckState(StrEnum):
    PASSED = "passed"
    LEARNING = "learning"  # passed: too little history to judge yet
    FAILED = "failed"  # severity ERROR
    WARNED = "warned"  # failed with severity WARN
    EXECUTION_FAILED = "execution_failed"
    IN_PROGRESS = "in_progress"
    SKIPPED = "skipped"
    NOT_EXECUTED = "not_executed"


@dataclass(frozen=True)
class Part:
    """One part of the rollup: its status and why."""

    status: AssetHealthStatus
    reason: str


@dataclass(frozen=True)
class AssetCheckHealth:
    name: str
    state: CheckState
    run_id: str | None
    evaluated_at: datetime | None
    description: str | None


@dataclass(frozen=True)
class AssetHealth:
    asset_key: str  # "stg/patients"
    status: AssetHealthStatus
    reason: str
    materialization: Part
    freshness: Part | None  # None: no freshness policy
    checks: Part | None  # None: the asset has no checks
    last_materialized_at: datetime | None
    check_results: list[AssetCheckHealth] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        data: dict[str, Any] = jsonable(asdict(self))
        return data


def _ago(delta: timedelta) -> str:
    return human_duration(delta.total_seconds())


def _materialization(facts: MaterializationFacts, now: datetime) -> tuple[Part, datetime | None]:
    last_at = facts.last_materialized_at
    planned_run = facts.planned_run_id
    if planned_run is not None and (
        last_at is None or planned_run != facts.last_materialization_run_id
    ):
        state = facts.planned_run_state
        if state in _FAILED_RUN:
            verb = "failed" if state == RunState.FAILED else "was canceled"
            since = (
                f"; last success {_ago(now - last_at)} ago" if last_at else "; never materialized"
            )
            return Part(
                AssetHealthStatus.DEGRADED,
                f"latest run {planned_run[:8]} {verb} before materializing it{since}",
            ), last_at
        if state == RunState.ACTIVE and last_at is None:
            return Part(
                AssetHealthStatus.UNKNOWN,
                f"first materialization in progress (run {planned_run[:8]})",
            ), None
    if last_at is None:
        return Part(AssetHealthStatus.UNKNOWN, "never materialized"), None
    return Part(AssetHealthStatus.HEALTHY, f"materialized {_ago(now - last_at)} ago"), last_at


def _freshness(
    policy: FreshnessFacts | None, last_at: datetime | None, now: datetime
) -> Part | None:
    if policy is None:
        return None
    if policy.fail_window is not None:
        fail, warn = policy.fail_window, policy.warn_window
        if last_at is None:
            return Part(AssetHealthStatus.UNKNOWN, "freshness unknown: never materialized")
        age = now - last_at
        if age > fail:
            return Part(
                AssetHealthStatus.DEGRADED,
                f"stale: last materialized {_ago(age)} ago, fail window {_ago(fail)}",
            )
        if warn is not None and age > warn:
            return Part(
                AssetHealthStatus.WARNING,
                f"getting stale: last materialized {_ago(age)} ago, warn window {_ago(warn)}",
            )
        return Part(AssetHealthStatus.HEALTHY, f"fresh (within {_ago(fail)})")
    if policy.daemon_state is None or policy.daemon_updated_at is None:
        return Part(AssetHealthStatus.UNKNOWN, "freshness not yet evaluated by the daemon")
    status, word = _FRESHNESS[policy.daemon_state]
    return Part(status, f"{word} (freshness daemon, {_ago(now - policy.daemon_updated_at)} ago)")


def _check(facts: CheckExecutionFacts) -> AssetCheckHealth:
    name, run_id, at = facts.name, facts.run_id, facts.evaluated_at
    if facts.status is None:
        return AssetCheckHealth(name, CheckState.NOT_EXECUTED, None, None, None)
    if facts.status == CheckExecution.SUCCEEDED:
        if facts.learning:
            label = learning_label(facts.loads_needed)
            return AssetCheckHealth(name, CheckState.LEARNING, run_id, at, label)
        return AssetCheckHealth(name, CheckState.PASSED, run_id, at, None)
    if facts.status == CheckExecution.FAILED:
        state = CheckState.WARNED if facts.severity == CheckSeverity.WARN else CheckState.FAILED
        return AssetCheckHealth(name, state, run_id, at, facts.description)
    if facts.run_state in _FAILED_RUN:  # PLANNED
        return AssetCheckHealth(
            name,
            CheckState.EXECUTION_FAILED,
            run_id,
            at,
            "the check did not complete: its run failed (the check raised or was interrupted)",
        )
    if facts.run_state == RunState.ACTIVE:
        return AssetCheckHealth(name, CheckState.IN_PROGRESS, run_id, at, None)
    return AssetCheckHealth(name, CheckState.SKIPPED, run_id, at, None)


def _checks_part(results: Sequence[AssetCheckHealth]) -> Part | None:
    if not results:
        return None
    degraded = [r for r in results if r.state in (CheckState.FAILED, CheckState.EXECUTION_FAILED)]
    warned = [r for r in results if r.state == CheckState.WARNED]
    parts: list[str] = []
    for r in degraded + warned:
        what = {
            CheckState.FAILED: "failed (ERROR)",
            CheckState.WARNED: "failed (WARN)",
            CheckState.EXECUTION_FAILED: "execution failed",
        }[r.state]
        parts.append(f"check {r.name} {what}" + (f": {r.description}" if r.description else ""))
    parts += [f"check {r.name} {r.description}" for r in results if r.state == CheckState.LEARNING]
    for state in (CheckState.IN_PROGRESS, CheckState.SKIPPED, CheckState.NOT_EXECUTED):
        names = [r.name for r in results if r.state == state]
        if names:
            parts.append(f"{state.value.replace('_', ' ')}: {', '.join(names)}")
    passed = sum(r.state == CheckState.PASSED for r in results)
    learning = sum(r.state == CheckState.LEARNING for r in results)
    if degraded:
        return Part(AssetHealthStatus.DEGRADED, "; ".join(parts))
    if warned:
        return Part(AssetHealthStatus.WARNING, "; ".join(parts))
    if passed + learning == 0:
        return Part(AssetHealthStatus.UNKNOWN, "no check has completed; " + "; ".join(parts))
    return Part(AssetHealthStatus.HEALTHY, "; ".join([f"{passed} check(s) passed", *parts]))


def asset_health(facts: AssetFacts, now: datetime) -> AssetHealth:
    """The health rollup of one asset."""
    mat, last_at = _materialization(facts.materialization, now)
    fresh = _freshness(facts.freshness, last_at, now)
    checks = [_check(c) for c in sorted(facts.checks, key=lambda c: c.name)]
    check_part = _checks_part(checks)
    parts = [p for p in (mat, fresh, check_part) if p is not None]
    status = max((p.status for p in parts), key=lambda s: s.rank)
    if status == AssetHealthStatus.HEALTHY:
        reason = "; ".join(p.reason for p in parts)
    else:
        reason = "; ".join(p.reason for p in parts if p.status == status)
    return AssetHealth(
        asset_key=facts.asset_key,
        status=status,
        reason=reason,
        materialization=mat,
        freshness=fresh,
        checks=check_part,
        last_materialized_at=last_at,
        check_results=checks,
    )


def get_asset_health(facts: Sequence[AssetFacts], now: datetime | None = None) -> list[AssetHealth]:
    """The health rollup of every asset in ``facts``, by asset key."""
    now = now.astimezone(UTC) if now is not None else datetime.now(UTC)
    return [asset_health(f, now) for f in sorted(facts, key=lambda f: f.asset_key)]
