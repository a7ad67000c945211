"""A real ``dagster-daemon`` (SQLite and Postgres): a run worker killed with SIGKILL mid-load never
reaches a failure hook; run monitoring fails the run and the run-failure sensor opens the
incident (error class run_worker_lost, recorded by the sensor)."""

from functools import partial
from pathlib import Path

import dagster as dg
import sqlalchemy as sa

from healthmon_dagster.etl.landing import LocalLandingSource
from healthmon_dagster.etl.sample import generate_sample, write_to
from healthmon_dagster.incidents.records import timeline
from healthmon_dagster.store.db import get_engine
from healthmon_dagster.store.tables import incidents
from healthmon_dagster_tests.defs.pipeline.fixtures import (
    QUICK_DAEMON_ENV,
    QUICK_INSTANCE,
    kill_worker,
    running_daemon,
    step_events,
    wait_for,
    worker_pid,
    write_instance,
)
from healthmon_dagster_tests.defs.pipeline.test_daemon import loading, write_config

RAW_STEP = "raw__patients"
TIMEOUT = 300  # run monitoring notices a dead worker within its poll interval (120 s)


def etl_run_in_raw_step(instance: dg.DagsterInstance) -> tuple[str, int] | None:
    for record in instance.get_run_records(filters=dg.RunsFilter(job_name="patients_etl_job")):
        run_id = record.dagster_run.run_id
        pid = worker_pid(instance, run_id)
        if pid is not None and "STEP_START" in step_events(instance, run_id, RAW_STEP):
            return run_id, pid
    return None


def worker_lost_incident(db_url: str) -> sa.Row[object] | None:
    with get_engine(db_url).connect() as conn:
        return conn.execute(
            sa.select(incidents)
            .where(incidents.c.failure_count >= 1)
            .order_by(incidents.c.incident_id)
        ).first()


def test_a_killed_worker_opens_an_incident_through_the_run_failure_sensor(
    db_url: str, tmp_path: Path
) -> None:
    home, dagster_home, log = tmp_path / "home", tmp_path / "dagster", tmp_path / "daemon.log"
    write_instance(dagster_home, extra=QUICK_INSTANCE)
    write_to(
        LocalLandingSource(home / "landing"),
        generate_sample(50_000, files=1, prefix="patients_killed", seed=7),
    )
    get_engine(db_url)
    env = {
        **QUICK_DAEMON_ENV,
        "DAGSTER_HOME": str(dagster_home),
        "HEALTHMON_HOME": str(home),
        "HEALTHMON_DATABASE_URL": db_url,
        "HEALTHMON_CONFIG": str(write_config(tmp_path)),
    }
    with (
        dg.DagsterInstance.from_config(str(dagster_home)) as instance,
        running_daemon(env, log, stop_grace_seconds=0) as daemon,
    ):
        run_id, pid = wait_for(
            "the ETL run in its raw step",
            partial(etl_run_in_raw_step, instance),
            TIMEOUT,
            interval=0.05,
            log=log,
        )
        wait_for("the raw load writing", loading(db_url), 60, interval=0.01, log=log)
        kill_worker(daemon, pid)
        row = wait_for("the incident", partial(worker_lost_incident, db_url), TIMEOUT, log=log)

    run = instance.get_run_by_id(run_id)
    assert run is not None and run.status == dg.DagsterRunStatus.FAILURE
    assert row.metadata["error_classes"] == ["run_worker_lost"]
    assert row.root_key == "asset:raw/patients"
    (failure,) = [e for e in timeline(get_engine(db_url), row.incident_id) if e.kind == "failure"]
    assert (failure.source, failure.actor) == ("sensor", "sensor:incident_run_failure")
    assert failure.details["run_id"] == run_id
    assert failure.details["transient"] is True
