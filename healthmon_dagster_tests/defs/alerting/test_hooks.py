"""The alert fast path (defs/alerting/hooks.py), SQLite and Postgres: a defect file's failed check
reaches the Slack stand-in before patients_etl_job returns, with no sensor tick; the sensors that
run afterwards (the backstop) send nothing twice; a Slack that does not answer costs the run a
bounded wait and leaves the notification to the dispatch job, which finds the message Slack took
and does not post it again."""

import json
import time
from datetime import timedelta
from pathlib import Path

import dagster as dg
import pytest
import sqlalchemy as sa
import yaml

from healthmon_dagster.alerting.lineage import Lineage
from healthmon_dagster.defs.alerting.hooks import FAST_PATH_REQUEST_TIMEOUT
from healthmon_dagster.defs.resources import HealthmonConfigResource
from healthmon_dagster.etl.sample import generate_sample
from healthmon_dagster.notify.dispatch import Dispatcher, utcnow
from healthmon_dagster.store.db import get_engine
from healthmon_dagster.store.tables import alerts, notifications
from healthmon_dagster_tests.defs.alerting.test_end_to_end import TOKEN, dispatch
from healthmon_dagster_tests.defs.alerting.test_sensors import evaluate_alerts, land_and_run
from healthmon_dagster_tests.defs.fixtures import patient_values
from healthmon_dagster_tests.notify.fixtures import Answer, HttpStub, slack_server
from healthmon_dagster_tests.quality.fixtures import PROJECT_CONFIG

CHECK = "patient_ids_are_joinable"


def use_slack(monkeypatch: pytest.MonkeyPatch, tmp_path: Path, slack_url: str) -> None:
    """The project's healthmon.yaml (grouping defaults: errors wait 0 s) with the built-in rules
    alerting Slack at ``slack_url``."""
    data = yaml.safe_load(PROJECT_CONFIG.read_text())
    data["channels"] = {
        "slack": {
            "type": "slack",
            "configuration": {
                "channel": "#data-alerts",
                "token_env": "SLACK_BOT_TOKEN",
                "base_url": f"{slack_url}/api/",
            },
        }
    }
    data["alert_rules"] = []
    data["escalation_policies"] = []
    data["alerting"]["builtin_channels"] = ["log", "slack"]
    data["alerting"]["grouping"].pop("group_wait_seconds", None)
    path = tmp_path / "healthmon.yaml"
    path.write_text(yaml.safe_dump(data))
    monkeypatch.setenv("HEALTHMON_CONFIG", str(path))
    monkeypatch.setenv("SLACK_BOT_TOKEN", TOKEN)


def posts_about(texts: list[str], check: str) -> list[str]:
    return [t for t in texts if check in t]


def slack_texts(slack: HttpStub) -> list[str]:
    return [json.dumps(p.json) for p in slack.on("/api/chat.postMessage")]


def test_a_failed_check_reaches_slack_before_the_run_returns_and_the_backstop_adds_nothing(
    healthmon_env: Path,
    db_url: str,
    instance: dg.DagsterInstance,
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
) -> None:
    with slack_server() as slack:
        use_slack(monkeypatch, tmp_path, slack.url)
        land_and_run(healthmon_env, instance, generate_sample(200, files=1, seed=3))
        assert slack_texts(slack) == []  # a clean first load alerts nobody

        defect = generate_sample(200, files=1, seed=4, defect="null_ids", prefix="patients_b")
        land_and_run(healthmon_env, instance, defect)  # returns when the run has finished
        fast = posts_about(slack_texts(slack), CHECK)
        assert len(fast) == 1, slack_texts(slack)
        leaked = sorted(v for v in patient_values(defect) if len(v) > 3 and v in fast[0])
        assert leaked == []

        # The backstop: the sensors evaluate the same results, the dispatcher (run minutes
        # later, past every group's wait) sends what else is due: the check's alert not again.
        evaluate_alerts(instance, None)
        later = utcnow() + timedelta(minutes=10)
        config = HealthmonConfigResource().load()
        with Dispatcher(get_engine(db_url), config, clock=lambda: later) as dispatcher:
            dispatcher.drain(10)
        with get_engine(db_url).connect() as conn:
            statuses = conn.execute(
                sa.select(notifications.c.status, sa.func.count()).group_by(notifications.c.status)
            ).all()
        assert dict(statuses).keys() == {"sent"}, statuses
        assert len(posts_about(slack_texts(slack), CHECK)) == 1


