"""Self-healing: which failed pipeline assets are re-run, when, how often, and what becomes of the
incident.

The self-healing sensor (``defs/selfheal/``) hands in, per failed run of the pipeline, the assets
it planned but did not materialize (Dagster OSS records no "failed to materialize") and how the run
failed (a :class:`~healthmon_dagster.etl.failures.Classification`); per stale asset, that it is
stale. :func:`decide` says what to do with one asset, and with which rule:

- a failure that is not transient (a contract break, a validation failure, a configuration error,
  an error no rule knows), or whose error class is in ``never_rerun_error_classes``: never re-run;
- an asset whose circuit breaker is open: not re-run until it materializes again;
- ``breaker_failures`` consecutive failed re-runs: the breaker opens and the incident is escalated
  instead of a re-run;
- ``max_attempts_per_window`` re-runs in the window, a re-run in flight, or the backoff of the last
  failed re-run not over yet: wait (decided again in a later tick);
- otherwise: re-run.

Every decision but "wait" is a row of ``etl.self_heal_attempts`` (one per asset and attempt, and
one per failed run and asset: the unique indexes make two ticks or processes decide once) and an
entry on the incident's timeline with its rule. The rows are the state: attempts in the window,
consecutive failures, the breaker and the backoff are all read from them, and a re-run's Dagster
run key is built from its rows.

Consecutive failures count the failed re-runs since the asset last succeeded: a ``succeeded`` or
``reset`` row, or a materialization of the asset by any run after the failure (the sensor hands in
each asset's latest materialization). A failed re-run records each asset on its own: those it
materialized with their checks passing ``succeeded``, the others ``failed``.

A re-run that succeeded with its checks passing moves its incident to ``monitoring``, and so does a
successful run of the other mechanism that was left the failure (the landing sensor's next attempt
of a file or its catch-up run: a ``succeeded`` row with rule ``recovered:<mechanism>``), but only
once nothing of the incident is still broken (:func:`blockers`: no re-run in flight, no asset whose
latest row is a failure or a failure left to another mechanism, no open breaker). After
``quiet_period_minutes`` in monitoring (a new failure sends it back to investigating), and still
with nothing broken, the incident is resolved with its linked alerts; its resolution names the run
that healed it. No Dagster here.
"""

import hashlib
import random
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from enum import StrEnum
from typing import Any

import sqlalchemy as sa
from sqlalchemy import exc as sa_exc
from sqlalchemy.engine import Engine

from healthmon_dagster.alerting.actions import AlertActionError
from healthmon_dagster.alerting.actions import resolve as resolve_alert
from healthmon_dagster.config.models import SelfHealingConfiguration
from healthmon_dagster.enums import (
    AlertState,
    IncidentEventKind,
    IncidentSeverity,
    IncidentSource,
    IncidentStatus,
)
from healthmon_dagster.etl.failures import Classification
from healthmon_dagster.incidents import lifecycle
from healthmon_dagster.incidents.records import Actor, IncidentError, add_event, record_event
from healthmon_dagster.store.connection import write_transaction
from healthmon_dagster.store.metrics import as_utc
from healthmon_dagster.store.tables import (
    alerts,
    incident_alerts,
    incident_events,
    incidents,
    self_heal_attempts,
)

ACTOR = Actor("sensor:self_healing", IncidentSource.SENSOR)
RUN_KEY_PREFIX = "selfheal:"
RECOVERED_PREFIX = "recovered:"
"""Rule (``recovered:file_attempt``, ``recovered:catch_up``) and run key prefix of the ``succeeded``
rows of a failure another mechanism healed: not a re-run of this sensor (not counted in its
bounds)."""
_CHUNK = 400


class Status(StrEnum):
    """Values of ``etl.self_heal_attempts.status``."""

    REQUESTED = "requested"  # re-run requested; its outcome not seen yet
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    SKIPPED = "skipped"  # a failure not re-run (a data error, another mechanism's): recorded once
    ESCALATED = "escalated"  # the breaker opened here: no re-run until the asset materializes
    RESET = "reset"  # the asset materialized again after its breaker opened: breaker closed


class Action(StrEnum):
    RERUN = "rerun"
    SKIP = "skip"  # never for this failure (recorded once)
    WAIT = "wait"  # not now (decided again later; not recorded)
    ESCALATE = "escalate"  # the breaker opens (recorded once)


class Reason(StrEnum):
    """Why an asset is a candidate for a re-run (``etl.self_heal_attempts.reason``)."""

    FAILED_RUN = "failed_run"  # planned but not materialized by a failed run
    CHECK_NOT_EVALUATED = "check_not_evaluated"  # its check was planned but never evaluated
    STALE = "stale"  # past its freshness window, its upstream newer


