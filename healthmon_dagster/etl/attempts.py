"""Attempts to load each landing file: which files are pending, which run is whose attempt, when a
failed file is tried again, and which files are stuck.

A version of a landing file (its key and the listing's fingerprint) is **pending** until it has a
terminal record: a row in ``etl.files`` (loaded, empty or rejected: the loader has decided), or an
attempt that succeeded or is stuck (``etl.file_attempts``). Only pending files cost the landing
sensor anything, so files rejected once are never requested again unless their content changes.

Each run requested for a pending file is an **attempt** (1, 2, ...), with Dagster run key
``key@fingerprint#attempt``. The attempt row is inserted before its run is requested, and the unique
index on (key, fingerprint, attempt) lets only one sensor tick or process win each attempt. When an
attempt's runs have all failed (after the step retries inside the run, and Dagster's ``run_retries``
for a lost worker), its outcome is recorded: a transient failure is tried again from ``retry_at``
(exponential backoff with jitter), until ``max_attempts`` or ``give_up_after``; a failure that
running again cannot fix, or the bound, makes the file **stuck**: it stays so until it lands with
other content (a new fingerprint), or a person releases it (``etl.file_releases``,
:mod:`healthmon_dagster.etl.releases`), which gives it a fresh budget counted after the release.

A failure that says a dependency was unavailable (``dependency`` of :mod:`etl.failures`: the
warehouse, the landing area) does not wait out its backoff once the sensor has seen that
dependency unavailable after the attempt was requested and, in this tick, reachable again
(:func:`walk_pending`'s ``recovered``): the operator who restores the database expects the files
within a tick and a run. It still counts against the bound. Each attempt records why it was
requested (``reason``).

The deciding functions take plain data; the landing sensor (``defs/pipeline/sensors.py``) reads the
Dagster runs of each attempt and hands in their :class:`RunOutcome`. The self-healing sensor to come
reads and extends the same rows.
"""

import bisect
import json
import random
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from collections.abc import Set as AbstractSet
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta
from enum import StrEnum
from typing import Any

import sqlalchemy as sa
from sqlalchemy import exc as sa_exc
from sqlalchemy.engine import Engine

from healthmon_dagster.config.models import LandingRetryConfiguration
from healthmon_dagster.etl.failures import UNCLASSIFIED, Classification
from healthmon_dagster.etl.landing import LandingFile
from healthmon_dagster.store.connection import write_transaction
from healthmon_dagster.store.metrics import as_utc
from healthmon_dagster.store.tables import file_attempts, file_releases, files

# Keys per IN (...) list: well below SQLite's bound-parameter limit, and an index probe each.
_CHUNK = 400


class AttemptStatus(StrEnum):
    """Values of ``etl.file_attempts.status``."""

    REQUESTED = "requested"  # run requested; queued, running, or its outcome not seen yet
    SUCCEEDED = "succeeded"
    FAILED = "failed"  # the next attempt may be requested from retry_at
    STUCK = "stuck"  # no further attempt for this content


ATTEMPT_DONE = (AttemptStatus.SUCCEEDED, AttemptStatus.STUCK)


@dataclass(frozen=True)
class AttemptPolicy:
    """How often and how soon a failed file is tried again (``landing.retry`` of healthmon.yaml)."""

    max_attempts: int = 10
    initial_delay: timedelta = timedelta(seconds=60)
    max_delay: timedelta = timedelta(seconds=600)
    give_up_after: timedelta = timedelta(minutes=60)
    jitter: float = 0.1  # +- this fraction of each delay, so files that failed together spread out

    @classmethod
    def from_config(cls, cfg: LandingRetryConfiguration) -> "AttemptPolicy":
        return cls(
            max_attempts=cfg.max_attempts,
            initial_delay=timedelta(seconds=cfg.initial_delay_seconds),
            max_delay=timedelta(seconds=cfg.max_delay_seconds),
            give_up_after=timedelta(minutes=cfg.give_up_after_minutes),
        )

    def delay(self, attempt: int, rand: Callable[[], float] = random.random) -> timedelta:
        """The wait after attempt ``attempt`` (1-based) failed: the initial delay doubled per
        attempt, capped at the maximum, +- the jitter."""
        base = min(
            self.max_delay.total_seconds(),
            self.initial_delay.total_seconds() * 2 ** min(attempt - 1, 30),
        )
        return timedelta(seconds=base * (1 + self.jitter * (2 * rand() - 1)))


