"""Attempts of landing files, SQLite and Postgres: the backoff, what an ended attempt becomes, one
winner per attempt however many race for it, which files are pending and which are stuck, and the
sensor's walk bounded in count and time with its cursor."""

import threading
from datetime import UTC, datetime, timedelta
from itertools import count

import pytest
import sqlalchemy as sa
from sqlalchemy.engine import Engine

from healthmon_dagster.etl.attempts import (
    Attempt,
    AttemptPolicy,
    AttemptStatus,
    RunOutcome,
    decide,
    decode_cursor,
    open_attempt,
    pending_files,
    record_outcome,
    requested_attempts,
    stuck_files,
    walk_pending,
)
from healthmon_dagster.etl.failures import Classification
from healthmon_dagster.etl.landing import LandingFile
from healthmon_dagster.store.connection import write_transaction
from healthmon_dagster.store.tables import file_attempts, file_releases, files

T0 = datetime(2026, 3, 1, 3, 0, tzinfo=UTC)
S = timedelta(seconds=1)
POLICY = AttemptPolicy(
    max_attempts=4,
    initial_delay=60 * S,
    max_delay=300 * S,
    give_up_after=timedelta(minutes=30),
)
REFUSED = Classification("connection_refused", True, "driver_refused")
BROKEN = Classification("database_error", False, "database_error")


def landed(n: int, key: str | None = None, fingerprint: str = "fp") -> LandingFile:
    return LandingFile(key or f"patients_{n:04}.csv", 10, fingerprint, 1_000_000.0 + n)


def attempt(n: int = 1, requested_at: datetime = T0) -> Attempt:
    return Attempt("a.csv", "fp", n, f"a.csv@fp#{n}", AttemptStatus.REQUESTED, requested_at)


def failed(why: Classification, ended: datetime) -> RunOutcome:
    return RunOutcome("failed", why, "message", "run-id", 1, ended)


def record_file(engine: Engine, f: LandingFile, status: str, at: datetime = T0) -> None:
    with write_transaction(engine) as conn:
        conn.execute(
            files.insert().values(
                source="test",
                file_key=f.key,
                fingerprint=f.fingerprint,
                sha256=f"{f.key}-{f.fingerprint}-{status}",
                size_bytes=f.size,
                status=status,
                loaded_at=at,
            )
        )


def test_backoff_doubles_up_to_the_cap_with_jitter() -> None:
    middle = [POLICY.delay(n, rand=lambda: 0.5).total_seconds() for n in range(1, 7)]
    assert middle == [60, 120, 240, 300, 300, 300]
    assert POLICY.delay(2, rand=lambda: 0.0).total_seconds() == pytest.approx(108)  # -10 %
    assert POLICY.delay(2, rand=lambda: 1.0).total_seconds() == pytest.approx(132)  # +10 %
    assert POLICY.delay(1000).total_seconds() <= 330  # no overflow however many attempts


def test_an_ended_attempt_succeeds_waits_for_its_retry_or_is_stuck() -> None:
    ended = T0 + 10 * S

    def outcome(o: RunOutcome, n: int = 1, has_record: bool = False) -> Attempt:
        return decide(attempt(n), o, POLICY, T0 + 20 * S, T0, has_record, rand=lambda: 0.5)

    ok = outcome(RunOutcome("succeeded", runs=2, ended_at=ended))
    assert (ok.status, ok.runs, ok.finished_at) == (AttemptStatus.SUCCEEDED, 2, ended)
    retry = outcome(failed(REFUSED, ended))
    assert (retry.status, retry.error_class, retry.transient) == (
        AttemptStatus.FAILED,
        "connection_refused",
        True,
    )
    assert retry.retry_at == ended + 60 * S  # the backoff counts from the run's end
    assert retry.rule == "driver_refused"  # the rule that decided, for the incident timeline
    assert outcome(failed(REFUSED, ended), n=2).retry_at == ended + 120 * S
    # A failure running again cannot fix is stuck at once; a transient one at the attempt bound.
    assert outcome(failed(BROKEN, ended)).status == AttemptStatus.STUCK
    assert outcome(failed(REFUSED, ended), n=4).status == AttemptStatus.STUCK
    # No classification at all (an exception nobody classified): not transient, stuck.
    assert outcome(RunOutcome("failed", None, "x", ended_at=ended)).error_class == "unclassified"
    # The loader decided anyway (rejected), or the file vanished: nothing to retry, not stuck.
    closed = outcome(failed(BROKEN, ended), has_record=True)
    assert (closed.status, closed.retry_at) == (AttemptStatus.FAILED, None)
    missing = Classification("landing_file_missing", False, "file_missing")
    assert outcome(failed(missing, ended)).status == AttemptStatus.FAILED
    with pytest.raises(ValueError, match="has not ended"):
        outcome(RunOutcome("in_flight"))


