"""Per-asset health rollup (what Dagster+ shows as "asset health"; open-source Dagster lacks it).

Each asset gets HEALTHY / WARNING / DEGRADED / UNKNOWN, the worst of three parts (DEGRADED > WARNING >
UNKNOWN > HEALTHY), and the reason in words. Read through public Dagster APIs of 1.13.27 only:

Materialization (``instance.get_asset_records``: the asset entry's last materialization and the run
that last planned it, ``last_planned_materialization_run_id`` or else ``last_run_id``):
    DEGRADED when the latest run that planned the asset failed or was canceled without materializing
    it (OSS never records "failed to materialize": planned minus materialized is the failure);
    UNKNOWN when it was never materialized; HEALTHY otherwise (a run still in progress keeps the
    previous outcome; a successful run that chose not to emit an optional output is no failure).

Freshness (the asset's ``FreshnessPolicy``):
    A ``FreshnessPolicy.time_window(fail_window, warn_window)`` is evaluated here from the last
    materialization's age, exactly as the freshness daemon does, so the answer is current even when
    no daemon runs: older than ``fail_window`` -> DEGRADED, older than ``warn_window`` -> WARNING.
    Other policies (cron) use the daemon's last recorded state (``instance.get_freshness_state_records``):
    FAIL -> DEGRADED, WARN -> WARNING, PASS -> HEALTHY, none yet -> UNKNOWN. No policy: not applicable.

Checks (``instance.event_log_storage.get_latest_asset_check_execution_by_key``):
    a failed evaluation with severity ERROR -> DEGRADED, WARN -> WARNING; a check recorded PLANNED
    whose run failed (the check raised) -> DEGRADED "execution failed"; PLANNED in a run still going
    -> in progress, PLANNED in a successful run -> skipped, never executed -> no effect (both named in
    the reason).
"""

from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime, timedelta
from enum import StrEnum
from typing import Any

import dagster as dg

from healthmon_dagster.enums import HealthStatus
from healthmon_dagster.health.status import human_duration, jsonable

_FAILED_RUN = {dg.DagsterRunStatus.FAILURE, dg.DagsterRunStatus.CANCELED}
_ACTIVE_RUN = {
    dg.DagsterRunStatus.QUEUED,
    dg.DagsterRunStatus.NOT_STARTED,
    dg.DagsterRunStatus.STARTING,
    dg.DagsterRunStatus.STARTED,
    dg.DagsterRunStatus.CANCELING,
}


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


_RANK = {
    AssetHealthStatus.HEALTHY: 0,
    AssetHealthStatus.UNKNOWN: 1,
    AssetHealthStatus.WARNING: 2,
    AssetHealthStatus.DEGRADED: 3,
}


class CheckState(StrEnum):
    PASSED = "passed"
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
        return jsonable(asdict(self))


def _ago(delta: timedelta) -> str:
    return human_duration(delta.total_seconds())


def _run_status(instance: dg.DagsterInstance, run_id: str | None) -> dg.DagsterRunStatus | None:
    if not run_id:
        return None
    run = instance.get_run_by_id(run_id)
    return run.status if run is not None else None


def _materialization(
    instance: dg.DagsterInstance, record: Any, now: datetime
) -> tuple[Part, datetime | None]:
    entry = record.asset_entry if record is not None else None
    last = entry.last_materialization if entry is not None else None
    last_at = datetime.fromtimestamp(last.timestamp, UTC) if last is not None else None
    # The run that last planned the asset: storages that track planned events say so directly; the
    # default (run-sharded SQLite) one keeps it as the entry's last_run_id.
    planned_run = (
        (entry.last_planned_materialization_run_id or entry.last_run_id)
        if entry is not None
        else None
    )
    if planned_run is not None and (last is None or planned_run != last.run_id):
        status = _run_status(instance, planned_run)
        if status in _FAILED_RUN:
            verb = "failed" if status == dg.DagsterRunStatus.FAILURE else "was canceled"
            since = (
                f"; last success {_ago(now - last_at)} ago" if last_at else "; never materialized"
            )
            return Part(
                AssetHealthStatus.DEGRADED,
                f"latest run {planned_run[:8]} {verb} before materializing it{since}",
            ), last_at
        if status in _ACTIVE_RUN and last_at is None:
            return Part(
                AssetHealthStatus.UNKNOWN,
                f"first materialization in progress (run {planned_run[:8]})",
            ), None
    if last_at is None:
        return Part(AssetHealthStatus.UNKNOWN, "never materialized"), None
    return Part(AssetHealthStatus.HEALTHY, f"materialized {_ago(now - last_at)} ago"), last_at


