"""The self-healing sensor: bounded re-runs of the pipeline's assets after a transient failure.

Who retries what (one mechanism per failure, never two stacked):

- a step that fails on a transient error is retried inside its run by its ``RetryPolicy``;
- a run whose worker died is re-executed by Dagster's ``run_retries`` (a failed run tagged
  ``dagster/will_retry``): once the re-execution is launched (``dagster/auto_retry_run_id``) this
  sensor leaves the run alone (rule ``coordination:run_retries``): the re-execution's success heals
  it, its failure is judged in turn. Until then it waits (rule ``coordination:run_retries_pending``):
  at most :data:`RETRY_LAUNCH_GRACE` for the launch, and at most :data:`RETRY_TAG_GRACE` for the
  ``dagster/will_retry`` tag itself (Dagster stores the failure first and the tag in a second
  write) when Dagster's own decision says the run will be retried. A re-execution that never comes
  leaves the failure to this sensor;
- a run of a landing file's attempt (tag ``healthmon/file_attempt``) is the landing sensor's: it
  requests the file's next attempt with its own backoff, or marks the file stuck (rule
  ``coordination:file_attempt``); so is a catch-up run (tag ``healthmon/catch_up``, rule
  ``coordination:catch_up``), and no stale asset the catch-up backlog covers is re-run while there
  is a backlog;
- every other failed run of the pipeline (a manual run, ``dagster asset materialize``, a re-run of
  this sensor) and stale assets are this sensor's: see ``healthmon_dagster.incidents.selfheal``.

A failure left to another mechanism heals its incident like a re-run of this sensor: when the run it
waits for (the landing sensor's next attempt of the file or catch-up run, Dagster's re-execution)
completes the assets with their checks passing, the incident moves to monitoring and resolves
after the quiet period. A landing file's failure of raw/patients heals only by a load of that file.

Each tick: record the outcome of re-runs that ended (a success with passing checks moves the incident
to monitoring), close breakers of assets that materialized again, resolve incidents quiet for the
quiet period, then decide about failed runs of the look-back window not decided yet and stale
assets, and record the landing sensor's runs that healed a failure left to it.
"""

import threading
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import dagster as dg
import sqlalchemy as sa
from sqlalchemy import exc as sa_exc
from sqlalchemy.engine import Engine

from healthmon_dagster.config import ConfigError, HealthConfiguration
from healthmon_dagster.config.models import SensorIntervals
from healthmon_dagster.defs.incidents.hooks import run_failed_at
from healthmon_dagster.defs.pipeline.jobs import patients_etl_job
from healthmon_dagster.defs.resources import (
    HealthmonConfigResource,
    LandingResource,
    WarehouseResource,
)
from healthmon_dagster.enums import IncidentEventKind
from healthmon_dagster.etl import catalog
from healthmon_dagster.etl.attempts import unavailable_since, with_unavailable
from healthmon_dagster.etl.catchup import downstream_backlog
from healthmon_dagster.etl.failures import (
    LANDING,
    UNCLASSIFIED,
    WAREHOUSE,
    Classification,
    classify_run_failure,
    from_step_metadata,
)
from healthmon_dagster.incidents import selfheal as sh
from healthmon_dagster.incidents.announce import announce
from healthmon_dagster.incidents.detect import classified_failure
from healthmon_dagster.incidents.records import OPEN, Failure, add_event, open_or_absorb
from healthmon_dagster.incidents.rootkey import root_key_for
from healthmon_dagster.quality.kinds.landing_file import LANDING_FILES_ARE_NOT_STUCK as STUCK_CHECK
from healthmon_dagster.run_tags import (
    AUTO_RETRY_RUN_ID_TAG,
    CATCH_UP_TAG,
    FAILURE_REASON_TAG,
    FILE_ATTEMPT_TAG,
    FILE_KEY_TAG,
    PARENT_RUN_ID_TAG,
    RETRY_NUMBER_TAG,
    SELF_HEAL_TAG,
    STEP_FAILURE_REASON,
    WILL_RETRY_TAG,
)
from healthmon_dagster.store.db import DatabaseUnavailable
from healthmon_dagster.store.errors import error_text
from healthmon_dagster.store.metrics import as_utc, utcnow
from healthmon_dagster.store.tables import incidents, self_heal_attempts

_ASSET_JOB = "__ASSET_JOB"
MAX_FAILED_RUNS_PER_TICK = 100
PIPELINE_KEYS = frozenset(a.key for a in catalog.ASSETS)
# Assets computed by one op: selected together.
_TOGETHER = {
    catalog.STG_PATIENTS.key: {catalog.STG_PATIENTS.key, catalog.STG_PATIENTS_REJECTED.key},
    catalog.STG_PATIENTS_REJECTED.key: {
        catalog.STG_PATIENTS.key,
        catalog.STG_PATIENTS_REJECTED.key,
    },
}
_UPSTREAM = {
    catalog.STG_PATIENTS.key: catalog.RAW_PATIENTS.key,
    catalog.STG_PATIENTS_REJECTED.key: catalog.RAW_PATIENTS.key,
    catalog.CORE_DIM_PATIENT.key: catalog.STG_PATIENTS.key,
}
# The assets a catch-up run of the landing sensor re-runs (defs/pipeline/sensors.py DOWNSTREAM).
CATCH_UP_ASSETS = frozenset(
    {catalog.STG_PATIENTS.key, catalog.STG_PATIENTS_REJECTED.key, catalog.CORE_DIM_PATIENT.key}
)
_LANDING_RETRIES = frozenset({"coordination:file_attempt", "coordination:catch_up"})
RETRY_TAG_GRACE = timedelta(minutes=2)
"""How long after a failed run ended its missing ``dagster/will_retry`` tag is waited for (Dagster
writes it right after the failure; a run_retries daemon that never writes it must not hold the
failure forever)."""
RETRY_LAUNCH_GRACE = timedelta(minutes=10)
"""How long a failed run that Dagster marked for ``run_retries`` waits for its re-execution to be
launched before this sensor decides about it (the daemon that launches retries may be down)."""
_DB_ERRORS = (sa_exc.DBAPIError, DatabaseUnavailable)