@dataclass(frozen=True)
class SelfHealPolicy:
    """The bounds of ``self_healing`` in healthmon.yaml."""

    max_attempts_per_window: int = 3
    window: timedelta = timedelta(minutes=60)
    initial_delay: timedelta = timedelta(seconds=60)
    max_delay: timedelta = timedelta(seconds=900)
    jitter: float = 0.1
    breaker_failures: int = 3
    escalate_to: IncidentSeverity = IncidentSeverity.HIGH
    quiet_period: timedelta = timedelta(minutes=15)
    never_rerun: frozenset[str] = frozenset()

    @classmethod
    def from_config(cls, cfg: SelfHealingConfiguration) -> "SelfHealPolicy":
        return cls(
            max_attempts_per_window=cfg.max_attempts_per_window,
            window=timedelta(minutes=cfg.window_minutes),
            initial_delay=timedelta(seconds=cfg.initial_delay_seconds),
            max_delay=timedelta(seconds=cfg.max_delay_seconds),
            jitter=cfg.jitter,
            breaker_failures=cfg.breaker_failures,
            escalate_to=cfg.escalate_to,
            quiet_period=timedelta(minutes=cfg.quiet_period_minutes),
            never_rerun=frozenset(cfg.never_rerun_error_classes),
        )

    def delay(self, failures: int, rand: Callable[[], float] = random.random) -> timedelta:
        """The wait after the ``failures``-th consecutive failed re-run: initial x 2^(n-1), at most
        ``max_delay``, +- ``jitter``."""
        base = min(
            self.initial_delay.total_seconds() * 2 ** max(0, min(failures - 1, 30)),
            self.max_delay.total_seconds(),
        )
        return timedelta(seconds=base * (1 + self.jitter * (2 * rand() - 1)))


@dataclass(frozen=True)
class AssetHistory:
    """What the store says about one asset's re-runs (see :func:`histories`)."""

    asset_key: str
    last_attempt: int = 0
    consecutive_failures: int = 0  # failed re-runs since the last success or breaker reset
    in_window: int = 0  # re-runs requested within the window
    in_flight: bool = False  # a re-run is requested and has not ended
    retry_at: datetime | None = None  # the last failed re-run's backoff ends
    failed_at: datetime | None = None  # the last failed re-run ended
    breaker_open: bool = False
    breaker_opened_at: datetime | None = None


@dataclass(frozen=True)
class Decision:
    action: Action
    rule: str
    text: str


def decide(
    asset_key: str,
    why: Classification,
    history: AssetHistory,
    policy: SelfHealPolicy,
    now: datetime,
    answers_again: Callable[[str, datetime | None], bool] | None = None,
) -> Decision:
    """What to do about ``asset_key`` failing as ``why`` (see the module docstring);
    ``answers_again(dependency, failed_at)``: whether the dependency the failure found unavailable
    was found so after the last failed re-run ended and answers now (then the backoff is not
    waited out)."""
    if why.error_class in policy.never_rerun:
        return Decision(
            Action.SKIP,
            "config:never_rerun_error_classes",
            f"not re-run: error class {why.error_class} is configured never to be re-run",
        )
    if not why.transient:
        return Decision(
            Action.SKIP,
            why.rule,
            f"not re-run: {why.error_class} is not transient (rule {why.rule}); running it "
            "again gives the same answer",
        )
    if history.breaker_open:
        return Decision(
            Action.SKIP,
            "circuit_breaker_open",
            "not re-run: the circuit breaker is open until the asset materializes again",
        )
    if history.consecutive_failures >= policy.breaker_failures:
        return Decision(
            Action.ESCALATE,
            "circuit_breaker",
            f"circuit breaker opened after {history.consecutive_failures} "
            f"consecutive failed re-runs: no more re-runs, escalated to {policy.escalate_to}",
        )
    if history.in_flight:
        return Decision(Action.WAIT, "rerun_in_flight", "a re-run is in flight")
    if history.in_window >= policy.max_attempts_per_window:
        return Decision(
            Action.WAIT,
            "max_attempts_per_window",
            f"{history.in_window} re-run(s) in the last {_minutes(policy.window)}: the bound",
        )
    if history.retry_at is not None and history.retry_at > now:
        dependency = why.dependency
        if (
            answers_again is not None
            and dependency
            and answers_again(dependency, history.failed_at)
        ):
            return Decision(
                Action.RERUN,
                f"dependency_back:{why.rule}",
                f"re-run now (attempt {history.last_attempt + 1}): {why.dependency} answers again, "
                f"the backoff to {history.retry_at:%H:%M:%S} UTC is not waited out "
                f"({why.error_class}, rule {why.rule})",
            )
        return Decision(
            Action.WAIT,
            "backoff",
            f"next re-run from {history.retry_at:%H:%M:%S} UTC (backoff)",
        )
    return Decision(
        Action.RERUN,
        why.rule,
        f"re-run (attempt {history.last_attempt + 1}): {why.error_class} is transient (rule {why.rule})",
    )


def _minutes(td: timedelta) -> str:
    return f"{td.total_seconds() / 60:g} min"


# --- Reading the store ------------------------------------------------------------------------------


def _chunks(items: Sequence[str]) -> Iterable[Sequence[str]]:
    for i in range(0, len(items), _CHUNK):
        yield items[i : i + _CHUNK]


def _is_rerun(run_key: str) -> bool:
    return run_key.startswith(RUN_KEY_PREFIX)


def _cleared(row: Any, materialized_at: datetime | None) -> bool:
    """A failed row the asset's materialization (by any run) came after."""
    if materialized_at is None:
        return False
    return as_utc(row.finished_at or row.requested_at) < materialized_at