@dataclass(frozen=True)
class Attempt:
    """One row of ``etl.file_attempts``."""

    file_key: str
    fingerprint: str
    attempt: int
    run_key: str
    status: AttemptStatus
    requested_at: datetime
    finished_at: datetime | None = None
    retry_at: datetime | None = None
    dagster_run_id: str | None = None
    runs: int = 0
    error_class: str | None = None
    transient: bool | None = None
    rule: str | None = None  # the classification rule that decided (etl.failures)
    error: str | None = None
    reason: str | None = None  # why the sensor requested it (REASON_*)
    dependency: str | None = None  # what the failure found unavailable (etl.failures)

    @classmethod
    def from_row(cls, row: Any) -> "Attempt":
        return cls(
            file_key=row.file_key,
            fingerprint=row.fingerprint,
            attempt=row.attempt,
            run_key=row.run_key,
            status=AttemptStatus(row.status),
            requested_at=as_utc(row.requested_at),
            finished_at=as_utc(row.finished_at) if row.finished_at is not None else None,
            retry_at=as_utc(row.retry_at) if row.retry_at is not None else None,
            dagster_run_id=row.dagster_run_id,
            runs=row.runs,
            error_class=row.error_class,
            transient=row.transient,
            rule=row.rule,
            error=row.error,
            reason=row.reason,
            dependency=row.dependency,
        )


REASON_NEW = "new file"
REASON_BACKOFF = "backoff passed"


def reason_recovered(dependency: str) -> str:
    return f"{dependency} answers again"


def reason_released(by: str) -> str:
    return f"released by {by}"


def run_key(file_key: str, fingerprint: str, attempt: int) -> str:
    """Dagster's run key of one attempt: Dagster never launches two runs with one key."""
    return f"{file_key}@{fingerprint}#{attempt}"


@dataclass(frozen=True)
class RunOutcome:
    """What the Dagster runs of one attempt say, as plain data.

    ``state``: ``in_flight`` (a run is queued or running, or Dagster's run_retries will launch
    one), ``succeeded``, ``failed`` (every run ended and none will follow; ``classification``
    says why) or ``missing`` (no run was ever created for the attempt's run key).
    """

    state: str
    classification: Classification | None = None
    message: str | None = None
    dagster_run_id: str | None = None
    runs: int = 0
    ended_at: datetime | None = None  # when the last run ended (the backoff counts from there)


def _chunks(items: Sequence[Any], size: int = _CHUNK) -> Iterator[Sequence[Any]]:
    for i in range(0, len(items), size):
        yield items[i : i + size]


def _same_version(table: sa.Table, key: Any, fingerprint: Any) -> Any:
    return (table.c.file_key == key) & (table.c.fingerprint == fingerprint)


def files_row_is_terminal(row: Any = files) -> Any:
    """SQL: an ``etl.files`` row that ends its version's story: loaded, empty, or rejected and not
    released since (a person who fixed the configuration may release a rejected file)."""
    r = file_releases.c
    released = sa.exists().where(
        _same_version(file_releases, row.c.file_key, row.c.fingerprint),
        r.released_status == "rejected",
        r.released_at >= row.c.loaded_at,
    )
    return row.c.status.in_(("loaded", "empty")) | ((row.c.status == "rejected") & ~released)


def attempt_is_terminal(row: Any = file_attempts) -> Any:
    """SQL: an ``etl.file_attempts`` row that ends its version's story: succeeded, or stuck and not
    released since."""
    released = sa.exists().where(
        _same_version(file_releases, row.c.file_key, row.c.fingerprint),
        file_releases.c.after_attempt >= row.c.attempt,
    )
    return (row.c.status == AttemptStatus.SUCCEEDED.value) | (
        (row.c.status == AttemptStatus.STUCK.value) & ~released
    )