def _key(asset_key: dg.AssetKey) -> str:
    return "/".join(asset_key.path)


def _ended_at(record: dg.RunRecord) -> datetime:
    ended = record.end_time if record.end_time is not None else record.update_timestamp.timestamp()
    return datetime.fromtimestamp(ended, UTC)


_RAW_OP = "__".join(catalog.RAW_PATIENTS.path)


def file_of(run: dg.DagsterRun) -> str | None:
    """The landing file a run loads into raw/patients (its key; None: every pending file, or no
    raw load): the landing sensor's tag, else the run configuration a person gave."""
    tagged = run.tags.get(FILE_KEY_TAG)
    if tagged:
        return tagged
    op: Any = (run.run_config or {}).get("ops", {})
    config = op.get(_RAW_OP, {}).get("config", {}) if isinstance(op, dict) else {}
    key = config.get("file_key") if isinstance(config, dict) else None
    return str(key) if key else None


def _scoped_file(asset: str, run: dg.DagsterRun, left: "Unfinished") -> str | None:
    """The file a failure of ``asset`` in ``run`` is of: a run that did not load its one file
    into raw/patients is healed only by a load of that file; stg and core process whatever raw
    holds, and a raw load that happened but whose checks did not run is healed by the checks'
    next evaluation, so any later run does (None)."""
    if asset != catalog.RAW_PATIENTS.key or asset not in left.not_materialized:
        return None
    return file_of(run)


# --- What a failed run left undone, and why --------------------------------------------------------


@dataclass(frozen=True)
class Unfinished:
    """The pipeline assets a failed run planned but did not materialize, and those whose checks
    were planned but never evaluated (the check step itself failed)."""

    not_materialized: frozenset[str]
    check_not_evaluated: frozenset[str]

    @property
    def assets(self) -> frozenset[str]:
        return self.not_materialized | self.check_not_evaluated


def unfinished(instance: dg.DagsterInstance, run_id: str) -> Unfinished:
    """Planned minus materialized (OSS records no "failed to materialize"), from the run's log."""
    found = run_assets(instance, run_id)
    return Unfinished(found.not_materialized, found.check_not_evaluated - found.not_materialized)


@dataclass(frozen=True)
class RunAssets:
    """What a run did to the pipeline's assets: materialized, left undone (planned minus
    materialized), whose ERROR check failed, whose checks were planned and never evaluated."""

    materialized: frozenset[str]
    not_materialized: frozenset[str]
    failed_checks: frozenset[str]
    check_not_evaluated: frozenset[str]
    checked: frozenset[str] = frozenset()  # assets whose checks the run evaluated
    files: frozenset[str] = frozenset()  # the landing files its raw/patients load loaded
    failed_check_names: frozenset[tuple[str, str]] = frozenset()  # (asset, check) failed ERROR
    unevaluated: frozenset[tuple[str, str]] = frozenset()  # (asset, check) planned, not evaluated

    @property
    def healed(self) -> frozenset[str]:
        """Materialized with every check passing (a WARN never blocks)."""
        return self.materialized - self.failed_checks - self.check_not_evaluated

    @property
    def completed(self) -> frozenset[str]:
        """Materialized, or its checks evaluated (a re-execution from the failed step may only
        evaluate the checks of an asset its failed run materialized), with every check passing."""
        return (self.materialized | self.checked) - self.failed_checks - self.check_not_evaluated


def run_assets(instance: dg.DagsterInstance, run_id: str) -> RunAssets:
    t = dg.DagsterEventType
    planned: set[str] = set()
    done: set[str] = set()
    checks_planned: dict[tuple[str, str], str] = {}
    checks_done: set[tuple[str, str]] = set()
    failed: set[str] = set()
    failed_names: set[tuple[str, str]] = set()
    files: set[str] = set()
    kinds = {
        t.ASSET_MATERIALIZATION_PLANNED,
        t.ASSET_MATERIALIZATION,
        t.ASSET_CHECK_EVALUATION_PLANNED,
        t.ASSET_CHECK_EVALUATION,
    }
    for entry in instance.all_logs(run_id, of_type=kinds):
        event = entry.dagster_event
        if event is None:
            continue
        if event.event_type == t.ASSET_MATERIALIZATION_PLANNED and event.asset_key:
            planned.add(_key(event.asset_key))
        elif event.event_type == t.ASSET_MATERIALIZATION and event.asset_key:
            done.add(_key(event.asset_key))
            if _key(event.asset_key) == catalog.RAW_PATIENTS.key:
                files.update(_loaded_files(event))
        else:
            data = event.event_specific_data
            asset = _key(data.asset_key)  # type: ignore[union-attr]
            check = (asset, str(data.check_name))  # type: ignore[union-attr]
            if event.event_type == t.ASSET_CHECK_EVALUATION_PLANNED:
                checks_planned[check] = asset
            else:
                checks_done.add(check)
                if (
                    isinstance(data, dg.AssetCheckEvaluation)
                    and not data.passed
                    and data.severity == dg.AssetCheckSeverity.ERROR
                ):
                    failed_names.add(check)
                    # The stuck-files check judges the files other runs left stuck, not this run.
                    if check[1] != STUCK_CHECK:
                        failed.add(asset)
    missing = {a for c, a in checks_planned.items() if c not in checks_done}
    return RunAssets(
        frozenset(done & PIPELINE_KEYS),
        frozenset((planned - done) & PIPELINE_KEYS),
        frozenset(failed & PIPELINE_KEYS),
        frozenset(missing & PIPELINE_KEYS),
        frozenset({a for a, _ in checks_done} & PIPELINE_KEYS),
        frozenset(files),
        frozenset(failed_names),
        frozenset(c for c in checks_planned if c not in checks_done),
    )


