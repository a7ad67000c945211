"""Every template of every channel, rendered with every kind of alert (each event rule kind, a
metric rule; firing, resolved, acknowledged, escalated, repeated; root causes saying what they
mute, alerts saying what muted them) whose details come from real check results of defect files:
no patient value appears, and every word is the template's own or comes from the alert's labels,
annotations and root-cause names."""

import json
import re
from collections.abc import Iterator
from dataclasses import replace
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy.engine import Engine

from healthmon_dagster.config.loader import load_config
from healthmon_dagster.enums import AlertSeverity, AlertState, NotificationKind
from healthmon_dagster.etl import core, raw, staging
from healthmon_dagster.etl.landing import LocalLandingSource
from healthmon_dagster.etl.sample import SampleFile, generate_sample
from healthmon_dagster.formatting import human_duration
from healthmon_dagster.notify import templates
from healthmon_dagster.notify.base import (
    AlertEvent,
    AlertView,
    Message,
    MutedAlert,
    MutedSpan,
    Mutes,
    ThreadRef,
    dagster_links,
    rfc3339,
)
from healthmon_dagster.notify.email import EmailConfig, EmailNotifier
from healthmon_dagster.notify.log import LogNotifier
from healthmon_dagster.notify.pagerduty import event
from healthmon_dagster.notify.slack import blocks
from healthmon_dagster.notify.teams import card
from healthmon_dagster.notify.webhook import payload
from healthmon_dagster.quality.evaluation import evaluate
from healthmon_dagster.settings import default_config_path
from healthmon_dagster_tests.defs.fixtures import patient_values
from healthmon_dagster_tests.notify.fixtures import T0

UI = "http://dagster.example.org:3000"
THREAD = ThreadRef("1700000000.000100", "C0ALERTS")
NOTIFY_DIR = Path(templates.__file__).parent
TOKEN = re.compile(r"[A-Za-z0-9]+")


def _tokens(text: str) -> set[str]:
    return set(TOKEN.findall(text))


@pytest.fixture
def samples(engine: Engine, tmp_path: Path) -> list[SampleFile]:
    """Three files with defects loaded through raw, stg and core (the third breaks the contract)."""
    files = [
        *generate_sample(100, files=2, defect="unknown_gender"),
        *generate_sample(100, files=1, seed=7, defect="future_birthdate", prefix="later"),
        *generate_sample(100, files=1, seed=9, defect="missing_column", prefix="broken"),
    ]
    source = LocalLandingSource(tmp_path / "landing")
    for sample in files:
        source.put(sample.key, sample.data)
        raw.load_file(source=source, engine=engine, key=sample.key)
    staging.stage_pending(engine)
    core.merge_pending(engine)
    return files


def _check_alerts(engine: Engine) -> Iterator[tuple[str, dict[str, str], str, str, dict[str, Any]]]:
    """(rule, labels, title, description, details) of every check result that did not pass, plus
    one passing, as the engine would raise them from the stored results."""
    config = load_config(default_config_path())
    for asset, spec in config.quality.assets.items():
        for result in evaluate(engine, asset, spec.checks, mode="full"):
            details: dict[str, Any] = dict(result.details)
            for key in ("failing_rows", "total_rows", "observed_value", "threshold"):
                if getattr(result, key) is not None:
                    details[key] = getattr(result, key)
            labels = {"asset": asset, "check": result.check_name, "kind": result.kind}
            verdict = "failed" if result.status == "failed" else str(result.status)
            yield (
                "check_failed",
                labels,
                f"Check {result.check_name} {verdict} on {asset}",
                result.message,
                details,
            )


