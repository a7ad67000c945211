"""Dagster- and boto3-backed implementations of what the Dagster-free deciding code reads.

- :class:`InstanceFacts`: Dagster's history for the ``etl_component`` and ``daemon`` health checks
  (:class:`~healthmon_dagster.health.context.DagsterFacts`), from a ``DagsterInstance``.
- :func:`asset_facts` / :func:`get_asset_health`: the per-asset rollup's inputs from the instance and
  the definitions, and the rollup itself (:mod:`healthmon_dagster.health.asset_health`).
"""

from collections.abc import Iterable, Sequence
from datetime import UTC, datetime
from typing import Any

import dagster as dg

from healthmon_dagster.enums import CheckSeverity, QualityStatus
from healthmon_dagster.health import asset_health
from healthmon_dagster.health.asset_health import (
    AssetFacts,
    AssetHealth,
    CheckExecution,
    CheckExecutionFacts,
    FreshnessFacts,
    FreshnessState,
    MaterializationFacts,
    RunState,
)
from healthmon_dagster.health.context import DaemonHeartbeat, FinishedRun, StepTiming
from healthmon_dagster.quality.result import loads_needed

_RUN_STATE = {
    dg.DagsterRunStatus.SUCCESS: RunState.SUCCEEDED,
    dg.DagsterRunStatus.FAILURE: RunState.FAILED,
    dg.DagsterRunStatus.CANCELED: RunState.CANCELED,
    dg.DagsterRunStatus.QUEUED: RunState.ACTIVE,
    dg.DagsterRunStatus.NOT_STARTED: RunState.ACTIVE,
    dg.DagsterRunStatus.STARTING: RunState.ACTIVE,
    dg.DagsterRunStatus.STARTED: RunState.ACTIVE,
    dg.DagsterRunStatus.CANCELING: RunState.ACTIVE,
}


class InstanceFacts:
    """:class:`~healthmon_dagster.health.context.DagsterFacts` read from a ``DagsterInstance``
    (public APIs only)."""

    def __init__(self, instance: dg.DagsterInstance) -> None:
        self.instance = instance

    def last_materialization_time(self, asset_key: str) -> float | None:
        event = self.instance.get_latest_materialization_event(dg.AssetKey(asset_key.split("/")))
        return None if event is None else float(event.timestamp)

    def finished_runs(self, job_name: str, limit: int) -> list[FinishedRun]:
        finished = [dg.DagsterRunStatus.SUCCESS, dg.DagsterRunStatus.FAILURE]
        records = self.instance.get_run_records(
            filters=dg.RunsFilter(job_name=job_name, statuses=finished), limit=limit
        )
        return [
            FinishedRun(r.dagster_run.run_id, r.dagster_run.status == dg.DagsterRunStatus.SUCCESS)
            for r in records
        ]

    def step_timings(self, run_id: str) -> list[StepTiming]:
        return [
            StepTiming(s.step_key, s.start_time, s.end_time)
            for s in self.instance.get_run_step_stats(run_id)
        ]

    def daemon_heartbeats(self, daemon_types: Sequence[str] | None) -> dict[str, DaemonHeartbeat]:
        statuses = self.instance.get_daemon_statuses(list(daemon_types) if daemon_types else None)
        return {
            daemon_type: DaemonHeartbeat(
                bool(status.healthy),
                None if status.last_heartbeat is None else status.last_heartbeat.timestamp,
            )
            for daemon_type, status in statuses.items()
        }


def _run_state(instance: dg.DagsterInstance, run_id: str | None) -> RunState | None:
    if not run_id:
        return None
    run = instance.get_run_by_id(run_id)
    return None if run is None else _RUN_STATE.get(run.status, RunState.OTHER)


def _materialization(instance: dg.DagsterInstance, record: Any) -> MaterializationFacts:
    entry = record.asset_entry if record is not None else None
    if entry is None:
        return MaterializationFacts()
    last = entry.last_materialization
    # The run that last planned the asset: storages that track planned events say so directly; the
    # default (run-sharded SQLite) one keeps it as the entry's last_run_id.
    planned_run = entry.last_planned_materialization_run_id or entry.last_run_id
    needs_state = planned_run is not None and (last is None or planned_run != last.run_id)
    return MaterializationFacts(
        last_materialized_at=datetime.fromtimestamp(last.timestamp, UTC) if last else None,
        last_materialization_run_id=last.run_id if last is not None else None,
        planned_run_id=planned_run,
        planned_run_state=_run_state(instance, planned_run) if needs_state else None,
    )