def _loaded_files(event: dg.DagsterEvent) -> list[str]:
    """The landing files a raw/patients materialization loaded (its ``file_keys`` metadata)."""
    materialization = getattr(event.event_specific_data, "materialization", None)
    value = (materialization.metadata if materialization else {}).get("file_keys")
    text = str(getattr(value, "value", value) or "")
    return [k.strip() for k in text.split(",") if k.strip()]


def _step_classification(instance: dg.DagsterInstance, run_id: str) -> Classification:
    """The classification an ETL step attached to its failure (etl.failures' rule); a failure no
    step classified (a bug, a check's own error) is not transient."""
    for entry in instance.all_logs(run_id, of_type=dg.DagsterEventType.STEP_FAILURE):
        event = entry.dagster_event
        if event is None:
            continue
        user = event.step_failure_data.user_failure_data
        meta = {k: v.value for k, v in (user.metadata if user else {}).items()}
        found = from_step_metadata(meta, f"step_failure:{event.step_key}")
        if found is not None:
            return found
    return UNCLASSIFIED


def classify_run(instance: dg.DagsterInstance, run: dg.DagsterRun) -> Classification:
    reason = run.tags.get(FAILURE_REASON_TAG)
    if reason == STEP_FAILURE_REASON:
        return _step_classification(instance, run.run_id)
    return classify_run_failure(reason)


def _will_be_retried(instance: dg.DagsterInstance, run: dg.DagsterRun) -> bool:
    """Dagster's own decision whether ``run_retries`` re-executes the failed run (the one it
    writes as ``dagster/will_retry``), for a run whose tag is not written yet."""
    if not instance.run_retries_enabled:
        return False
    try:  # Dagster's private module: if it moves, fall back to the instance's settings
        from dagster._core.events import RunFailureReason
        from dagster._core.execution.retries import auto_reexecution_should_retry_run
    except ImportError:  # pragma: no cover (depends on the Dagster version)
        return instance.run_retries_max_retries > 0
    reason = run.tags.get(FAILURE_REASON_TAG)
    try:
        why = RunFailureReason(reason) if reason else None
    except ValueError:
        why = None
    return bool(auto_reexecution_should_retry_run(instance, run, why))


def coordination(
    run: dg.DagsterRun,
    instance: dg.DagsterInstance | None = None,
    ended: datetime | None = None,
    now: datetime | None = None,
) -> sh.Decision | None:
    """A failed run another mechanism retries: not this sensor's (a SKIP), or not yet known
    whether it is (a WAIT)."""
    tag = run.tags.get(WILL_RETRY_TAG)
    waited = now - ended if now is not None and ended is not None else timedelta(0)
    if tag == "true" and AUTO_RETRY_RUN_ID_TAG in run.tags:
        return sh.Decision(
            sh.Action.SKIP,
            "coordination:run_retries",
            f"run {run.run_id} is re-executed by Dagster's run_retries (run "
            f"{run.tags[AUTO_RETRY_RUN_ID_TAG]}); its re-execution heals it, or is judged if it "
            "fails",
        )
    if tag == "true" and waited < RETRY_LAUNCH_GRACE:
        return sh.Decision(
            sh.Action.WAIT,
            "coordination:run_retries_pending",
            f"run {run.run_id} failed and Dagster's run_retries will re-execute it (its "
            "re-execution is not launched yet)",
        )
    # Marked for a re-execution that never came (the daemon that launches them is down): the
    # failure is decided as if run_retries were off.
    if FILE_ATTEMPT_TAG in run.tags:
        return sh.Decision(
            sh.Action.SKIP,
            "coordination:file_attempt",
            f"run {run.run_id} is attempt {run.tags[FILE_ATTEMPT_TAG]} of a landing file: the "
            "landing sensor retries it with its backoff, or marks the file stuck",
        )
    if CATCH_UP_TAG in run.tags:
        return sh.Decision(
            sh.Action.SKIP,
            "coordination:catch_up",
            f"run {run.run_id} is a catch-up run of backlog {run.tags[CATCH_UP_TAG]}: the landing "
            "sensor retries it with its backoff",
        )
    if (
        tag is None
        and instance is not None
        and waited < RETRY_TAG_GRACE
        and _will_be_retried(instance, run)
    ):
        return sh.Decision(
            sh.Action.WAIT,
            "coordination:run_retries_pending",
            f"run {run.run_id} failed and Dagster's run_retries will re-execute it (its "
            "dagster/will_retry tag is not written yet)",
        )
    return None


def checks_passed(instance: dg.DagsterInstance, run_id: str) -> bool:
    """Every check evaluated in the run passed (a WARN counts as passed: it never blocks)."""
    return not run_assets(instance, run_id).failed_checks


# --- Incidents -----------------------------------------------------------------------------------------


def heal_failure(
    assets: Sequence[str],
    why: Classification,
    title: str,
    details: dict[str, object],
    occurred_at: datetime | None = None,
) -> Failure:
    """The failure as the failure hooks describe it (incidents/detect.py: the resource it blames,
    severity, component), so that both land on one root key; ``occurred_at``: when it happened
    (a failed run's end), now when unknown."""
    return classified_failure(
        title=title,
        asset_keys=assets,
        found=why,
        occurred_at=occurred_at or utcnow(),
        details=details,
    )


def open_incident(engine: Engine, failure: Failure) -> int | None:
    """The open incident of the failure's root key, if any."""
    key = root_key_for(engine, failure)
    with engine.connect() as conn:
        found = conn.execute(
            sa.select(incidents.c.incident_id).where(incidents.c.root_key == key, OPEN)
        ).scalar()
    return None if found is None else int(found)


def incident_for(engine: Engine, failure: Failure) -> int:
    """The open incident of the failure's root key (the failure hooks or the run-failure sensor
    usually opened it); opened here when none is."""
    found = open_incident(engine, failure)
    if found is not None:
        return found
    return open_or_absorb(engine, root_key_for(engine, failure), failure, sh.ACTOR).incident_id