def _history(
    asset_key: str,
    rows: Sequence[Any],
    policy: SelfHealPolicy,
    now: datetime,
    materialized_at: datetime | None = None,
) -> AssetHistory:
    rows = sorted(rows, key=lambda r: r.attempt)
    last_clear = max(
        (r.attempt for r in rows if r.status in (Status.SUCCEEDED, Status.RESET)), default=0
    )
    failed = [
        r
        for r in rows
        if r.status == Status.FAILED and r.attempt > last_clear and not _cleared(r, materialized_at)
    ]
    runs = [r for r in rows if r.status in (Status.REQUESTED, Status.SUCCEEDED, Status.FAILED)]
    reruns = [r for r in runs if _is_rerun(r.run_key)]
    last_run = runs[-1] if runs else None
    latest = rows[-1] if rows else None
    breaker = [r for r in rows if r.status in (Status.ESCALATED, Status.RESET)]
    open_breaker = bool(breaker) and breaker[-1].status == Status.ESCALATED
    return AssetHistory(
        asset_key=asset_key,
        last_attempt=latest.attempt if latest is not None else 0,
        consecutive_failures=len(failed),
        in_window=sum(as_utc(r.requested_at) > now - policy.window for r in reruns),
        in_flight=any(r.status == Status.REQUESTED for r in rows),
        retry_at=(
            as_utc(last_run.retry_at)
            if last_run is not None
            and last_run.status == Status.FAILED
            and last_run.retry_at
            and not _cleared(last_run, materialized_at)
            else None
        ),
        failed_at=(
            as_utc(last_run.finished_at)
            if last_run is not None and last_run.status == Status.FAILED and last_run.finished_at
            else None
        ),
        breaker_open=open_breaker,
        breaker_opened_at=as_utc(breaker[-1].requested_at) if open_breaker else None,
    )


def histories(
    engine: Engine,
    asset_keys: Iterable[str],
    policy: SelfHealPolicy,
    now: datetime,
    materialized: Mapping[str, datetime] | None = None,
) -> dict[str, AssetHistory]:
    """The re-run history of each asset (an empty one for an asset never re-run); ``materialized``
    (asset -> its latest materialization) clears the failures before it."""
    keys = sorted(set(asset_keys))
    c = self_heal_attempts.c
    by_asset: dict[str, list[Any]] = {k: [] for k in keys}
    with engine.connect() as conn:
        for chunk in _chunks(keys):
            for row in conn.execute(
                sa.select(
                    c.asset_key,
                    c.attempt,
                    c.status,
                    c.run_key,
                    c.requested_at,
                    c.finished_at,
                    c.retry_at,
                ).where(c.asset_key.in_(chunk))
            ):
                by_asset[row.asset_key].append(row)
    mat = materialized or {}
    return {k: _history(k, rows, policy, now, mat.get(k)) for k, rows in by_asset.items()}


def decided_runs(engine: Engine, run_ids: Sequence[str]) -> set[tuple[str, str]]:
    """The (failed run, asset) pairs already decided (re-run, skipped or escalated)."""
    c = self_heal_attempts.c
    found: set[tuple[str, str]] = set()
    with engine.connect() as conn:
        for chunk in _chunks(list(run_ids)):
            found.update(
                (r.source_run_id, r.asset_key)
                for r in conn.execute(
                    sa.select(c.source_run_id, c.asset_key).where(c.source_run_id.in_(chunk))
                )
            )
    return found


@dataclass(frozen=True)
class Requested:
    """A re-run whose outcome is not recorded yet: its run key and the assets it re-runs."""

    run_key: str
    asset_keys: tuple[str, ...]
    incident_id: int | None
    requested_at: datetime
    source_run_id: str | None = None  # the failed run re-run (its configuration is the re-run's)


def requested_reruns(engine: Engine) -> list[Requested]:
    """Re-runs requested and not ended, oldest first."""
    c = self_heal_attempts.c
    grouped: dict[str, list[Any]] = {}
    with engine.connect() as conn:
        for row in conn.execute(
            sa.select(c.run_key, c.asset_key, c.incident_id, c.requested_at, c.source_run_id)
            .where(c.status == Status.REQUESTED.value)
            .order_by(c.requested_at, c.attempt_id)
        ):
            grouped.setdefault(row.run_key, []).append(row)
    return [
        Requested(
            key,
            tuple(sorted(r.asset_key for r in rows)),
            next((r.incident_id for r in rows if r.incident_id is not None), None),
            as_utc(rows[0].requested_at),
            rows[0].source_run_id,
        )
        for key, rows in grouped.items()
    ]


# --- Writing decisions --------------------------------------------------------------------------------


@dataclass(frozen=True)
class Planned:
    """One asset's decision to store: its next attempt number and what it is."""

    asset_key: str
    attempt: int
    status: Status
    rule: str
    reason: Reason
    error_class: str | None = None
    file_key: str | None = None  # raw/patients of a run that loads one landing file: that file


def run_key_for(source: str, planned: Sequence[Planned]) -> str:
    """The re-run's Dagster run key, from the rows that claim it: ``selfheal:<source>:<asset>#<n>,...``
    (two ticks that both decided to re-run collide on the rows before either requests the run)."""
    parts = ",".join(
        f"{p.asset_key}#{p.attempt}" for p in sorted(planned, key=lambda p: p.asset_key)
    )
    return f"{RUN_KEY_PREFIX}{source}:{parts}"[:500]


def claim(
    engine: Engine,
    planned: Sequence[Planned],
    source_run_id: str | None,
    incident_id: int | None,
    now: datetime,
) -> str | None:
    """Store ``planned`` (all or nothing) and return their run key; None when another tick or
    process stored a decision for one of these assets' attempts, or this failed run, first."""
    if not planned:
        return None
    key = run_key_for(source_run_id or f"stale@{now:%Y%m%dT%H%M%S}", planned)
    try:
        with write_transaction(engine) as conn:
            conn.execute(
                self_heal_attempts.insert(),
                [
                    {
                        "asset_key": p.asset_key,
                        "attempt": p.attempt,
                        "status": p.status.value,
                        "reason": p.reason.value,
                        "source_run_id": source_run_id,
                        "run_key": key,
                        "incident_id": incident_id,
                        "error_class": p.error_class,
                        "file_key": p.file_key,
                        "rule": p.rule,
                        "requested_at": now,
                    }
                    for p in planned
                ],
            )
    except sa_exc.IntegrityError:
        return None
    return key


