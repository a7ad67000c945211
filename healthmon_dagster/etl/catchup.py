"""Catching up the downstream layers: files whose raw load committed but whose staging or core
merge failed on a transient error.

Such a file has a terminal record (``etl.files``: loaded), so the landing sensor requests no further
attempt for it, and ``stage_pending`` / ``merge_pending`` would process it only in the run of the
next file to land. The **backlog** is every loaded file not yet staged or merged whose latest
attempt failed on a transient error (a file held back by a failed blocking check, or one loaded by
hand, is not caught up behind anyone's back). While there is a backlog and no ETL run is queued or
running, the landing sensor requests a catch-up run of the downstream assets, with the run key
``catch-up@files<=<last file id>#<n>``: derived from the store, so two ticks request one run, and a
new file in the backlog starts a new series. Its runs are retried with the attempts' policy
(:class:`~healthmon_dagster.etl.attempts.AttemptPolicy`: backoff, ``max_attempts``,
``give_up_after``); past the bound the backlog waits for the next file's run or a person.
"""

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

import sqlalchemy as sa
from sqlalchemy.engine import Engine

from healthmon_dagster.etl.attempts import AttemptPolicy, AttemptStatus
from healthmon_dagster.store.tables import file_attempts, files


@dataclass(frozen=True)
class Backlog:
    """Loaded files not yet staged or merged whose latest attempt failed on a transient error."""

    files: int
    last_file_id: int

    @property
    def key(self) -> str:
        """Identifies the backlog in run keys and tags: it changes when a newer file joins."""
        return f"files<={self.last_file_id}"


def downstream_backlog(engine: Engine) -> Backlog | None:
    """The backlog to catch up, or None when there is none."""
    a, f, other = file_attempts.c, files.c, file_attempts.alias("other").c
    latest = (
        sa.select(sa.func.max(other.attempt))
        .where(other.file_key == f.file_key, other.fingerprint == f.fingerprint)
        .scalar_subquery()
    )
    failed_transiently = sa.exists().where(
        a.file_key == f.file_key,
        a.fingerprint == f.fingerprint,
        a.attempt == latest,
        a.status == AttemptStatus.FAILED.value,
        a.transient.is_(True),
    )
    query = sa.select(sa.func.count(), sa.func.max(f.file_id)).where(
        f.status == "loaded",
        f.staged_at.is_(None) | f.merged_at.is_(None),
        failed_transiently,
    )
    with engine.connect() as conn:
        count, last = conn.execute(query).one()
    return Backlog(int(count), int(last)) if count else None


@dataclass(frozen=True)
class CatchUpRun:
    """One earlier catch-up run of the same backlog: when it started, and when it ended (None
    while queued or running) and whether it succeeded."""

    started_at: datetime
    ended_at: datetime | None
    succeeded: bool


@dataclass(frozen=True)
class CatchUp:
    """What to do about a backlog: ``due`` (request run ``attempt`` now), ``in_flight``,
    ``waiting`` (until ``retry_at``) or ``given_up`` (the bound is reached, or a run succeeded and
    left the backlog: running again would not help)."""

    state: str
    attempt: int
    retry_at: datetime | None = None


def decide_catch_up(runs: Sequence[CatchUpRun], policy: AttemptPolicy, now: datetime) -> CatchUp:
    """The next step for a backlog whose earlier catch-up runs are ``runs``: the first at once,
    each next one after the attempts' backoff (without jitter: every tick computes the same
    time), up to ``max_attempts`` runs or ``give_up_after`` since the first."""
    if not runs:
        return CatchUp("due", 1)
    n = len(runs)
    if any(r.ended_at is None for r in runs):
        return CatchUp("in_flight", n)
    ordered = sorted(runs, key=lambda r: r.started_at)
    last_end = max(r.ended_at for r in ordered if r.ended_at is not None)
    spent = n >= policy.max_attempts or last_end - ordered[0].started_at >= policy.give_up_after
    if ordered[-1].succeeded or spent:
        return CatchUp("given_up", n)
    retry_at = last_end + policy.delay(n, lambda: 0.5)
    if now >= retry_at:
        return CatchUp("due", n + 1)
    return CatchUp("waiting", n, retry_at)


def catch_up_run_key(backlog: Backlog, attempt: int) -> str:
    return f"catch-up@{backlog.key}#{attempt}"