def _attach(engine: Engine, run_key: str, incident_id: int) -> None:
    with engine.begin() as conn:
        conn.execute(
            self_heal_attempts.update()
            .where(self_heal_attempts.c.run_key == run_key)
            .values(incident_id=incident_id)
        )


# --- The tick --------------------------------------------------------------------------------------------


@dataclass
class Tick:
    """What one tick did, for its log and skip message."""

    requests: list[dg.RunRequest]
    probe: "Probe | None" = None
    outcomes: int = 0
    decided: int = 0
    waiting: int = 0
    resolved: int = 0

    def summary(self) -> str:
        return (
            f"{len(self.requests)} re-run(s) requested, {self.outcomes} outcome(s) recorded, "
            f"{self.decided} decision(s) recorded, {self.waiting} waiting, "
            f"{self.resolved} incident(s) resolved"
        )


def _request(run_key: str, assets: Sequence[str], run_config: dict[str, object]) -> dg.RunRequest:
    selection: set[str] = set()
    for a in assets:
        selection |= _TOGETHER.get(a, {a})
    config = run_config if catalog.RAW_PATIENTS.key in selection else {}
    return dg.RunRequest(
        run_key=run_key,
        asset_selection=[dg.AssetKey(a.split("/")) for a in sorted(selection)],
        run_config=config,
        tags={SELF_HEAL_TAG: run_key},
    )


def _runs_by_key(
    instance: dg.DagsterInstance, keys: Sequence[str]
) -> dict[str, list[dg.RunRecord]]:
    found: dict[str, list[dg.RunRecord]] = {}
    for i in range(0, len(keys), 100):
        chunk = list(keys[i : i + 100])
        for record in instance.get_run_records(filters=dg.RunsFilter(tags={SELF_HEAL_TAG: chunk})):
            found.setdefault(record.dagster_run.tags[SELF_HEAL_TAG], []).append(record)
    return found


def _outcome_of(
    instance: dg.DagsterInstance, records: Sequence[dg.RunRecord], now: datetime
) -> str:
    """succeeded, failed, in_flight or missing (never launched). A failed run that Dagster's
    ``run_retries`` re-executes (its ``dagster/will_retry`` tag, or its decision while the tag is
    not written yet) is in flight: its re-execution, which inherits the re-run's tag, decides."""
    if not records:
        return "missing"
    if any(r.dagster_run.status == dg.DagsterRunStatus.SUCCESS for r in records):
        return "succeeded"
    if any(not r.dagster_run.is_finished for r in records):
        return "in_flight"
    record = max(records, key=lambda r: r.create_timestamp)
    last, waited = record.dagster_run, now - _ended_at(record)
    tag = last.tags.get(WILL_RETRY_TAG)
    if tag == "true" and waited < RETRY_LAUNCH_GRACE:
        return "in_flight"
    if tag is None and waited < RETRY_TAG_GRACE and _will_be_retried(instance, last):
        return "in_flight"
    return "failed"


def _lost_config(instance: dg.DagsterInstance, rerun: sh.Requested) -> dict[str, object] | None:
    """The run configuration of a re-run whose request was lost: its failed run's (the landing
    file it loads); None when that run is gone and the re-run loads raw/patients (an empty
    configuration would load every unloaded landing file)."""
    source = instance.get_run_by_id(rerun.source_run_id) if rerun.source_run_id else None
    if source is not None:
        return dict(source.run_config)
    selection: set[str] = set()
    for a in rerun.asset_keys:
        selection |= _TOGETHER.get(a, {a})
    return None if catalog.RAW_PATIENTS.key in selection else {}


LOST = Classification("rerun_lost", False, "rerun_lost:failed_run_gone")


def record_outcomes(
    context: dg.SensorEvaluationContext,
    engine: Engine,
    policy: sh.SelfHealPolicy,
    tick: Tick,
    latest: Mapping[str, datetime] | None = None,
    started: datetime | None = None,
) -> None:
    """Record the outcome of each re-run that ended; request again each one never launched that an
    earlier tick requested (``started``: when this tick started; a re-run requested since is
    another evaluation's, running at the same time, whose result is not submitted yet)."""
    requested = sh.requested_reruns(engine)
    runs = _runs_by_key(context.instance, [r.run_key for r in requested])
    now = utcnow()
    for rerun in requested:
        records = runs.get(rerun.run_key, [])
        state = _outcome_of(context.instance, records, now)
        if state == "missing" and started is not None and rerun.requested_at >= started:
            continue
        if state == "missing":
            # Requested but never launched (the tick's result was lost): request it again with its
            # failed run's configuration; Dagster launches one run per run key.
            config = _lost_config(context.instance, rerun)
            if config is not None:
                tick.requests.append(_request(rerun.run_key, rerun.asset_keys, config))
                continue
            if sh.record_rerun_outcome(engine, rerun.run_key, False, None, policy, now, LOST):
                tick.outcomes += 1
                if rerun.incident_id is not None:
                    add_event(
                        engine,
                        rerun.incident_id,
                        IncidentEventKind.SELF_HEAL_OUTCOME,
                        sh.ACTOR,
                        f"self-heal re-run {rerun.run_key} was never launched and its failed run "
                        "is gone (its configuration with it): not requested again",
                        {"run_key": rerun.run_key, "succeeded": False, "rule": LOST.rule},
                        now,
                    )
            continue
        if state == "in_flight":
            continue
        last = max(records, key=lambda r: r.create_timestamp)
        run = last.dagster_run
        did = run_assets(context.instance, run.run_id)
        ok = state == "succeeded" and not did.failed_checks
        why = (
            None
            if ok
            else (
                classify_run(context.instance, run)
                if state == "failed"
                else Classification("check_failed", False, "blocking_check_failed")
            )
        )
        healed = did.healed & set(rerun.asset_keys)
        if not sh.record_rerun_outcome(
            engine,
            rerun.run_key,
            ok,
            run.run_id,
            policy,
            now,
            why,
            ended_at=_ended_at(last),
            healed=healed,
            materialized=latest,
        ):
            continue
        tick.outcomes += 1
        if rerun.incident_id is None:
            continue
        partly = sorted(healed) if not ok else []
        text = (
            f"self-heal re-run {rerun.run_key} (run {run.run_id}) succeeded and its checks passed"
            if ok
            else f"self-heal re-run {rerun.run_key} (run {run.run_id}) failed: "
            f"{why.error_class if why else 'unknown'} (rule {why.rule if why else '-'})"
            + (f"; healed: {', '.join(partly)}" if partly else "")
        )
        add_event(
            engine,
            rerun.incident_id,
            IncidentEventKind.SELF_HEAL_OUTCOME,
            sh.ACTOR,
            text,
            {
                "run_key": rerun.run_key,
                "run_id": run.run_id,
                "succeeded": ok,
                "assets": list(rerun.asset_keys),
                "healed": sorted(healed),
                "rule": why.rule if why else "rerun_succeeded",
            },
            now,
        )
        if ok:
            sh.mark_recovering(
                engine,
                rerun.incident_id,
                rerun.run_key,
                now,
                text=f"self-heal re-run {rerun.run_key} (run {run.run_id}) succeeded and its "
                "checks passed",
                materialized=latest,
            )