def _freshness(
    instance: dg.DagsterInstance, key: dg.AssetKey, policy: Any
) -> FreshnessFacts | None:
    if policy is None:
        return None
    fail_window = getattr(policy, "fail_window", None)
    if fail_window is not None:
        warn_window = getattr(policy, "warn_window", None)
        return FreshnessFacts(
            fail_window=fail_window.to_timedelta(),
            warn_window=warn_window.to_timedelta() if warn_window is not None else None,
        )
    record = instance.get_freshness_state_records([key]).get(key)
    if record is None:
        return FreshnessFacts()
    state = str(getattr(record.freshness_state, "value", record.freshness_state))
    if state not in FreshnessState.__members__:  # e.g. UNKNOWN, or a state of a later Dagster
        return FreshnessFacts()
    return FreshnessFacts(daemon_state=FreshnessState(state), daemon_updated_at=record.updated_at)


def _metadata_value(evaluation: Any, name: str) -> Any:
    entry = (getattr(evaluation, "metadata", None) or {}).get(name)
    return getattr(entry, "value", entry)


def _loads_needed(evaluation: Any) -> int | None:
    names = ("loads_needed", "n_history", "min_history")
    return loads_needed({name: _metadata_value(evaluation, name) for name in names})


def _check(instance: dg.DagsterInstance, key: dg.AssetCheckKey, record: Any) -> CheckExecutionFacts:
    if record is None:
        return CheckExecutionFacts(key.name)
    status = CheckExecution(str(record.status.value))
    evaluation = None
    if status in (CheckExecution.FAILED, CheckExecution.SUCCEEDED) and record.event is not None:
        evaluation = record.event.asset_check_evaluation
    # A check that lacks the history to judge passes with metadata status insufficient_history.
    learning = (
        status == CheckExecution.SUCCEEDED
        and _metadata_value(evaluation, "status") == QualityStatus.INSUFFICIENT_HISTORY.value
    )
    severity = getattr(evaluation, "severity", dg.AssetCheckSeverity.ERROR)
    return CheckExecutionFacts(
        name=key.name,
        status=status,
        run_id=record.run_id,
        evaluated_at=datetime.fromtimestamp(record.create_timestamp, UTC),
        severity=CheckSeverity.WARN
        if severity == dg.AssetCheckSeverity.WARN
        else CheckSeverity.ERROR,
        description=getattr(evaluation, "description", None)
        if status == CheckExecution.FAILED
        else None,
        run_state=_run_state(instance, record.run_id) if status == CheckExecution.PLANNED else None,
        learning=learning,
        loads_needed=_loads_needed(evaluation) if learning else None,
    )


def asset_facts(
    instance: dg.DagsterInstance,
    defs: dg.Definitions,
    asset_keys: Iterable[dg.AssetKey] | None = None,
) -> list[AssetFacts]:
    """What the rollup needs of every materializable asset of ``defs`` (or of ``asset_keys``).

    External assets (the ``health/<component>`` assets) are left out by default: they are never
    materialized, and the component status of the health store already reports them.
    """
    specs = {spec.key: spec for spec in defs.resolve_all_asset_specs()}
    graph = defs.resolve_asset_graph()
    default = [k for k in specs if graph.get(k).is_materializable]
    keys = sorted(
        asset_keys if asset_keys is not None else default, key=lambda k: k.to_user_string()
    )
    check_keys_by_asset: dict[dg.AssetKey, list[dg.AssetCheckKey]] = {}
    for ck in graph.asset_check_keys:
        check_keys_by_asset.setdefault(ck.asset_key, []).append(ck)
    all_check_keys = [ck for k in keys for ck in check_keys_by_asset.get(k, [])]
    check_records = (
        instance.event_log_storage.get_latest_asset_check_execution_by_key(all_check_keys)
        if all_check_keys
        else {}
    )
    records = {r.asset_entry.asset_key: r for r in instance.get_asset_records(list(keys))}
    out: list[AssetFacts] = []
    for key in keys:
        spec = specs.get(key)
        out.append(
            AssetFacts(
                asset_key=key.to_user_string(),
                materialization=_materialization(instance, records.get(key)),
                freshness=_freshness(
                    instance, key, spec.freshness_policy if spec is not None else None
                ),
                checks=[
                    _check(instance, ck, check_records.get(ck))
                    for ck in check_keys_by_asset.get(key, [])
                ],
            )
        )
    return out


def get_asset_health(
    instance: dg.DagsterInstance,
    defs: dg.Definitions,
    now: datetime | None = None,
    asset_keys: Iterable[dg.AssetKey] | None = None,
) -> list[AssetHealth]:
    """The health rollup of every materializable asset of ``defs`` (or of ``asset_keys``), by asset
    key."""
    return asset_health.get_asset_health(asset_facts(instance, defs, asset_keys), now)
