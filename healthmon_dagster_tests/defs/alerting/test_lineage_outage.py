"""Lineage inhibition end to end through Dagster, SQLite and Postgres: a real warehouse outage
raises one alert, the database's, and is announced once (firing, then resolved); every other alert
it causes (assets downstream, the failed runs, the incident opened for it) is suppressed by that
alert, and none is announced, not even once the warehouse is back (their echo resolves inside the
hold after the root resolves). Whichever sees the outage first, the database health check or the
ETL and quality runs, there is one database alert.

The outage is real: on Postgres the warehouse is reached through a TCP proxy on a loopback port
that the test stops (connections cut, new ones refused) and starts again; on SQLite the warehouse
file is moved aside with a folder put in its place, as when its volume is gone (every new
connection fails with "unable to open database file"). The health store is a database of its own
that stays up, as it must for anyone to hear of the outage.

Driven as production drives it, in process: the database health-check job (whose alert fast path
fires and sends the root at once), the ETL and quality jobs (whose fast path judges their check
results), the freshness daemon's iteration (its clock moved three days on, past every fail
window), alert_evaluation_sensor ticks, and alert_dispatch_sensor with the dispatch job draining
the outbox to a webhook receiver on a loopback port.

What a database outage raises: the freshness daemon's verdicts (every pipeline asset past its
window), a "could not run" check alert per asset (Postgres: the checks record status error;
SQLite: the check steps fail before recording anything, read from Dagster's execution records),
the failed ETL and sweep runs (blamed on the database by their steps' failure metadata) and the
incident of ``resource:database:warehouse``. All are muted by the database's alert.
"""

import json
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import dagster as dg
import pytest
import sqlalchemy as sa
import yaml
from dagster._core.remote_origin import InProcessCodeLocationOrigin
from dagster._core.test_utils import create_test_daemon_workspace_context, freeze_time
from dagster._core.types.loadable_target_origin import LoadableTargetOrigin
from dagster._core.workspace.load_target import InProcessWorkspaceLoadTarget
from dagster._daemon.freshness import FreshnessDaemon
from sqlalchemy.engine import make_url

from healthmon_dagster.definitions import defs
from healthmon_dagster.defs.alerting.sensors import alert_dispatch_sensor, alert_evaluation_sensor
from healthmon_dagster.defs.pipeline.jobs import raw_file_run_config
from healthmon_dagster.etl.landing import LocalLandingSource
from healthmon_dagster.etl.sample import SampleFile, generate_sample, write_to
from healthmon_dagster.store.db import dispose_engines, get_engine
from healthmon_dagster.store.metrics import utcnow
from healthmon_dagster.store.tables import alerts, notifications
from healthmon_dagster_tests.defs.fixtures import FAST_RETRY, PROJECT_CONFIG, patient_values
from healthmon_dagster_tests.defs.pipeline.fixtures import SqliteOutage, TcpProxy
from healthmon_dagster_tests.notify.fixtures import HttpStub, webhook_server

DATABASE_JOB = "health_checks_every_60s_job"  # database_connectivity (target: warehouse)
PIPELINE = {"raw/patients", "stg/patients", "core/dim_patient"}  # with a FreshnessPolicy


class Outage:
    """The warehouse, and how it goes down and comes back."""

    def __init__(self, db_url: str, folder: Path) -> None:
        self.proxy: TcpProxy | None = None
        self.sqlite: SqliteOutage | None = None
        if db_url.startswith("postgresql"):
            target = make_url(db_url)
            self.proxy = TcpProxy((target.host or "127.0.0.1", target.port or 5432))
            self.proxy.start()
            self.url = self.proxy.url_for(db_url)
        else:
            self.url = f"sqlite:///{folder / 'warehouse' / 'healthmon.db'}"
            self.sqlite = SqliteOutage(self.url)

    def stop(self) -> None:
        if self.proxy is not None:
            self.proxy.stop()  # open connections cut, the port refuses new ones
            return
        assert self.sqlite is not None
        self.sqlite.stop()
        # A SQLite connection already open keeps its moved file. Every run of a deployment is a
        # process of its own that opens the file anew; the in-process runs here share one engine
        # cache, so it is emptied as a new process would start.
        dispose_engines()

    def start(self) -> None:
        if self.proxy is not None and not self.proxy.running:
            self.proxy.start()
        elif self.sqlite is not None and not self.sqlite.running:
            self.sqlite.start()

    def close(self) -> None:
        self.start()
        if self.proxy is not None:
            self.proxy.stop()