def record_rerun_outcome(
    engine: Engine,
    run_key: str,
    succeeded: bool,
    rerun_run_id: str | None,
    policy: SelfHealPolicy,
    now: datetime,
    why: Classification | None = None,
    rand: Callable[[], float] = random.random,
    ended_at: datetime | None = None,
    healed: Iterable[str] = (),
    materialized: Mapping[str, datetime] | None = None,
) -> list[str]:
    """Mark the re-run ``run_key`` succeeded or failed (a failed one with its backoff counted from
    ``ended_at``, when its run ended); the assets updated (none when another process recorded it
    first). Of a failed re-run, the assets in ``healed`` (it materialized them with their checks
    passing) are recorded succeeded; ``materialized`` (asset -> latest materialization) clears the
    earlier failures the backoff counts."""
    healed = frozenset(healed)
    mat = materialized or {}
    ended = min(ended_at or now, now)
    draw = (
        rand()
    )  # one jitter for the re-run: its assets wait equally long, and are re-run together
    c = self_heal_attempts.c
    with write_transaction(engine) as conn:
        rows = conn.execute(
            sa.select(c.asset_key, c.attempt).where(
                c.run_key == run_key, c.status == Status.REQUESTED.value
            )
        ).all()
        updated: list[str] = []
        for row in rows:
            ok = succeeded or row.asset_key in healed
            values: dict[str, Any] = {
                "status": (Status.SUCCEEDED if ok else Status.FAILED).value,
                "finished_at": ended,
                "rerun_run_id": rerun_run_id,
            }
            if not ok:
                failures = (
                    _failures_before(conn, row.asset_key, row.attempt, mat.get(row.asset_key)) + 1
                )
                values["retry_at"] = ended + policy.delay(failures, lambda: draw)
                if why is not None:
                    values["error_class"] = why.error_class
            done = conn.execute(
                self_heal_attempts.update()
                .where(
                    c.asset_key == row.asset_key,
                    c.attempt == row.attempt,
                    c.status == Status.REQUESTED.value,
                )
                .values(**values)
            ).rowcount
            if done:
                updated.append(row.asset_key)
    return updated


def _failures_before(
    conn: sa.engine.Connection,
    asset_key: str,
    attempt: int,
    materialized_at: datetime | None = None,
) -> int:
    """Failed re-runs of the asset before ``attempt`` since its last success, reset or
    materialization."""
    c = self_heal_attempts.c
    clear = conn.execute(
        sa.select(sa.func.max(c.attempt)).where(
            c.asset_key == asset_key,
            c.attempt < attempt,
            c.status.in_([Status.SUCCEEDED.value, Status.RESET.value]),
        )
    ).scalar()
    failed = conn.execute(
        sa.select(c.finished_at, c.requested_at).where(
            c.asset_key == asset_key,
            c.attempt < attempt,
            c.attempt > (clear or 0),
            c.status == Status.FAILED.value,
        )
    ).all()
    return sum(not _cleared(r, materialized_at) for r in failed)


def escalation_target(current: IncidentSeverity, policy: SelfHealPolicy) -> IncidentSeverity:
    """The severity an opened breaker raises the incident to: ``escalate_to``, and at least one
    step above its current severity (a resource incident starts high: raising it to high would
    page nobody)."""
    ranks = list(IncidentSeverity)
    one_up = ranks[min(current.rank + 1, len(ranks) - 1)]
    return max(policy.escalate_to, one_up, key=lambda s: s.rank)


def escalate(
    engine: Engine, incident_id: int, policy: SelfHealPolicy, text: str, now: datetime
) -> IncidentSeverity | None:
    """Raise the incident's severity (:func:`escalation_target`) with an ``escalated`` entry saying
    why; the new severity, or None when it was not raised (already critical, ended, or made as
    severe meanwhile: the entry only). The UPDATE only raises: a severity raised concurrently
    (another failure absorbed) is never lowered."""
    with engine.connect() as conn:
        current = conn.execute(
            sa.select(incidents.c.severity).where(incidents.c.incident_id == incident_id)
        ).scalar()
    if current is None:
        return None
    was = IncidentSeverity(current)
    target = escalation_target(was, policy)
    lower = [str(s) for s in IncidentSeverity if s.rank < target.rank]
    c = incidents.c
    with write_transaction(engine) as conn:
        raised = (
            target.rank > was.rank
            and conn.execute(
                incidents.update()
                .where(
                    c.incident_id == incident_id,
                    c.severity.in_(lower),
                    c.status.not_in([str(IncidentStatus.RESOLVED), str(IncidentStatus.CLOSED)]),
                )
                .values(severity=str(target), updated_at=now)
            ).rowcount
            == 1
        )
        said = f"severity {was} -> {target}" if raised else "severity not raised"
        record_event(
            conn,
            incident_id,
            IncidentEventKind.ESCALATED,
            ACTOR,
            now,
            f"{text}; {said}",
            details={
                "rule": "circuit_breaker",
                **({"severity": {"from": str(was), "to": str(target)}} if raised else {}),
            },
        )
    return target if raised else None