def _event_alerts() -> Iterator[tuple[str, dict[str, str], str, str, dict[str, Any]]]:
    """Every other event rule kind and a metric rule, with the figures their sources carry."""
    yield (
        "contract_break",
        {"asset": "raw/patients", "file": "broken_0001.csv"},
        "Landing file broken_0001.csv breaks the contract",
        "missing columns #9 (2 of 25); header line 1",
        {"missing_columns": 2, "line": 1, "delimiter": ","},
    )
    yield (
        "check_execution_failed",
        {"asset": "stg/patients", "check": "ssn_is_valid"},
        "Check ssn_is_valid could not run on stg/patients",
        "the check raised; its run failed",
        {"run_id": "9f1c2d3e-aaaa-bbbb-cccc-1234567890ab"},
    )
    for level in ("WARN", "FAIL"):
        yield (
            "freshness",
            {"asset": "core/dim_patient", "freshness": level},
            f"core/dim_patient freshness {level}",
            "last materialized 26h ago (fail window 24h)",
            {"age_minutes": 1560, "fail_window_minutes": 1440, "warn_window_minutes": 720},
        )
    yield (
        "run_failure",
        {"job": "patients_etl_job"},
        "Run of patients_etl_job failed",
        "step stg_patients failed; 0 of 3 steps succeeded",
        {"run_id": "0a1b2c3d-1111-2222-3333-444455556666", "failed_steps": ["stg_patients"]},
    )
    for status in ("critical", "warning"):
        yield (
            "health_check",
            {"component": "database", "health_check": "db_ping", "status": status},
            f"Health check db_ping is {status}",
            "query took 2300 ms (critical above 2000 ms)",
            {"response_time_ms": 2300.5, "critical_threshold": 2000},
        )
    yield (
        "dependency_unreachable",
        {"component": "network", "health_check": "s3_reachable"},
        "Dependency s3 is unreachable",
        "connection refused on port 443 after 3 attempts",
        {"attempts": 3, "port": 443},
    )
    yield (
        "high_rejection_rate",
        {"component": "staging_transformer", "team": "data-platform"},
        "High Rejection Rate Alert",
        "avg(rejection_rate) over 10m is 0.0612 > 0.05",
        {"aggregation": "avg", "window_minutes": 10, "threshold": 0.05, "samples": 4},
    )


def _views(engine: Engine) -> list[AlertView]:
    views = []
    severities = list(AlertSeverity)
    for i, (rule, labels, title, description, details) in enumerate(
        [*_check_alerts(engine), *_event_alerts()]
    ):
        labels = {"rule_id": rule, **labels, "severity": severities[i % 4].value}
        views.append(
            AlertView(
                notification_id=i + 1,
                alert_id=i + 1,
                fingerprint=f"{i:064x}",
                rule_id=rule,
                state=AlertState.FIRING,
                status="active",
                severity=severities[i % 4],
                component=labels.get("component"),
                labels=labels,
                title=title,
                description=description,
                details=details,
                value=float(details.get("observed_value", 0.0612)),
                started_at=T0,
                fired_at=T0 + timedelta(minutes=1),
                event=AlertEvent("firing", T0 + timedelta(minutes=1), "sensor"),
                links=dagster_links(UI, labels, details),
            )
        )
    return _with_root_causes(views)


def _with_root_causes(views: list[AlertView]) -> list[AlertView]:
    """Lineage inhibition as the dispatcher reads it: the unreachable dependency mutes every
    asset's alerts (the check alerts, by name), the contract break those downstream of raw, and
    the check alerts were muted by the dependency's alert until it resolved."""
    root = next(v for v in views if v.rule_id == "dependency_unreachable")
    checks = [v for v in views if v.rule_id == "check_failed"]
    muted = tuple(
        MutedAlert(v.alert_id, v.rule_id, v.labels.get("asset"), v.labels.get("check"))
        for v in checks
    )
    span = MutedSpan(root.alert_id, root.title, T0, T0 + timedelta(minutes=5))
    out = []
    for v in views:
        if v is root:
            v = replace(v, mutes=Mutes(every_asset=True, muted=muted))
        elif v.rule_id == "contract_break":
            downstream = ("core/dim_patient", "stg/patients", "stg/patients_rejected")
            v = replace(v, mutes=Mutes(False, downstream, muted[:2]))
        elif v in checks:
            v = replace(v, muted_by=(span,))
        out.append(v)
    return out


def _as(view: AlertView, kind: NotificationKind) -> AlertView:
    at = T0 + timedelta(minutes=42)
    extra: dict[str, Any] = {}
    event_details: dict[str, Any] = {}
    if kind == NotificationKind.RESOLVED:
        extra = {"state": AlertState.RESOLVED, "resolved_at": at, "resolved_by": "sensor"}
    if kind == NotificationKind.ACKNOWLEDGED:
        extra = {"acknowledged_by": "cli:ana", "acknowledged_at": at, "ack_note": "on it"}
    if kind == NotificationKind.ESCALATED:
        extra = {"escalation_level": 2}
        event_details = {"notify_roles": ["data-platform-lead"], "notify_users": ["ana"]}
    event = AlertEvent(kind.value, at, "sensor", details=event_details)
    return replace(view, event=event, thread=THREAD, **extra)


