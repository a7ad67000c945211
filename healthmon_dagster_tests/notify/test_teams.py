"""The Teams channel against a local stand-in for a Workflows webhook: the Adaptive Card
payload, and failures (429 with Retry-After, 5xx, timeouts, refused connections) followed through
to the end: one card, or after a timeout the flow already took, the duplicate README admits, with
the same Idempotency-Key."""

from datetime import timedelta

import pytest
from sqlalchemy.engine import Engine

from healthmon_dagster.notify.dispatch import Dispatcher
from healthmon_dagster_tests.notify.fixtures import (
    T0,
    Answer,
    Clock,
    TeamsStub,
    config_with,
    open_alert,
    outbox,
    teams_server,
)

TIMEOUT, LATE = 0.5, 1.5


def teams_dispatcher(engine: Engine, url: str, clock: Clock | None = None) -> Dispatcher:
    config = config_with(
        {"teams": {"type": "teams", "configuration": {"url_env": "TEAMS_URL"}}},
        request_timeout_seconds=TIMEOUT,
    )
    return Dispatcher(
        engine,
        config,
        clock=clock or Clock(T0),
        env={"TEAMS_URL": url},
        external_url="http://dagster:3000",
    )


def test_an_alert_becomes_an_adaptive_card(engine: Engine) -> None:
    open_alert(engine, channels=["teams"])
    with teams_server() as teams:
        report = teams_dispatcher(engine, f"{teams.url}/workflows/abc?sig=s3cr3t").run_once()

    assert report.channel("teams").sent == 1
    [request] = teams.requests
    body = request.json
    assert body["type"] == "message"
    [attachment] = body["attachments"]
    assert attachment["contentType"] == "application/vnd.microsoft.card.adaptive"
    card = attachment["content"]
    assert (card["type"], card["version"]) == ("AdaptiveCard", "1.4")
    title, text, facts = card["body"]
    assert title["text"] == "FIRING: Check gender_is_valid failed on stg/patients"
    assert title["color"] == "Attention"
    assert "failing\\_rows: 3" in text["text"]
    assert {"title": "check", "value": "gender_is_valid"} in facts["facts"]
    assert card["actions"][0]["url"].startswith(
        "http://dagster:3000/assets/stg/patients?view=checks"
    )


@pytest.mark.parametrize(
    ("answer", "error"),
    [
        (Answer(429, b"", {"Retry-After": "4"}), "429 Too Many Requests"),
        (Answer(503, b""), "answered HTTP 503; will retry"),
        (Answer(202, b"", delay=LATE), "did not answer within 0.5s"),
    ],
    ids=["429", "503", "timeout"],
)
def test_teams_failures_are_retried_without_showing_the_url(
    engine: Engine, answer: Answer, error: str
) -> None:
    open_alert(engine, channels=["teams"])
    with teams_server() as teams:
        teams.then(answer)
        url = f"{teams.url}/workflows/abc?sig=s3cr3t"
        teams_dispatcher(engine, url).run_once()

    [row] = outbox(engine)
    assert row.status == "pending" and error in row.last_error
    assert "s3cr3t" not in row.last_error and "Teams channel 'teams' (TEAMS_URL)" in row.last_error
    if answer.status == 429:
        assert row.not_before.replace(tzinfo=None) == (T0 + timedelta(seconds=4)).replace(
            tzinfo=None
        )


@pytest.mark.parametrize(
    ("failure", "cards"),
    [
        (Answer(429, b"", {"Retry-After": "4"}), 1),
        (Answer(503, b""), 1),
        (Answer(202, b"", delay=LATE), 1),  # the flow never started
        (Answer(202, b"", delay=LATE, accept=True), 2),  # it posted, the answer came late
        (None, 1),  # refused
    ],
    ids=["429", "503", "timeout-not-posted", "timeout-posted", "refused"],
)
def test_each_failure_ends_with_the_card_posted_once_or_the_promised_duplicate(
    engine: Engine, failure: Answer | None, cards: int
) -> None:
    open_alert(engine, channels=["teams"])
    clock = Clock(T0)
    closed = TeamsStub()
    closed.server.server_close()
    if failure is None:
        teams_dispatcher(engine, f"{closed.url}/workflows/abc", clock).run_once()
    with teams_server(closed.port) as teams:
        d = teams_dispatcher(engine, f"{teams.url}/workflows/abc", clock)
        if failure is not None:
            teams.then(failure)
            assert d.run_once().channel("teams").retrying == 1
        for _ in range(5):
            if outbox(engine)[0].status != "pending":
                break
            clock.advance(120)
            d.run_once()

    [row] = outbox(engine)
    assert row.status == "sent", row.last_error
    assert len(teams.channel.cards) == cards
    keys = {r.headers["Idempotency-Key"] for r in teams.requests}
    assert keys == {row.delivery_key}  # a flow can drop the repeat
    assert len({r.body for r in teams.channel.cards}) == 1  # the same card