@pytest.fixture
def outage(
    healthmon_env: Path, db_url: str, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> Iterator[Outage]:
    """The health store on ``db_url`` (it stays up); the warehouse behind an :class:`Outage`."""
    monkeypatch.setenv("HEALTHMON_HEALTH_DATABASE_URL", db_url)
    warehouse = Outage(db_url, tmp_path)
    monkeypatch.setenv("HEALTHMON_DATABASE_URL", warehouse.url)
    try:
        yield warehouse
    finally:
        warehouse.close()


def use_webhook(monkeypatch: pytest.MonkeyPatch, folder: Path, url: str) -> None:
    """The project's healthmon.yaml with the built-in rules sending to ``log`` and a webhook at
    ``url`` at once (no group wait), fast landing retries and no escalation."""
    data = yaml.safe_load(PROJECT_CONFIG.read_text())
    data["landing"]["retry"] = FAST_RETRY
    data["channels"]["webhook"] = {
        "type": "webhook",
        "configuration": {
            "url_env": "HEALTHMON_WEBHOOK_URL",
            "secret_env": "HEALTHMON_WEBHOOK_SECRET",
        },
    }
    data["alert_rules"] = []  # the built-in rules, dependency_unreachable among them
    data["escalation_policies"] = []
    data["alerting"]["builtin_channels"] = ["log", "webhook"]
    data["alerting"]["grouping"].update(
        {"group_wait_seconds": 0, "group_wait_by_severity": {}, "group_interval_seconds": 1}
    )
    path = folder / "healthmon.yaml"
    path.write_text(yaml.safe_dump(data))
    monkeypatch.setenv("HEALTHMON_CONFIG", str(path))
    monkeypatch.setenv("HEALTHMON_WEBHOOK_URL", url)
    monkeypatch.setenv("HEALTHMON_WEBHOOK_SECRET", "test-signing-secret")


def run(instance: dg.DagsterInstance, job: str, **kwargs: Any) -> dg.ExecuteInProcessResult:
    return defs.resolve_job_def(job).execute_in_process(
        instance=instance, raise_on_error=False, **kwargs
    )


def load(instance: dg.DagsterInstance, sample: SampleFile) -> dg.ExecuteInProcessResult:
    """The ETL run of one landing file, as the landing sensor requests it."""
    return run(instance, "patients_etl_job", run_config=raw_file_run_config(sample.key))


def freshness_daemon_iteration(instance: dg.DagsterInstance, ahead: timedelta) -> None:
    """One iteration of Dagster's freshness daemon over the code location, its clock ``ahead``."""
    origin = InProcessCodeLocationOrigin(
        LoadableTargetOrigin(module_name="healthmon_dagster.definitions", attribute="defs"),
        location_name="healthmon_dagster",
    )
    with (
        create_test_daemon_workspace_context(InProcessWorkspaceLoadTarget(origin), instance) as ctx,
        freeze_time(utcnow() + ahead),
    ):
        list(FreshnessDaemon().run_iteration(ctx))


def tick_alerts(instance: dg.DagsterInstance, cursor: str | None) -> str | None:
    context = dg.build_sensor_context(
        instance=instance,
        resources=defs.resources,
        cursor=cursor,
        repository_def=defs.get_repository_def(),
    )
    assert isinstance(alert_evaluation_sensor(context), dg.SkipReason)
    return context.cursor


def dispatch(instance: dg.DagsterInstance) -> None:
    """A tick of alert_dispatch_sensor and the dispatch job it requests (nothing when the runs'
    fast path sent everything already)."""
    context = dg.build_sensor_context(instance=instance, resources=defs.resources)
    if isinstance(alert_dispatch_sensor(context), dg.SkipReason):
        return
    result = run(instance, "alert_dispatch_job")
    assert result.success, [e.message for e in result.all_events if e.is_failure]


def stored_alerts(db_url: str) -> list[Any]:
    with get_engine(db_url).connect() as conn:
        return list(conn.execute(sa.select(alerts).order_by(alerts.c.alert_id)))


def announced(hook: HttpStub, start: int = 0) -> list[tuple[str, str, dict[str, str]]]:
    """(status, fingerprint, labels) of every alert in the webhook bodies since ``start``."""
    return [
        (alert["status"], alert["fingerprint"], alert["labels"])
        for request in hook.requests[start:]
        for alert in request.json["alerts"]
    ]


@pytest.mark.parametrize("first", ["database_check", "pipeline"])
def test_a_warehouse_outage_raises_one_database_alert_and_mutes_the_assets_downstream(
    healthmon_env: Path,
    db_url: str,
    instance: dg.DagsterInstance,
    outage: Outage,
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
    first: str,
) -> None:
    landing = LocalLandingSource(healthmon_env / "landing")
    (first_file,) = generate_sample(100, files=1, seed=3)
    (second,) = generate_sample(100, files=1, seed=4, prefix="patients_b")
    with webhook_server() as hook:
        use_webhook(monkeypatch, tmp_path, f"{hook.url}/alertmanager")

        # Healthy: a file loads, the database check passes, every asset is fresh; no alert.
        write_to(landing, [first_file])
        assert load(instance, first_file).success
        assert run(instance, DATABASE_JOB).success
        freshness_daemon_iteration(instance, timedelta(0))
        cursor = tick_alerts(instance, None)
        assert stored_alerts(db_url) == [] and hook.requests == []

        # The warehouse goes down. Either the database check sees it first (it runs every
        # minute), or a load and a quality sweep do, and a sensor tick, before it runs.
        outage.stop()
        if first == "database_check":
            assert run(instance, DATABASE_JOB).success  # a critical result is a result
        write_to(landing, [second])
        assert not load(instance, second).success  # the raw step cannot reach the warehouse
        assert not run(instance, "quality_full_sweep_job").success  # nor can any check
        if first == "pipeline":
            # The failed load's hook opened the warehouse's incident and announced it at once
            # (the incident fast path); the sweep's checks (Postgres) or the runs (SQLite, at the
            # tick) raised the database's alert, which the incident, announced first, mutes.
            cursor = tick_alerts(instance, cursor)
            dispatch(instance)
            (page,) = announced(hook)
            assert page[0] == "firing" and page[2]["alertname"] == "incident"
            assert page[2]["dependency"] == "database"
            assert run(instance, DATABASE_JOB).success  # the check confirms: the same alert
        freshness_daemon_iteration(instance, timedelta(days=3))  # every asset past its window
        cursor = tick_alerts(instance, cursor)
        cursor = tick_alerts(instance, cursor)  # the next tick (30 s later in production)
        dispatch(instance)

        during = stored_alerts(db_url)
        (root,) = [a for a in during if a.rule_id == "dependency_unreachable"]
        assert (root.state, root.labels["dependency"]) == ("firing", "database")
        incident = [a for a in during if a.rule_id.startswith("incident_") and a.state == "firing"]
        assert [(a.rule_id, a.labels["dependency"]) for a in incident] == [
            ("incident_critical", "database")  # escalated when the critical root linked to it
        ]
        # The outage's one announcement: whichever of the database's alert and its incident's
        # was announced first; it mutes the other.
        page, other = (root, incident[0]) if first == "database_check" else (incident[0], root)
        assert page.status == "active"
        assert (other.status, other.inhibited_by) == ("suppressed", page.alert_id)
        assets = [a for a in during if a.labels.get("asset")]
        stale = {a.labels["asset"] for a in assets if a.rule_id == "asset_not_fresh"}
        checks = {a.labels["asset"] for a in assets if a.rule_id == "asset_check_error"}
        assert stale == PIPELINE
        # Postgres: the checks run, fail to query and record "could not run" (ERROR). SQLite:
        # the warehouse cannot be opened, the check steps fail before recording anything, and
        # Dagster's execution records say so. Either way a check alert per asset.
        assert checks == PIPELINE | {"stg/patients_rejected"}
        assert {a.rule_id for a in assets} <= {"asset_not_fresh", "asset_check_error"}
        runs = {a.labels["job"]: a for a in during if a.rule_id == "run_failed"}
        assert set(runs) == {"patients_etl_job", "quality_full_sweep_job"}
        assert {a.labels["dependency"] for a in runs.values()} == {"database"}
        muted = [*assets, *runs.values()]
        for alert in muted:
            assert (alert.state, alert.status, alert.inhibited_by) == (
                "firing",
                "suppressed",
                root.alert_id,
            ), alert.title
            assert alert.suppressed_by.startswith(f"inhibited by alert {root.alert_id} ")
        with get_engine(db_url).connect() as conn:
            queued_for = set(conn.execute(sa.select(notifications.c.alert_id)).scalars())
        told = (
            {page.alert_id}
            if page is root
            else {a.alert_id for a in during if "incident_id" in a.labels}
        )
        assert queued_for == told  # nothing queued for a muted alert

        sent = announced(hook)
        if page is root:
            assert [(s, fp) for s, fp, _ in sent] == [("firing", root.fingerprint)]
        else:
            # The incident, announced by the failed load; its escalation (a resolve of the high
            # and a firing of the critical alert: incidents/announce.py) is about it too.
            assert {labels["incident_id"] for _, _, labels in sent} == {page.labels["incident_id"]}
            steps = [(s, labels["rule_id"]) for s, _, labels in sent]
            assert steps[0] == ("firing", "incident_high")
            assert ("firing", "incident_critical") in steps
            assert set(steps) <= {
                ("firing", "incident_high"),
                ("resolved", "incident_high"),  # unless the outbox dropped it with its firing
                ("firing", "incident_critical"),
            }
        text = json.dumps([r.json for r in hook.requests])
        assert not [v for v in patient_values([first_file, second]) if len(v) > 3 and v in text]
        seen = len(hook.requests)

        # The warehouse is back: the database check sees it first (the root resolves and says
        # so), then the file loads again, the checks pass and the freshness daemon finds every
        # asset fresh: within the hold after the root resolved, all of it quietly.
        outage.start()
        assert run(instance, DATABASE_JOB).success
        assert load(instance, second).success
        assert run(instance, "quality_full_sweep_job").success
        freshness_daemon_iteration(instance, timedelta(0))
        cursor = tick_alerts(instance, cursor)
        # The next tick: the incident's alert follows the run alerts linked to it, which the
        # previous tick resolved (its signal is computed before they resolve).
        tick_alerts(instance, cursor)
        dispatch(instance)

    after = {a.alert_id: a for a in stored_alerts(db_url)}
    assert after[root.alert_id].state == "resolved"
    assert [after[a.alert_id].state for a in muted] == ["resolved"] * len(muted)
    assert [a for a in after.values() if a.state != "resolved"] == []
    # The announcement's resolve, once; no echo of what it muted.
    assert [(s, fp) for s, fp, _ in announced(hook, seen)] == [("resolved", page.fingerprint)]
