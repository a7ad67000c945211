"""Correlation saved from real runs (SQLite and Postgres): a warehouse outage and, once it is back,
a failing stg check are two incidents on upstream/downstream assets close in time; the failure hook
that opens the second links them (strength and factors in words), the alert evaluation links the
check's alert (never an incident's own announcement), ``incidents report --json`` lists both, and
each incident starts when Dagster recorded the failure, so its time to detect is real."""

import json
from datetime import UTC, datetime
from pathlib import Path

import dagster as dg
import pytest
import yaml
from click.testing import CliRunner

from healthmon_dagster.cli.main import cli
from healthmon_dagster.definitions import build_defs
from healthmon_dagster.defs.pipeline.jobs import raw_file_run_config
from healthmon_dagster.etl.landing import LocalLandingSource
from healthmon_dagster.etl.sample import generate_sample, write_to
from healthmon_dagster.incidents.records import get_incident, list_incidents, timeline
from healthmon_dagster.store.db import get_engine
from healthmon_dagster_tests.defs.alerting.test_sensors import evaluate_alerts
from healthmon_dagster_tests.defs.fixtures import (
    FAST_RETRY,
    PROJECT_CONFIG,
    failure_descriptions,
    run_job,
)
from healthmon_dagster_tests.defs.incidents.test_hooks import warehouse_down


def strict_stg_config(monkeypatch: pytest.MonkeyPatch, folder: Path) -> None:
    """The project's healthmon.yaml without step retries, and stg's rejection rate a blocking
    check that fails above 2% (a file with 3% unknown genders fails it)."""
    data = yaml.safe_load(PROJECT_CONFIG.read_text())
    data["landing"]["retry"] = {**FAST_RETRY, "step_retries": 0}
    data["quality"]["rejection_rate"] = {"warn": 0.01, "fail": 0.02}
    for check in data["quality"]["assets"]["stg/patients"]["checks"]:
        if check["kind"] == "rejection_rate":
            check["blocking"] = True
    path = folder / "healthmon.yaml"
    path.write_text(yaml.safe_dump(data))
    monkeypatch.setenv("HEALTHMON_CONFIG", str(path))


def step_failed_at(instance: dg.DagsterInstance, run_id: str, step_key: str) -> datetime:
    (entry,) = [
        e
        for e in instance.all_logs(run_id, of_type=dg.DagsterEventType.STEP_FAILURE)
        if e.step_key == step_key
    ]
    return datetime.fromtimestamp(entry.timestamp, UTC)


def report(incident_id: int) -> dict[str, object]:
    result = CliRunner().invoke(cli, ["incidents", "report", str(incident_id), "--json"])
    assert result.exit_code == 0, result.output
    data: dict[str, object] = json.loads(result.stdout)
    return data


def test_incidents_on_upstream_and_downstream_assets_are_linked_and_reported(
    healthmon_env: Path,
    db_url: str,
    instance: dg.DagsterInstance,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    strict_stg_config(monkeypatch, healthmon_env.parent)
    clean, defective = generate_sample(200, files=2, defect="unknown_gender")
    write_to(LocalLandingSource(healthmon_env / "landing"), [clean, defective])
    engine = get_engine(db_url)

    # The warehouse is down: raw fails, an incident blames the database.
    warehouse_down(monkeypatch, db_url)
    outage = run_job(instance, raw_file_run_config(clean.key))
    assert outage.success is False
    (db_incident,) = list_incidents(engine)
    assert db_incident.root_key == "resource:database:warehouse"
    # It starts when Dagster recorded the step's failure: detection took a real, short time.
    failed_at = step_failed_at(instance, outage.run_id, "raw__patients")
    assert db_incident.start_time == failed_at
    assert 0 < (db_incident.created_at - failed_at).total_seconds() < 30

    # The warehouse is back; the next file breaks stg's blocking rejection-rate check.
    monkeypatch.setenv("HEALTHMON_DATABASE_URL", db_url)
    checks = (
        build_defs()  # with this test's healthmon.yaml: the check is blocking
        .resolve_job_def("patients_etl_job")
        .execute_in_process(
            run_config=raw_file_run_config(defective.key), instance=instance, raise_on_error=False
        )
    )
    assert checks.success is False, failure_descriptions(checks)
    (stg_incident,) = [
        i for i in list_incidents(engine) if i.incident_id != db_incident.incident_id
    ]
    assert stg_incident.asset_keys == ("stg/patients",)
    assert stg_incident.root_key == "asset:raw/patients"

    # The hook that opened it saved the correlation, with its strength and factors in words.
    db_id, stg_id = db_incident.incident_id, stg_incident.incident_id
    assert get_incident(engine, stg_id).related_incidents == (db_id,)
    assert get_incident(engine, db_id).related_incidents == (stg_id,)
    (linked,) = [e for e in timeline(engine, stg_id) if e.kind == "incident_linked"]
    assert linked.source == "hook"

    # The alert evaluation links the stg check's alert to the stg incident; no incident is
    # linked to an incident's own announcement alert.
    evaluate_alerts(instance, None)
    stg_report, db_report = report(stg_id), report(db_id)
    (related,) = stg_report["related_incidents"]  # type: ignore[misc]
    assert related["incident_id"] == db_id and related["strength"] == pytest.approx(0.65)
    assert related["reason"] == (
        f"stg/patients is downstream of raw/patients (incident {db_id}); active at the same time"
    )
    assert [r["incident_id"] for r in db_report["related_incidents"]] == [stg_id]  # type: ignore[attr-defined]
    alerts = stg_report["related_alerts"]
    assert alerts and all(not a["rule_id"].startswith("incident_") for a in alerts)  # type: ignore[attr-defined]
    assert any("stg/patients" in a["title"] for a in alerts)  # type: ignore[attr-defined]
    assert not [
        a
        for a in db_report["related_alerts"]  # type: ignore[attr-defined]
        if a["rule_id"].startswith("incident_")
    ]
    # Time to detect: from the failure Dagster recorded to the incident row.
    detect = stg_report["time_to_detect_seconds"]
    assert isinstance(detect, float) and 0 < detect < 30
    assert stg_report["impact"]["assets"] == ["stg/patients"]  # type: ignore[index]