def reset_breakers(
    engine: Engine, materialized_after: dict[str, datetime], now: datetime
) -> list[str]:
    """Close the breaker of each asset of ``materialized_after`` (asset -> its latest
    materialization) that materialized after its breaker opened: a ``reset`` row."""
    closed: list[str] = []
    policy = SelfHealPolicy()
    for key, hist in histories(engine, materialized_after, policy, now).items():
        if not hist.breaker_open or hist.breaker_opened_at is None:
            continue
        if materialized_after[key] <= hist.breaker_opened_at:
            continue
        planned = Planned(
            key, hist.last_attempt + 1, Status.RESET, "materialized_again", Reason.FAILED_RUN
        )
        if claim(engine, [planned], None, None, now) is not None:
            closed.append(key)
    return closed


# --- Recovery -------------------------------------------------------------------------------------------


_ENDED = (str(IncidentStatus.RESOLVED), str(IncidentStatus.CLOSED))
_HEALING = (
    str(IncidentStatus.OPEN),
    str(IncidentStatus.INVESTIGATING),
    str(IncidentStatus.IDENTIFIED),
)
LEFT_TO_OTHERS = frozenset(
    {"coordination:file_attempt", "coordination:catch_up", "coordination:run_retries"}
)
"""Rules of failures another mechanism retries, which a later run heals (see
:func:`pending_recoveries`)."""


def _latest_by_asset(rows: Iterable[Any]) -> dict[str, Any]:
    latest: dict[str, Any] = {}
    for r in rows:
        if r.asset_key not in latest or r.attempt > latest[r.asset_key].attempt:
            latest[r.asset_key] = r
    return latest


Scope = tuple[str, str | None]
"""An asset, and the landing file its failure is of (None: any run materializing it heals it)."""


def _latest_by_scope(rows: Iterable[Any]) -> dict[Scope, Any]:
    """The latest row of each (asset, file): a landing file's failure of ``raw/patients`` is healed
    only by a load of that file, whatever other files load meanwhile."""
    latest: dict[Scope, Any] = {}
    for r in rows:
        scope = (r.asset_key, r.file_key)
        if scope not in latest or r.attempt > latest[scope].attempt:
            latest[scope] = r
    return latest


def scope_text(scope: Scope) -> str:
    asset, file_key = scope
    return asset if file_key is None else f"{asset} (file {file_key})"


def blockers(
    engine: Engine, incident_id: int, materialized: Mapping[str, datetime] | None = None
) -> list[str]:
    """What of the incident is still broken, in words (empty: nothing): a re-run requested and not
    ended; an asset whose latest row for the incident is a failed re-run or a failure not re-run
    (a data error, one left to another mechanism) that it has not materialized since (a landing
    file's failure: that the file has not loaded since, whatever else loaded); an asset whose
    circuit breaker is open."""
    c = self_heal_attempts.c
    mat = materialized or {}
    with engine.connect() as conn:
        rows = conn.execute(
            sa.select(
                c.asset_key,
                c.attempt,
                c.status,
                c.rule,
                c.run_key,
                c.requested_at,
                c.finished_at,
                c.file_key,
            ).where(c.incident_id == incident_id)
        ).all()
        assets = sorted({r.asset_key for r in rows})
        breaker_rows = (
            conn.execute(
                sa.select(c.asset_key, c.attempt, c.status).where(
                    c.asset_key.in_(assets),
                    c.status.in_([Status.ESCALATED.value, Status.RESET.value]),
                )
            ).all()
            if assets
            else []
        )
    found: list[str] = []
    in_flight = sorted({r.run_key for r in rows if r.status == Status.REQUESTED})
    found += [f"re-run {k} has not ended" for k in in_flight]
    for scope, row in sorted(_latest_by_scope(rows).items(), key=lambda sr: scope_text(sr[0])):
        if row.status in (Status.REQUESTED, Status.ESCALATED):
            continue  # in flight, above; the breaker, below
        broken = row.status == Status.FAILED or (
            row.status == Status.SKIPPED and row.rule != "materialized_since"
        )
        # Any materialization of the asset heals it, but a landing file's failure heals only by a
        # load of that file (a succeeded row of the same scope, later than this one).
        cleared = row.file_key is None and _cleared(row, mat.get(row.asset_key))
        if broken and not cleared:
            what = "its last re-run failed" if row.status == Status.FAILED else "not re-run"
            since = "it has not materialized" if row.file_key is None else "the file has not loaded"
            found.append(f"{scope_text(scope)}: {what} (rule {row.rule}) and {since} since")
    for asset, row in sorted(_latest_by_asset(breaker_rows).items()):
        if row.status == Status.ESCALATED:
            found.append(f"{asset}: its circuit breaker is open")
    return found


def mark_recovering(
    engine: Engine,
    incident_id: int,
    run_key: str,
    now: datetime,
    *,
    text: str | None = None,
    materialized: Mapping[str, datetime] | None = None,
) -> bool:
    """The re-run ``run_key`` (or what ``text`` says) succeeded with its checks passing: the
    incident moves to monitoring (True), unless it is already there or ended, or something of it
    is still broken (:func:`blockers`)."""
    with engine.connect() as conn:
        status = conn.execute(
            sa.select(incidents.c.status).where(incidents.c.incident_id == incident_id)
        ).scalar()
    if status is None or status in (str(IncidentStatus.MONITORING), *_ENDED):
        return False
    if blockers(engine, incident_id, materialized):
        return False
    try:
        lifecycle.set_status(
            engine,
            incident_id,
            IncidentStatus.MONITORING,
            ACTOR,
            text or f"self-heal re-run {run_key} succeeded and its checks passed",
            now=now,
        )
    except IncidentError:  # changed concurrently (a person, a relapse): leave it to them
        return False
    return True


