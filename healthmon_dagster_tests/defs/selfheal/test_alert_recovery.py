"""An incident a critical alert opened, or reopened, heals when its alerts resolve (real Dagster
instance, the real connectivity check against a warehouse that goes down and comes back, the real
alert-evaluation and self-healing sensors; SQLite and Postgres): to monitoring, then resolved after
the quiet period. One with a failed run since stays for that run's re-run to decide."""

import time
from pathlib import Path

import dagster as dg
import pytest
import yaml

from healthmon_dagster.defs.pipeline.jobs import raw_file_run_config
from healthmon_dagster_tests.defs.alerting.test_lineage_outage import (
    DATABASE_JOB,
    Outage,
    outage,
    run,
    stored_alerts,
    tick_alerts,
)
from healthmon_dagster_tests.defs.fixtures import PROJECT_CONFIG
from healthmon_dagster_tests.defs.selfheal.test_review_fixes import QUIET
from healthmon_dagster_tests.defs.selfheal.test_sensors import incident_rows, land, tick, timeline

__all__ = ["outage"]  # the fixture, imported for these tests


def use_config(monkeypatch: pytest.MonkeyPatch, folder: Path) -> None:
    """The built-in rules (dependency_unreachable is critical) to ``log``; a fast self-heal."""
    data = yaml.safe_load(PROJECT_CONFIG.read_text())
    data["alert_rules"] = []
    data["escalation_policies"] = []
    data["feature_flags"]["self_healing"] = True
    data["self_healing"] = {
        "initial_delay_seconds": 1,
        "max_delay_seconds": 1,
        "jitter": 0,
        "quiet_period_minutes": 0.02,
    }
    path = folder / "healthmon.yaml"
    path.write_text(yaml.safe_dump(data))
    monkeypatch.setenv("HEALTHMON_CONFIG", str(path))


def dependency_alerts(db_url: str) -> list[tuple[str, str]]:
    return [(a.rule_id, a.state) for a in stored_alerts(db_url) if a.severity == "critical"]


def test_an_incident_a_critical_alert_opened_resolves_when_the_alert_does(
    outage: Outage,
    healthmon_env: Path,
    db_url: str,
    instance: dg.DagsterInstance,
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
) -> None:
    use_config(monkeypatch, tmp_path)
    assert run(instance, "patients_etl_job").success  # the warehouse exists (nothing to load)
    cursor = tick_alerts(instance, None)
    outage.stop()
    run(instance, DATABASE_JOB)  # the connectivity check finds the warehouse down
    cursor = tick_alerts(instance, cursor)
    assert dependency_alerts(db_url) == [("dependency_unreachable", "firing")]
    (incident,) = incident_rows(db_url)
    assert incident.root_key == "resource:database:warehouse"

    outage.start()
    run(instance, DATABASE_JOB)  # and finds it back
    tick_alerts(instance, cursor)
    assert dependency_alerts(db_url) == [("dependency_unreachable", "resolved")]
    tick(instance)
    assert incident_rows(db_url)[0].status == "monitoring"
    changes = [t for _, k, t, _ in timeline(db_url) if k == "status_changed"]
    assert any("resolved and no run failed since" in t for t in changes), changes
    time.sleep(QUIET)
    tick(instance)
    (done,) = incident_rows(db_url)
    assert done.status == "resolved" and "alerts resolved" in (done.resolution or "")


def test_a_failed_run_since_the_alert_keeps_the_incident_for_its_re_run(
    outage: Outage,
    healthmon_env: Path,
    db_url: str,
    instance: dg.DagsterInstance,
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
) -> None:
    use_config(monkeypatch, tmp_path)
    assert run(instance, "patients_etl_job").success  # the warehouse exists (nothing to load)
    sample = land(healthmon_env)
    cursor = tick_alerts(instance, None)
    outage.stop()
    run(instance, DATABASE_JOB)
    cursor = tick_alerts(instance, cursor)
    (incident,) = incident_rows(db_url)
    # A load fails on the same outage: absorbed into the alert's incident.
    load = run(instance, "patients_etl_job", run_config=raw_file_run_config(sample.key))
    assert load.success is False
    assert [i.incident_id for i in incident_rows(db_url)] == [incident.incident_id]

    outage.start()
    run(instance, DATABASE_JOB)
    tick_alerts(instance, cursor)
    assert dependency_alerts(db_url) == [("dependency_unreachable", "resolved")]
    # The alert is over, but the load is not done: its re-run is requested, not monitoring yet.
    (rerun,) = tick(instance).run_requests or []
    assert incident_rows(db_url)[0].status != "monitoring"
    time.sleep(QUIET)
    tick(instance)
    assert incident_rows(db_url)[0].status not in ("monitoring", "resolved")
    assert rerun.run_key is not None