def _text(value: Any) -> str:
    """The keys and values of a JSON payload, one per line."""
    if isinstance(value, dict):
        return "\n".join(f"{k}\n{_text(v)}" for k, v in value.items())
    if isinstance(value, list | tuple):
        return "\n".join(_text(v) for v in value)
    return "" if value is None else str(value)


def _rendered(message: Message) -> str:
    """Everything every channel would send for ``message``, as text (the webhook's receiver and
    PagerDuty's routing key are the test's: ``receiver`` and ``ROUTINGKEY``)."""
    parts = [
        *LogNotifier("log").lines(message),
        _text(blocks(message, list(message.alerts))),
        _text(card(message)),
        _text(payload(message, "receiver")),
        *(_text(event(message, a, "ROUTINGKEY", "healthmon")) for a in message.alerts),
        *(
            templates.render("slack", message.kind, "reply", message=message, alert=a)
            for a in message.alerts
        ),
    ]
    mail = EmailNotifier(
        "mail", EmailConfig(from_address="healthmon@example.org", to=["oncall@example.org"])
    ).build(message)
    parts += [str(mail["Subject"])]
    parts += [p.get_content() for p in mail.iter_parts()]
    return "\n".join(parts)


def _allowed(message: Message) -> set[str]:
    """Words a notification may contain: the templates' and channel modules' own text, and what
    the alerts carry (labels, annotations, details, links, times and durations of their events)."""
    words: set[str] = set()
    for path in [*NOTIFY_DIR.glob("templates/**/*.j2"), *NOTIFY_DIR.glob("*.py")]:
        words |= _tokens(path.read_text())
    words |= _tokens(json.dumps([message.group_key, dict(message.group_labels), UI, "ROUTINGKEY"]))
    for a in message.alerts:
        words |= _tokens(
            json.dumps([a.labels, a.annotations, a.details, a.fingerprint], default=str)
        )
        words |= {a.fingerprint[:12], str(a.alert_id)}
        words |= _tokens(json.dumps([[link.title, link.url] for link in a.links]))
        words |= _tokens(
            " ".join(
                str(x)
                for x in (
                    a.event.actor,
                    a.acknowledged_by,
                    a.ack_note,
                    a.resolved_by,
                    a.escalation_level,
                    a.component,
                )
            )
        )
        words |= _tokens(json.dumps(dict(a.event.details)))
        if a.mutes is not None:  # names of the muted alerts and downstream assets
            words |= _tokens(json.dumps(a.mutes.as_json()))
        for span in a.muted_by:  # the root cause's id and title, the times
            words |= _tokens(json.dumps(span.as_json()))
            words |= _tokens(f"{templates._ts(span.since)} {templates._ts(span.until)}")
        for ts in (a.started_at, a.fired_at, a.resolved_at, a.acknowledged_at, a.event.at):
            words |= _tokens(f"{templates._ts(ts)} {rfc3339(ts)}")
        words |= _tokens(f"{human_duration(a.duration_seconds)} {a.value}")
    return words


