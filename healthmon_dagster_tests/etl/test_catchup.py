"""When the downstream layers are caught up: the first run at once, the next after the attempts'
backoff, none past the bound or after a run that succeeded and left the backlog."""

from datetime import UTC, datetime, timedelta

from healthmon_dagster.etl.attempts import AttemptPolicy
from healthmon_dagster.etl.catchup import Backlog, CatchUpRun, catch_up_run_key, decide_catch_up

T0 = datetime(2026, 3, 1, 3, 0, tzinfo=UTC)
S = timedelta(seconds=1)
POLICY = AttemptPolicy(
    max_attempts=3, initial_delay=60 * S, max_delay=300 * S, give_up_after=timedelta(minutes=30)
)


def failed(start: int, end: int) -> CatchUpRun:
    return CatchUpRun(T0 + start * S, T0 + end * S, succeeded=False)


def test_the_first_run_is_due_at_once_and_the_next_after_the_backoff() -> None:
    assert decide_catch_up([], POLICY, T0).state == "due"
    one = [failed(0, 10)]
    waiting = decide_catch_up(one, POLICY, T0 + 20 * S)
    assert (waiting.state, waiting.retry_at) == ("waiting", T0 + 70 * S)
    due = decide_catch_up(one, POLICY, T0 + 70 * S)
    assert (due.state, due.attempt) == ("due", 2)
    two = [*one, failed(70, 80)]
    assert decide_catch_up(two, POLICY, T0 + 199 * S).state == "waiting"  # 120 s after run 2
    assert decide_catch_up(two, POLICY, T0 + 200 * S).attempt == 3


def test_no_run_while_one_is_in_flight_past_the_bound_or_after_a_success() -> None:
    running = CatchUpRun(T0, None, succeeded=False)
    assert decide_catch_up([running], POLICY, T0 + S).state == "in_flight"
    spent = [failed(0, 10), failed(70, 80), failed(200, 210)]
    assert decide_catch_up(spent, POLICY, T0 + 3600 * S).state == "given_up"
    late = [failed(0, 1900)]  # give_up_after (30 min) since the first run
    assert decide_catch_up(late, POLICY, T0 + 4000 * S).state == "given_up"
    succeeded = [CatchUpRun(T0, T0 + S, succeeded=True)]
    assert decide_catch_up(succeeded, POLICY, T0 + 3600 * S).state == "given_up"


def test_the_run_key_is_derived_from_the_backlog() -> None:
    assert catch_up_run_key(Backlog(files=2, last_file_id=17), 3) == "catch-up@files<=17#3"