def _recovery_runs(instance: dg.DagsterInstance, since: datetime) -> list[dg.RunRecord]:
    """Finished runs of the pipeline (either job) updated since ``since``, oldest first: the
    landing sensor's attempts and catch-up runs, Dagster's re-executions, a person's runs (a
    failed one may still have loaded a file)."""
    records: list[dg.RunRecord] = []
    done = [dg.DagsterRunStatus.SUCCESS, dg.DagsterRunStatus.FAILURE]
    for job in (catalog.ETL_JOB, _ASSET_JOB):
        records += instance.get_run_records(
            filters=dg.RunsFilter(job_name=job, statuses=done, updated_after=since),
            limit=MAX_FAILED_RUNS_PER_TICK,
        )
    return sorted(records, key=lambda r: r.create_timestamp)


def _mechanism(run: dg.DagsterRun) -> str | None:
    if CATCH_UP_TAG in run.tags:
        return "catch_up"
    if FILE_ATTEMPT_TAG in run.tags:
        return "file_attempt"
    return None


def _heals(run: dg.DagsterRun, awaited: sh.Awaited) -> bool:
    """Whether ``run`` can heal what ``awaited`` waits for (it must also have started after the
    failure and completed the asset, :func:`_completes`): a landing file's failure only a run of
    that file (or of every pending file); any other, any run (the one another mechanism
    launched, Dagster's re-execution, a person's)."""
    if awaited.file_key is not None:
        return file_of(run) in (awaited.file_key, None)
    return True


def _completes(done: RunAssets, succeeded: bool, asset: str, awaited: sh.Awaited) -> bool:
    """For a file: the run (even one that failed later on) loaded it (its raw materialization
    names it) with raw's ERROR checks passing. Otherwise, a successful run materialized the asset
    with its checks passing, or, for a failure whose checks were not evaluated, evaluated them
    passing (a re-execution from the failed step may do only that). The stuck-files check judges
    other runs' files: it never holds a heal (:func:`run_assets`)."""
    if awaited.file_key is not None:
        unchecked = {c for a, c in done.unevaluated if a == asset} - {STUCK_CHECK}
        return awaited.file_key in done.files and asset not in done.failed_checks and not unchecked
    if not succeeded:
        return False
    if awaited.reason == sh.Reason.CHECK_NOT_EVALUATED:
        return asset in done.completed
    return asset in done.healed


def _parent_of(run: dg.DagsterRun) -> str | None:
    return run.parent_run_id or run.tags.get(PARENT_RUN_ID_TAG)


def _healer(run: dg.DagsterRun) -> str:
    """What kind of run healed (``recovered:<this>``)."""
    if _parent_of(run) is not None and RETRY_NUMBER_TAG in run.tags:
        return "run_retries"
    return _mechanism(run) or "run"


def _started_at(record: dg.RunRecord) -> datetime:
    started = record.start_time if record.start_time is not None else record.create_timestamp
    if isinstance(started, datetime):
        return started.astimezone(UTC)
    return datetime.fromtimestamp(started, UTC)


def record_recoveries(
    instance: dg.DagsterInstance,
    engine: Engine,
    latest: Mapping[str, datetime],
    tick: Tick,
) -> None:
    """A failure this sensor did not re-run heals when the run it waits for (:func:`_heals`),
    started after that failure's run ended, completes its asset (:func:`_completes`): a
    ``recovered:<kind>`` row per (asset, file), a timeline entry naming the run, and the incident
    to monitoring once nothing of it is broken (one already in monitoring stays there, its quiet
    period counted from this run)."""
    pending = sh.pending_recoveries(engine)
    if not pending:
        return
    failed_at: dict[str, datetime] = {}  # the failed run's end: a run that heals starts after it
    for incident in pending:
        for awaited in incident.assets.values():
            key = awaited.source_run_id or ""
            if key not in failed_at:
                failed = instance.get_run_record_by_id(key) if key else None
                failed_at[key] = _ended_at(failed) if failed else incident.last_failure_at
    runs = _recovery_runs(instance, min(failed_at.values()))
    if not runs:
        return
    found: dict[str, RunAssets] = {}
    now = utcnow()
    for incident in pending:
        left = dict(incident.assets)
        healers: list[str] = []
        for record in runs:
            if not left:
                break
            run = record.dagster_run
            started = _started_at(record)
            candidates = [
                (scope, awaited)
                for scope, awaited in left.items()
                if _heals(run, awaited) and started > failed_at[awaited.source_run_id or ""]
            ]
            if not candidates:
                continue
            if run.run_id not in found:
                found[run.run_id] = run_assets(instance, run.run_id)
            ok = run.status == dg.DagsterRunStatus.SUCCESS
            healed = sorted(
                (s for s, w in candidates if _completes(found[run.run_id], ok, s[0], w)),
                key=sh.scope_text,
            )
            if not healed:
                continue
            kind = _healer(run)
            recorded = sh.record_recovery(
                engine,
                incident.incident_id,
                {scope: incident.assets[scope].attempt for scope in healed},
                kind,
                run.run_id,
                _ended_at(record),
                now,
            )
            for scope in healed:
                left.pop(scope, None)
            if not recorded:
                continue
            what = sh.RECOVERY_WORDS.get(kind, kind)
            add_event(
                engine,
                incident.incident_id,
                IncidentEventKind.SELF_HEAL_OUTCOME,
                sh.ACTOR,
                f"{what} (run {run.run_id}) completed "
                f"{', '.join(sh.scope_text(r) for r in recorded)} with its checks passing",
                {
                    "run_id": run.run_id,
                    "succeeded": True,
                    "assets": sorted({a for a, _ in recorded}),
                    "rule": f"{sh.RECOVERED_PREFIX}{kind}",
                },
                now,
            )
            tick.outcomes += 1
            healers.append(f"{what} (run {run.run_id})")
        if healers:
            sh.mark_recovering(
                engine,
                incident.incident_id,
                "",
                now,
                text=f"{'; '.join(healers)} succeeded and its checks passed",
                materialized=latest,
            )


