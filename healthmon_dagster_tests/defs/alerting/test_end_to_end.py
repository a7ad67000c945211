"""End to end through Dagster, SQLite and Postgres: a defect file lands -> its check fails -> the
alert fires and is sent to a local Slack stand-in and a real SMTP server (by the run itself, the
alert fast path; the alert sensor and the dispatch job send whatever it left), with no patient
value in either; a clean file lands -> the alert resolves -> the resolve arrives as a reply in the
same Slack thread and the same email thread."""

import json
from pathlib import Path

import dagster as dg
import pytest
import yaml

from healthmon_dagster.defs.alerting.sensors import alert_dispatch_sensor
from healthmon_dagster.etl.sample import generate_sample
from healthmon_dagster_tests.defs.alerting.test_sensors import evaluate_alerts, land_and_run
from healthmon_dagster_tests.defs.fixtures import defs, patient_values
from healthmon_dagster_tests.notify.fixtures import slack_server, smtp_server
from healthmon_dagster_tests.quality.fixtures import PROJECT_CONFIG

TOKEN = "xoxb-test-token"


def use_channels(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, slack_url: str, smtp_port: int
) -> None:
    data = yaml.safe_load(PROJECT_CONFIG.read_text())
    data["channels"] = {
        "slack": {
            "type": "slack",
            "configuration": {
                "channel": "#data-alerts",
                "token_env": "SLACK_BOT_TOKEN",
                "base_url": f"{slack_url}/api/",
            },
        },
        "email": {
            "type": "email",
            "configuration": {
                "host": "127.0.0.1",
                "port": smtp_port,
                "security": "none",
                "from_address": "healthmon@example.org",
                "to": ["oncall@example.org"],
            },
        },
    }
    data["alert_rules"] = []
    data["escalation_policies"] = []
    data["alerting"]["builtin_channels"] = ["log", "slack", "email"]
    data["alerting"]["grouping"]["group_wait_seconds"] = 0
    data["alerting"]["grouping"]["group_interval_seconds"] = 1
    path = tmp_path / "healthmon.yaml"
    path.write_text(yaml.safe_dump(data))
    monkeypatch.setenv("HEALTHMON_CONFIG", str(path))
    monkeypatch.setenv("SLACK_BOT_TOKEN", TOKEN)


def dispatch(instance: dg.DagsterInstance) -> dg.ExecuteInProcessResult | None:
    """A tick of alert_dispatch_sensor and the dispatch job it requests; None when nothing was
    due (the runs' fast path sent it all)."""
    context = dg.build_sensor_context(instance=instance, resources=defs.resources)
    result = alert_dispatch_sensor(context)
    if isinstance(result, dg.SkipReason):
        assert result.skip_message == "no notification due", result
        return None
    assert isinstance(result, dg.SensorResult), result
    run = defs.resolve_job_def("alert_dispatch_job").execute_in_process(
        instance=instance, raise_on_error=False
    )
    assert run.success, [e.message for e in run.all_events if e.is_failure]
    return run


def test_a_failed_check_reaches_slack_and_email_and_its_resolve_the_same_threads(
    healthmon_env: Path,
    db_url: str,
    instance: dg.DagsterInstance,
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
) -> None:
    with slack_server() as slack, smtp_server() as (mail, port):
        use_channels(monkeypatch, tmp_path, slack.url, port)
        land_and_run(healthmon_env, instance, generate_sample(200, files=1, seed=3))
        _, cursor = evaluate_alerts(instance, None)

        defect = generate_sample(200, files=1, seed=4, defect="null_ids", prefix="patients_b")
        land_and_run(healthmon_env, instance, defect)
        _, cursor = evaluate_alerts(instance, cursor)
        dispatch(instance)

        posts = slack.on("/api/chat.postMessage")
        assert posts, "no Slack message"
        firing_texts = [json.dumps(p.json) for p in posts]
        assert any("patient_ids_are_joinable" in t for t in firing_texts)
        assert mail.messages, "no email"
        first_mail = mail.messages[0]
        body = first_mail.get_body(("plain",))
        assert body is not None
        mail_text = str(first_mail["Subject"]) + body.get_content()
        leaked = sorted(
            v
            for v in patient_values(defect)
            if len(v) > 3 and v in "".join(firing_texts) + mail_text
        )
        assert leaked == []

        land_and_run(
            healthmon_env, instance, generate_sample(200, files=1, seed=5, prefix="patients_c")
        )
        evaluate_alerts(instance, cursor)
        dispatch(instance)

    replies = [p.json for p in slack.on("/api/chat.postMessage") if "thread_ts" in p.json]
    assert any("RESOLVED" in r.get("text", "") for r in replies)
    resolved_mails = [m for m in mail.messages if m["In-Reply-To"]]
    assert resolved_mails and all(
        m["In-Reply-To"] in {x["Message-ID"] for x in mail.messages} for m in resolved_mails
    )