@dataclass(frozen=True)
class Awaited:
    """A failure not re-run by this sensor, waiting for the run that heals it: one started after
    its failed run (``source_run_id``) ended that completes the asset (the landing sensor's next
    attempt or catch-up run, Dagster's re-execution, a person's run) or, for a landing file's
    failure (``file_key``), one that loads that file."""

    file_key: str | None = None
    source_run_id: str | None = None
    attempt: int = 0  # the row waiting: a heal is recorded only while it is still the latest
    reason: str = Reason.FAILED_RUN.value


@dataclass(frozen=True)
class PendingRecovery:
    """An open incident with failures that another mechanism's run heals: per (asset, file) what
    heals it, and since when a run must have started to heal them (the incident's last
    failure)."""

    incident_id: int
    last_failure_at: datetime
    assets: dict[Scope, Awaited]


def _awaited(row: Any) -> Awaited | None:
    """What heals the failure of ``row`` (its scope's latest row) when this sensor did not re-run
    it: a transient failure another mechanism retries (:data:`LEFT_TO_OTHERS`), by a later run
    that completes the asset; a landing file's failure, data errors included, by a load of that
    file. Other data errors wait for a person (what a later run of other data proves of them is
    not known)."""
    if row.status != Status.SKIPPED or row.rule == "materialized_since":
        return None
    if row.rule not in LEFT_TO_OTHERS and row.file_key is None:
        return None
    return Awaited(row.file_key, row.source_run_id, int(row.attempt), str(row.reason))


def pending_recoveries(engine: Engine) -> list[PendingRecovery]:
    """Incidents not ended (monitoring included: a failure decided after the incident got there
    holds it) whose latest row for some (asset, file) is a failure this sensor did not re-run
    (:func:`_awaited`); one cheap query when there is none."""
    c, i = self_heal_attempts.c, incidents.c
    with engine.connect() as conn:
        ids = (
            conn.execute(
                sa.select(c.incident_id)
                .join(incidents, i.incident_id == c.incident_id)
                .where(
                    c.status == Status.SKIPPED.value,
                    sa.or_(c.rule.in_(sorted(LEFT_TO_OTHERS)), c.file_key.is_not(None)),
                    i.status.in_([*_HEALING, str(IncidentStatus.MONITORING)]),
                )
                .distinct()
            )
            .scalars()
            .all()
        )
        found: list[PendingRecovery] = []
        for incident_id in sorted(int(x) for x in ids):
            rows = conn.execute(
                sa.select(
                    c.asset_key, c.attempt, c.status, c.rule, c.file_key, c.source_run_id, c.reason
                ).where(c.incident_id == incident_id)
            ).all()
            assets = {
                scope: awaited
                for scope, row in _latest_by_scope(rows).items()
                if (awaited := _awaited(row)) is not None
            }
            last = conn.execute(
                sa.select(i.last_failure_at).where(i.incident_id == incident_id)
            ).scalar()
            if assets and last is not None:
                found.append(PendingRecovery(incident_id, as_utc(last), assets))
    return found


def record_recovery(
    engine: Engine,
    incident_id: int,
    scopes: Mapping[Scope, int],
    mechanism: str,
    run_id: str,
    ended_at: datetime,
    now: datetime,
) -> list[Scope]:
    """A ``succeeded`` row (rule ``recovered:<mechanism>``) for each (asset, file) the run
    ``run_id`` healed, while the row it heals (``scopes``: scope -> its attempt) is still the
    scope's latest (a failure recorded meanwhile is not covered); those recorded (none when
    another tick or process did first)."""
    c = self_heal_attempts.c
    done: list[Scope] = []
    for (asset, file_key), waiting in sorted(scopes.items(), key=lambda sw: scope_text(sw[0])):
        same_file = c.file_key.is_(None) if file_key is None else c.file_key == file_key
        # One statement: the row is written only while the awaited failure is still the scope's
        # latest, at the asset's next attempt; a failure another process commits meanwhile either
        # makes the condition false or takes that attempt number first (the unique index).
        still_latest = (
            sa.select(sa.func.max(c.attempt))
            .where(c.asset_key == asset, same_file, c.incident_id == incident_id)
            .scalar_subquery()
        )
        next_attempt = (
            sa.select(sa.func.coalesce(sa.func.max(c.attempt), 0) + 1)
            .where(c.asset_key == asset)
            .scalar_subquery()
        )
        values = {
            "asset_key": sa.literal(asset, c.asset_key.type),
            "attempt": next_attempt,
            "status": sa.literal(Status.SUCCEEDED.value, c.status.type),
            "reason": sa.literal(Reason.FAILED_RUN.value, c.reason.type),
            # Unique with the asset: one row per incident, healing run, asset and file, however
            # many ticks or processes record it.
            "source_run_id": sa.literal(
                _recovery_key(incident_id, run_id, file_key), c.source_run_id.type
            ),
            "run_key": sa.literal(f"{RECOVERED_PREFIX}{run_id}", c.run_key.type),
            "rerun_run_id": sa.literal(run_id, c.rerun_run_id.type),
            "incident_id": sa.literal(incident_id, c.incident_id.type),
            "rule": sa.literal(f"{RECOVERED_PREFIX}{mechanism}", c.rule.type),
            "requested_at": sa.literal(now, c.requested_at.type),
            "finished_at": sa.literal(min(ended_at, now), c.finished_at.type),
            "file_key": sa.literal(file_key, c.file_key.type),
        }
        try:
            with write_transaction(engine) as conn:
                inserted = conn.execute(
                    self_heal_attempts.insert().from_select(
                        list(values),
                        sa.select(*values.values()).where(still_latest == waiting),
                    )
                ).rowcount
            if inserted != 1:  # healed already, or a new failure came after
                continue
        except sa_exc.IntegrityError:  # another tick or process recorded it first
            continue
        done.append((asset, file_key))
    return done


