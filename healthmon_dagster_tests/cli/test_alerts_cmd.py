"""``healthmon alerts`` and ``healthmon silences`` against a real store (SQLite and Postgres): list,
show, ack, resolve, test-rule; silences add, list, expire; clear errors for what cannot be done."""

import json
from pathlib import Path

import pytest
from click.testing import CliRunner
from sqlalchemy.engine import Engine

from healthmon_dagster.alerting.engine import evaluate
from healthmon_dagster.cli.main import cli
from healthmon_dagster.config.loader import load_config_text
from healthmon_dagster.store.metrics import MetricPoint, write_metrics

CONFIG = """
alerting:
  builtin_rules: false
alert_rules:
  - rule_id: high_rejection_rate
    name: High rejection rate
    component: staging_transformer
    condition: {metric_name: rejection_rate, operator: greater_than, threshold: 0.05,
                window_minutes: 10}
    channels: [log]
"""


@pytest.fixture
def firing(
    healthmon_env: Path, engine: Engine, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> int:
    path = tmp_path / "healthmon.yaml"
    path.write_text(CONFIG)
    monkeypatch.setenv("HEALTHMON_CONFIG", str(path))
    write_metrics(engine, [MetricPoint("staging_transformer", "rejection_rate", 0.3)])
    report = evaluate(engine, load_config_text(CONFIG))
    (alert_id,) = report.fired
    return alert_id


def run(*args: str) -> tuple[int, str]:
    result = CliRunner().invoke(cli, list(args))
    return result.exit_code, result.output


def test_list_show_ack_resolve(firing: int) -> None:
    code, out = run("alerts", "list")
    assert code == 0 and f"{firing}" in out and "firing" in out and "High rejection rate" in out

    code, out = run("alerts", "ack", str(firing), "--by", "ana", "--note", "looking")
    assert (code, out.strip()) == (0, f"alert {firing} acknowledged")
    code, out = run("alerts", "ack", str(firing), "--by", "bo")
    assert code == 1 and "was acknowledged by ana" in out

    code, out = run("alerts", "show", str(firing))
    assert code == 0 and "acknowledged by ana" in out and "(looking)" in out
    assert "firing" in out and "log" in out  # history and the queued notification

    code, out = run("alerts", "resolve", str(firing), "--resolution", "threshold raised")
    assert code == 0
    code, out = run("alerts", "list")
    assert out.strip() == "no open alerts"
    code, out = run("alerts", "list", "--all", "--json")
    (alert,) = json.loads(out)
    assert (alert["state"], alert["resolution"]) == ("resolved", "threshold raised")


def test_errors_say_what_to_do(firing: int) -> None:
    code, out = run("alerts", "ack", "999999")
    assert code == 1 and "no alert 999999" in out and "alerts list" in out
    code, out = run("alerts", "test-rule", "nope")
    assert code == 1 and "unknown rule 'nope'; rules: high_rejection_rate" in out
    code, out = run("silences", "add", "stg patients", "--comment", "c")
    assert code == 1 and "is not a matcher" in out
    code, out = run("silences", "add", "asset=x", "--duration", "soon", "--comment", "c")
    assert code == 1 and "is not a duration" in out
    code, out = run("silences", "expire", "424242")
    assert code == 1 and "no active silence 424242" in out


def test_test_rule_says_what_would_fire(firing: int) -> None:
    code, out = run("alerts", "test-rule", "high_rejection_rate")
    assert code == 0, out
    assert "1 of 1 signal(s) would fire now" in out and "FIRES" in out
    assert "avg(rejection_rate) of staging_transformer over the last 10 min is 0.3" in out


def test_silences_add_list_expire(firing: int) -> None:
    code, out = run(
        "silences",
        "add",
        "rule_id=high_rejection_rate",
        "--duration",
        "2h",
        "--comment",
        "backfill",
        "--by",
        "ana",
    )
    assert code == 0 and out.startswith("silence ")
    sid = out.split()[1]
    code, out = run("silences", "list")
    assert "rule_id=high_rejection_rate" in out and "active" in out and "backfill" in out
    assert run("silences", "expire", sid)[0] == 0
    assert run("silences", "list")[1].strip() == "no silences"
    assert "expired" in run("silences", "list", "--all")[1]
