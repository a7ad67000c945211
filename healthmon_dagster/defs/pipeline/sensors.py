"""Sensors: the landing sensor turns each pending landing file into ETL runs, one attempt at a time,
until the file is loaded (or rejected, or stuck).

Who retries what (one mechanism per failure, never two stacked):

- a step that fails on a transient error (``etl.failures``) is retried inside its run, with
  exponential backoff and jitter (``landing.retry.step_retries``, see ``assets.py``);
- a run whose worker died (killed, out of memory) is re-executed once by Dagster's ``run_retries``
  (dagster.yaml: ``retry_on_asset_or_op_failure: false``, so a failed step is never re-run there);
- when every run of an attempt has failed and none will follow, this sensor records the outcome in
  ``etl.file_attempts`` and, for a transient failure, requests the next attempt after the backoff of
  ``landing.retry``; past its bound, or for a failure that running again cannot fix, the file is
  stuck (``healthmon status``, the ``landing_files_are_not_stuck`` check, whose failed evaluation
  the sensor reports at once).

A failure that blamed a dependency (the warehouse, the landing area) does not wait out its backoff
once this sensor has found that dependency unavailable and then, in a later tick, reachable again
(each tick lists the landing area and queries the warehouse, so it knows): the next attempt is
requested in that tick, still counted against the bound. The cursor remembers when each dependency
was last found unavailable.
"""

import time
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta

import dagster as dg
from sqlalchemy import exc as sa_exc
from sqlalchemy.engine import Engine, make_url

from healthmon_dagster.config import ConfigError, HealthConfiguration
from healthmon_dagster.config.models import SensorIntervals
from healthmon_dagster.defs.pipeline.assets import (
    CORE_DIM_PATIENT,
    DEPENDENCY_METADATA,
    RAW_PATIENTS,
    STG_PATIENTS,
    STG_PATIENTS_REJECTED,
)
from healthmon_dagster.defs.pipeline.jobs import patients_etl_job, raw_file_run_config
from healthmon_dagster.defs.quality.checks import to_evaluation
from healthmon_dagster.defs.resources import (
    HealthmonConfigResource,
    LandingResource,
    WarehouseResource,
)
from healthmon_dagster.etl import catalog
from healthmon_dagster.etl.attempts import (
    Attempt,
    AttemptPolicy,
    AttemptStatus,
    RunOutcome,
    Walk,
    record_outcome,
    requested_attempts,
    unavailable_since,
    walk_pending,
    with_unavailable,
)
from healthmon_dagster.etl.catchup import (
    Backlog,
    CatchUpRun,
    catch_up_run_key,
    decide_catch_up,
    downstream_backlog,
)
from healthmon_dagster.etl.failures import (
    ERROR_CLASS_METADATA,
    ERROR_RULE_METADATA,
    LANDING,
    RUN_CANCELED,
    TRANSIENT_METADATA,
    WAREHOUSE,
    Classification,
    classify_run_failure,
)
from healthmon_dagster.etl.landing import LandingError
from healthmon_dagster.quality import record_results
from healthmon_dagster.quality.kinds.landing_file import stuck_files_result
from healthmon_dagster.run_tags import (
    ATTEMPT_NUMBER_TAG,
    CATCH_UP_TAG,
    FAILURE_REASON_TAG,
    FILE_ATTEMPT_TAG,
    FILE_KEY_TAG,
    STEP_FAILURE_REASON,
    WILL_RETRY_TAG,
)
from healthmon_dagster.settings import redact_url
from healthmon_dagster.store.db import DatabaseUnavailable
from healthmon_dagster.store.errors import error_text
from healthmon_dagster.store.metrics import utcnow

MAX_RUNS_PER_TICK = 100
"""Runs one tick requests at most; the cursor continues from there in the next tick."""
TICK_BUDGET_SECONDS = 20.0
"""Time one tick spends deciding at most (Dagster gives a sensor 60 s)."""
MAX_OUTCOMES_PER_TICK = 500
"""Requested attempts whose runs one tick looks up at most, oldest first."""
RETRY_PENDING_GRACE = timedelta(minutes=10)
"""How long a failed run that Dagster marked for run_retries may wait for its re-execution before
its attempt counts as failed (the daemon that launches retries may be down)."""