def _recovery_key(incident_id: int, run_id: str, file_key: str | None) -> str:
    """``recovered:<incident>:<run>:<file>`` (the file as a short hash) in 64 characters."""
    file_part = hashlib.sha1((file_key or "").encode()).hexdigest()[:8] if file_key else "-"
    return f"{RECOVERED_PREFIX}{incident_id}:{run_id}:{file_part}"[:64]


@dataclass
class Resolved:
    incident_ids: list[int] = field(default_factory=list)
    alert_ids: list[int] = field(default_factory=list)


RECOVERY_WORDS = {
    "file_attempt": "the landing sensor's next attempt",
    "catch_up": "the landing sensor's catch-up run",
    "run_retries": "Dagster's run_retries re-execution",
    "run": "a later run",
}


def _healed_by(row: Any) -> str:
    """Which run healed the incident, in words, from its latest ``succeeded`` row."""
    if str(row.rule).startswith(RECOVERED_PREFIX):
        what = RECOVERY_WORDS.get(str(row.rule)[len(RECOVERED_PREFIX) :], "another mechanism's run")
        return f"healed: {what} (run {row.rerun_run_id}) succeeded with its checks passing"
    return (
        f"self-healed: re-run {row.run_key} (run {row.rerun_run_id}) succeeded with its checks "
        "passing"
    )


ALERT_FAILURE = "failure:alert:"
"""Dedup key prefix of the failure entry a critical alert adds to its incident (incidents/alerts.py)."""
_INCIDENT_RULES = "incident_"  # the incident's own alert (incidents/announce.py): not a cause


def _linked_alerts(conn: sa.engine.Connection, incident_id: int) -> list[Any]:
    """The alerts linked to the incident (its own alert aside): id, state, resolved_at."""
    a, ia = alerts.c, incident_alerts.c
    return list(
        conn.execute(
            sa.select(a.alert_id, a.state, a.resolved_at)
            .join(incident_alerts, ia.alert_id == a.alert_id)
            .where(ia.incident_id == incident_id, ~a.rule_id.startswith(_INCIDENT_RULES))
        )
    )


def _last_success(conn: sa.engine.Connection, incident_id: int) -> datetime | None:
    c = self_heal_attempts.c
    found = conn.execute(
        sa.select(sa.func.max(c.finished_at)).where(
            c.incident_id == incident_id, c.status == Status.SUCCEEDED.value
        )
    ).scalar()
    return None if found is None else as_utc(found)


def _alerts_over(linked: Sequence[Any]) -> datetime | None:
    """When the last of the linked alerts resolved; None while one is still open (or none is)."""
    if not linked or any(
        r.state != str(AlertState.RESOLVED) or r.resolved_at is None for r in linked
    ):
        return None
    return max(as_utc(r.resolved_at) for r in linked)


def recover_by_alerts(
    engine: Engine, now: datetime, materialized: Mapping[str, datetime] | None = None
) -> list[int]:
    """Move to monitoring each incident (open, investigating, identified) that a critical alert
    opened or reopened (a relapse) and whose alerts have all resolved: every failure on its
    timeline since it was last healed is an alert's, no run failed, and nothing of it is broken
    (:func:`blockers`). The incidents moved."""
    e, ia = incident_events.c, incident_alerts.c
    with engine.connect() as conn:
        ids = (
            conn.execute(
                sa.select(incidents.c.incident_id)
                .where(
                    incidents.c.status.in_(_HEALING),
                    sa.exists().where(ia.incident_id == incidents.c.incident_id),
                )
                .order_by(incidents.c.incident_id)
            )
            .scalars()
            .all()
        )
    moved: list[int] = []
    for incident_id in (int(x) for x in ids):
        with engine.connect() as conn:
            over = _alerts_over(_linked_alerts(conn, incident_id))
            if over is None:
                continue
            healed = _last_success(conn, incident_id)
            keys = (
                conn.execute(
                    sa.select(e.dedup_key).where(
                        e.incident_id == incident_id,
                        e.kind == str(IncidentEventKind.FAILURE),
                        *([e.at > healed] if healed is not None else []),
                    )
                )
                .scalars()
                .all()
            )
        if not keys or not all((k or "").startswith(ALERT_FAILURE) for k in keys):
            continue  # a run failed since: its re-run (or the run that heals it) decides
        if blockers(engine, incident_id, materialized):
            continue
        ids_text = ", ".join(sorted(k.removeprefix(ALERT_FAILURE) for k in keys if k))
        try:
            lifecycle.set_status(
                engine,
                incident_id,
                IncidentStatus.MONITORING,
                ACTOR,
                f"its alert(s) {ids_text} resolved and no run failed since",
                now=now,
            )
        except IncidentError:  # changed concurrently (a person, a relapse): leave it to them
            continue
        moved.append(incident_id)
    return moved


