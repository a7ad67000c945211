"""The email channel against a real SMTP server (aiosmtpd): text and HTML parts, one thread per
alert, STARTTLS and SSL with login, SMTP failures followed through to the end (one Message-ID, the
resolve in its thread), a server that stalls."""

from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from aiosmtpd.smtp import AuthResult, LoginPassword
from sqlalchemy.engine import Engine

from healthmon_dagster.enums import AlertEventKind
from healthmon_dagster.notify.dispatch import Dispatcher
from healthmon_dagster.notify.email import message_id
from healthmon_dagster_tests.fixtures import free_port
from healthmon_dagster_tests.notify.fixtures import (
    T0,
    Clock,
    add_event,
    config_with,
    open_alert,
    outbox,
    self_signed_cert,
    server_tls,
    smtp_server,
)

PASSWORD = "smtp-pass-93kd"
TIMEOUT, STALL = 0.5, 1.5


def email_dispatcher(
    engine: Engine,
    port: int,
    clock: Clock,
    security: str = "none",
    password: str = PASSWORD,
    **extra: Any,
) -> Dispatcher:
    configuration = {
        "host": "127.0.0.1",
        "port": port,
        "security": security,
        "from_address": "healthmon@example.org",
        "to": ["oncall@example.org", "lead@example.org"],
        **extra,
    }
    config = config_with(
        {"mail": {"type": "email", "retry_attempts": 1, "configuration": configuration}},
        request_timeout_seconds=TIMEOUT,
    )
    env = {"TEST_SMTP_USER": "healthmon", "TEST_SMTP_PASSWORD": password}
    return Dispatcher(engine, config, clock=clock, env=env, external_url="http://dagster:3000")


def test_firing_then_resolve_arrive_as_one_thread_with_text_and_html(engine: Engine) -> None:
    clock = Clock(T0)
    alert = open_alert(
        engine, channels=["mail"], details={"failing_rows": 3, "columns": ["GENDER"]}
    )
    with smtp_server() as (sink, port):
        d = email_dispatcher(engine, port, clock)
        d.run_once()
        clock.advance(600)
        add_event(engine, alert, AlertEventKind.RESOLVED, ["mail"], at=clock.now)
        clock.advance(5)
        d.run_once()

    first, resolved = sink.messages
    assert sink.envelopes[0] == (
        "healthmon@example.org",
        ["oncall@example.org", "lead@example.org"],
    )
    assert first["Subject"] == "[FIRING] Check gender_is_valid failed on stg/patients"
    assert resolved["Subject"] == "[RESOLVED] Check gender_is_valid failed on stg/patients"
    rows = outbox(engine)
    assert first["Message-ID"] == message_id(rows[0].delivery_key, "healthmon@example.org")
    assert resolved["In-Reply-To"] == first["Message-ID"] == resolved["References"]
    text = first.get_body(("plain",)).get_content()
    html = first.get_body(("html",)).get_content()
    assert "- failing_rows: 3" in text and "- columns: GENDER" in text
    assert '<code>failing_rows</code></td><td style="padding:2px 0">3</td>' in html
    assert 'href="http://dagster:3000/assets/stg/patients?view=checks&amp;checkDetail=' in html
    assert (
        "resolved at 2026-01-05 12:10:00 UTC after 10m"
        in resolved.get_body(("plain",)).get_content()
    )


def _authenticator(
    server: Any, session: Any, envelope: Any, mechanism: str, data: Any
) -> AuthResult:
    ok = isinstance(data, LoginPassword) and data.password == PASSWORD.encode()
    return AuthResult(success=ok, handled=False)


@pytest.mark.parametrize("security", ["starttls", "ssl"])
def test_tls_and_login(engine: Engine, tmp_path: Path, security: str) -> None:
    cert, key = self_signed_cert(tmp_path)
    tls = server_tls(cert, key)
    args: dict[str, Any] = {"authenticator": _authenticator}
    if security == "starttls":
        args.update(tls_context=tls, require_starttls=True, auth_require_tls=True)
    else:  # the whole connection is TLS (aiosmtpd's auth_require_tls only knows STARTTLS)
        args.update(ssl_context=tls, auth_require_tls=False)
    open_alert(engine, channels=["mail"])
    with smtp_server(**args) as (sink, port):
        d = email_dispatcher(
            engine,
            port,
            Clock(T0),
            security,
            ca_file=str(cert),
            username_env="TEST_SMTP_USER",
            password_env="TEST_SMTP_PASSWORD",
        )
        report = d.run_once()

    assert report.channel("mail").sent == 1, outbox(engine)[0].last_error
    assert len(sink.messages) == 1