ATTEMPT_TAG = FILE_ATTEMPT_TAG
"""Tag of every run of an attempt (its run key); run_retries' re-executions inherit it."""
DOWNSTREAM = [STG_PATIENTS, STG_PATIENTS_REJECTED, CORE_DIM_PATIENT]
_ACTIVE = [
    dg.DagsterRunStatus.QUEUED,
    dg.DagsterRunStatus.NOT_STARTED,
    dg.DagsterRunStatus.STARTING,
    dg.DagsterRunStatus.STARTED,
    dg.DagsterRunStatus.CANCELING,
]

_RAW_STEP = "__".join(catalog.RAW_PATIENTS.path)

# The warehouse cannot be used: its URL is malformed or names an unknown driver (ArgumentError,
# ValueError for a bad port), or the server is unreachable.
_URL_ERRORS = (sa_exc.ArgumentError, ValueError)
_UNAVAILABLE = (sa_exc.OperationalError, sa_exc.InterfaceError, DatabaseUnavailable)


def _runs_by_attempt(
    instance: dg.DagsterInstance, run_keys: Sequence[str]
) -> dict[str, list[dg.RunRecord]]:
    """The Dagster runs of each attempt (the sensor's run and run_retries' re-executions)."""
    found: dict[str, list[dg.RunRecord]] = {}
    for i in range(0, len(run_keys), 100):
        chunk = list(run_keys[i : i + 100])
        for record in instance.get_run_records(filters=dg.RunsFilter(tags={ATTEMPT_TAG: chunk})):
            key = record.dagster_run.tags.get(ATTEMPT_TAG)
            if key is not None:
                found.setdefault(key, []).append(record)
    return found


def _step_failure(instance: dg.DagsterInstance, run_id: str) -> tuple[Classification | None, str]:
    """Why a run's step failed: the classification an ETL step attached to its failure (the raw
    step's first, then any other's), and its description (rendered without data values); for a
    failure no ETL step classified (a check step, a bug), None and the exception's type only,
    since an exception's text may quote a value."""
    classified: list[tuple[str, Classification, str]] = []
    unclassified: list[str] = []
    for entry in instance.all_logs(run_id, of_type=dg.DagsterEventType.STEP_FAILURE):
        event = entry.dagster_event
        if event is None:
            continue
        data = event.step_failure_data
        user = data.user_failure_data
        meta = {k: v.value for k, v in (user.metadata if user else {}).items()}
        step = event.step_key or "?"
        if ERROR_CLASS_METADATA in meta:
            why = Classification(
                str(meta[ERROR_CLASS_METADATA]),
                bool(meta.get(TRANSIENT_METADATA, False)),
                str(meta.get(ERROR_RULE_METADATA, f"step_failure:{step}")),
                str(meta[DEPENDENCY_METADATA]) if meta.get(DEPENDENCY_METADATA) else None,
            )
            classified.append((step, why, (user.description if user else None) or ""))
        else:
            kind = data.error.cls_name if data.error else "unknown error"
            unclassified.append(f"step {step} failed with {kind}")
    classified.sort(key=lambda c: c[0] != _RAW_STEP)
    if classified:
        _, why, description = classified[0]
        return why, description[:2000]
    if unclassified:
        return None, unclassified[0]
    return None, "the run failed without a step failure event"