def resolve_quiet(
    engine: Engine,
    policy: SelfHealPolicy,
    now: datetime,
    materialized: Mapping[str, datetime] | None = None,
) -> Resolved:
    """Resolve each incident in monitoring that has stayed quiet for the quiet period since it was
    last healed (a re-run of this sensor or another mechanism's run succeeded, or its alerts all
    resolved) with nothing of it broken (:func:`blockers`), and its linked alerts; the resolution
    names what healed it."""
    c = self_heal_attempts.c
    with engine.connect() as conn:
        due = conn.execute(
            sa.select(incidents.c.incident_id, incidents.c.last_failure_at).where(
                incidents.c.status == str(IncidentStatus.MONITORING)
            )
        ).all()
    done = Resolved()
    for row in due:
        incident_id = int(row.incident_id)
        with engine.connect() as conn:
            ran = _last_success(conn, incident_id)
            over = _alerts_over(_linked_alerts(conn, incident_id))
        healed_at = max((t for t in (ran, over) if t is not None), default=None)
        if healed_at is None or as_utc(row.last_failure_at) >= healed_at:
            continue
        if healed_at + policy.quiet_period > now:
            continue
        if blockers(engine, incident_id, materialized):
            continue
        if ran is not None and ran == healed_at:
            with engine.connect() as conn:
                healer = conn.execute(
                    sa.select(c.rule, c.run_key, c.rerun_run_id)
                    .where(c.incident_id == incident_id, c.status == Status.SUCCEEDED.value)
                    .order_by(c.finished_at.desc(), c.attempt_id.desc())
                    .limit(1)
                ).one()
            how = _healed_by(healer)
        else:
            how = "recovered: its alerts resolved"
        resolution = f"{how}, then no failure for {_minutes(policy.quiet_period)}"
        try:
            lifecycle.resolve(engine, incident_id, resolution, ACTOR, now=now)
        except IncidentError:
            continue
        done.incident_ids.append(incident_id)
        done.alert_ids.extend(_resolve_alerts(engine, incident_id, now))
    return done


def _resolve_alerts(engine: Engine, incident_id: int, now: datetime) -> list[int]:
    with engine.connect() as conn:
        open_alerts = (
            conn.execute(
                sa.select(alerts.c.alert_id)
                .join(incident_alerts, incident_alerts.c.alert_id == alerts.c.alert_id)
                .where(
                    incident_alerts.c.incident_id == incident_id,
                    alerts.c.state != str(AlertState.RESOLVED),
                )
            )
            .scalars()
            .all()
        )
    resolved: list[int] = []
    for alert_id in open_alerts:
        try:
            resolve_alert(
                engine, int(alert_id), ACTOR.name, f"incident {incident_id} self-healed", now
            )
        except AlertActionError:  # resolved meanwhile
            continue
        resolved.append(int(alert_id))
    if resolved:
        add_event(
            engine,
            incident_id,
            IncidentEventKind.SELF_HEAL_OUTCOME,
            ACTOR,
            f"{len(resolved)} linked alert(s) resolved with the incident",
            {"alert_ids": resolved},
            now,
        )
    return resolved


# --- For `healthmon status` ---------------------------------------------------------------------------


@dataclass(frozen=True)
class SelfHealSummary:
    open_breakers: list[tuple[str, datetime]]  # asset, opened at
    reruns_in_window: int
    failed_in_window: int
    in_flight: int

    def to_dict(self) -> dict[str, Any]:
        return {
            "open_breakers": [
                {"asset": a, "opened_at": t.isoformat()} for a, t in self.open_breakers
            ],
            "reruns_in_window": self.reruns_in_window,
            "failed_in_window": self.failed_in_window,
            "in_flight": self.in_flight,
        }


def summary(engine: Engine, window: timedelta, now: datetime) -> SelfHealSummary:
    """Open circuit breakers (an asset whose latest breaker row is ``escalated``) and the re-runs
    requested within ``window`` (not the ``recovered:`` rows of another mechanism's runs)."""
    c = self_heal_attempts.c
    latest = (
        sa.select(c.asset_key, sa.func.max(c.attempt).label("attempt"))
        .where(c.status.in_([Status.ESCALATED.value, Status.RESET.value]))
        .group_by(c.asset_key)
        .subquery()
    )
    runs = [Status.REQUESTED.value, Status.SUCCEEDED.value, Status.FAILED.value]
    with engine.connect() as conn:
        breakers = conn.execute(
            sa.select(c.asset_key, c.requested_at)
            .join(latest, (latest.c.asset_key == c.asset_key) & (latest.c.attempt == c.attempt))
            .where(c.status == Status.ESCALATED.value)
            .order_by(c.asset_key)
        ).all()
        counts = conn.execute(
            sa.select(
                sa.func.count().filter(c.status.in_(runs)),
                sa.func.count().filter(c.status == Status.FAILED.value),
            ).where(c.requested_at > now - window, c.run_key.like(f"{RUN_KEY_PREFIX}%"))
        ).one()
        in_flight = conn.execute(
            sa.select(sa.func.count()).where(c.status == Status.REQUESTED.value)
        ).scalar_one()
    return SelfHealSummary(
        [(r.asset_key, as_utc(r.requested_at)) for r in breakers],
        int(counts[0]),
        int(counts[1]),
        int(in_flight),
    )
