"""The ETL-history and daemon checks on Dagster's own history (materializations, runs,
heartbeats), read through the instance adapter."""

import time

import dagster as dg

from healthmon_dagster.defs.health.instance_facts import InstanceFacts
from healthmon_dagster.enums import HealthStatus
from healthmon_dagster.health.context import CheckEnvironment
from healthmon_dagster_tests.health.checks.fixtures import run


@dg.asset(key=["raw", "patients"])
def fake_raw() -> None:
    """Stands in for the pipeline's asset: only its materialization events matter here."""


@dg.op
def maybe_fail(context: dg.OpExecutionContext) -> None:
    if context.run.tags.get("fail") == "yes":
        raise dg.Failure("planned failure")


@dg.job(name="patients_etl_job")
def fake_etl_job() -> None:
    maybe_fail()


def test_etl_component_reads_materialization_age_and_failure_rate() -> None:
    with dg.instance_for_test() as instance:
        env = CheckEnvironment(dagster=InstanceFacts(instance))
        never = run("etl_component", env, assets=["raw/patients"])
        dg.materialize([fake_raw], instance=instance)
        for fail in ("no", "yes", "yes"):
            fake_etl_job.execute_in_process(
                instance=instance, tags={"fail": fail}, raise_on_error=False
            )
        result = run("etl_component", env, assets=["raw/patients"])

    assert never.status == HealthStatus.WARNING
    assert "asset raw/patients has never been materialized" in never.warnings[0]
    assert result.metrics["raw_patients.age_minutes"] < 1
    assert result.status == HealthStatus.CRITICAL
    assert result.errors == [
        "failure rate of the last 3 patients_etl_job runs (2 failed) is 0.667, above the critical "
        "threshold 0.5"
    ]


def test_daemon_heartbeats_missing_then_fresh() -> None:
    from dagster._daemon.types import DaemonHeartbeat  # no public way to fake a live daemon

    with dg.instance_for_test() as instance:
        env = CheckEnvironment(dagster=InstanceFacts(instance))
        down = run("daemon", env, daemon_types=["SCHEDULER", "SENSOR"])
        for daemon_type in ("SCHEDULER", "SENSOR"):
            instance.add_daemon_heartbeat(DaemonHeartbeat(time.time(), daemon_type, "test"))
        up = run("daemon", env, daemon_types=["SCHEDULER", "SENSOR"])

    assert down.status == HealthStatus.CRITICAL
    assert down.errors == [
        "2 Dagster daemon(s) never sent a heartbeat (SCHEDULER, SENSOR): schedules and sensors "
        "do not run; start `dagster-daemon run` (or `dagster dev`) with this DAGSTER_HOME"
    ]
    assert up.status == HealthStatus.HEALTHY, up.errors
    assert up.metrics["daemons_healthy"] == 2
