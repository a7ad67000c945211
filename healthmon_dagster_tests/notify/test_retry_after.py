"""A receiver's 429 always yields a finite wait: ``Retry-After`` in seconds or as an HTTP date is
kept within 1 s .. 1 h, a missing or unusable one leaves the dispatcher's backoff; through the
dispatcher, a receiver answering ``Retry-After: inf`` or a date in the year 9999 delays the row an
hour, it does not break the pass."""

from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy.engine import Engine

from healthmon_dagster.notify.base import (
    MAX_RETRY_AFTER,
    RetryableError,
    classify_http,
    rate_limit_wait,
)
from healthmon_dagster.notify.dispatch import Dispatcher
from healthmon_dagster_tests.notify.fixtures import (
    T0,
    Answer,
    Clock,
    config_with,
    open_alert,
    outbox,
    webhook_server,
)

NOW = datetime(2026, 1, 5, 12, 0, tzinfo=UTC)


@pytest.mark.parametrize(
    ("header", "seconds"),
    [
        ("7", 7.0),
        (" 2.5 ", 2.5),
        ("0", 1.0),  # "now" would make a busy loop: at least a second
        ("-3", 1.0),
        ("1e12", MAX_RETRY_AFTER),
        ("inf", None),
        ("nan", None),
        ("soon", None),
        ("", None),
        (None, None),
        ("Mon, 05 Jan 2026 12:00:30 GMT", 30.0),
        ("Mon, 05 Jan 2026 11:00:00 GMT", 1.0),  # already past
        ("Fri, 31 Dec 9999 23:59:59 GMT", MAX_RETRY_AFTER),
    ],
)
def test_a_429_waits_a_finite_time_or_leaves_the_backoff(
    header: str | None, seconds: float | None
) -> None:
    error = classify_http(429, "webhook 'w'", header)
    assert isinstance(error, RetryableError) and error.rate_limited
    if header and "GMT" in header:
        assert rate_limit_wait(header, NOW) == seconds  # dates are counted from "now"
    else:
        assert error.retry_after == seconds


@pytest.mark.parametrize("header", ["inf", "1e12", "Fri, 31 Dec 9999 23:59:59 GMT", None])
def test_the_dispatcher_schedules_any_429_within_an_hour(
    engine: Engine, header: str | None
) -> None:
    open_alert(engine, channels=["hook"])
    config = config_with({"hook": {"type": "webhook", "configuration": {"url_env": "HOOK_URL"}}})
    with webhook_server() as server:
        server.then(Answer(429, b"", {"Retry-After": header} if header else {}))
        env = {"HOOK_URL": f"{server.url}/in"}
        report = Dispatcher(engine, config, clock=Clock(T0), env=env).run_once()

    [row] = outbox(engine)
    assert report.channel("hook").retrying == 1 and row.status == "pending"
    assert row.claimed_by is None
    wait = row.not_before.replace(tzinfo=UTC) - T0
    assert timedelta(0) < wait <= timedelta(seconds=MAX_RETRY_AFTER)