def _latest_materializations(instance: dg.DagsterInstance) -> dict[str, datetime]:
    latest: dict[str, datetime] = {}
    for key in sorted(PIPELINE_KEYS):
        entry = instance.get_latest_materialization_event(dg.AssetKey(key.split("/")))
        if entry is not None:
            latest[key] = datetime.fromtimestamp(entry.timestamp, UTC)
    return latest


def _failed_runs(instance: dg.DagsterInstance, since: datetime) -> list[dg.RunRecord]:
    records: list[dg.RunRecord] = []
    for job in (catalog.ETL_JOB, _ASSET_JOB):
        records += instance.get_run_records(
            filters=dg.RunsFilter(
                job_name=job, statuses=[dg.DagsterRunStatus.FAILURE], updated_after=since
            ),
            limit=MAX_FAILED_RUNS_PER_TICK,
        )
    return sorted(records, key=lambda r: r.create_timestamp)


def _store(
    engine: Engine,
    source: str,
    decisions: dict[str, sh.Decision],
    reasons: dict[str, sh.Reason],
    why: Classification,
    policy: sh.SelfHealPolicy,
    now: datetime,
    materialized: Mapping[str, datetime] | None = None,
    files: Mapping[str, str | None] | None = None,
) -> list[tuple[str, list[str], sh.Decision]]:
    """Claim the recorded decisions (re-runs together, each other decision on its own; ``files``:
    the landing file each asset's failure is of); the claims won: (run key, assets, decision)."""
    hist = sh.histories(engine, decisions, policy, now, materialized)
    status = {
        sh.Action.RERUN: sh.Status.REQUESTED,
        sh.Action.SKIP: sh.Status.SKIPPED,
        sh.Action.ESCALATE: sh.Status.ESCALATED,
    }
    # One claim (and one timeline entry) per action and rule: a run's assets re-run together.
    groups: dict[tuple[sh.Action, str], list[sh.Planned]] = {}
    for asset, d in decisions.items():
        if d.action == sh.Action.WAIT:
            continue
        groups.setdefault((d.action, d.rule), []).append(
            sh.Planned(
                asset,
                hist[asset].last_attempt + 1,
                status[d.action],
                d.rule,
                reasons[asset],
                why.error_class,
                (files or {}).get(asset),
            )
        )
    won: list[tuple[str, list[str], sh.Decision]] = []
    for planned in groups.values():
        key = sh.claim(engine, planned, source, None, now)
        if key is not None:
            won.append((key, [p.asset_key for p in planned], decisions[planned[0].asset_key]))
    return won


def _record_on_timeline(
    engine: Engine,
    won: Sequence[tuple[str, list[str], sh.Decision]],
    failure: Failure,
    source: str,
    policy: sh.SelfHealPolicy,
    now: datetime,
    cfg: HealthConfiguration | None = None,
) -> None:
    """Each won decision on its incident's timeline, with its rule. A run another mechanism retries
    opens no incident here (its own failure reporting does): its decision joins one already open."""
    if not won:
        return
    if all(d.rule.startswith("coordination:") for _, _, d in won):
        incident_id = open_incident(engine, failure)
        if incident_id is None:
            return
    else:
        incident_id = incident_for(engine, failure)
    for run_key, assets, decision in won:
        _attach(engine, run_key, incident_id)
        add_event(
            engine,
            incident_id,
            IncidentEventKind.SELF_HEAL_ATTEMPT,
            sh.ACTOR,
            decision.text
            if decision.action != sh.Action.RERUN
            else f"self-heal re-run {run_key} requested for {', '.join(assets)} (rule {decision.rule})",
            {
                "action": str(decision.action),
                "rule": decision.rule,
                "assets": assets,
                "run_key": run_key,
                "source": source,
            },
            now,
        )
        if decision.action == sh.Action.ESCALATE:
            raised = sh.escalate(
                engine, incident_id, policy, f"{', '.join(assets)}: {decision.text}", now
            )
            if raised is not None and cfg is not None:
                # Page now: the alert of the new severity fires and its notifications are queued
                # (the alert-evaluation sensor would at its next tick).
                announce(engine, cfg, incident_id, actor=sh.ACTOR.name, now=now)