def _freshness(
    instance: dg.DagsterInstance,
    key: dg.AssetKey,
    policy: Any,
    last_at: datetime | None,
    now: datetime,
) -> Part | None:
    if policy is None:
        return None
    fail_window = getattr(policy, "fail_window", None)
    if fail_window is not None:
        fail = fail_window.to_timedelta()
        warn_window = getattr(policy, "warn_window", None)
        warn = warn_window.to_timedelta() if warn_window is not None else None
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
    record = instance.get_freshness_state_records([key]).get(key)
    if record is None:
        return Part(AssetHealthStatus.UNKNOWN, "freshness not yet evaluated by the daemon")
    state = str(getattr(record.freshness_state, "value", record.freshness_state))
    mapping = {
        "PASS": (AssetHealthStatus.HEALTHY, "fresh"),
        "WARN": (AssetHealthStatus.WARNING, "getting stale"),
        "FAIL": (AssetHealthStatus.DEGRADED, "stale"),
    }
    status, word = mapping.get(state, (AssetHealthStatus.UNKNOWN, "freshness unknown"))
    return Part(status, f"{word} (freshness daemon, {_ago(now - record.updated_at)} ago)")


def _check(instance: dg.DagsterInstance, key: dg.AssetCheckKey, record: Any) -> AssetCheckHealth:
    if record is None:
        return AssetCheckHealth(key.name, CheckState.NOT_EXECUTED, None, None, None)
    at = datetime.fromtimestamp(record.create_timestamp, UTC)
    status = str(record.status.value)
    if status == "SUCCEEDED":
        return AssetCheckHealth(key.name, CheckState.PASSED, record.run_id, at, None)
    if status == "FAILED":
        evaluation = record.event.asset_check_evaluation if record.event is not None else None
        severity = getattr(evaluation, "severity", dg.AssetCheckSeverity.ERROR)
        state = CheckState.WARNED if severity == dg.AssetCheckSeverity.WARN else CheckState.FAILED
        description = getattr(evaluation, "description", None)
        return AssetCheckHealth(key.name, state, record.run_id, at, description)
    run_status = _run_status(instance, record.run_id)  # PLANNED
    if run_status in _FAILED_RUN:
        return AssetCheckHealth(
            key.name,
            CheckState.EXECUTION_FAILED,
            record.run_id,
            at,
            "the check did not complete: its run failed (the check raised or was interrupted)",
        )
    if run_status in _ACTIVE_RUN:
        return AssetCheckHealth(key.name, CheckState.IN_PROGRESS, record.run_id, at, None)
    return AssetCheckHealth(key.name, CheckState.SKIPPED, record.run_id, at, None)


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
    for state in (CheckState.IN_PROGRESS, CheckState.SKIPPED, CheckState.NOT_EXECUTED):
        names = [r.name for r in results if r.state == state]
        if names:
            parts.append(f"{state.value.replace('_', ' ')}: {', '.join(names)}")
    passed = sum(r.state == CheckState.PASSED for r in results)
    if degraded:
        return Part(AssetHealthStatus.DEGRADED, "; ".join(parts))
    if warned:
        return Part(AssetHealthStatus.WARNING, "; ".join(parts))
    if passed == 0:
        return Part(AssetHealthStatus.UNKNOWN, "no check has completed; " + "; ".join(parts))
    return Part(AssetHealthStatus.HEALTHY, "; ".join([f"{passed} check(s) passed", *parts]))


def get_asset_health(
    instance: dg.DagsterInstance,
    defs: dg.Definitions,
    now: datetime | None = None,
    asset_keys: Iterable[dg.AssetKey] | None = None,
) -> list[AssetHealth]:
    """The health rollup of every asset of ``defs`` (or of ``asset_keys``), by asset key."""
    now = now.astimezone(UTC) if now is not None else datetime.now(UTC)
    specs = {spec.key: spec for spec in defs.resolve_all_asset_specs()}
    keys = sorted(asset_keys if asset_keys is not None else specs, key=lambda k: k.to_user_string())
    check_keys_by_asset: dict[dg.AssetKey, list[dg.AssetCheckKey]] = {}
    for ck in defs.resolve_asset_graph().asset_check_keys:
        check_keys_by_asset.setdefault(ck.asset_key, []).append(ck)
    all_check_keys = [ck for k in keys for ck in check_keys_by_asset.get(k, [])]
    check_records = (
        instance.event_log_storage.get_latest_asset_check_execution_by_key(all_check_keys)
        if all_check_keys
        else {}
    )
    records = {r.asset_entry.asset_key: r for r in instance.get_asset_records(list(keys))}

    result: list[AssetHealth] = []
    for key in keys:
        mat, last_at = _materialization(instance, records.get(key), now)
        spec = specs.get(key)
        fresh = _freshness(
            instance, key, spec.freshness_policy if spec is not None else None, last_at, now
        )
        checks = [
            _check(instance, ck, check_records.get(ck))
            for ck in sorted(check_keys_by_asset.get(key, []), key=lambda c: c.name)
        ]
        check_part = _checks_part(checks)
        parts = [p for p in (mat, fresh, check_part) if p is not None]
        status = max((p.status for p in parts), key=lambda s: _RANK[s])
        if status == AssetHealthStatus.HEALTHY:
            reason = "; ".join(p.reason for p in parts)
        else:
            reason = "; ".join(p.reason for p in parts if p.status == status)
        result.append(
            AssetHealth(
                asset_key=key.to_user_string(),
                status=status,
                reason=reason,
                materialization=mat,
                freshness=fresh,
                checks=check_part,
                last_materialized_at=last_at,
                check_results=checks,
            )
        )
    return result