def test_every_template_is_phi_safe_for_every_kind_of_alert(
    engine: Engine, samples: list[SampleFile], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("SLACK_BOT_TOKEN", "xoxb-secret-never-shown")
    views = _views(engine)
    failing = [v for v in views if v.rule_id == "check_failed" and "failing_rows" in v.details]
    assert len(views) >= 12 and any(v.details.get("failing_rows") for v in failing)
    assert sum(v.mutes is not None for v in views) == 2 and sum(bool(v.muted_by) for v in views) > 8

    values = patient_values(samples)
    single_words = {v for v in values if TOKEN.fullmatch(v)}
    phrases = values - single_words
    rendered_templates: set[str] = set()
    for kind in NotificationKind:
        # One alert at a time, in its thread and with none (a follow-up at the top level), then
        # all of them at once.
        for group in ([v] for v in views):
            message = _message(kind, group)
            text = _rendered(message) + _rendered(_message(kind, group, thread=None))
            assert not single_words & _tokens(text), kind
            assert not [p for p in phrases if p in text], kind
            assert "xoxb-secret-never-shown" not in text
            stray = _tokens(text) - _allowed(message)
            assert not stray, f"{kind}: words from nowhere: {sorted(stray)[:10]}"
        message = _message(kind, views)
        text = _rendered(message)
        assert not single_words & _tokens(text) and not [p for p in phrases if p in text]
        rendered_templates |= {f"{c}/{kind.value}.j2" for c in templates.TEMPLATED_CHANNELS}
    assert rendered_templates == set(templates.template_names())


def _message(
    kind: NotificationKind, views: list[AlertView], thread: ThreadRef | None = THREAD
) -> Message:
    alerts = tuple(replace(_as(v, kind), thread=thread) for v in views)
    return Message("any", kind, "{}:{rule_id}", alerts, "k" * 64, {"rule_id": "x"}, UI)


def test_every_channel_says_what_a_root_cause_mutes_and_what_muted_an_alert() -> None:
    root = AlertView(
        notification_id=1,
        alert_id=7,
        fingerprint="a" * 64,
        rule_id="dependency_unreachable",
        state=AlertState.FIRING,
        status="active",
        severity=AlertSeverity.CRITICAL,
        component="database",
        labels={"rule_id": "dependency_unreachable", "dependency": "database"},
        title="Dependency unreachable: database_connectivity on database is critical",
        description="could not connect",
        details={},
        value=None,
        started_at=T0,
        event=AlertEvent("firing", T0, "sensor"),
        mutes=Mutes(
            every_asset=True,
            muted=tuple(
                MutedAlert(10 + i, "asset_check_error", f"stg/table_{i}", "row_count_is_in_range")
                for i in range(12)
            ),
        ),
    )
    muted = replace(
        root,
        notification_id=2,
        alert_id=8,
        fingerprint="b" * 64,
        rule_id="asset_check_error",
        severity=AlertSeverity.ERROR,
        labels={"rule_id": "asset_check_error", "asset": "raw/patients"},
        title="row_count_is_in_range on raw/patients failed",
        mutes=None,
        muted_by=(MutedSpan(7, root.title, T0, T0 + timedelta(minutes=5)),),
    )
    mutes = (
        "Root cause: mutes the alerts of every asset; muting 12 alerts now: "
        "asset_check_error on stg/table_0 (row_count_is_in_range), "
    )
    more = "asset_check_error on stg/table_9 (row_count_is_in_range) and 2 more"
    muted_by = (
        f"Muted by alert 7 ({root.title}) from 2026-01-05 12:00:00 UTC to 2026-01-05 12:05:00 UTC"
    )
    message = Message("any", NotificationKind.FIRING, "g", (root, muted), "k" * 64, {}, UI)
    log = LogNotifier("log").lines(message)
    assert mutes in log[0] and more in log[0] and muted_by in log[1]
    slack = _text(blocks(message, list(message.alerts)))
    teams = _text(card(message))
    for text in (slack, teams):
        assert "mutes the alerts of every asset; muting 12 alerts now" in text
        assert "and 2 more" in text and "Muted by alert 7" in text
    mail = EmailNotifier(
        "mail", EmailConfig(from_address="healthmon@example.org", to=["oncall@example.org"])
    ).build(message)
    text_part, html_part = (p.get_content() for p in mail.iter_parts())
    assert mutes in text_part and muted_by in text_part
    assert "muting 12 alerts now" in html_part and "Muted by alert 7" in html_part
    hook = payload(message, "receiver")["alerts"]
    assert hook[0]["annotations"]["mutes"].startswith(mutes)
    assert hook[1]["annotations"]["muted_by"] == muted_by
    pd_root = event(message, root, "ROUTINGKEY", "healthmon")["payload"]
    assert pd_root["summary"].endswith("root cause of 12 muted alerts")
    assert pd_root["custom_details"]["mutes"]["muted_count"] == 12
    assert pd_root["custom_details"]["mutes"]["scope"] == "every asset"
    pd_muted = event(message, muted, "ROUTINGKEY", "healthmon")["payload"]["custom_details"]
    assert pd_muted["muted_by"] == [
        {
            "alert_id": 7,
            "title": root.title,
            "since": "2026-01-05T12:00:00Z",
            "until": "2026-01-05T12:05:00Z",
        }
    ]
