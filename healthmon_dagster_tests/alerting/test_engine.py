"""The alert state machine on SQLite and Postgres: metric rules with `for` and `keep_firing_for`,
dedup under concurrent evaluations, the outbox exactly once per (event, channel), silences, mute
intervals, lineage inhibition with its root cause, cooldown, escalation and acknowledgement."""

import threading
from datetime import UTC, datetime, timedelta
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Engine

from healthmon_dagster.alerting import actions
from healthmon_dagster.alerting.engine import evaluate
from healthmon_dagster.alerting.labels import parse_matchers
from healthmon_dagster.config.loader import load_config_text
from healthmon_dagster.config.models import HealthConfiguration
from healthmon_dagster.enums import HealthStatus, RecordSource
from healthmon_dagster.notify.dispatch import Dispatcher
from healthmon_dagster.store.metrics import MetricPoint, write_metrics
from healthmon_dagster.store.tables import alert_events, alerts, check_results, notifications

T0 = datetime(2026, 12, 7, 10, 0, tzinfo=UTC)

RULES = """
channels:
  ops:
    type: webhook
    configuration: {url_env: OPS_WEBHOOK_URL}
alerting:
  builtin_rules: false
alert_rules:
  - rule_id: high_rejection_rate
    component: staging_transformer
    condition: {metric_name: rejection_rate, operator: greater_than, threshold: 0.05,
                duration_minutes: %(for)d, aggregation: avg, window_minutes: 10}
    keep_firing_for_minutes: %(keep)d
    cooldown_period_minutes: 0
    severity: warning
    channels: [log, ops]
"""


def config(for_minutes: int = 0, keep: int = 0, extra: str = "") -> HealthConfiguration:
    return load_config_text(RULES % {"for": for_minutes, "keep": keep} + extra)


def rate(engine: Engine, value: float, at: datetime) -> None:
    write_metrics(
        engine, [MetricPoint("staging_transformer", "rejection_rate", value, "ratio", {}, ts=at)]
    )


def rows(engine: Engine, table: sa.Table, *where: Any) -> list[Any]:
    with engine.connect() as conn:
        return list(conn.execute(sa.select(table).where(*where)))


def kinds(engine: Engine, alert_id: int) -> list[str]:
    return [e.kind for e in rows(engine, alert_events, alert_events.c.alert_id == alert_id)]


def mark_sent(engine: Engine) -> None:
    """What the dispatcher does once a channel accepted a notification."""
    with engine.begin() as conn:
        conn.execute(
            notifications.update()
            .where(notifications.c.status == "pending")
            .values(status="sent", sent_at=T0)
        )


def test_a_metric_rule_fires_notifies_once_per_channel_and_resolves(engine: Engine) -> None:
    cfg = config()
    rate(engine, 0.02, T0 - timedelta(minutes=3))
    assert evaluate(engine, cfg, T0).opened == []  # 0.02 < 0.05: nothing, nothing written
    assert rows(engine, alerts) == []

    rate(engine, 0.20, T0 - timedelta(minutes=1))  # avg 0.11 over the 10-minute window
    report = evaluate(engine, cfg, T0)
    (alert,) = rows(engine, alerts)
    assert report.fired == [alert.alert_id] and alert.state == "firing"
    assert alert.status == "active" and alert.value == 0.11
    assert alert.labels == {
        "rule_id": "high_rejection_rate",
        "severity": "warning",
        "component": "staging_transformer",
        "metric": "rejection_rate",
    }
    assert "avg(rejection_rate) of staging_transformer over the last 10 min is 0.11" in (
        alert.description
    )
    queued = rows(engine, notifications)
    assert sorted((n.channel, n.kind, n.status) for n in queued) == [
        ("log", "firing", "pending"),
        ("ops", "firing", "pending"),
    ]

    # Evaluating again changes nothing: no second alert, event or notification.
    evaluate(engine, cfg, T0 + timedelta(minutes=1))
    assert len(rows(engine, alerts)) == 1 and len(rows(engine, notifications)) == 2
    mark_sent(engine)

    # The window moves past the bad samples: resolved, and every channel told is told again.
    report = evaluate(engine, cfg, T0 + timedelta(minutes=11))
    (alert,) = rows(engine, alerts)
    assert report.resolved == [alert.alert_id] and alert.state == "resolved"
    assert kinds(engine, alert.alert_id) == ["pending", "firing", "resolved"]
    resolved = rows(engine, notifications, notifications.c.kind == "resolved")
    assert sorted(n.channel for n in resolved) == ["log", "ops"]


