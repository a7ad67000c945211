"""Lineage inhibition in the notifications themselves, from the store through the dispatcher to
the log channel and a real local webhook receiver, SQLite and Postgres: the root cause's message
says what it mutes (every asset, or the assets downstream of its asset, and the alerts it mutes
now, by name), and an alert announced after the root cause resolved (and the hold after it
passed) says which alert muted it, from when to when."""

import logging
from datetime import timedelta
from typing import Any

import pytest
import sqlalchemy as sa
from sqlalchemy.engine import Engine

from healthmon_dagster.alerting.engine import evaluate
from healthmon_dagster.config.loader import load_config_text
from healthmon_dagster.enums import HealthStatus, RecordSource
from healthmon_dagster.notify.dispatch import Dispatcher
from healthmon_dagster.store.tables import alerts
from healthmon_dagster_tests.alerting.test_engine import T0, record
from healthmon_dagster_tests.notify.fixtures import Clock, webhook_server

CONFIG = """
channels:
  ops:
    type: webhook
    configuration: {url_env: OPS_WEBHOOK_URL}
alerting:
  builtin_channels: [log, ops]
health_checks:
  - check_id: database_connectivity
    name: db
    component: database
    check_type: connectivity
    kind: database
    critical: true
"""


def by_rule(engine: Engine) -> dict[tuple[str, str | None], Any]:
    with engine.connect() as conn:
        return {(a.rule_id, a.labels.get("asset")): a for a in conn.execute(sa.select(alerts))}


def log_lines(caplog: pytest.LogCaptureFixture) -> list[str]:
    lines = [r.getMessage() for r in caplog.records if r.name == "healthmon.notify"]
    caplog.clear()
    return lines


def test_the_root_cause_says_what_it_mutes_and_the_muted_say_by_what(
    engine: Engine, caplog: pytest.LogCaptureFixture
) -> None:
    config = load_config_text(CONFIG)
    caplog.set_level(logging.INFO, logger="healthmon.notify")
    record(
        engine,
        RecordSource.HEALTH_CHECK,
        "database_connectivity",
        "database",
        str(HealthStatus.CRITICAL),
        severity="ERROR",
    )
    for check, asset in (
        ("patients_file_has_synthea_columns", "raw/patients"),
        ("stg_vs_core_reconciles", "core/dim_patient"),
    ):
        record(engine, RecordSource.ASSET_CHECK, check, asset, "error", severity="ERROR")
    report = evaluate(engine, config, T0)
    got = by_rule(engine)
    root = got[("dependency_unreachable", None)]
    raw_alert = got[("asset_check_error", "raw/patients")]
    core_alert = got[("asset_check_error", "core/dim_patient")]
    assert {raw_alert.inhibited_by, core_alert.inhibited_by} == {root.alert_id}

    clock = Clock(T0 + timedelta(seconds=1))
    with webhook_server() as receiver:
        dispatcher = Dispatcher(
            engine, config, clock=clock, env={"OPS_WEBHOOK_URL": receiver.url}, external_url=""
        )
        assert dispatcher.run_once().sent == 2  # the root cause only, on both channels

        (line,) = log_lines(caplog)
        muting = (
            "Root cause: mutes the alerts of every asset; muting 2 alerts now: "
            "asset_check_error on raw/patients (patients_file_has_synthea_columns), "
            "asset_check_error on core/dim_patient (stg_vs_core_reconciles)"
        )
        assert line.startswith("[FIRING] CRITICAL dependency_unreachable") and muting in line
        (request,) = receiver.requests
        (sent,) = request.json["alerts"]
        assert sent["labels"]["rule_id"] == "dependency_unreachable"
        assert sent["annotations"]["mutes"] == muting

        # The database answers again: the root resolves, and the raw asset's alert is announced,
        # saying what muted it and when; it is a root cause itself now (core is downstream).
        record(
            engine,
            RecordSource.HEALTH_CHECK,
            "database_connectivity",
            "database",
            str(HealthStatus.HEALTHY),
        )
        report = evaluate(engine, config, T0 + timedelta(minutes=5), cursor=report.cursor)
        # Still muted for the hold after the root resolved (alerting.inhibit_hold_minutes, 10);
        # still firing once it has passed: announced.
        evaluate(engine, config, T0 + timedelta(minutes=15), cursor=report.cursor)
        clock.advance(901)  # past the hold and the root's group interval
        dispatcher.run_once()
        lines = log_lines(caplog)
        (announced,) = [ln for ln in lines if ln.startswith("[FIRING]")]
        assert announced.startswith("[FIRING] ERROR asset_check_error: patients_file_has")
        muted_by = (
            f"Muted by alert {root.alert_id} ({root.title}) from 2026-12-07 10:00:00 UTC "
            "to 2026-12-07 10:15:00 UTC"
        )
        assert muted_by in announced
        assert (
            "Root cause: mutes the alerts of the 3 assets downstream: core/dim_patient, "
            "stg/patients, stg/patients_rejected; muting 1 alert now: "
            "asset_check_error on core/dim_patient (stg_vs_core_reconciles)"
        ) in announced
        (resolved,) = [ln for ln in lines if ln.startswith("[RESOLVED]")]
        assert "Root cause" not in resolved and "Muted by" not in resolved
        hooks = {
            a["labels"]["rule_id"]: a["annotations"]
            for r in receiver.requests[1:]
            for a in r.json["alerts"]
        }
        assert hooks["asset_check_error"]["muted_by"] == muted_by
        assert "muted_by" not in hooks["dependency_unreachable"]


def test_a_failed_upstream_asset_names_the_assets_downstream(
    engine: Engine, caplog: pytest.LogCaptureFixture
) -> None:
    config = load_config_text("{}")
    caplog.set_level(logging.INFO, logger="healthmon.notify")
    record(
        engine,
        RecordSource.ASSET_CHECK,
        "row_count_is_in_range",
        "raw/patients",
        "failed",
        severity="ERROR",
    )
    record(
        engine,
        RecordSource.ASSET_CHECK,
        "dim_is_fresh",
        "core/dim_patient",
        "warn",
        severity="WARN",
    )
    evaluate(engine, config, T0)
    Dispatcher(engine, config, clock=Clock(T0 + timedelta(seconds=31)), external_url="").run_once()
    (line,) = log_lines(caplog)
    assert line.startswith("[FIRING] ERROR asset_check_error: row_count_is_in_range on raw/pat")
    assert (
        "Root cause: mutes the alerts of the 3 assets downstream: core/dim_patient, "
        "stg/patients, stg/patients_rejected; muting 1 alert now: "
        "asset_check_warning on core/dim_patient (dim_is_fresh)"
    ) in line