def _done_versions(engine: Engine, keys: Iterable[str]) -> set[tuple[str, str | None]]:
    """(key, fingerprint) of the versions among ``keys`` with a terminal record."""
    keys = sorted(set(keys))
    done: set[tuple[str, str | None]] = set()
    with engine.connect() as conn:
        for chunk in _chunks(keys):
            done.update(
                (r.file_key, r.fingerprint)
                for r in conn.execute(
                    sa.select(files.c.file_key, files.c.fingerprint)
                    .where(files.c.file_key.in_(chunk), files_row_is_terminal())
                    .distinct()
                )
            )
            done.update(
                (r.file_key, r.fingerprint)
                for r in conn.execute(
                    sa.select(file_attempts.c.file_key, file_attempts.c.fingerprint)
                    .where(file_attempts.c.file_key.in_(chunk), attempt_is_terminal())
                    .distinct()
                )
            )
    return done


def _releases(engine: Engine, keys: Iterable[str]) -> dict[tuple[str, str], tuple[int, str]]:
    """The latest release of each version among ``keys``: (after_attempt, released_by)."""
    r = file_releases.c
    latest: dict[tuple[str, str], tuple[int, str]] = {}
    with engine.connect() as conn:
        for chunk in _chunks(sorted(set(keys))):
            rows = conn.execute(
                sa.select(r.file_key, r.fingerprint, r.after_attempt, r.released_by)
                .where(r.file_key.in_(chunk))
                .order_by(r.after_attempt)
            )
            for row in rows:
                latest[(row.file_key, row.fingerprint)] = (row.after_attempt, row.released_by)
    return latest


def pending_files(engine: Engine, listed: Sequence[LandingFile]) -> list[LandingFile]:
    """The listed files without a terminal record for their key and fingerprint (loaded, empty or
    rejected in ``etl.files``; succeeded or stuck in ``etl.file_attempts``), in listing order."""
    if not listed:
        return []
    done = _done_versions(engine, (f.key for f in listed))
    return [f for f in listed if (f.key, f.fingerprint) not in done]


def latest_attempts(
    engine: Engine, versions: Iterable[tuple[str, str]]
) -> dict[tuple[str, str], Attempt]:
    """The highest attempt of each (key, fingerprint) that has one."""
    wanted = set(versions)
    latest: dict[tuple[str, str], Attempt] = {}
    with engine.connect() as conn:
        for chunk in _chunks(sorted({k for k, _ in wanted})):
            for row in conn.execute(
                sa.select(file_attempts).where(file_attempts.c.file_key.in_(chunk))
            ):
                version = (row.file_key, row.fingerprint)
                if version in wanted and (
                    version not in latest or row.attempt > latest[version].attempt
                ):
                    latest[version] = Attempt.from_row(row)
    return latest


def requested_attempts(engine: Engine, limit: int) -> list[Attempt]:
    """Attempts whose outcome has not been recorded yet, oldest first (at most ``limit``)."""
    c = file_attempts.c
    with engine.connect() as conn:
        rows = conn.execute(
            sa.select(file_attempts)
            .where(c.status == AttemptStatus.REQUESTED.value)
            .order_by(c.requested_at, c.attempt_id)
            .limit(limit)
        )
        return [Attempt.from_row(r) for r in rows]


def open_attempt(
    engine: Engine, file: LandingFile, attempt: int, now: datetime, reason: str | None = None
) -> Attempt | None:
    """Insert attempt ``attempt`` of ``file`` (requested for ``reason``); None when another tick
    or process inserted it first (the unique index decides: only the winner requests the run)."""
    row = Attempt(
        file_key=file.key,
        fingerprint=file.fingerprint,
        attempt=attempt,
        run_key=run_key(file.key, file.fingerprint, attempt),
        status=AttemptStatus.REQUESTED,
        requested_at=now,
        reason=reason,
    )
    try:
        with write_transaction(engine) as conn:
            conn.execute(
                file_attempts.insert().values(
                    file_key=row.file_key,
                    fingerprint=row.fingerprint,
                    attempt=row.attempt,
                    run_key=row.run_key,
                    status=row.status.value,
                    requested_at=row.requested_at,
                    reason=row.reason,
                )
            )
    except sa_exc.IntegrityError:
        return None
    return row


