"""Self-healing decisions and state (no Dagster): data errors are never re-run, the bounds (window,
backoff, breaker) read from the store's rows, one claim per asset and attempt, recovery to
monitoring and resolution after the quiet period with the linked alerts."""

import threading
from datetime import UTC, datetime, timedelta

import pytest
import sqlalchemy as sa
from sqlalchemy.engine import Engine

from healthmon_dagster.config.models import SelfHealingConfiguration
from healthmon_dagster.enums import IncidentSeverity, IncidentSource
from healthmon_dagster.etl.failures import Classification
from healthmon_dagster.incidents import selfheal as sh
from healthmon_dagster.incidents.records import Actor, Failure, get_incident, open_or_absorb
from healthmon_dagster.store.tables import alerts, incident_alerts

T0 = datetime(2026, 12, 1, 3, 0, tzinfo=UTC)
S = timedelta(seconds=1)
REFUSED = Classification("connection_refused", True, "driver_refused")
BROKEN = Classification("contract_break", False, "contract_break")
POLICY = sh.SelfHealPolicy(
    max_attempts_per_window=3,
    window=timedelta(minutes=10),
    initial_delay=10 * S,
    max_delay=40 * S,
    jitter=0.0,
    breaker_failures=3,
)


def planned(n: int, asset: str = "raw/patients") -> sh.Planned:
    return sh.Planned(asset, n, sh.Status.REQUESTED, "driver_refused", sh.Reason.FAILED_RUN)


def history(engine: Engine, now: datetime) -> sh.AssetHistory:
    return sh.histories(engine, ["raw/patients"], POLICY, now)["raw/patients"]


def test_data_errors_and_configured_classes_are_never_re_run() -> None:
    fresh = sh.AssetHistory("raw/patients")
    assert sh.decide("raw/patients", BROKEN, fresh, POLICY, T0).action == sh.Action.SKIP
    assert sh.decide("raw/patients", BROKEN, fresh, POLICY, T0).rule == "contract_break"
    never = sh.SelfHealPolicy(never_rerun=frozenset({"connection_refused"}))
    decision = sh.decide("raw/patients", REFUSED, fresh, never, T0)
    assert (decision.action, decision.rule) == (sh.Action.SKIP, "config:never_rerun_error_classes")
    assert sh.decide("raw/patients", REFUSED, fresh, POLICY, T0).action == sh.Action.RERUN


def test_backoff_doubles_up_to_the_cap_with_jitter_inside_its_band() -> None:
    assert [POLICY.delay(n).total_seconds() for n in (1, 2, 3, 4, 5)] == [10, 20, 40, 40, 40]
    jittery = sh.SelfHealPolicy(initial_delay=100 * S, max_delay=100 * S, jitter=0.1)
    assert jittery.delay(1, lambda: 0.0).total_seconds() == pytest.approx(90)
    assert jittery.delay(1, lambda: 1.0).total_seconds() == pytest.approx(110)


def test_config_bounds_are_validated() -> None:
    with pytest.raises(ValueError, match="max_delay_seconds"):
        SelfHealingConfiguration(initial_delay_seconds=100, max_delay_seconds=10)
    with pytest.raises(ValueError):
        SelfHealingConfiguration(breaker_failures=0)
    with pytest.raises(ValueError):
        SelfHealingConfiguration(jitter=float("inf"))
    policy = sh.SelfHealPolicy.from_config(SelfHealingConfiguration(escalate_to="critical"))
    assert policy.escalate_to == IncidentSeverity.CRITICAL


def test_backoff_window_and_breaker_come_from_the_rows(engine: Engine) -> None:
    now = T0
    for n in (1, 2, 3):
        key = sh.claim(engine, [planned(n)], f"run-{n}", None, now)
        assert key == f"selfheal:run-{n}:raw/patients#{n}"
        assert history(engine, now).in_flight
        assert sh.decide("raw/patients", REFUSED, history(engine, now), POLICY, now).rule == (
            "rerun_in_flight"
        )
        sh.record_rerun_outcome(engine, key, False, f"rerun-{n}", POLICY, now, REFUSED)
        hist = history(engine, now)
        assert hist.consecutive_failures == n
        assert hist.retry_at == now + POLICY.delay(n)
        if n < 3:
            wait = sh.decide("raw/patients", REFUSED, hist, POLICY, now)
            assert (wait.action, wait.rule) == (sh.Action.WAIT, "backoff")
        now = hist.retry_at or now
    # Three consecutive failures: the breaker opens instead of a fourth re-run.
    decision = sh.decide("raw/patients", REFUSED, history(engine, now), POLICY, now)
    assert (decision.action, decision.rule) == (sh.Action.ESCALATE, "circuit_breaker")
    opened = sh.Planned(
        "raw/patients", 4, sh.Status.ESCALATED, "circuit_breaker", sh.Reason.FAILED_RUN
    )
    assert sh.claim(engine, [opened], "run-4", None, now) is not None
    assert sh.decide("raw/patients", REFUSED, history(engine, now), POLICY, now).rule == (
        "circuit_breaker_open"
    )
    # The asset materializes again after the breaker opened: the breaker closes, the count restarts.
    assert sh.reset_breakers(engine, {"raw/patients": now + S}, now + 2 * S) == ["raw/patients"]
    after = history(engine, now + 2 * S)
    assert not after.breaker_open and after.consecutive_failures == 0