def test_for_keeps_an_alert_pending_and_a_short_blip_never_notifies(engine: Engine) -> None:
    cfg = config(for_minutes=5)
    rate(engine, 0.5, T0)
    evaluate(engine, cfg, T0)
    (alert,) = rows(engine, alerts)
    assert alert.state == "pending" and rows(engine, notifications) == []

    evaluate(engine, cfg, T0 + timedelta(minutes=4))
    assert rows(engine, alerts)[0].state == "pending"
    report = evaluate(engine, cfg, T0 + timedelta(minutes=5))
    assert report.fired == [alert.alert_id]
    assert len(rows(engine, notifications)) == 2

    evaluate(engine, cfg, T0 + timedelta(hours=1))  # the samples left the window: resolved
    # A second episode that clears before `for`: resolved silently.
    blip = T0 + timedelta(hours=2)
    rate(engine, 0.5, blip)
    evaluate(engine, cfg, blip)
    evaluate(engine, cfg, blip + timedelta(minutes=11))  # the sample left the window
    (_, second) = rows(engine, alerts)
    assert second.state == "resolved" and second.fired_at is None
    assert rows(engine, notifications, notifications.c.alert_id == second.alert_id) == []
    assert "never fired" in rows(engine, alert_events, alert_events.c.kind == "resolved")[-1].note


def test_keep_firing_for_bridges_a_flap(engine: Engine) -> None:
    cfg = config(keep=30)
    rate(engine, 0.5, T0)
    evaluate(engine, cfg, T0)
    evaluate(engine, cfg, T0 + timedelta(minutes=15))  # condition false, within keep_firing_for
    assert rows(engine, alerts)[0].state == "firing"
    evaluate(engine, cfg, T0 + timedelta(minutes=31))
    assert rows(engine, alerts)[0].state == "resolved"