def decide(
    attempt: Attempt,
    outcome: RunOutcome,
    policy: AttemptPolicy,
    now: datetime,
    first_requested_at: datetime,
    has_record: bool,
    rand: Callable[[], float] = random.random,
    budget_start: int = 0,
) -> Attempt:
    """The attempt once its runs have ended (``outcome.state`` succeeded or failed).

    A failed attempt is tried again from ``retry_at`` (its backoff counted from when its last run
    ended) when its failure is transient and the bound (``max_attempts``, ``give_up_after`` since
    ``first_requested_at``) is not reached; otherwise the file is stuck. When the file has a
    terminal record anyway (``has_record``: the loader rejected it, or a run of another attempt
    loaded it), or vanished from the landing area, the attempt is failed without a retry: there
    is nothing left to try, and nothing is stuck. ``budget_start``: the attempt after which the
    budget counts (a release gives a fresh one; ``first_requested_at`` is then the first attempt
    after it).
    """
    ended = min(outcome.ended_at or now, now)
    done = replace(
        attempt,
        finished_at=ended,
        dagster_run_id=outcome.dagster_run_id,
        runs=outcome.runs,
    )
    if outcome.state == "succeeded":
        return replace(done, status=AttemptStatus.SUCCEEDED)
    if outcome.state != "failed":
        raise ValueError(f"attempt {attempt.run_key} has not ended: {outcome.state}")
    why = outcome.classification or UNCLASSIFIED
    failed = replace(
        done,
        error_class=why.error_class,
        transient=why.transient,
        rule=why.rule,
        error=outcome.message,
        dependency=why.dependency,
    )
    if has_record or why.error_class == "landing_file_missing":
        return replace(failed, status=AttemptStatus.FAILED, retry_at=None)
    bound = attempt.attempt - budget_start >= policy.max_attempts or ended - first_requested_at >= (
        policy.give_up_after
    )
    if not failed.transient or bound:
        return replace(failed, status=AttemptStatus.STUCK, retry_at=None)
    return replace(
        failed, status=AttemptStatus.FAILED, retry_at=ended + policy.delay(attempt.attempt, rand)
    )


def record_outcome(
    engine: Engine,
    attempt: Attempt,
    outcome: RunOutcome,
    policy: AttemptPolicy,
    now: datetime,
    rand: Callable[[], float] = random.random,
) -> Attempt | None:
    """Decide (see :func:`decide`) and store the outcome of a requested attempt; None when another
    process stored it first (the update only applies to a row still ``requested``)."""
    c = file_attempts.c
    version = _same_version(file_attempts, attempt.file_key, attempt.fingerprint)
    with engine.connect() as conn:
        # The budget counts from the latest release before this attempt (0: none).
        budget_start = conn.execute(
            sa.select(sa.func.coalesce(sa.func.max(file_releases.c.after_attempt), 0)).where(
                _same_version(file_releases, attempt.file_key, attempt.fingerprint),
                file_releases.c.after_attempt < attempt.attempt,
            )
        ).scalar_one()
        first = conn.execute(
            sa.select(sa.func.min(c.requested_at)).where(version, c.attempt > budget_start)
        ).scalar_one()
        has_record = (
            conn.execute(
                sa.select(files.c.file_id)
                .where(
                    _same_version(files, attempt.file_key, attempt.fingerprint),
                    files_row_is_terminal(),
                )
                .limit(1)
            ).first()
            is not None
        )
    first_requested_at = as_utc(first) if first is not None else attempt.requested_at
    ended = decide(
        attempt, outcome, policy, now, first_requested_at, has_record, rand, int(budget_start)
    )
    with write_transaction(engine) as conn:
        updated = conn.execute(
            file_attempts.update()
            .where(
                version,
                c.attempt == attempt.attempt,
                c.status == AttemptStatus.REQUESTED.value,
            )
            .values(
                status=ended.status.value,
                finished_at=ended.finished_at,
                retry_at=ended.retry_at,
                dagster_run_id=ended.dagster_run_id,
                runs=ended.runs,
                error_class=ended.error_class,
                transient=ended.transient,
                rule=ended.rule,
                error=ended.error,
                dependency=ended.dependency,
            )
        ).rowcount
    return ended if updated else None


