"""Issue 11's transient-fault drill on a real Dagster instance with real runs, a local Slack
stand-in and a real SMTP server (SQLite and Postgres): the warehouse goes away and an ETL run
fails -> one incident with the error class, announced on Slack and by email from the failed run
itself; the warehouse returns -> the self-healing re-run succeeds with its checks passing, the
incident goes to monitoring, then resolves after its quiet period, and the resolve reaches the same
Slack thread and email thread; the timeline holds every step, and no patient value is anywhere."""

import json
import os
import time
from pathlib import Path
from typing import Any

import dagster as dg
import pytest
import yaml

from healthmon_dagster.defs.pipeline.jobs import raw_file_run_config
from healthmon_dagster.incidents.records import timeline
from healthmon_dagster.store.db import get_engine
from healthmon_dagster_tests.defs.alerting.test_end_to_end import dispatch, use_channels
from healthmon_dagster_tests.defs.alerting.test_sensors import evaluate_alerts
from healthmon_dagster_tests.defs.fixtures import (
    FAST_RETRY,
    patient_values,
    raw_rows,
    run_job,
    unreachable_url,
)
from healthmon_dagster_tests.defs.selfheal.test_sensors import (
    execute,
    incident_rows,
    land,
    tick,
)
from healthmon_dagster_tests.notify.fixtures import slack_server, smtp_server


def use_config(monkeypatch: pytest.MonkeyPatch, folder: Path, slack_url: str, port: int) -> None:
    """The end-to-end alert test's healthmon.yaml (Slack and email for the built-in rules, the
    incident rules among them), plus self-healing's production rules with fast timings and fast
    landing retries."""
    use_channels(monkeypatch, folder, slack_url, port)
    path = Path(os.environ["HEALTHMON_CONFIG"])
    data: dict[str, Any] = yaml.safe_load(path.read_text())
    data["landing"]["retry"] = FAST_RETRY
    data["self_healing"] = {
        "initial_delay_seconds": 1,
        "max_delay_seconds": 1,
        "jitter": 0,
        "quiet_period_minutes": 0.02,
    }
    path.write_text(yaml.safe_dump(data))


def test_a_transient_outage_pages_heals_and_resolves_in_the_same_threads(
    healthmon_env: Path,
    db_url: str,
    instance: dg.DagsterInstance,
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
) -> None:
    monkeypatch.setenv("HEALTHMON_HEALTH_DATABASE_URL", db_url)  # the health store stays up
    with slack_server() as slack, smtp_server() as (mail, port):
        use_config(monkeypatch, tmp_path, slack.url, port)
        sample = land(healthmon_env)

        # 1. The warehouse refuses connections: the run fails after its in-run retries.
        monkeypatch.setenv("HEALTHMON_DATABASE_URL", unreachable_url(db_url, tmp_path))
        started = time.monotonic()
        failed = run_job(instance, raw_file_run_config(sample.key))
        assert failed.success is False

        (incident,) = incident_rows(db_url)
        assert incident.root_key == "resource:database:warehouse"
        assert incident.status == "open" and incident.severity == "high"
        assert incident.metadata["error_classes"] in (
            ["connection_refused"],
            ["database_unavailable"],
        )
        # Announced by the failed run itself (the incident fast path): one Slack message, one
        # email, before any sensor ticked.
        (post,) = slack.on("/api/chat.postMessage")
        assert f"incident {incident.incident_id}" in json.dumps(post.json).lower()
        (page,) = mail.messages
        assert "incident" in str(page["Subject"]).lower()
        detected_in = time.monotonic() - started

        # 2. The warehouse is back: the self-healing sensor re-runs what the failed run left undone.
        monkeypatch.setenv("HEALTHMON_DATABASE_URL", db_url)
        (rerun,) = tick(instance).run_requests or []
        healed = execute(instance, rerun)
        assert healed.success
        checks = [
            e.asset_check_evaluation_data
            for e in healed.all_events
            if e.event_type == dg.DagsterEventType.ASSET_CHECK_EVALUATION
        ]
        assert checks and not [
            c.check_name
            for c in checks
            if not c.passed and c.severity == dg.AssetCheckSeverity.ERROR
        ]
        assert raw_rows(db_url, sample.key) == 50

        tick(instance)
        assert incident_rows(db_url)[0].status == "monitoring"
        time.sleep(1.3)  # the quiet period (1.2 s)
        tick(instance)
        (done,) = incident_rows(db_url)
        assert done.status == "resolved" and "self-healed" in (done.resolution or "")

        # 3. The incident's alert resolves; the resolve goes to the same threads.
        evaluate_alerts(instance, None)
        time.sleep(1.1)  # the group's interval since the page
        dispatch(instance)
        evaluate_alerts(instance, None)  # records the sent notifications on the timeline

    posts = slack.on("/api/chat.postMessage")
    replies = [p.json for p in posts if "thread_ts" in p.json]
    assert len(posts) == 2 and len(replies) == 1, [p.json for p in posts]
    assert "RESOLVED" in replies[0]["text"]
    assert len(mail.messages) == 2
    assert mail.messages[1]["In-Reply-To"] == page["Message-ID"]

    kinds = [e.kind for e in timeline(get_engine(db_url), incident.incident_id)]
    for kind in (
        "created",
        "failure",
        "self_heal_attempt",
        "self_heal_outcome",
        "status_changed",
        "resolved",
        "notification_sent",
    ):
        assert kind in kinds, (kind, kinds)
    assert kinds.count("notification_sent") == 6  # log, Slack and email; opened and resolved

    # No patient value in any message, mail or timeline entry.
    texts = [json.dumps(p.json) for p in posts] + [m.as_string() for m in mail.messages]
    texts += [str(tuple(e)) for e in timeline(get_engine(db_url), incident.incident_id)]
    blob = "\n".join(texts)
    assert not sorted(v for v in patient_values([sample]) if len(v) > 3 and v in blob)
    assert detected_in < 60