def test_a_wrong_password_fails_without_showing_it(engine: Engine, tmp_path: Path) -> None:
    cert, key = self_signed_cert(tmp_path)
    args = {
        "authenticator": _authenticator,
        "tls_context": server_tls(cert, key),
        "require_starttls": True,
    }
    open_alert(engine, channels=["mail"])
    with smtp_server(**args) as (sink, port):
        d = email_dispatcher(
            engine,
            port,
            Clock(T0),
            "starttls",
            "wrong-secret-77",
            ca_file=str(cert),
            username_env="TEST_SMTP_USER",
            password_env="TEST_SMTP_PASSWORD",
        )
        report = d.run_once()

    [row] = outbox(engine)
    assert not report.ok and row.status == "failed" and not sink.messages
    assert "rejected the login (535); check TEST_SMTP_USER and TEST_SMTP_PASSWORD" in row.last_error
    assert "wrong-secret-77" not in row.last_error


@pytest.mark.parametrize(
    ("answer", "status"),
    [("451 4.3.0 Try again later", "pending"), ("554 5.7.1 Rejected by policy", "failed")],
    ids=["451-retry", "554-fail"],
)
def test_smtp_4xx_retries_and_5xx_fails(engine: Engine, answer: str, status: str) -> None:
    open_alert(engine, channels=["mail"])
    with smtp_server() as (sink, port):
        sink.fail_next.append(answer)
        email_dispatcher(engine, port, Clock(T0)).run_once()

    [row] = outbox(engine)
    assert row.status == status and answer[:3] in row.last_error


def test_a_server_that_is_down_is_retried(engine: Engine) -> None:
    open_alert(engine, channels=["mail"])
    report = email_dispatcher(engine, free_port(), Clock(T0)).run_once()

    [row] = outbox(engine)
    assert report.channel("mail").retrying == 1 and row.status == "pending"
    assert "is unavailable: Connection refused; will retry" in row.last_error
    assert row.not_before.replace(tzinfo=None) > (T0 + timedelta(seconds=0)).replace(tzinfo=None)


def test_not_configured_names_the_variables(engine: Engine) -> None:
    config = config_with({"mail": {"type": "email", "configuration": {"username_env": "SMTP_U"}}})
    notifier = Dispatcher(engine, config, env={}).notifier("mail")

    assert notifier.configured() == [
        "configuration.from_address is not set (the sender of 'mail')",
        "configuration.to is empty (the recipients of email 'mail')",
        "HEALTHMON_SMTP_HOST is not set (the SMTP server of email 'mail')",
        "SMTP_U is not set (the SMTP login of email 'mail')",
    ]


@pytest.mark.parametrize("failure", ["451", "stall", "refused"])
def test_each_failure_ends_with_one_message_id_and_the_resolve_in_its_thread(
    engine: Engine, failure: str
) -> None:
    alert = open_alert(engine, channels=["mail"])
    clock = Clock(T0)
    port = free_port()
    if failure == "refused":
        first = email_dispatcher(engine, port, clock).run_once()
        assert first.channel("mail").retrying == 1
    with smtp_server(port=port) as (sink, _):
        d = email_dispatcher(engine, port, clock)
        if failure != "refused":
            if failure == "451":
                sink.fail_next.append("451 4.3.0 Try again later")
            else:  # the server keeps the message and answers after the client gave up
                sink.stall_next.append(STALL)
            report = d.run_once()
            assert report.channel("mail").retrying == 1, outbox(engine)[0].last_error
            assert ("did not answer within 0.5s" in outbox(engine)[0].last_error) is (
                failure == "stall"
            )
        for _ in range(5):
            if outbox(engine)[0].status != "pending":
                break
            clock.advance(120)
            d.run_once()
        add_event(engine, alert, AlertEventKind.RESOLVED, ["mail"], at=clock.now)
        clock.advance(5)
        d.run_once()

    firing, resolved = outbox(engine)
    assert (firing.status, resolved.status) == ("sent", "sent")
    first_id = message_id(firing.delivery_key, "healthmon@example.org")
    ids = [m["Message-ID"] for m in sink.messages]
    # After a stall the server holds the first copy too: the same Message-ID, which mail
    # systems that drop repeats of an id (and every thread view) show once.
    assert ids[:-1] == [first_id] * (2 if failure == "stall" else 1)
    assert sink.messages[-1]["In-Reply-To"] == first_id