def decide_failed_run(
    instance: dg.DagsterInstance,
    engine: Engine,
    record: dg.RunRecord,
    policy: sh.SelfHealPolicy,
    latest: dict[str, datetime],
    tick: Tick,
    cfg: HealthConfiguration | None = None,
    answers_again: Callable[[str, datetime | None], bool] | None = None,
) -> None:
    run = record.dagster_run
    left = unfinished(instance, run.run_id)
    decided = {a for _, a in sh.decided_runs(engine, [run.run_id])}
    todo = sorted(left.assets - decided)
    if not todo:
        return
    now = utcnow()
    ended = _ended_at(record)
    why = classify_run(instance, run)
    forced = coordination(run, instance, ended, now)
    if forced is None and run.tags.get(WILL_RETRY_TAG) == "true":
        # run_retries never launched its re-execution (RETRY_LAUNCH_GRACE): this sensor decides,
        # and tells Dagster's daemon not to retry it too, should it come back (read again: the
        # daemon may have launched it during this tick).
        current = instance.get_run_by_id(run.run_id) or run
        forced = coordination(current, instance, ended, now)
        if forced is None:
            instance.add_run_tags(run.run_id, {WILL_RETRY_TAG: "false"})
    if forced is not None and forced.rule in _LANDING_RETRIES and not why.transient:
        # The landing sensor retries only transient failures; a data error is never re-run by
        # anyone, and its decision says so with the rule that classified it.
        forced = None
    files = {a: _scoped_file(a, run, left) for a in todo}
    hist = sh.histories(engine, todo, policy, now, latest)
    decisions: dict[str, sh.Decision] = {}
    for asset in todo:
        if forced is not None:
            decisions[asset] = forced
        elif files[asset] is None and asset in latest and latest[asset] > ended:
            decisions[asset] = sh.Decision(
                sh.Action.SKIP,
                "materialized_since",
                f"{asset} materialized again after run {run.run_id} failed: nothing to heal",
            )
        else:
            decisions[asset] = sh.decide(asset, why, hist[asset], policy, now, answers_again)
    # A run's assets are re-run together: while one of them waits (backoff, window, a re-run in
    # flight), the others wait with it, rather than a partial re-run whose checks judge half a load.
    waits = [d for d in decisions.values() if d.action == sh.Action.WAIT]
    if waits:
        decisions = {
            a: waits[0] if d.action == sh.Action.RERUN else d for a, d in decisions.items()
        }
    reasons = {
        a: sh.Reason.FAILED_RUN if a in left.not_materialized else sh.Reason.CHECK_NOT_EVALUATED
        for a in todo
    }
    tick.waiting += sum(d.action == sh.Action.WAIT for d in decisions.values())
    won = _store(engine, run.run_id, decisions, reasons, why, policy, now, latest, files)
    failure = heal_failure(
        todo,
        why,
        f"run {run.run_id} of {run.job_name} failed ({why.error_class})",
        {"run_id": run.run_id, "rule": why.rule},
        occurred_at=run_failed_at(instance, run.run_id),
    )
    _record_on_timeline(engine, won, failure, run.run_id, policy, now, cfg)
    tick.decided += len(won)
    for run_key, assets, decision in won:
        if decision.action == sh.Action.RERUN:
            tick.requests.append(_request(run_key, assets, dict(run.run_config)))


def _catch_up_pending(warehouse: Callable[[], Engine] | None) -> str | None:
    """Why the landing sensor's catch-up may still run (a backlog, or the warehouse cannot tell);
    None when there is no backlog."""
    if warehouse is None:
        return None
    try:
        backlog = downstream_backlog(warehouse())
    except (*_DB_ERRORS, sa_exc.ArgumentError, ValueError) as exc:
        return f"the catch-up backlog is unknown (warehouse: {error_text(exc)})"
    if backlog is None:
        return None
    return f"{backlog.files} loaded file(s) wait for the landing sensor's catch-up ({backlog.key})"


def decide_stale(
    engine: Engine,
    cfg: HealthConfiguration,
    policy: sh.SelfHealPolicy,
    latest: dict[str, datetime],
    tick: Tick,
    warehouse: Callable[[], Engine] | None = None,
) -> None:
    """An asset past its freshness fail window whose upstream materialized after it: re-running it
    refreshes it (one decision per staleness: the source is its last materialization). Not while
    the landing sensor has a catch-up backlog for it (``warehouse`` is read for it)."""
    now = utcnow()
    stale = Classification("stale", True, "stale:upstream_newer")
    backlog: list[str | None] = []  # read once, and only for a stale asset it covers
    for asset, upstream in sorted(_UPSTREAM.items()):
        window = cfg.freshness.get(asset)
        mine, theirs = latest.get(asset), latest.get(upstream)
        if window is None or mine is None or theirs is None or theirs <= mine:
            continue
        if now - mine < timedelta(minutes=window.fail_window_minutes):
            continue
        source = f"stale:{mine:%Y%m%dT%H%M%S.%f}"
        if sh.decided_runs(engine, [source]):
            continue
        if asset in CATCH_UP_ASSETS:
            if not backlog:
                backlog.append(_catch_up_pending(warehouse))
            if backlog[0] is not None:
                tick.waiting += 1
                continue
        hist = sh.histories(engine, [asset], policy, now, latest)[asset]
        decision = sh.decide(asset, stale, hist, policy, now)
        if decision.action == sh.Action.WAIT:
            tick.waiting += 1
            continue
        won = _store(
            engine,
            source,
            {asset: decision},
            {asset: sh.Reason.STALE},
            stale,
            policy,
            now,
            latest,
        )
        failure = heal_failure([asset], stale, f"{asset} is stale: past its freshness window", {})
        _record_on_timeline(engine, won, failure, source, policy, now, cfg)
        tick.decided += len(won)
        tick.requests += [_request(k, a, {}) for k, a, d in won if d.action == sh.Action.RERUN]


PROBE_SECONDS = 5.0
"""How long a dependency probe may take: one that does not answer in time has not answered."""