def test_concurrent_evaluations_open_one_alert_and_queue_once(engine: Engine) -> None:
    cfg = config()
    rate(engine, 0.5, T0)
    barrier = threading.Barrier(4)
    errors: list[BaseException] = []

    def run() -> None:
        try:
            barrier.wait()
            evaluate(engine, cfg, T0)
        except BaseException as exc:  # surfaced below
            errors.append(exc)

    threads = [threading.Thread(target=run) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    (alert,) = rows(engine, alerts)
    assert kinds(engine, alert.alert_id) == ["pending", "firing"]
    assert sorted(n.channel for n in rows(engine, notifications)) == ["log", "ops"]


def test_a_silence_suppresses_and_its_expiry_notifies(engine: Engine) -> None:
    cfg = config()
    now = datetime.now(UTC)
    silence = actions.add_silence(
        engine,
        parse_matchers(["component=staging_transformer", "severity=~warning|info"]),
        ends_at=now + timedelta(hours=1),
        created_by="oncall@example.org",
        comment="backfill of March",
    )
    rate(engine, 0.5, now)
    evaluate(engine, cfg, now + timedelta(seconds=1))  # the silence started when it was added
    (alert,) = rows(engine, alerts)
    assert (alert.state, alert.status) == ("firing", "suppressed")
    assert alert.suppressed_by == f"silence {silence}"
    assert rows(engine, notifications) == []

    actions.expire_silence(engine, silence)
    report = evaluate(engine, cfg, datetime.now(UTC) + timedelta(seconds=1))
    (alert,) = rows(engine, alerts)
    assert report.unsuppressed == [alert.alert_id] and alert.status == "active"
    assert kinds(engine, alert.alert_id) == ["pending", "firing", "suppressed", "unsuppressed"]
    assert sorted(n.channel for n in rows(engine, notifications)) == ["log", "ops"]


def test_a_firing_cancelled_while_silenced_is_announced_when_the_silence_ends(
    engine: Engine,
) -> None:
    """Before: the cancelled rows counted as queued, so the alert stayed unannounced until
    repeat_interval (4 h) after the silence ended."""
    cfg = config()
    now = datetime.now(UTC)
    rate(engine, 0.5, now)
    evaluate(engine, cfg, now)  # fires: one firing row per channel, pending
    silence = actions.add_silence(
        engine,
        parse_matchers(["component=staging_transformer"]),
        ends_at=now + timedelta(hours=1),
        created_by="oncall@example.org",
        comment="backfill of March",
    )
    evaluate(engine, cfg, now + timedelta(seconds=1))
    # The dispatcher drops the announcements of an alert suppressed now (it never contacts ops).
    env = {"OPS_WEBHOOK_URL": "http://127.0.0.1:9/hook"}
    report = Dispatcher(engine, cfg, env=env, clock=lambda: now + timedelta(seconds=2)).run_once()
    assert report.channel("ops").cancelled == 1 and report.channel("log").cancelled == 1

    actions.expire_silence(engine, silence)
    later = datetime.now(UTC) + timedelta(seconds=3)
    unsuppressed = evaluate(engine, cfg, later)
    (alert,) = rows(engine, alerts)
    assert unsuppressed.unsuppressed == [alert.alert_id] and unsuppressed.notifications == 2
    pending = rows(engine, notifications, notifications.c.status == "pending")
    assert sorted((n.channel, n.kind) for n in pending) == [("log", "firing"), ("ops", "firing")]
    [event] = rows(engine, alert_events, alert_events.c.kind == "unsuppressed")
    assert {n.event_id for n in pending} == {event.event_id}
    assert evaluate(engine, cfg, later + timedelta(seconds=30)).notifications == 0  # once


def test_a_failed_firing_is_not_requeued_when_a_silence_ends_a_cancelled_one_is(
    engine: Engine,
) -> None:
    """Before: every silence that ended queued the firing again on a channel whose firing had
    failed for good (a new failure and a failed dispatch step each time), although the
    docstring left it to the repeat and the escalation."""
    cfg = config()
    now = datetime.now(UTC)
    rate(engine, 0.5, now)
    evaluate(engine, cfg, now)
    n = notifications.c
    with engine.begin() as conn:  # ops: failed for good; log: dropped by the suppression
        conn.execute(notifications.update().where(n.channel == "ops").values(status="failed"))
        conn.execute(notifications.update().where(n.channel == "log").values(status="cancelled"))
    for _ in range(2):
        silence = actions.add_silence(
            engine,
            parse_matchers(["component=staging_transformer"]),
            ends_at=now + timedelta(hours=1),
            created_by="oncall@example.org",
            comment="backfill of March",
        )
        evaluate(engine, cfg, datetime.now(UTC) + timedelta(seconds=1))
        actions.expire_silence(engine, silence)
        report = evaluate(engine, cfg, datetime.now(UTC) + timedelta(seconds=2))
        assert len(report.unsuppressed) == 1
        with engine.begin() as conn:  # what the dispatcher made of it: ops keeps failing
            pending = n.status == "pending"
            conn.execute(
                notifications.update().where(pending, n.channel == "ops").values(status="failed")
            )
            conn.execute(
                notifications.update().where(pending, n.channel == "log").values(status="sent")
            )

    firing = rows(engine, notifications, n.kind == "firing")
    assert sorted((r.channel, r.status) for r in firing) == [
        ("log", "cancelled"),
        ("log", "sent"),  # re-announced once where the suppression had dropped it
        ("ops", "failed"),  # left to the repeat and the escalation: no failure per silence
    ]


def test_an_in_flight_firing_is_told_its_acknowledgement_and_resolve_a_failed_one_not(
    engine: Engine,
) -> None:
    """Before: only ``sent`` rows counted as told, and resolving cancelled the claimed row."""
    cfg = config()
    rate(engine, 0.5, T0)
    evaluate(engine, cfg, T0)
    (alert,) = rows(engine, alerts)
    n = notifications.c
    with engine.begin() as conn:  # what the dispatcher did: ops in flight, log failed for good
        conn.execute(
            notifications.update()
            .where(n.channel == "ops")
            .values(claimed_by="d1", claimed_until=T0 + timedelta(minutes=1), delivery_key="k" * 64)
        )
        conn.execute(notifications.update().where(n.channel == "log").values(status="failed"))

    actions.acknowledge(engine, alert.alert_id, "ana", None, T0 + timedelta(seconds=10))
    acked = rows(engine, notifications, n.kind == "acknowledged")
    assert [a.channel for a in acked] == ["ops"]
    actions.resolve(engine, alert.alert_id, "ana", "fixed", T0 + timedelta(seconds=20))
    by = {(r.channel, r.kind): r.status for r in rows(engine, notifications)}
    assert by == {
        ("ops", "firing"): "pending",  # still the dispatcher's: it records what the receiver said
        ("log", "firing"): "failed",
        ("ops", "acknowledged"): "cancelled",  # never attempted: the resolve supersedes it
        ("ops", "resolved"): "pending",
    }


def test_a_failed_firing_the_receiver_may_have_is_told_its_resolve(engine: Engine) -> None:
    """Before: a failed row never counted as told, so a PagerDuty trigger whose every retry
    timed out (PagerDuty may have opened the incident) never got its resolve and PagerDuty kept
    escalating. A failed row that still carries its delivery key may have reached the receiver;
    the dispatcher clears the key when the receiver refused the request outright."""
    cfg = config()
    rate(engine, 0.5, T0)
    evaluate(engine, cfg, T0)
    (alert,) = rows(engine, alerts)
    n = notifications.c
    with engine.begin() as conn:  # ops: every retry timed out; log: refused (no key left)
        conn.execute(
            notifications.update()
            .where(n.channel == "ops")
            .values(status="failed", delivery_key="k" * 64, last_error="did not answer")
        )
        conn.execute(notifications.update().where(n.channel == "log").values(status="failed"))

    actions.resolve(engine, alert.alert_id, "ana", "fixed", T0 + timedelta(seconds=20))
    resolved = rows(engine, notifications, n.kind == "resolved")
    assert [(r.channel, r.status) for r in resolved] == [("ops", "pending")]


def test_a_firing_that_failed_for_good_is_announced_again_by_the_repeat(engine: Engine) -> None:
    cfg = config()
    rate(engine, 0.5, T0)
    evaluate(engine, cfg, T0)
    (alert,) = rows(engine, alerts)
    with engine.begin() as conn:  # the receivers were down past retry_for_minutes
        conn.execute(notifications.update().values(status="failed"))
    rate(engine, 0.5, T0 + timedelta(hours=4))
    assert evaluate(engine, cfg, T0 + timedelta(hours=4)).notifications == 0  # no re-queue loop
    report = actions.maintain(engine, cfg, T0 + timedelta(hours=4, minutes=1))
    assert report.repeated == [alert.alert_id]
    repeated = rows(engine, notifications, notifications.c.kind == "repeated")
    assert sorted((n.channel, n.status) for n in repeated) == [
        ("log", "pending"),
        ("ops", "pending"),
    ]
    actions.resolve(engine, alert.alert_id, "ana", "fixed", T0 + timedelta(hours=5))
    # Not told: the failed firings; the repeats were never attempted (cancelled): no resolve.
    assert rows(engine, notifications, notifications.c.kind == "resolved") == []


def test_a_mute_time_interval_holds_notifications_back(engine: Engine) -> None:
    muted = load_config_text(
        (RULES % {"for": 0, "keep": 0}).replace(
            "  builtin_rules: false\n",
            """  builtin_rules: false
  time_intervals:
    saturday_maintenance:
      - {weekdays: [saturday], location: Europe/Berlin}
  mute_time_intervals: [saturday_maintenance]
""",
        )
    )
    saturday = datetime(2026, 12, 12, 12, 0, tzinfo=UTC)
    rate(engine, 0.5, saturday)
    evaluate(engine, muted, saturday)
    (alert,) = rows(engine, alerts)
    assert alert.suppressed_by == "mute time interval saturday_maintenance"
    assert rows(engine, notifications) == []
    monday = datetime(2026, 12, 14, 8, 0, tzinfo=UTC)
    rate(engine, 0.5, monday)
    evaluate(engine, muted, monday)
    assert rows(engine, alerts)[0].status == "active"
    assert len(rows(engine, notifications)) == 2


def record(
    engine: Engine, source: RecordSource, check: str, target: str, status: str, **kw: Any
) -> None:
    with engine.begin() as conn:
        conn.execute(
            check_results.insert().values(
                ts=T0,
                source=str(source),
                check_name=check,
                target=target,
                status=status,
                severity=kw.pop("severity", None),
                message=kw.pop("message", f"{check} {status}"),
                details=kw.pop("details", {}),
                **kw,
            )
        )


def test_an_unreachable_database_mutes_every_asset_alert_and_names_the_root_cause(
    engine: Engine,
) -> None:
    cfg = load_config_text(
        """
health_checks:
  - check_id: database_connectivity
    name: db
    component: database
    check_type: connectivity
    kind: database
    critical: true
"""
    )
    record(
        engine,
        RecordSource.HEALTH_CHECK,
        "database_connectivity",
        "database",
        str(HealthStatus.CRITICAL),
        severity="ERROR",
    )
    record(
        engine,
        RecordSource.ASSET_CHECK,
        "patients_file_has_synthea_columns",
        "raw/patients",
        "error",
        severity="ERROR",
        message="could not connect",
    )
    record(
        engine,
        RecordSource.ASSET_CHECK,
        "stg_vs_core_reconciles",
        "core/dim_patient",
        "error",
        severity="ERROR",
        message="could not connect",
    )

    report = evaluate(engine, cfg, T0)

    by_rule = {(a.rule_id, a.labels.get("asset")): a for a in rows(engine, alerts)}
    root = by_rule[("dependency_unreachable", None)]
    assert root.status == "active"
    for key in (("asset_check_error", "raw/patients"), ("asset_check_error", "core/dim_patient")):
        muted = by_rule[key]
        assert muted.status == "suppressed" and muted.inhibited_by == root.alert_id, key
        assert muted.suppressed_by.startswith(f"inhibited by alert {root.alert_id} (")
    told = {n.alert_id for n in rows(engine, notifications)}
    assert root.alert_id in told and told.isdisjoint(
        {by_rule[("asset_check_error", "raw/patients")].alert_id}
    )
    assert set(report.suppressed) == {
        by_rule[("asset_check_error", "raw/patients")].alert_id,
        by_rule[("asset_check_error", "core/dim_patient")].alert_id,
    }

    # The database answers again: its alert resolves; the asset alerts still firing stay muted
    # for the hold (alerting.inhibit_hold_minutes, 10), as the outage's echo would resolve in it.
    record(
        engine,
        RecordSource.HEALTH_CHECK,
        "database_connectivity",
        "database",
        str(HealthStatus.HEALTHY),
    )
    evaluate(engine, cfg, T0 + timedelta(minutes=1), cursor=report.cursor)
    after = {a.alert_id: a for a in rows(engine, alerts)}
    raw_alert = after[by_rule[("asset_check_error", "raw/patients")].alert_id]
    assert after[root.alert_id].state == "resolved"
    assert (raw_alert.status, raw_alert.inhibited_by) == ("suppressed", root.alert_id)
    assert raw_alert.suppressed_by.startswith(
        f"inhibited by alert {root.alert_id} (resolved at 10:01:00 UTC, held until 10:11:00 UTC)"
    )
    assert raw_alert.alert_id not in {n.alert_id for n in rows(engine, notifications)}

    # Still firing once the hold has passed: a problem of its own, announced.
    evaluate(engine, cfg, T0 + timedelta(minutes=11), cursor=report.cursor)
    raw_alert = {a.alert_id: a for a in rows(engine, alerts)}[raw_alert.alert_id]
    assert raw_alert.status == "active" and raw_alert.suppressed_by is None
    assert raw_alert.alert_id in {n.alert_id for n in rows(engine, notifications)}


def test_an_alert_muted_by_an_outage_that_resolves_in_the_hold_is_never_announced(
    engine: Engine,
) -> None:
    cfg = load_config_text(
        "alerting: {inhibit_hold_minutes: 5}\n"
        "health_checks:\n"
        "  - {check_id: database_connectivity, component: database, kind: database,\n"
        "     check_type: connectivity, critical: true}\n"
    )

    def db(status: HealthStatus) -> None:
        severity = "ERROR" if status == HealthStatus.CRITICAL else None
        record(
            engine,
            RecordSource.HEALTH_CHECK,
            "database_connectivity",
            "database",
            str(status),
            severity=severity,
        )

    def check(status: str, severity: str | None) -> None:
        record(
            engine,
            RecordSource.ASSET_CHECK,
            "row_count_is_in_range",
            "stg/patients",
            status,
            severity=severity,
        )

    db(HealthStatus.CRITICAL)
    check("error", "ERROR")
    report = evaluate(engine, cfg, T0)
    db(HealthStatus.HEALTHY)
    report = evaluate(engine, cfg, T0 + timedelta(minutes=1), cursor=report.cursor)
    # Within the hold, a new alert the resolved root would mute is muted too.
    record(
        engine,
        RecordSource.ASSET_CHECK,
        "raw_is_fresh",
        "raw/patients",
        "warn",
        severity="WARN",
    )
    report = evaluate(engine, cfg, T0 + timedelta(minutes=2), cursor=report.cursor)
    (root,) = rows(engine, alerts, alerts.c.rule_id == "dependency_unreachable")
    late = {a.labels["asset"]: a for a in rows(engine, alerts, alerts.c.rule_id != root.rule_id)}
    assert {(a.status, a.inhibited_by) for a in late.values()} == {("suppressed", root.alert_id)}
    check("passed", None)
    evaluate(engine, cfg, T0 + timedelta(minutes=3), cursor=report.cursor)
    echo = {a.alert_id: a for a in rows(engine, alerts)}[late["stg/patients"].alert_id]
    assert echo.state == "resolved"
    assert {n.alert_id for n in rows(engine, notifications)} == {root.alert_id}
    # The hold passed (5 min): what is still firing is announced.
    evaluate(engine, cfg, T0 + timedelta(minutes=7), cursor=report.cursor)
    told = {n.alert_id for n in rows(engine, notifications)}
    assert told == {root.alert_id, late["raw/patients"].alert_id}


def test_a_failed_upstream_asset_mutes_downstream_alerts_only(engine: Engine) -> None:
    cfg = load_config_text("{}")
    record(
        engine,
        RecordSource.ASSET_CHECK,
        "patients_file_has_synthea_columns",
        "raw/patients",
        "failed",
        severity="ERROR",
        details={"files_rejected": 1},
    )
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
    evaluate(engine, cfg, T0)
    got = {(a.rule_id, a.labels.get("asset")): a for a in rows(engine, alerts)}
    contract = got[("contract_break", "raw/patients")]
    assert contract.status == "active" and contract.title.startswith(
        "patients_file_has_synthea_columns on raw/patients failed"
    )
    # Same asset: not downstream of itself, so the raw row-count alert is not muted.
    assert got[("asset_check_error", "raw/patients")].status == "active"
    assert got[("asset_check_warning", "core/dim_patient")].status == "suppressed"


def test_a_learning_check_never_alerts(engine: Engine) -> None:
    record(
        engine,
        RecordSource.ASSET_CHECK,
        "row_count_volume_is_normal",
        "raw/patients",
        "passed",
        details={"status": "insufficient_history", "n_history": 2, "min_history": 7},
    )
    evaluate(engine, load_config_text("{}"), T0)
    assert rows(engine, alerts) == []


def test_cooldown_holds_back_a_refire(engine: Engine) -> None:
    cfg = load_config_text(
        (RULES % {"for": 0, "keep": 0}).replace(
            "cooldown_period_minutes: 0", "cooldown_period_minutes: 60"
        )
    )
    rate(engine, 0.5, T0)
    evaluate(engine, cfg, T0)
    evaluate(engine, cfg, T0 + timedelta(minutes=11))  # resolved
    rate(engine, 0.5, T0 + timedelta(minutes=20))
    evaluate(engine, cfg, T0 + timedelta(minutes=20))
    (first, second) = rows(engine, alerts)
    assert second.status == "suppressed" and second.suppressed_by.startswith("cooldown until")
    assert rows(engine, notifications, notifications.c.alert_id == second.alert_id) == []


POLICY = """
escalation_policies:
  - policy_id: oncall
    repeat_interval_minutes: 30
    max_escalations: 3
    escalation_levels:
      - {level: 1, delay_minutes: 0, channels: [log], notify_roles: [engineer]}
      - {level: 2, delay_minutes: 15, channels: [ops], notify_roles: [lead]}
"""


def test_an_unacknowledged_alert_climbs_and_acknowledging_stops_it(engine: Engine) -> None:
    cfg = load_config_text(
        (RULES % {"for": 0, "keep": 0}).replace(
            "channels: [log, ops]", "channels: [log]\n    escalation_policy: oncall"
        )
        + POLICY
    )
    rate(engine, 0.5, T0)
    evaluate(engine, cfg, T0)
    (alert,) = rows(engine, alerts)
    r1 = actions.maintain(engine, cfg, T0)
    assert r1.escalated == [alert.alert_id]  # level 1 has no delay
    assert actions.maintain(engine, cfg, T0 + timedelta(minutes=10)).escalated == []
    r2 = actions.maintain(engine, cfg, T0 + timedelta(minutes=15))
    assert r2.escalated == [alert.alert_id]
    escalated = rows(engine, notifications, notifications.c.kind == "escalated")
    assert sorted(n.channel for n in escalated) == ["log", "ops"]
    assert rows(engine, alerts)[0].escalation_level == 2

    mark_sent(engine)
    actions.acknowledge(
        engine, alert.alert_id, "ana@example.org", "looking", T0 + timedelta(minutes=16)
    )
    (alert,) = rows(engine, alerts)
    assert (alert.status, alert.acknowledged_by, alert.next_escalation_at) == (
        "acknowledged",
        "ana@example.org",
        None,
    )
    acked = rows(engine, notifications, notifications.c.kind == "acknowledged")
    assert sorted(n.channel for n in acked) == ["log", "ops"]  # every channel that was told
    later = actions.maintain(engine, cfg, T0 + timedelta(hours=6))
    assert later.escalated == [] and later.repeated == []


def test_resolving_by_hand_cancels_what_was_not_sent(engine: Engine) -> None:
    cfg = config()
    rate(engine, 0.5, T0)
    evaluate(engine, cfg, T0)
    (alert,) = rows(engine, alerts)
    actions.resolve(engine, alert.alert_id, "ana", "restarted the merge", T0 + timedelta(minutes=1))
    (alert,) = rows(engine, alerts)
    assert (alert.state, alert.resolution, alert.resolved_by) == (
        "resolved",
        "restarted the merge",
        "ana",
    )
    assert {n.status for n in rows(engine, notifications)} == {"cancelled"}


def test_nothing_is_queued_for_a_disabled_channel(engine: Engine) -> None:
    cfg = load_config_text(
        (RULES % {"for": 0, "keep": 0}).replace(
            "    type: webhook\n", "    type: webhook\n    enabled: false\n"
        )
    )
    rate(engine, 0.5, T0)
    evaluate(engine, cfg, T0)
    assert [n.channel for n in rows(engine, notifications)] == ["log"]


def test_health_alerts_follow_the_checks_criticality_and_dependencies_alert_once(
    engine: Engine,
) -> None:
    cfg = load_config_text(
        """
health_checks:
  - {check_id: db, name: db, component: database, check_type: connectivity, kind: database}
  - {check_id: daemon, name: d, component: audit_manager, check_type: connectivity, kind: daemon,
     critical: true}
  - {check_id: cpu, name: c, component: system_resources, check_type: capacity,
     kind: system_resources}
"""
    )
    record(engine, RecordSource.HEALTH_CHECK, "db", "database", "critical", severity="WARN")
    record(
        engine, RecordSource.HEALTH_CHECK, "daemon", "audit_manager", "critical", severity="ERROR"
    )
    record(
        engine, RecordSource.HEALTH_CHECK, "cpu", "system_resources", "critical", severity="WARN"
    )
    evaluate(engine, cfg, T0)
    got = sorted((a.rule_id, a.labels["check"], a.severity) for a in rows(engine, alerts))
    assert got == [
        ("dependency_unreachable", "db", "critical"),  # the warehouse: one alert, its own rule
        ("health_check_critical", "daemon", "critical"),  # not a data dependency
        ("health_check_warning", "cpu", "warning"),  # a non-critical check's critical warns
    ]
