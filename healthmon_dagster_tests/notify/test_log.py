"""The log channel: always configured, one line per alert on ``healthmon.notify``, its level by
severity."""

import logging

import pytest
from sqlalchemy.engine import Engine

from healthmon_dagster.config.models import HealthConfiguration
from healthmon_dagster.enums import AlertEventKind
from healthmon_dagster.notify.dispatch import Dispatcher
from healthmon_dagster_tests.notify.fixtures import T0, Clock, add_event, open_alert, outbox


def test_the_default_configuration_logs_firing_and_resolved(
    engine: Engine, caplog: pytest.LogCaptureFixture
) -> None:
    config = HealthConfiguration()  # nothing configured: the log channel exists
    clock = Clock(T0)
    alert = open_alert(engine, channels=["log"], severity="critical")
    caplog.set_level(logging.INFO, logger="healthmon.notify")
    d = Dispatcher(engine, config, clock=clock, external_url="")
    clock.advance(31)  # past any group wait (a critical one has none by default)
    d.run_once()
    add_event(engine, alert, AlertEventKind.RESOLVED, ["log"], at=clock.now)
    clock.advance(301)  # the default group_interval
    d.run_once()

    lines = [(r.levelname, r.getMessage()) for r in caplog.records if r.name == "healthmon.notify"]
    assert lines[0][0] == "ERROR"
    assert lines[0][1].startswith(
        "[FIRING] CRITICAL check_failed: Check gender_is_valid failed on stg/patients - 3 of 100"
    )
    assert (
        "failing_rows: 3" in lines[0][1] and f"fingerprint {alert.fingerprint[:12]}" in lines[0][1]
    )
    assert lines[1][0] == "INFO" and lines[1][1].startswith("[RESOLVED] CRITICAL check_failed")
    assert "resolved at 2026-01-05 12:00:31 UTC after 31s" in lines[1][1]
    assert [r.status for r in outbox(engine)] == ["sent", "sent"]