class Probe:
    """Whether a dependency a failure found unavailable answers again: the warehouse (a
    ``SELECT 1``), the landing area (a listing), asked at most once a tick and given
    :data:`PROBE_SECONDS` (a black-holed host must not hold the tick). It answers again only when
    a probe found it unavailable after the failure (``seen``: when each was last found so, kept in
    the sensor's cursor): a failure the dependency did not cause (it answered all along) waits its
    backoff."""

    def __init__(
        self,
        warehouse: Callable[[], Engine] | None,
        landing: Callable[[], object] | None,
        seen: Mapping[str, datetime] | None = None,
    ) -> None:
        self.checks: dict[str, Callable[[], object] | None] = {
            WAREHOUSE: (lambda: _select_one(warehouse())) if warehouse else None,
            LANDING: landing,
        }
        self.seen: dict[str, datetime] = dict(seen or {})
        self.answers: dict[str, bool] = {}

    def __call__(self, dependency: str, failed_at: datetime | None = None) -> bool:
        if dependency not in self.answers:
            check = self.checks.get(dependency)
            answered = check is not None and _within(dependency, check, PROBE_SECONDS)
            if check is not None and not answered:
                self.seen[dependency] = utcnow()
            self.answers[dependency] = answered
        down = self.seen.get(dependency)
        found_down = down is not None and failed_at is not None and as_utc(down) >= failed_at
        return self.answers[dependency] and found_down


_PROBING: dict[str, threading.Thread] = {}  # a probe still running, per dependency


def _within(dependency: str, check: Callable[[], object], seconds: float) -> bool:
    """Whether ``check`` returns without an error within ``seconds``, run in a daemon thread left
    behind when it does not; while that thread still runs (a black-holed host) no other starts and
    the dependency has not answered."""
    running = _PROBING.get(dependency)
    if running is not None and running.is_alive():
        return False
    outcome: list[bool] = []

    def run() -> None:
        try:
            check()
        except Exception:  # noqa: BLE001 (any failure to answer is "not yet")
            outcome.append(False)
        else:
            outcome.append(True)

    worker = threading.Thread(target=run, name=f"selfheal-probe-{dependency}", daemon=True)
    _PROBING[dependency] = worker
    worker.start()
    worker.join(seconds)
    return outcome == [True]


def _select_one(engine: Engine) -> None:
    with engine.connect() as conn:
        conn.execute(sa.text("SELECT 1"))


def heal(
    context: dg.SensorEvaluationContext,
    engine: Engine,
    cfg: HealthConfiguration,
    warehouse: Callable[[], Engine] | None = None,
    landing: Callable[[], object] | None = None,
) -> Tick:
    policy = sh.SelfHealPolicy.from_config(cfg.self_healing)
    tick = Tick(requests=[])
    started = utcnow()
    latest = _latest_materializations(context.instance)
    record_outcomes(context, engine, policy, tick, latest, started)
    sh.reset_breakers(engine, latest, utcnow())
    sh.recover_by_alerts(engine, utcnow(), latest)
    tick.resolved = len(sh.resolve_quiet(engine, policy, utcnow(), latest).incident_ids)
    # Long enough to decide a failure after its wait for run_retries' launch.
    lookback = max(policy.window, policy.max_delay * 2, RETRY_LAUNCH_GRACE * 2)
    probe = Probe(warehouse, landing, unavailable_since(context.cursor))
    tick.probe = probe
    for record in _failed_runs(context.instance, utcnow() - lookback):
        decide_failed_run(context.instance, engine, record, policy, latest, tick, cfg, probe)
    if cfg.self_healing.stale_reruns:
        decide_stale(engine, cfg, policy, latest, tick, warehouse)
    record_recoveries(context.instance, engine, latest, tick)
    return tick


def self_healing(
    context: dg.SensorEvaluationContext,
    warehouse: WarehouseResource,
    healthmon_config: HealthmonConfigResource,
    landing: LandingResource,
) -> dg.SensorResult:
    """Re-runs the pipeline assets a failed run left undone when the failure was transient (and
    stale assets whose upstream is newer), within the bounds of ``self_healing`` in healthmon.yaml;
    every decision and outcome on the incident's timeline; a healed incident to monitoring, then
    resolved after the quiet period."""
    try:
        cfg = healthmon_config.load()
    except ConfigError as exc:
        return dg.SensorResult(skip_reason=dg.SkipReason(f"configuration invalid: {exc}"))
    if not cfg.feature_enabled("self_healing"):
        return dg.SensorResult(
            skip_reason=dg.SkipReason("the feature flag self_healing is off in healthmon.yaml")
        )
    try:
        pattern = cfg.landing.file_pattern
        tick = heal(
            context,
            warehouse.health_engine(),
            cfg,
            warehouse.engine,
            lambda: landing.source().list_files(pattern),
        )
    except (*_DB_ERRORS, sa_exc.ArgumentError, ValueError) as exc:
        seen = unavailable_since(context.cursor)
        if warehouse.health_url() == warehouse.url():  # one database: the warehouse is down too
            seen[WAREHOUSE] = utcnow()
        return dg.SensorResult(
            skip_reason=dg.SkipReason(
                f"health store unavailable: {error_text(exc)}; the next tick tries again"
            ),
            cursor=with_unavailable(context.cursor, seen) if seen else context.cursor,
        )
    cursor = with_unavailable(context.cursor, tick.probe.seen) if tick.probe else context.cursor
    if not tick.requests:
        return dg.SensorResult(skip_reason=dg.SkipReason(tick.summary()), cursor=cursor)
    context.log.info(tick.summary())
    return dg.SensorResult(run_requests=tick.requests, cursor=cursor)


def self_healing_sensor_every(seconds: int) -> dg.SensorDefinition:
    """The self-healing sensor, run by dagster-daemon every ``seconds`` (``sensor_intervals``)."""
    return dg.sensor(
        name="self_healing_sensor",
        job=patients_etl_job,
        minimum_interval_seconds=seconds,
        default_status=dg.DefaultSensorStatus.RUNNING,
    )(self_healing)


self_healing_sensor = self_healing_sensor_every(SensorIntervals().self_healing_sensor)


def sensor_definitions(config: HealthConfiguration) -> list[dg.SensorDefinition]:
    return [self_healing_sensor_every(config.sensor_intervals.self_healing_sensor)]
