"""The run-failure sensor on a run whose worker was killed after one of its steps had failed
(SQLite and Postgres): the step's failure and the run's own (the worker lost) are both recorded,
each starting when it happened (the step's failure event, the run's end), not when the sensor
ticked."""

import os
import subprocess
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

import dagster as dg

from healthmon_dagster.definitions import build_defs
from healthmon_dagster.defs.incidents.sensors import incident_run_failure_sensor
from healthmon_dagster.incidents.records import list_incidents, timeline
from healthmon_dagster.store.db import get_engine
from healthmon_dagster_tests.defs.incidents import two_steps
from healthmon_dagster_tests.defs.pipeline.fixtures import PROJECT_ROOT

WORKER = """
import sys
import dagster as dg
from healthmon_dagster_tests.defs.incidents import two_steps
with dg.DagsterInstance.from_ref(dg.deserialize_value(sys.stdin.read())) as i:
    dg.execute_job(dg.reconstructable(two_steps.two_steps_job), instance=i)
"""


def step_events(instance: dg.DagsterInstance, run_id: str) -> list[dg.EventLogEntry]:
    return [
        e
        for e in instance.all_logs(run_id)
        if e.dagster_event is not None and e.dagster_event.step_key is not None
    ]


def run_killed_after_a_step_failed(instance: dg.DagsterInstance) -> str:
    """Run ``two_steps_job`` in a worker process of its own; once ``a_breaks`` has failed and
    ``b_waits`` started, SIGKILL the worker and fail the run as run monitoring does when it finds
    the worker dead (``report_run_failed``, no failure reason); the run's id."""
    worker = subprocess.Popen(
        [sys.executable, "-c", WORKER],
        stdin=subprocess.PIPE,
        cwd=PROJECT_ROOT,
        env={
            **os.environ,
            "PYTHONPATH": os.pathsep.join(
                p for p in (str(PROJECT_ROOT), os.environ.get("PYTHONPATH")) if p
            ),
        },
        text=True,
    )
    assert worker.stdin is not None
    worker.stdin.write(dg.serialize_value(instance.get_ref()))
    worker.stdin.close()
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and worker.poll() is None:
            runs = instance.get_runs(dg.RunsFilter(job_name="two_steps_job"))
            if runs:
                seen = {
                    (e.step_key, e.dagster_event.event_type_value)  # type: ignore[union-attr]
                    for e in step_events(instance, runs[0].run_id)
                }
                if {("a_breaks", "STEP_FAILURE"), ("b_waits", "STEP_START")} <= seen:
                    break
            time.sleep(0.05)
        else:
            raise AssertionError("the run never reached b_waits after a_breaks failed")
    finally:
        worker.kill()  # the worker this test started, by its Popen
        worker.wait(30)
    (run,) = instance.get_runs(dg.RunsFilter(job_name="two_steps_job"))
    assert run.status == dg.DagsterRunStatus.STARTED  # nobody has noticed yet
    time.sleep(0.5)  # run monitoring notices later than the kill
    instance.report_run_failed(run, "run worker died (killed)")
    return run.run_id


def tick(instance: dg.DagsterInstance, run_id: str) -> None:
    run = instance.get_run_by_id(run_id)
    assert run is not None and run.status == dg.DagsterRunStatus.FAILURE
    (record,) = instance.get_records_for_run(
        run_id=run_id, of_type=dg.DagsterEventType.RUN_FAILURE
    ).records
    assert record.event_log_entry.dagster_event is not None
    context = dg.build_run_status_sensor_context(
        sensor_name=incident_run_failure_sensor.name,
        dagster_event=record.event_log_entry.dagster_event,
        dagster_instance=instance,
        dagster_run=run,
        resources=build_defs().resources,
        repository_def=two_steps.defs.get_repository_def(),
    ).for_run_failure()
    incident_run_failure_sensor(context)


def test_a_worker_killed_after_a_step_failed_is_reported_with_the_step(
    healthmon_env: Path, db_url: str, instance: dg.DagsterInstance
) -> None:
    run_id = run_killed_after_a_step_failed(instance)
    time.sleep(1)  # the sensor ticks a while after the run failed
    tick(instance, run_id)
    tick(instance, run_id)  # a second look records nothing more

    engine = get_engine(db_url)
    (incident,) = list_incidents(engine)
    assert incident.root_key == "asset:a_breaks"
    assert sorted(incident.metadata["error_classes"]) == ["run_worker_lost", "step_error"]
    failures = {
        e.details.get("step_key", "run"): e
        for e in timeline(engine, incident.incident_id)
        if e.kind == "failure"
    }
    assert set(failures) == {"a_breaks", "run"}
    assert failures["run"].details["rule"] == "run_failure:none"
    assert "outside its steps" in failures["run"].text
    # Each failure starts when it happened, so the time to detect is the sensor's real delay.
    (step_failed,) = [
        e
        for e in instance.all_logs(run_id, of_type=dg.DagsterEventType.STEP_FAILURE)
        if e.step_key == "a_breaks"
    ]
    record = instance.get_run_record_by_id(run_id)
    assert record is not None and record.end_time is not None
    assert failures["a_breaks"].details["occurred_at"] == (
        datetime.fromtimestamp(step_failed.timestamp, UTC).isoformat()
    )
    assert failures["run"].details["occurred_at"] == (
        datetime.fromtimestamp(record.end_time, UTC).isoformat()
    )
    assert incident.start_time == datetime.fromtimestamp(step_failed.timestamp, UTC)
    assert (incident.created_at - incident.start_time).total_seconds() > 1.5