# --- The landing sensor's walk over pending files -----------------------------------------------


@dataclass
class Walk:
    """What one sensor tick decided for the pending files it looked at."""

    requests: list[Attempt] = field(default_factory=list)  # new attempts, and unlaunched ones again
    pending: int = 0  # pending files among the listed files the walk reached
    examined: int = 0  # of them, looked at in this tick
    in_flight: int = 0  # an attempt's run is queued or running
    waiting: int = 0  # a failed attempt waits for its retry_at
    lost_races: int = 0  # another tick or process opened the attempt first
    recovered: dict[str, int] = field(default_factory=dict)  # early retries, by dependency back
    released: int = 0  # attempts of files a person released
    cursor: str | None = None  # where the next tick continues; None: from the oldest file
    bounded_by: str | None = None  # "count" or "time" when the tick stopped early


def _position(f: LandingFile) -> tuple[float, str]:
    return (f.last_modified, f.key)


def encode_cursor(f: LandingFile) -> str:
    return json.dumps({"after": [f.last_modified, f.key]})


def decode_cursor(cursor: str | None) -> tuple[float, str] | None:
    """The position a cursor points after; None for no cursor or one this version cannot read."""
    if not cursor:
        return None
    try:
        modified, key = json.loads(cursor)["after"]
        return (float(modified), str(key))
    except (ValueError, KeyError, TypeError):
        return None


def walk_pending(
    engine: Engine,
    listed: Sequence[LandingFile],
    *,
    cursor: str | None,
    now: datetime,
    max_requests: int,
    deadline: float,
    unlaunched: AbstractSet[str] = frozenset(),
    recovered: Mapping[str, datetime] | None = None,
    clock: Callable[[], float] = time.monotonic,
    chunk: int = 200,
) -> Walk:
    """Decide which pending files get a run in this tick, oldest first from ``cursor``.

    ``listed`` is the landing listing, oldest first. The walk starts after the cursor's file and
    wraps around to the oldest, so a tick that stops at its bound (``max_requests`` runs, or the
    ``deadline`` of ``clock``) is continued by the next one and every pending file is looked at in
    turn. Per file: no attempt yet -> attempt 1; the latest attempt failed and its ``retry_at`` has
    come -> the next attempt; requested but never launched (its run key in ``unlaunched``) ->
    requested again under the same run key (Dagster launches it at most once); released by a
    person -> the next attempt at once. ``recovered``: the dependencies this tick found reachable,
    each with when the sensor last found it unavailable; a failed attempt whose failure blamed one
    of them, requested before that, is due now instead of at its ``retry_at``.
    """
    walk = Walk()
    order = sorted(listed, key=_position)
    after = decode_cursor(cursor)
    if after is not None:
        start = bisect.bisect_right([_position(f) for f in order], after)
        order = order[start:] + order[:start]
    last: LandingFile | None = None
    for i in range(0, len(order), chunk):
        files_chunk = order[i : i + chunk]
        pending = pending_files(engine, files_chunk)
        walk.pending += len(pending)
        latest = latest_attempts(engine, [(f.key, f.fingerprint) for f in pending])
        releases = _releases(engine, [f.key for f in pending])
        for f in pending:
            if len(walk.requests) >= max_requests:
                walk.bounded_by = "count"
            elif clock() >= deadline:
                walk.bounded_by = "time"
            if walk.bounded_by:
                break
            walk.examined += 1
            last = f
            a = latest.get((f.key, f.fingerprint))
            release = releases.get((f.key, f.fingerprint))
            reason = _why_now(a, release, now, recovered or {})
            if reason is not None:
                _open(engine, walk, f, a, now, reason)
            elif a is not None and a.status == AttemptStatus.REQUESTED and a.run_key in unlaunched:
                walk.requests.append(a)
            elif a is not None and a.status == AttemptStatus.REQUESTED:
                walk.in_flight += 1
            else:
                walk.waiting += 1
        if walk.bounded_by:
            walk.cursor = encode_cursor(last) if last is not None else cursor
            break
    return walk