def test_attempts_in_the_window_are_bounded(engine: Engine) -> None:
    for n in (1, 2, 3):
        key = sh.claim(engine, [planned(n)], f"run-{n}", None, T0)
        assert key is not None
        sh.record_rerun_outcome(engine, key, n == 3, f"rerun-{n}", POLICY, T0, REFUSED)
    decision = sh.decide("raw/patients", REFUSED, history(engine, T0 + S), POLICY, T0 + S)
    assert (decision.action, decision.rule) == (sh.Action.WAIT, "max_attempts_per_window")
    later = T0 + POLICY.window + S
    assert sh.decide("raw/patients", REFUSED, history(engine, later), POLICY, later).action == (
        sh.Action.RERUN
    )


def test_one_claim_wins_per_asset_attempt_and_per_failed_run(engine: Engine) -> None:
    won: list[str | None] = []
    barrier = threading.Barrier(4)

    def race() -> None:
        barrier.wait()
        won.append(sh.claim(engine, [planned(1), planned(1, "stg/patients")], "run-1", None, T0))

    threads = [threading.Thread(target=race) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len([k for k in won if k is not None]) == 1
    # The same failed run cannot be claimed again under a later attempt number.
    assert sh.claim(engine, [planned(2)], "run-1", None, T0) is None
    assert sh.decided_runs(engine, ["run-1"]) == {
        ("run-1", "raw/patients"),
        ("run-1", "stg/patients"),
    }


def test_recovery_moves_to_monitoring_then_resolves_with_its_alerts(engine: Engine) -> None:
    hook = Actor("hook:test", IncidentSource.HOOK)
    failure = Failure("warehouse down", "database", T0, cause_resource="database:warehouse")
    incident_id = open_or_absorb(
        engine, "resource:database:warehouse", failure, hook, T0
    ).incident_id
    with engine.begin() as conn:
        alert_id = conn.execute(
            alerts.insert()
            .values(
                fingerprint="fp",
                rule_id="db_down",
                state="firing",
                status="active",
                severity="critical",
                component="database",
                labels={},
                title="warehouse unreachable",
                details={},
                group_key="g",
                started_at=T0,
                last_active_at=T0,
                last_evaluated_at=T0,
            )
            .returning(alerts.c.alert_id)
        ).scalar_one()
        conn.execute(
            incident_alerts.insert().values(
                incident_id=incident_id, alert_id=alert_id, linked_at=T0, linked_by="t"
            )
        )
    key = sh.claim(engine, [planned(1)], "run-1", incident_id, T0 + S)
    assert key is not None
    sh.record_rerun_outcome(engine, key, True, "rerun-1", POLICY, T0 + 2 * S)
    assert sh.mark_recovering(engine, incident_id, key, T0 + 2 * S)
    assert not sh.mark_recovering(engine, incident_id, key, T0 + 2 * S)  # already monitoring
    assert str(get_incident(engine, incident_id).status) == "monitoring"

    assert sh.resolve_quiet(engine, POLICY, T0 + 2 * S + POLICY.quiet_period - S).incident_ids == []
    done = sh.resolve_quiet(engine, POLICY, T0 + 2 * S + POLICY.quiet_period)
    assert (done.incident_ids, done.alert_ids) == ([incident_id], [alert_id])
    assert str(get_incident(engine, incident_id).status) == "resolved"
    with engine.connect() as conn:
        state = conn.execute(
            sa.select(alerts.c.state).where(alerts.c.alert_id == alert_id)
        ).scalar()
    assert state == "resolved"


def test_a_relapse_while_monitoring_is_not_resolved(engine: Engine) -> None:
    hook = Actor("hook:test", IncidentSource.HOOK)
    failure = Failure("warehouse down", "database", T0, cause_resource="database:warehouse")
    incident_id = open_or_absorb(
        engine, "resource:database:warehouse", failure, hook, T0
    ).incident_id
    key = sh.claim(engine, [planned(1)], "run-1", incident_id, T0 + S)
    assert key is not None
    sh.record_rerun_outcome(engine, key, True, "rerun-1", POLICY, T0 + 2 * S)
    sh.mark_recovering(engine, incident_id, key, T0 + 2 * S)
    later = Failure("warehouse down", "database", T0 + 3 * S, cause_resource="database:warehouse")
    open_or_absorb(engine, "resource:database:warehouse", later, hook, T0 + 3 * S)

    assert sh.resolve_quiet(engine, POLICY, T0 + timedelta(days=1)).incident_ids == []
    assert str(get_incident(engine, incident_id).status) == "investigating"