def _outcome(
    instance: dg.DagsterInstance, records: Sequence[dg.RunRecord], now: datetime
) -> RunOutcome:
    """What the runs of one attempt say (see :class:`RunOutcome`)."""
    if not records:
        return RunOutcome("missing")
    n = len(records)
    succeeded = [r for r in records if r.dagster_run.status == dg.DagsterRunStatus.SUCCESS]
    if succeeded:
        return RunOutcome("succeeded", dagster_run_id=succeeded[0].dagster_run.run_id, runs=n)
    if any(not r.dagster_run.is_finished for r in records):
        return RunOutcome("in_flight", runs=n)
    last = max(records, key=lambda r: r.create_timestamp)
    run = last.dagster_run
    ended = last.end_time if last.end_time is not None else last.update_timestamp.timestamp()
    ended_at = datetime.fromtimestamp(ended, UTC)
    if run.status == dg.DagsterRunStatus.CANCELED:
        return RunOutcome(
            "failed",
            RUN_CANCELED,
            f"run {run.run_id} was canceled",
            dagster_run_id=run.run_id,
            runs=n,
            ended_at=ended_at,
        )
    if (
        run.tags.get(WILL_RETRY_TAG) == "true"
        and now.timestamp() - ended < RETRY_PENDING_GRACE.total_seconds()
    ):
        return RunOutcome("in_flight", runs=n)
    reason = run.tags.get(FAILURE_REASON_TAG)
    if reason == STEP_FAILURE_REASON:
        classification, message = _step_failure(instance, run.run_id)
    else:
        classification = classify_run_failure(reason)
        message = (
            f"run {run.run_id} ended without a failed step ({reason or 'its worker died'}), "
            f"after {n} run(s) of this attempt"
        )
    return RunOutcome(
        "failed", classification, message, dagster_run_id=run.run_id, runs=n, ended_at=ended_at
    )


def _record_outcomes(
    context: dg.SensorEvaluationContext,
    engine: Engine,
    policy: AttemptPolicy,
    now: datetime,
    deadline: float,
) -> tuple[list[Attempt], set[str]]:
    """Store the outcome of every requested attempt whose runs have ended (oldest first, until
    ``deadline``: the rest wait for the next tick); returns the attempts that ended, and the run
    keys of attempts that have no run at all (to be requested again)."""
    waiting = requested_attempts(engine, MAX_OUTCOMES_PER_TICK)
    if not waiting:
        return [], set()
    runs = _runs_by_attempt(context.instance, [a.run_key for a in waiting])
    ended: list[Attempt] = []
    unlaunched: set[str] = set()
    for attempt in waiting:
        if time.monotonic() >= deadline:
            break
        outcome = _outcome(context.instance, runs.get(attempt.run_key, []), now)
        if outcome.state == "missing":
            unlaunched.add(attempt.run_key)
        elif outcome.state in ("succeeded", "failed"):
            done = record_outcome(engine, attempt, outcome, policy, now)
            if done is not None:
                ended.append(done)
    return ended, unlaunched


def _log_ended(context: dg.SensorEvaluationContext, ended: Sequence[Attempt]) -> None:
    for a in ended:
        if a.status == AttemptStatus.STUCK:
            context.log.error(
                f"landing file {a.file_key} is stuck after {a.attempt} attempt(s) "
                f"({a.error_class}{', not transient' if not a.transient else ''}): it is not "
                "tried again until it lands with other content. See `healthmon status`."
            )
        elif a.status == AttemptStatus.FAILED and a.retry_at is not None:
            context.log.warning(
                f"attempt {a.attempt} of landing file {a.file_key} failed ({a.error_class}); "
                f"attempt {a.attempt + 1} from {a.retry_at:%H:%M:%S} UTC"
            )


def _stuck_evaluation(
    context: dg.SensorEvaluationContext, warehouse: WarehouseResource, engine: Engine
) -> list[dg.AssetCheckEvaluation]:
    """The failed evaluation of ``landing_files_are_not_stuck`` the moment a file gets stuck (the
    check's own step runs with the next ETL run and in the daily sweep), also recorded in
    ``etl.check_results``."""
    result = stuck_files_result(engine)
    try:
        record_results(warehouse.health_engine(), [result])
    except (sa_exc.DBAPIError, DatabaseUnavailable) as exc:
        context.log.warning(
            f"could not record {result.check_name} in etl.check_results: {error_text(exc)}"
        )
    return [to_evaluation(result, RAW_PATIENTS)]


def _request(a: Attempt) -> dg.RunRequest:
    return dg.RunRequest(
        run_key=a.run_key,
        run_config=raw_file_run_config(a.file_key, a.fingerprint),
        tags={FILE_KEY_TAG: a.file_key, ATTEMPT_TAG: a.run_key, ATTEMPT_NUMBER_TAG: str(a.attempt)},
    )


def _catch_up_run(record: dg.RunRecord) -> CatchUpRun:
    run = record.dagster_run
    ended = record.end_time if run.is_finished else None
    if run.is_finished and ended is None:
        ended = record.update_timestamp.timestamp()
    return CatchUpRun(
        started_at=record.create_timestamp,
        ended_at=datetime.fromtimestamp(ended, UTC) if ended is not None else None,
        succeeded=run.status == dg.DagsterRunStatus.SUCCESS,
    )


