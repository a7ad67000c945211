"""A person releasing a landing file that will not load by itself, and the files as an operator sees
them (``healthmon files``).

A **stuck** file (its attempts spent, or a failure running again could not fix) is released by
inserting a row into ``etl.file_releases``: the landing sensor then requests its next attempt at
once, with a fresh budget counted after the release (:mod:`healthmon_dagster.etl.attempts`). A
**rejected** file can be released too: a rejection follows from the configuration
(``landing.accepted_extra_columns``, accepted delimiters), and an operator who changed it wants the
same bytes judged again; the loader then decides afresh and records a new ``etl.files`` row. Nothing
is deleted: the attempts, their errors and the release (who, when, what it was) stay, so the record
of what was retried and why survives. One release per version and attempt is a unique constraint,
so two people releasing the same file make one release.
"""

from dataclasses import dataclass
from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy import exc as sa_exc
from sqlalchemy.engine import Connection, Engine

from healthmon_dagster.etl.attempts import AttemptStatus, stuck_files
from healthmon_dagster.store.connection import write_transaction
from healthmon_dagster.store.metrics import as_utc
from healthmon_dagster.store.tables import file_attempts, file_releases, files


class ReleaseError(Exception):
    """A file that cannot be released; the one-line message says which, why and what to do."""


@dataclass(frozen=True)
class Release:
    """One row of ``etl.file_releases``."""

    file_key: str
    fingerprint: str
    released_status: str  # what the file was: stuck | rejected
    after_attempt: int  # the fresh budget counts the attempts after this one
    released_by: str
    released_at: datetime


@dataclass(frozen=True)
class FileVersion:
    """One version (key and fingerprint) of a landing file as ``healthmon files list`` shows it."""

    file_key: str
    fingerprint: str | None
    status: str  # loaded, empty, rejected, stuck, released, requested, retrying, failed, succeeded
    attempts: int
    error_class: str | None
    error: str | None
    updated_at: datetime | None


def _insert(conn: Connection, release: Release) -> None:
    conn.execute(
        file_releases.insert().values(
            file_key=release.file_key,
            fingerprint=release.fingerprint,
            released_status=release.released_status,
            after_attempt=release.after_attempt,
            released_by=release.released_by,
            released_at=release.released_at,
        )
    )


def _last_attempt(conn: Connection, key: str, fingerprint: str) -> int:
    c = file_attempts.c
    value = conn.execute(
        sa.select(sa.func.coalesce(sa.func.max(c.attempt), 0)).where(
            c.file_key == key, c.fingerprint == fingerprint
        )
    ).scalar_one()
    return int(value)


def _latest_files_row(conn: Connection, key: str) -> Any:
    return conn.execute(
        sa.select(files.c.status, files.c.fingerprint, files.c.loaded_at)
        .where(files.c.file_key == key)
        .order_by(files.c.loaded_at.desc(), files.c.file_id.desc())
        .limit(1)
    ).first()


def _rejected_release(conn: Connection, key: str, by: str, now: datetime) -> Release:
    """The release of ``key``'s latest version when the loader rejected it, or why there is none."""
    row = _latest_files_row(conn, key)
    if row is None:
        if conn.execute(
            sa.select(file_attempts.c.status).where(file_attempts.c.file_key == key).limit(1)
        ).first():
            raise ReleaseError(
                f"landing file {key} is not stuck: its attempts are under way or waiting for their "
                "backoff (`healthmon files list` shows them); nothing to release"
            )
        raise ReleaseError(
            f"unknown landing file {key}: no attempt or load is recorded for it; "
            "`healthmon files list` shows the files the pipeline knows"
        )
    if row.status != "rejected":
        raise ReleaseError(
            f"landing file {key} is not stuck or rejected (it is {row.status}); nothing to release"
        )
    if row.fingerprint is None:
        raise ReleaseError(
            f"landing file {key} was rejected by a load outside the landing sensor (no "
            "fingerprint recorded): land it again to have it loaded"
        )
    released = conn.execute(
        sa.select(file_releases.c.released_at).where(
            file_releases.c.file_key == key,
            file_releases.c.fingerprint == row.fingerprint,
            file_releases.c.released_at >= row.loaded_at,
        )
    ).first()
    if released is not None:
        raise ReleaseError(_already(key))
    return Release(
        key, row.fingerprint, "rejected", _last_attempt(conn, key, row.fingerprint), by, now
    )


def _awaits_sensor(conn: Connection, key: str) -> bool:
    """``key`` has a release the landing sensor has not requested an attempt for yet."""
    r = file_releases.c
    latest = conn.execute(
        sa.select(r.fingerprint, r.after_attempt)
        .where(r.file_key == key)
        .order_by(r.released_at.desc(), r.release_id.desc())
        .limit(1)
    ).first()
    return (
        latest is not None and _last_attempt(conn, key, latest.fingerprint) <= latest.after_attempt
    )


def _already(key: str) -> str:
    return (
        f"landing file {key} is already released; the landing sensor requests it at its next tick"
    )


