"""The alert-evaluation sensor through real Dagster runs of patients_etl_job, SQLite and Postgres:
a clean first load alerts nobody; a defect file fires the failed check's alert with no patient
value in it and queues it on the log channel; the next clean file resolves it; a file that breaks
the contract fires the contract-break and run-failure alerts."""

import json
from pathlib import Path
from typing import Any

import dagster as dg
import sqlalchemy as sa

from healthmon_dagster.defs.alerting.sensors import alert_evaluation_sensor
from healthmon_dagster.etl.landing import LocalLandingSource
from healthmon_dagster.etl.sample import generate_sample, write_to
from healthmon_dagster.store.db import get_engine
from healthmon_dagster.store.tables import alerts, notifications
from healthmon_dagster_tests.defs.fixtures import defs, evaluate_sensor, patient_values, run_job


def land_and_run(home: Path, instance: dg.DagsterInstance, samples: Any) -> None:
    write_to(LocalLandingSource(home / "landing"), samples)
    for request in evaluate_sensor(instance).run_requests or []:
        run_job(instance, request.run_config)


def evaluate_alerts(instance: dg.DagsterInstance, cursor: str | None) -> tuple[str, str | None]:
    context = dg.build_sensor_context(
        instance=instance,
        resources=defs.resources,
        cursor=cursor,
        repository_def=defs.get_repository_def(),
    )
    skip = alert_evaluation_sensor(context)
    assert isinstance(skip, dg.SkipReason)
    return skip.skip_message or "", context.cursor


def open_alerts(db_url: str) -> list[Any]:
    with get_engine(db_url).connect() as conn:
        return list(conn.execute(sa.select(alerts).order_by(alerts.c.alert_id)))


def test_a_defect_fires_its_alert_without_patient_data_and_a_clean_file_resolves_it(
    healthmon_env: Path, db_url: str, instance: dg.DagsterInstance
) -> None:
    land_and_run(healthmon_env, instance, generate_sample(200, files=1, seed=3))
    message, cursor = evaluate_alerts(instance, None)
    # The first clean load: the volume check is learning, every other check passes.
    assert open_alerts(db_url) == [], message
    assert "0 opened" in message

    defect = generate_sample(200, files=1, seed=4, defect="null_ids", prefix="patients_b")
    land_and_run(healthmon_env, instance, defect)
    message, cursor = evaluate_alerts(instance, cursor)

    by_check = {a.labels.get("check"): a for a in open_alerts(db_url)}
    joinable = by_check["patient_ids_are_joinable"]
    assert (joinable.rule_id, joinable.state, joinable.severity) == (
        "asset_check_error",
        "firing",
        "error",
    )
    assert joinable.labels["asset"] == "stg/patients_rejected"
    with get_engine(db_url).connect() as conn:
        queued = conn.execute(
            sa.select(notifications.c.channel, notifications.c.kind).where(
                notifications.c.alert_id == joinable.alert_id
            )
        ).all()
    assert queued == [("log", "firing")]
    text = json.dumps([[a.title, a.description, a.details, a.labels] for a in open_alerts(db_url)])
    leaked = sorted(v for v in patient_values(defect) if len(v) > 3 and v in text)
    assert leaked == []

    land_and_run(
        healthmon_env, instance, generate_sample(200, files=1, seed=5, prefix="patients_c")
    )
    evaluate_alerts(instance, cursor)
    after = {a.alert_id: a for a in open_alerts(db_url)}
    assert after[joinable.alert_id].state == "resolved"


def test_a_contract_break_fires_its_alert_and_the_run_failure(
    healthmon_env: Path, db_url: str, instance: dg.DagsterInstance
) -> None:
    land_and_run(healthmon_env, instance, generate_sample(100, files=1, defect="missing_column"))
    evaluate_alerts(instance, None)
    fired = {a.rule_id: a for a in open_alerts(db_url) if a.state == "firing"}
    assert fired["contract_break"].labels["asset"] == "raw/patients"
    assert "HEALTHCARE_COVERAGE" in fired["contract_break"].description
    assert fired["run_failed"].labels["job"] == "patients_etl_job"