def test_a_slack_that_does_not_answer_costs_a_bounded_wait_and_the_dispatch_job_sends_later(
    healthmon_env: Path,
    db_url: str,
    instance: dg.DagsterInstance,
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
) -> None:
    with slack_server() as slack:
        use_slack(monkeypatch, tmp_path, slack.url)
        land_and_run(healthmon_env, instance, generate_sample(200, files=1, seed=3))
        hang = FAST_PATH_REQUEST_TIMEOUT + 3
        # Slack takes every post and answers too late for the fast path.
        late = Answer(200, {"ok": True}, delay=hang, accept=True, path="chat.postMessage")
        slack.then(*[late] * 4)
        defect = generate_sample(200, files=1, seed=4, defect="null_ids", prefix="patients_b")
        started = time.monotonic()
        land_and_run(healthmon_env, instance, defect)
        took = time.monotonic() - started
        # Each hook that sends waits at most one request timeout (the alert fires once).
        assert took < 30, took
        answered = [r for r in slack.answered if CHECK in r.body.decode()]
        assert answered == []
        assert len(posts_about(slack_texts(slack), CHECK)) == 1  # it reached the channel
        with get_engine(db_url).connect() as conn:
            [row] = conn.execute(
                sa.select(notifications)
                .join(alerts, alerts.c.alert_id == notifications.c.alert_id)
                .where(notifications.c.channel == "slack", alerts.c.title.contains(CHECK))
            ).all()
        # Left to the dispatch job: pending, no attempt used, the timeout recorded.
        assert (row.status, row.attempts) == ("pending", 0)
        assert "timed out after 2s" in row.last_error
        time.sleep(hang)  # the stand-in finishes its slow answers
        # The dispatch job (the backstop) finds the message by its delivery key: not again.
        with get_engine(db_url).connect() as conn, conn.begin():
            conn.execute(notifications.update().values(not_before=sa.func.now()))
        assert dispatch(instance) is not None
        with get_engine(db_url).connect() as conn:
            statuses = conn.execute(
                sa.select(notifications.c.channel, notifications.c.status)
            ).all()

    assert ("slack", "pending") not in statuses and ("slack", "failed") not in statuses
    [post] = [p for p in slack.workspace.posts() if CHECK in json.dumps(p)]
    assert post["metadata"]["event_payload"]["delivery_key"] == row.delivery_key
    assert len(posts_about(slack_texts(slack), CHECK)) == 1
    assert len(slack.on("/api/conversations.history")) == 1


LINEAGE_DEFS = """
import json
import dagster as dg
from healthmon_dagster.defs.alerting.hooks import run_lineage

@dg.asset(key=["vendor", "feed"])
def feed() -> int:
    return 1

@dg.asset(key=["mart", "report"], deps=[feed])
def report() -> int:
    return 2

@dg.success_hook
def record(context: dg.HookContext) -> None:
    downstream = run_lineage(context).downstream
    with open(%(out)r, "w") as f:
        json.dump({k: sorted(v) for k, v in downstream.items()}, f)

job = dg.define_asset_job(
    "feed_job", selection=[feed], hooks={record}, executor_def=dg.in_process_executor
)
defs = dg.Definitions(assets=[feed, report], jobs=[job])
"""


def test_the_fast_path_judges_with_the_runs_code_location_graph(tmp_path: Path) -> None:
    """Before: the hook's evaluation and dispatcher got no lineage and used the bundled
    pipeline's graph, so lineage inhibition in a code location with other assets (and what a
    root cause's notification says it mutes) ignored the location's real graph. A run launched
    from a code location (reconstructed from its repository, as the run worker does) gets it."""
    from dagster._core.definitions.reconstruct import ReconstructableRepository

    out = tmp_path / "lineage.json"
    module = tmp_path / "lineage_defs.py"
    module.write_text(LINEAGE_DEFS % {"out": str(out)})
    job = ReconstructableRepository.for_file(str(module), "defs").get_reconstructable_job(
        "feed_job"
    )
    (tmp_path / "home").mkdir()
    with dg.instance_for_test(temp_dir=str(tmp_path / "home")) as instance:
        assert dg.execute_job(job, instance=instance).success

    seen = json.loads(out.read_text())
    assert seen == {"vendor/feed": ["mart/report"], "mart/report": []}
    assert not Lineage.bundled().is_downstream("mart/report", "vendor/feed")