def _catch_up(
    context: dg.SensorEvaluationContext, engine: Engine, policy: AttemptPolicy, now: datetime
) -> tuple[dg.RunRequest | None, str]:
    """A catch-up run of the downstream assets for files whose raw load committed but whose
    staging or merge failed (etl.catchup), when it is due and no ETL run is queued or running;
    else None and why not ('' when there is nothing to catch up)."""
    backlog: Backlog | None = downstream_backlog(engine)
    if backlog is None:
        return None, ""
    active = context.instance.get_run_records(
        filters=dg.RunsFilter(job_name=patients_etl_job.name, statuses=_ACTIVE), limit=1
    )
    what = f"{backlog.files} loaded file(s) not yet staged or merged"
    if active:
        return None, f"{what}: waiting for the ETL run in progress"
    runs = context.instance.get_run_records(filters=dg.RunsFilter(tags={CATCH_UP_TAG: backlog.key}))
    step = decide_catch_up([_catch_up_run(r) for r in runs], policy, now)
    if step.state == "waiting" and step.retry_at is not None:
        return None, f"{what}: catch-up run {step.attempt + 1} from {step.retry_at:%H:%M:%S} UTC"
    if step.state == "given_up":
        context.log.error(
            f"{what}: {step.attempt} catch-up run(s) did not help; they wait for the next "
            "file's run (or a person: see the runs tagged "
            f"{CATCH_UP_TAG}={backlog.key})"
        )
        return None, f"{what}: catch-up given up after {step.attempt} run(s)"
    if step.state != "due":
        return None, f"{what}: catch-up run {step.attempt} in flight"
    context.log.info(f"{what}: requesting catch-up run {step.attempt} of the downstream assets")
    return dg.RunRequest(
        run_key=catch_up_run_key(backlog, step.attempt),
        asset_selection=DOWNSTREAM,
        tags={CATCH_UP_TAG: backlog.key, ATTEMPT_NUMBER_TAG: str(step.attempt)},
    ), ""


def _shown(url: str) -> str:
    """The warehouse URL for a message: without its password, and not at all when it does not
    parse (a libpq keyword string carries ``password=`` in plain text)."""
    try:
        make_url(url)
    except Exception:  # any parse failure: ArgumentError, ValueError for a bad port
        return "at an unparsable URL"
    return redact_url(url)


def _skip(message: str) -> dg.SensorResult:
    return dg.SensorResult(skip_reason=dg.SkipReason(message))


def _skip_unavailable(
    context: dg.SensorEvaluationContext, dependency: str, now: datetime, message: str
) -> dg.SensorResult:
    """Skip the tick because ``dependency`` cannot be used, remembering when in the cursor (its
    return lets failed attempts that blamed it be retried at once)."""
    seen = {**unavailable_since(context.cursor), dependency: now}
    return dg.SensorResult(
        skip_reason=dg.SkipReason(message), cursor=with_unavailable(context.cursor, seen)
    )


def _log_recovered(
    context: dg.SensorEvaluationContext, walk: Walk, seen: dict[str, datetime]
) -> None:
    for dependency, n in sorted(walk.recovered.items()):
        context.log.info(
            f"{dependency} answers again (unavailable at {seen[dependency]:%H:%M:%S} UTC): "
            f"retrying {n} file(s) now instead of after their backoff"
        )
    if walk.released:
        context.log.info(f"{walk.released} released file(s) requested again (etl.file_releases)")


