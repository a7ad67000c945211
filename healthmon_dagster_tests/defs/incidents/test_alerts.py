"""Critical alerts open incidents (SQLite and Postgres): a critical alert joins the incident its
failure's hook opened (one incident, escalated to critical, the alert linked once), and a critical
alert with no failure behind it opens its own."""

from pathlib import Path

import dagster as dg
import pytest
import sqlalchemy as sa
import yaml

from healthmon_dagster.definitions import build_defs
from healthmon_dagster.defs.alerting.sensors import alert_evaluation_sensor
from healthmon_dagster.defs.pipeline.jobs import raw_file_run_config
from healthmon_dagster.etl.landing import LocalLandingSource
from healthmon_dagster.etl.sample import generate_sample, write_to
from healthmon_dagster.incidents.alerts import open_for_critical_alerts
from healthmon_dagster.incidents.records import list_incidents, timeline
from healthmon_dagster.store.db import get_engine
from healthmon_dagster.store.metrics import utcnow
from healthmon_dagster.store.tables import alerts, incident_alerts
from healthmon_dagster_tests.defs.fixtures import PROJECT_CONFIG, run_job


def critical_contract_breaks(monkeypatch: pytest.MonkeyPatch, folder: Path) -> None:
    """healthmon.yaml whose contract_break rule is critical (it replaces the built-in one)."""
    data = yaml.safe_load(PROJECT_CONFIG.read_text())
    data["alert_rules"].append(
        {
            "rule_id": "contract_break",
            "name": "Landing file rejected",
            "event": {"kind": "contract_break"},
            "severity": "critical",
            "channels": ["log"],
        }
    )
    path = folder / "healthmon.yaml"
    path.write_text(yaml.safe_dump(data))
    monkeypatch.setenv("HEALTHMON_CONFIG", str(path))


def evaluate_alerts(instance: dg.DagsterInstance) -> str:
    defs = build_defs()
    context = dg.build_sensor_context(
        instance=instance, resources=defs.resources, repository_def=defs.get_repository_def()
    )
    skip = alert_evaluation_sensor(context)
    assert isinstance(skip, dg.SkipReason)
    return skip.skip_message or ""


def test_a_critical_alert_joins_the_incident_of_its_failure(
    healthmon_env: Path,
    db_url: str,
    instance: dg.DagsterInstance,
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
) -> None:
    critical_contract_breaks(monkeypatch, tmp_path)
    (bad,) = generate_sample(100, files=1, defect="missing_column")
    write_to(LocalLandingSource(healthmon_env / "landing"), [bad])
    assert not run_job(instance, raw_file_run_config(bad.key)).success
    engine = get_engine(db_url)
    (opened,) = list_incidents(engine)
    assert opened.severity == "medium"

    evaluate_alerts(instance)
    evaluate_alerts(instance)  # a second tick links nothing more

    with engine.connect() as conn:
        (alert,) = conn.execute(sa.select(alerts).where(alerts.c.rule_id == "contract_break"))
        links = conn.execute(sa.select(incident_alerts)).all()
    assert alert.severity == "critical" and alert.state == "firing"
    (incident,) = list_incidents(engine)  # the same incident
    assert incident.incident_id == opened.incident_id
    assert [(link.incident_id, link.alert_id) for link in links] == [
        (incident.incident_id, alert.alert_id)
    ]
    assert incident.severity == "critical"  # escalated by the alert
    kinds = [e.kind for e in timeline(engine, incident.incident_id)]
    assert kinds.count("alert_linked") == 1
    assert "escalated" in kinds


def test_a_critical_alert_without_a_failure_opens_its_own_incident(
    healthmon_env: Path, db_url: str
) -> None:
    engine = get_engine(db_url)
    now = utcnow()
    with engine.begin() as conn:
        conn.execute(
            alerts.insert().values(
                fingerprint="f" * 64,
                rule_id="dependency_unreachable",
                state="firing",
                status="active",
                severity="critical",
                component="database",
                labels={"dependency": "database", "component": "database"},
                title="Dependency Unreachable: database_connectivity on database is critical",
                details={},
                group_key="g",
                started_at=now,
                fired_at=now,
                last_active_at=now,
                last_evaluated_at=now,
            )
        )

    linked = open_for_critical_alerts(engine)
    assert open_for_critical_alerts(engine) == {}

    (incident,) = list_incidents(engine)
    assert list(linked.values()) == [incident.incident_id]
    assert incident.root_key == "resource:database:warehouse"
    assert (incident.severity, incident.component) == ("critical", "database")