def _why_now(
    a: Attempt | None,
    release: tuple[int, str] | None,
    now: datetime,
    recovered: Mapping[str, datetime],
) -> str | None:
    """Why a pending file's next attempt is due now (a ``reason``), or None when it is not."""
    if release is not None and (a is None or a.attempt <= release[0]):
        return reason_released(release[1])
    if a is None:
        return REASON_NEW
    if a.status != AttemptStatus.FAILED:
        return None
    if a.retry_at is None or a.retry_at <= now:
        return REASON_BACKOFF
    down_at = recovered.get(a.dependency) if a.dependency else None
    if down_at is not None and a.requested_at <= down_at:
        return reason_recovered(str(a.dependency))
    return None


def _open(
    engine: Engine, walk: Walk, f: LandingFile, a: Attempt | None, now: datetime, reason: str
) -> None:
    opened = open_attempt(engine, f, 1 if a is None else a.attempt + 1, now, reason)
    if opened is None:
        walk.lost_races += 1
        return
    walk.requests.append(opened)
    if a is not None and a.dependency and reason == reason_recovered(a.dependency):
        walk.recovered[a.dependency] = walk.recovered.get(a.dependency, 0) + 1
    elif reason.startswith("released by "):
        walk.released += 1


# --- The sensor's memory of unavailable dependencies ------------------------------------------------


def unavailable_since(cursor: str | None) -> dict[str, datetime]:
    """When the sensor last found each dependency unavailable, as its cursor remembers."""
    try:
        seen = json.loads(cursor or "{}").get("unavailable", {})
        return {str(k): as_utc(datetime.fromisoformat(v)) for k, v in seen.items()}
    except (ValueError, AttributeError, TypeError):
        return {}


def with_unavailable(cursor: str | None, seen: Mapping[str, datetime]) -> str:
    """``cursor`` (a walk's position or None) remembering ``seen`` as well."""
    try:
        data = json.loads(cursor) if cursor else {}
    except ValueError:
        data = {}
    if not isinstance(data, dict):
        data = {}
    data["unavailable"] = {k: v.isoformat() for k, v in sorted(seen.items())}
    return json.dumps(data)


# --- Stuck files ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class StuckFile:
    """A landing file that will not be tried again until it lands with other content."""

    file_key: str
    fingerprint: str
    attempts: int
    error_class: str | None
    error: str | None
    first_requested_at: datetime
    stuck_since: datetime | None


def stuck_files(engine: Engine, limit: int | None = None) -> list[StuckFile]:
    """Files whose latest version is stuck: nothing loaded, rejected or attempted under that key
    since it got stuck. Oldest first."""
    a = file_attempts.alias("a")
    later = file_attempts.alias("later")
    first = file_attempts.alias("first")
    since = sa.func.coalesce(a.c.finished_at, a.c.requested_at)
    query = (
        sa.select(
            a.c.file_key,
            a.c.fingerprint,
            a.c.attempt,
            a.c.error_class,
            a.c.error,
            a.c.finished_at,
            sa.select(sa.func.min(first.c.requested_at))
            .where(first.c.file_key == a.c.file_key, first.c.fingerprint == a.c.fingerprint)
            .scalar_subquery()
            .label("first_requested_at"),
        )
        .where(
            a.c.status == AttemptStatus.STUCK.value,
            ~sa.exists().where(later.c.file_key == a.c.file_key, later.c.requested_at > since),
            ~sa.exists().where(files.c.file_key == a.c.file_key, files.c.loaded_at > since),
            ~sa.exists().where(
                _same_version(file_releases, a.c.file_key, a.c.fingerprint),
                file_releases.c.after_attempt >= a.c.attempt,
            ),
        )
        .order_by(since, a.c.file_key)
    )
    if limit is not None:
        query = query.limit(limit)
    with engine.connect() as conn:
        return [
            StuckFile(
                file_key=r.file_key,
                fingerprint=r.fingerprint,
                attempts=r.attempt,
                error_class=r.error_class,
                error=r.error,
                first_requested_at=as_utc(r.first_requested_at),
                stuck_since=as_utc(r.finished_at) if r.finished_at is not None else None,
            )
            for r in conn.execute(query)
        ]