def test_a_file_is_stuck_once_give_up_after_has_passed_since_its_first_attempt() -> None:
    late = T0 + timedelta(minutes=31)
    stuck = decide(attempt(2), failed(REFUSED, late), POLICY, late, T0, False)
    assert stuck.status == AttemptStatus.STUCK
    early = T0 + timedelta(minutes=29)
    assert decide(attempt(2), failed(REFUSED, early), POLICY, early, T0, False).retry_at


def test_only_one_of_many_racing_processes_opens_an_attempt(engine: Engine) -> None:
    f = landed(1)
    winners: list[Attempt] = []
    errors: list[BaseException] = []
    barrier = threading.Barrier(6)

    def race() -> None:
        try:
            barrier.wait()
            opened = open_attempt(engine, f, 1, T0)
            if opened is not None:
                winners.append(opened)
        except BaseException as exc:  # surfaced below
            errors.append(exc)

    threads = [threading.Thread(target=race) for _ in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    assert len(winners) == 1 and winners[0].run_key == "patients_0001.csv@fp#1"
    with engine.connect() as conn:
        assert conn.execute(sa.select(sa.func.count()).select_from(file_attempts)).scalar() == 1
    assert open_attempt(engine, f, 2, T0) is not None  # the next attempt is another row


def test_an_outcome_is_recorded_once(engine: Engine) -> None:
    opened = open_attempt(engine, landed(1), 1, T0)
    assert opened is not None
    outcome = failed(REFUSED, T0 + 5 * S)
    first = record_outcome(engine, opened, outcome, POLICY, T0 + 9 * S, rand=lambda: 0.5)
    assert first is not None and first.retry_at == T0 + 65 * S
    assert record_outcome(engine, opened, outcome, POLICY, T0 + 9 * S) is None
    assert requested_attempts(engine, 10) == []


def test_pending_files_are_those_without_a_terminal_record(engine: Engine) -> None:
    listed = [landed(n) for n in range(1, 9)]
    for f, status in zip(listed[:3], ("loaded", "empty", "rejected"), strict=True):
        record_file(engine, f, status)
    succeeded, stuck, failing, running = listed[3:7]
    for f, status in (
        (succeeded, "succeeded"),
        (stuck, "stuck"),
        (failing, "failed"),
        (running, "requested"),
    ):
        opened = open_attempt(engine, f, 1, T0)
        assert opened is not None
        with write_transaction(engine) as conn:
            conn.execute(
                file_attempts.update()
                .where(file_attempts.c.file_key == f.key)
                .values(status=status)
            )
    # The same key with other content (a new fingerprint) is pending again.
    replaced = landed(3, key=listed[2].key, fingerprint="fp2")

    pending = pending_files(engine, [*listed, replaced])

    assert [f.key for f in pending] == [failing.key, running.key, listed[7].key, replaced.key]
    assert pending[-1].fingerprint == "fp2"


def test_a_stuck_file_is_listed_until_its_key_is_handled_again(engine: Engine) -> None:
    f = landed(1)
    opened = open_attempt(engine, f, 1, T0)
    assert opened is not None
    record_outcome(engine, opened, failed(BROKEN, T0 + S), POLICY, T0 + 2 * S)

    (stuck,) = stuck_files(engine)
    assert (stuck.file_key, stuck.attempts, stuck.error_class) == (f.key, 1, "database_error")
    assert stuck.first_requested_at == T0

    # It lands again with other content and loads: no longer stuck.
    record_file(engine, landed(1, fingerprint="fp2"), "loaded", at=T0 + timedelta(minutes=5))
    assert stuck_files(engine) == []


def test_the_walk_stops_at_its_time_bound_and_the_next_continues_after_it(engine: Engine) -> None:
    listed = [landed(n) for n in range(1, 6)]
    clock = count()  # each look at the clock takes one "second"

    first = walk_pending(
        engine,
        listed,
        cursor=None,
        now=T0,
        max_requests=100,
        deadline=3,
        clock=lambda: next(clock),
    )

    assert [a.file_key for a in first.requests] == [f.key for f in listed[:3]]
    assert first.bounded_by == "time"
    assert decode_cursor(first.cursor) == (listed[2].last_modified, listed[2].key)

    second = walk_pending(
        engine,
        listed,
        cursor=first.cursor,
        now=T0,
        max_requests=100,
        deadline=float("inf"),
        unlaunched={first.requests[0].run_key},
    )

    # Files 4 and 5, then around to file 1: requested before, never launched, asked again; 2 and 3
    # are in flight.
    assert [(a.file_key, a.attempt) for a in second.requests] == [
        (listed[3].key, 1),
        (listed[4].key, 1),
        (listed[0].key, 1),
    ]
    assert (second.in_flight, second.bounded_by, second.cursor) == (2, None, None)


def test_a_failed_file_gets_its_next_attempt_only_once_its_retry_is_due(engine: Engine) -> None:
    f = landed(1)
    opened = open_attempt(engine, f, 1, T0)
    assert opened is not None
    record_outcome(engine, opened, failed(REFUSED, T0), POLICY, T0, rand=lambda: 0.5)

    early = walk_pending(engine, [f], cursor=None, now=T0 + 59 * S, max_requests=9, deadline=1e12)
    due = walk_pending(engine, [f], cursor=None, now=T0 + 60 * S, max_requests=9, deadline=1e12)

    assert (early.requests, early.waiting) == ([], 1)
    assert [(a.attempt, a.run_key) for a in due.requests] == [(2, "patients_0001.csv@fp#2")]


def test_an_unreadable_cursor_starts_from_the_oldest_file() -> None:
    assert decode_cursor(None) is None
    assert decode_cursor("not json") is None
    assert decode_cursor('{"after": 3}') is None


DOWN = Classification("connection_refused", True, "driver_refused", "warehouse")


def walk_at(engine: Engine, f: LandingFile, now: datetime, **kw: object) -> list[tuple[int, str]]:
    walk = walk_pending(engine, [f], cursor=None, now=now, max_requests=9, deadline=1e12, **kw)  # type: ignore[arg-type]
    return [(a.attempt, a.reason or "") for a in walk.requests]


def test_a_failure_that_blamed_a_dependency_is_due_when_it_answers_again(engine: Engine) -> None:
    f = landed(1)
    opened = open_attempt(engine, f, 1, T0, "new file")
    assert opened is not None
    ended = record_outcome(engine, opened, failed(DOWN, T0 + S), POLICY, T0 + S, lambda: 0.5)
    assert ended is not None and ended.dependency == "warehouse"
    soon = T0 + 10 * S  # well before its retry_at (T0 + 61 s)

    # The sensor saw the warehouse unavailable before the attempt began: that outage is no news.
    assert walk_at(engine, f, soon, recovered={"warehouse": T0 - S}) == []
    # Another dependency answering again changes nothing for this failure.
    assert walk_at(engine, f, soon, recovered={"landing": T0 + 5 * S}) == []
    # Unavailable after the attempt began, reachable now: due at once.
    assert walk_at(engine, f, soon, recovered={"warehouse": T0 + 5 * S}) == [
        (2, "warehouse answers again")
    ]


def test_a_failure_without_a_dependency_keeps_its_backoff(engine: Engine) -> None:
    f = landed(1)
    opened = open_attempt(engine, f, 1, T0)
    assert opened is not None
    record_outcome(engine, opened, failed(REFUSED, T0 + S), POLICY, T0 + S, lambda: 0.5)
    assert walk_at(engine, f, T0 + 10 * S, recovered={"warehouse": T0 + 5 * S}) == []
    assert walk_at(engine, f, T0 + 61 * S) == [(2, "backoff passed")]


def test_a_release_makes_a_stuck_file_pending_with_a_fresh_budget(engine: Engine) -> None:
    f = landed(1)
    for n in range(1, POLICY.max_attempts + 1):
        opened = open_attempt(engine, f, n, T0 + n * S)
        assert opened is not None
        last = record_outcome(engine, opened, failed(REFUSED, T0 + n * S), POLICY, T0 + n * S)
    assert last is not None and last.status == AttemptStatus.STUCK
    assert pending_files(engine, [f]) == []

    with write_transaction(engine) as conn:
        conn.execute(
            file_releases.insert().values(
                file_key=f.key,
                fingerprint=f.fingerprint,
                released_status="stuck",
                after_attempt=POLICY.max_attempts,
                released_by="alice",
                released_at=T0 + 100 * S,
            )
        )

    assert pending_files(engine, [f]) == [f]
    assert stuck_files(engine) == []
    assert walk_at(engine, f, T0 + 101 * S) == [(5, "released by alice")]
    # Attempt 5 fails: the first of a fresh budget of 4, so it is retried, not stuck again.
    (fifth,) = requested_attempts(engine, 9)
    again = record_outcome(engine, fifth, failed(REFUSED, T0 + 102 * S), POLICY, T0 + 102 * S)
    assert again is not None and again.status == AttemptStatus.FAILED and again.retry_at