def landing_files(
    context: dg.SensorEvaluationContext,
    landing: LandingResource,
    warehouse: WarehouseResource,
    healthmon_config: HealthmonConfigResource,
) -> dg.SensorResult:
    """Runs for pending landing files: each file without a terminal record for its key and
    fingerprint (S3 ETag, or size and mtime locally) gets attempt 1, and a failed attempt gets the
    next one after its backoff, oldest file first from the cursor, at most 100 runs and 20 s a
    tick. Rejected, loaded and stuck files cost nothing. The run key key@fingerprint#attempt means
    Dagster never launches one attempt twice; the loader's content hash is the last guard against
    a double load."""
    started = time.monotonic()
    try:
        cfg = healthmon_config.load()
    except ConfigError as exc:
        return _skip(f"configuration invalid: {exc}")
    pattern = cfg.landing.file_pattern
    now = utcnow()
    try:
        listed = landing.source().list_files(pattern)
    except LandingError as exc:
        return _skip_unavailable(context, LANDING, now, f"landing source unavailable: {exc}")
    where = _shown(warehouse.url())
    try:
        engine = warehouse.engine()
    except _URL_ERRORS as exc:
        return _skip(f"warehouse {where} cannot be used: {error_text(exc)}; no run requested")
    except _UNAVAILABLE as exc:
        return _skip_unavailable(
            context,
            WAREHOUSE,
            now,
            f"warehouse {where} cannot be used: {error_text(exc)}; no run requested",
        )
    # This tick listed the landing area and (below) queries the warehouse: both answer.
    seen = unavailable_since(context.cursor)
    try:
        ended, unlaunched = _record_outcomes(
            context,
            engine,
            AttemptPolicy.from_config(cfg.landing.retry),
            now,
            # Half the budget at most: the walk over pending files gets the rest.
            deadline=started + TICK_BUDGET_SECONDS / 2,
        )
        walk = walk_pending(
            engine,
            listed,
            cursor=context.cursor,
            now=now,
            max_requests=MAX_RUNS_PER_TICK,
            deadline=started + TICK_BUDGET_SECONDS,
            unlaunched=unlaunched,
            recovered=seen,
        )
    except _UNAVAILABLE as exc:
        return _skip_unavailable(
            context,
            WAREHOUSE,
            now,
            f"warehouse {where} unavailable: {error_text(exc)}; the next tick tries again",
        )
    _log_ended(context, ended)
    _log_recovered(context, walk, seen)
    cursor = with_unavailable(walk.cursor, seen) if seen else walk.cursor
    events = (
        _stuck_evaluation(context, warehouse, engine)
        if any(a.status == AttemptStatus.STUCK for a in ended)
        else []
    )
    again = sum(a.run_key in unlaunched for a in walk.requests)
    summary = (
        f"{walk.pending} pending landing file(s) of {len(listed)} listed: "
        f"{len(walk.requests) - again} new attempt(s) requested"
        + "".join(
            f" ({n} because the {d} answers again)" for d, n in sorted(walk.recovered.items())
        )
        + f", {again} requested again (never "
        f"launched), {walk.in_flight} in flight, {walk.waiting} waiting to retry"
        + (f"; stopped at the {walk.bounded_by} bound" if walk.bounded_by else "")
    )
    catch_up, why_not = None, ""
    if not walk.requests:
        try:
            catch_up, why_not = _catch_up(
                context, engine, AttemptPolicy.from_config(cfg.landing.retry), now
            )
        except _UNAVAILABLE as exc:
            why_not = f"catch-up not decided: warehouse {where} unavailable ({error_text(exc)})"
    if catch_up is not None:
        return dg.SensorResult(run_requests=[catch_up], cursor=cursor, asset_events=events)
    if not walk.requests:
        reason = summary if walk.pending else f"no new files matching {pattern!r}"
        reason += f"; {why_not}" if why_not else ""
        return dg.SensorResult(
            skip_reason=dg.SkipReason(reason), cursor=cursor, asset_events=events
        )
    context.log.info(summary)
    return dg.SensorResult(
        run_requests=[_request(a) for a in walk.requests], cursor=cursor, asset_events=events
    )


def landing_files_sensor_every(seconds: int) -> dg.SensorDefinition:
    """The landing sensor, run by dagster-daemon every ``seconds`` (``sensor_intervals``)."""
    return dg.sensor(
        name="landing_files_sensor",
        job=patients_etl_job,
        minimum_interval_seconds=seconds,
        default_status=dg.DefaultSensorStatus.RUNNING,
    )(landing_files)


landing_files_sensor = landing_files_sensor_every(SensorIntervals().landing_files_sensor)


def sensor_definitions(config: HealthConfiguration) -> list[dg.SensorDefinition]:
    return [landing_files_sensor_every(config.sensor_intervals.landing_files_sensor)]