def release_file(engine: Engine, key: str, by: str, now: datetime) -> Release:
    """Release the latest version of landing file ``key``: stuck, or rejected by the loader.

    Raises :class:`ReleaseError` for a key nothing is recorded for, a file that is neither stuck
    nor rejected (loaded, in flight, waiting for its backoff) and one already released.
    """
    stuck = [s for s in stuck_files(engine) if s.file_key == key]
    try:
        with write_transaction(engine) as conn:
            if _awaits_sensor(conn, key):
                raise ReleaseError(_already(key))
            if stuck:
                (s,) = stuck
                release = Release(key, s.fingerprint, "stuck", s.attempts, by, now)
            else:
                release = _rejected_release(conn, key, by, now)
            _insert(conn, release)
    except sa_exc.IntegrityError:
        raise ReleaseError(_already(key)) from None
    return release


def release_all_stuck(engine: Engine, by: str, now: datetime) -> list[Release]:
    """Release every stuck file (one transaction; a file released meanwhile by someone else is
    left to that release)."""
    releases = [
        Release(s.file_key, s.fingerprint, "stuck", s.attempts, by, now)
        for s in stuck_files(engine)
    ]
    done: list[Release] = []
    for release in releases:
        try:
            with write_transaction(engine) as conn:
                _insert(conn, release)
        except sa_exc.IntegrityError:
            continue
        done.append(release)
    return done


# --- The files as the operator sees them ----------------------------------------------------------


def _pending_release(attempt: Any, row: Any, released: Any) -> bool:
    """A release the sensor has not acted on yet: no attempt after it, and for a rejected file no
    rejection since."""
    if released is None or (attempt is not None and released.after_attempt < attempt.attempt):
        return False
    return (
        row is None
        or row.status != "rejected"
        or as_utc(released.released_at) >= as_utc(row.loaded_at)
    )


def _status(attempt: Any, row: Any, released: Any) -> str:
    """The status of a version from its latest attempt, its latest ``etl.files`` row and its
    latest release (each may be None)."""
    if row is not None and row.status in ("loaded", "empty"):
        return str(row.status)
    if _pending_release(attempt, row, released):
        return "released"
    if attempt is not None and attempt.status == AttemptStatus.STUCK.value:
        return "stuck"
    if row is not None and row.status == "rejected":
        return "rejected"
    if attempt is None:
        return "unknown"
    if attempt.status == AttemptStatus.FAILED.value:
        return "retrying" if attempt.retry_at is not None else "failed"
    return str(attempt.status)


def _latest_per_version(
    conn: Connection, table: sa.Table, order: sa.Column[Any], keys: list[str]
) -> dict[tuple[str, str | None], Any]:
    """The row of ``table`` with the highest ``order`` per (file_key, fingerprint) of ``keys``."""
    top = (
        sa.select(table.c.file_key, table.c.fingerprint, sa.func.max(order).label("top"))
        .where(table.c.file_key.in_(keys))
        .group_by(table.c.file_key, table.c.fingerprint)
        .subquery()
    )
    rows = conn.execute(
        sa.select(table).join(
            top,
            (table.c.file_key == top.c.file_key)
            & (table.c.fingerprint.is_not_distinct_from(top.c.fingerprint))
            & (order == top.c.top),
        )
    )
    return {(r.file_key, r.fingerprint): r for r in rows}


def _recent_keys(conn: Connection, limit: int) -> list[str]:
    """The ``limit`` file keys with the most recent activity (attempt requested or ended, load)."""
    a, f = file_attempts.c, files.c
    activity = sa.union_all(
        sa.select(a.file_key, sa.func.coalesce(a.finished_at, a.requested_at).label("at")),
        sa.select(f.file_key, f.loaded_at.label("at")),
    ).subquery()
    return list(
        conn.execute(
            sa.select(activity.c.file_key)
            .group_by(activity.c.file_key)
            .order_by(sa.func.max(activity.c.at).desc(), activity.c.file_key)
            .limit(limit)
        ).scalars()
    )


def _version(version: tuple[str, str | None], a: Any, row: Any, rel: Any) -> FileVersion:
    times = [
        t
        for t in (
            a.finished_at if a is not None else None,
            a.requested_at if a is not None else None,
            row.loaded_at if row is not None else None,
            rel.released_at if rel is not None else None,
        )
        if t is not None
    ]
    rejected = row.error if row is not None and row.status == "rejected" else None
    return FileVersion(
        file_key=version[0],
        fingerprint=version[1],
        status=_status(a, row, rel),
        attempts=a.attempt if a is not None else 0,
        error_class=a.error_class if a is not None else None,
        error=(a.error if a is not None and a.error else None) or rejected,
        updated_at=max(as_utc(t) for t in times) if times else None,
    )


def file_versions(engine: Engine, limit: int = 100) -> list[FileVersion]:
    """The versions of the ``limit`` landing files with the most recent activity, newest first."""
    with engine.connect() as conn:
        keys = _recent_keys(conn, limit)
        if not keys:
            return []
        attempts = _latest_per_version(conn, file_attempts, file_attempts.c.attempt, keys)
        rows = _latest_per_version(conn, files, files.c.file_id, keys)
        releases = _latest_per_version(conn, file_releases, file_releases.c.after_attempt, keys)
    out = [
        _version(v, attempts.get(v), rows.get(v), releases.get(v))
        for v in set(attempts) | set(rows)
    ]
    out.sort(key=lambda v: (v.updated_at is not None, v.updated_at, v.file_key), reverse=True)
    return out
