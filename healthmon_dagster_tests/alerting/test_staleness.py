"""One staleness, one alert: an asset with a ``freshness:`` entry has a Dagster FreshnessPolicy
(its alerts carry ``check=freshness_policy``) and the ``last_load_is_fresh`` check; when both say
stale, the alert that fired first stands and the other is muted by it, whichever came first."""

from datetime import timedelta
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Engine

from healthmon_dagster.alerting.engine import evaluate
from healthmon_dagster.alerting.signals import effective_rules, freshness_state_signal, rules_of
from healthmon_dagster.config.loader import load_config_text
from healthmon_dagster.enums import EventKind, RecordSource
from healthmon_dagster.store.tables import alerts, check_results, notifications
from healthmon_dagster_tests.alerting.test_engine import T0

CONFIG = load_config_text(
    "freshness:\n  stg/patients: {warn_window_minutes: 60, fail_window_minutes: 120}\n"
)
(FRESHNESS_RULE,) = rules_of(effective_rules(CONFIG), EventKind.FRESHNESS)


def policy(state: str) -> Any:
    signal = freshness_state_signal(FRESHNESS_RULE, "stg/patients", state)
    assert signal is not None
    return signal


def last_load(engine: Engine, status: str, severity: str | None) -> None:
    with engine.begin() as conn:
        conn.execute(
            check_results.insert().values(
                ts=T0,
                source=str(RecordSource.ASSET_CHECK),
                check_name="last_load_is_fresh",
                target="stg/patients",
                status=status,
                severity=severity,
                message="the last load is 3 h old (fail after 2 h)",
                details={"age_minutes": 180},
            )
        )


def by_check(engine: Engine) -> dict[str, Any]:
    with engine.connect() as conn:
        return {a.labels["check"]: a for a in conn.execute(sa.select(alerts))}


def notified(engine: Engine) -> set[int]:
    with engine.connect() as conn:
        return set(conn.execute(sa.select(notifications.c.alert_id)).scalars())


def test_the_policy_first_then_the_check_gives_one_notified_alert(engine: Engine) -> None:
    report = evaluate(engine, CONFIG, T0, extra_signals=[policy("FAIL")])
    last_load(engine, "failed", "ERROR")
    evaluate(
        engine,
        CONFIG,
        T0 + timedelta(minutes=1),
        cursor=report.cursor,
        extra_signals=[policy("FAIL")],
    )
    got = by_check(engine)
    first, second = got["freshness_policy"], got["last_load_is_fresh"]
    assert (first.rule_id, first.status) == ("asset_not_fresh", "active")
    assert (second.rule_id, second.status) == ("asset_check_error", "suppressed")
    assert second.inhibited_by == first.alert_id
    assert second.suppressed_by.startswith(f"inhibited by alert {first.alert_id} (")
    assert notified(engine) == {first.alert_id}


def test_the_check_first_then_the_policy_gives_one_notified_alert(engine: Engine) -> None:
    last_load(engine, "warn", "WARN")
    report = evaluate(engine, CONFIG, T0)
    evaluate(
        engine,
        CONFIG,
        T0 + timedelta(minutes=1),
        cursor=report.cursor,
        extra_signals=[policy("WARN")],
    )
    got = by_check(engine)
    first, second = got["last_load_is_fresh"], got["freshness_policy"]
    assert first.status == "active" and second.status == "suppressed"
    assert second.inhibited_by == first.alert_id
    assert notified(engine) == {first.alert_id}

    # The load is fresh again, the policy still says stale: the policy's alert speaks now.
    with engine.begin() as conn:
        conn.execute(
            check_results.insert().values(
                ts=T0 + timedelta(minutes=2),
                source=str(RecordSource.ASSET_CHECK),
                check_name="last_load_is_fresh",
                target="stg/patients",
                status="passed",
                message="the last load is 1 min old",
                details={},
            )
        )
    evaluate(
        engine,
        CONFIG,
        T0 + timedelta(minutes=3),
        cursor=report.cursor,
        extra_signals=[policy("WARN")],
    )
    got = by_check(engine)
    assert got["last_load_is_fresh"].state == "resolved"
    assert got["freshness_policy"].status == "active"
    assert notified(engine) == {first.alert_id, second.alert_id}


def test_without_builtin_inhibit_rules_both_alert(engine: Engine) -> None:
    config = load_config_text(
        "freshness:\n  stg/patients: {warn_window_minutes: 60, fail_window_minutes: 120}\n"
        "alerting: {builtin_inhibit_rules: false}\n"
    )
    last_load(engine, "failed", "ERROR")
    evaluate(engine, config, T0, extra_signals=[policy("FAIL")])
    assert {a.status for a in by_check(engine).values()} == {"active"}
