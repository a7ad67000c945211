"""The alert-evaluation sensor through real Dagster runs of patients_etl_job, SQLite and Postgres:
a clean first load alerts nobody; a defect file fires the failed check's alert with no patient
value in it and queues it on the log channel; the next clean file resolves it; a file that breaks
the contract fires the contract-break and run-failure alerts. A failed run fires though a later run
succeeded before the tick; a run that found the database down is evidence of its outage only when
the connectivity check has not reported since the step failed; a check whose step fails alerts
until it is evaluated again (a run that only planned it says nothing, nor hides the runs before
it); a store outage skips both
sensors with its reason; the intervals come from healthmon.yaml."""

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import dagster as dg
import pytest
import sqlalchemy as sa

from healthmon_dagster.alerting.signals import latest_health_results
from healthmon_dagster.config.loader import ConfigError, load_config_text
from healthmon_dagster.definitions import build_defs
from healthmon_dagster.defs.alerting.sensors import alert_dispatch_sensor, alert_evaluation_sensor
from healthmon_dagster.defs.resources import HealthmonConfigResource, WarehouseResource
from healthmon_dagster.enums import HealthComponent, HealthStatus
from healthmon_dagster.etl.failures import classify, failure_metadata
from healthmon_dagster.etl.landing import LocalLandingSource
from healthmon_dagster.etl.sample import generate_sample, write_to
from healthmon_dagster.health.record import write_results
from healthmon_dagster.health.result import HealthCheck, HealthCheckResult
from healthmon_dagster.store.db import DatabaseUnavailable, get_engine
from healthmon_dagster.store.metrics import utcnow
from healthmon_dagster.store.tables import alerts, notifications
from healthmon_dagster_tests.defs.fixtures import defs, evaluate_sensor, patient_values, run_job
from healthmon_dagster_tests.fixtures import free_port


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
    assert "dependency" not in fired["run_failed"].labels  # the file's fault, no dependency's
    # The checks the failed raw step left unrun did not fail: no "could not run" alert for them.
    assert [a.title for a in open_alerts(db_url) if a.labels.get("execution")] == []


# --- A failed run is an event; a store outage skips; intervals from healthmon.yaml ---------------


@dg.op(config_schema={"fail": bool})
def maybe_fail(context: dg.OpExecutionContext) -> None:
    if context.op_config["fail"]:
        raise RuntimeError("the op was told to fail")


@dg.job
def flaky_job() -> None:
    maybe_fail()


def _tick(
    instance: dg.DagsterInstance, warehouse: WarehouseResource, config: Path, cursor: str | None
) -> tuple[str, str | None]:
    context = dg.build_sensor_context(
        instance=instance,
        resources={
            "warehouse": warehouse,
            "healthmon_config": HealthmonConfigResource(config_path=str(config)),
        },
        cursor=cursor,
    )
    skip = alert_evaluation_sensor(context)
    assert isinstance(skip, dg.SkipReason)
    return skip.skip_message or "", context.cursor


def _run(instance: dg.DagsterInstance, fail: bool) -> None:
    flaky_job.execute_in_process(
        run_config={"ops": {"maybe_fail": {"config": {"fail": fail}}}},
        instance=instance,
        raise_on_error=False,
    )


def test_a_failed_run_fires_though_the_next_run_succeeded_before_the_tick(
    db_url: str, tmp_path: Path, instance: dg.DagsterInstance
) -> None:
    config = tmp_path / "healthmon.yaml"
    config.write_text("alerting: {builtin_channels: [log]}\n")
    warehouse = WarehouseResource(database_url=db_url)
    _, cursor = _tick(instance, warehouse, config, None)  # no run yet

    _run(instance, fail=True)
    _run(instance, fail=False)  # both finish between two ticks
    message, cursor = _tick(instance, warehouse, config, cursor)
    (alert,) = [a for a in open_alerts(db_url) if a.rule_id == "run_failed"]
    assert (alert.state, alert.labels["job"]) == ("firing", "flaky_job"), message
    assert alert.description.endswith("succeeded since")
    failed = instance.get_run_records(
        dg.RunsFilter(job_name="flaky_job", statuses=[dg.DagsterRunStatus.FAILURE])
    )
    assert alert.details == {"run_id": failed[0].dagster_run.run_id}

    _tick(instance, warehouse, config, cursor)  # the next tick sees only the success
    (alert,) = [a for a in open_alerts(db_url) if a.rule_id == "run_failed"]
    assert alert.state == "resolved"

    # A failure that is the latest run fires, and stays until a run succeeds.
    _run(instance, fail=True)
    _, cursor = _tick(instance, warehouse, config, cursor)
    _, cursor = _tick(instance, warehouse, config, cursor)
    states = [a.state for a in open_alerts(db_url) if a.rule_id == "run_failed"]
    assert states == ["resolved", "firing"]


# --- Dependency evidence: a run whose steps found the warehouse down ----------------------------

DATABASE_CHECK = HealthCheck(
    "database_connectivity", HealthComponent.DATABASE, "database", critical=True
)
WITH_DATABASE_CHECK = """
alerting: {builtin_channels: [log]}
health_checks:
  - check_id: database_connectivity
    name: db
    component: database
    check_type: connectivity
    kind: database
    critical: true
"""


@dg.op
def load_warehouse() -> None:
    down = classify(DatabaseUnavailable("the warehouse did not answer"))
    raise dg.Failure("the warehouse did not answer", metadata=failure_metadata(down))


@dg.job
def warehouse_job() -> None:
    load_warehouse()


def _outage_run(instance: dg.DagsterInstance, db_url: str, checked_meanwhile: bool) -> str:
    """A run of warehouse_job whose step finds the warehouse down; ``checked_meanwhile``: the
    database check reports healthy after the step failed, before the run ends (a failure hook)."""

    @dg.failure_hook
    def database_check_runs(_: dg.HookContext) -> None:
        result = HealthCheckResult(DATABASE_CHECK.check_id, utcnow(), HealthStatus.HEALTHY, 1.0)
        write_results(get_engine(db_url), {DATABASE_CHECK.check_id: DATABASE_CHECK}, [result])

    job = warehouse_job.with_hooks({database_check_runs}) if checked_meanwhile else warehouse_job
    result = job.execute_in_process(instance=instance, raise_on_error=False)
    assert not result.success
    return result.run_id


def database_alerts(db_url: str) -> list[Any]:
    return [a for a in open_alerts(db_url) if a.rule_id == "dependency_unreachable"]


def test_a_run_that_found_the_database_down_is_evidence_unless_the_check_reported_since(
    db_url: str, tmp_path: Path, instance: dg.DagsterInstance
) -> None:
    config = tmp_path / "healthmon.yaml"
    config.write_text(WITH_DATABASE_CHECK)
    warehouse = WarehouseResource(database_url=db_url)
    _, cursor = _tick(instance, warehouse, config, None)

    # A blip: the step fails on it, the database check then finds the database healthy, and the
    # run ends after that. The check has spoken since the run found the database down.
    run_id = _outage_run(instance, db_url, checked_meanwhile=True)
    (step_failure,) = instance.all_logs(run_id, of_type=dg.DagsterEventType.STEP_FAILURE)
    checked = latest_health_results(get_engine(db_url), {DATABASE_CHECK.check_id})
    record = instance.get_run_record_by_id(run_id)
    assert record is not None and record.end_time is not None
    assert step_failure.timestamp < checked[DATABASE_CHECK.check_id] < record.end_time
    message, cursor = _tick(instance, warehouse, config, cursor)
    assert database_alerts(db_url) == [], message
    (run_alert,) = [a for a in open_alerts(db_url) if a.rule_id == "run_failed"]
    assert run_alert.labels["dependency"] == "database"  # it failed because of it, all the same

    # The check reported before the next run's step found the database down: that run is news.
    _outage_run(instance, db_url, checked_meanwhile=False)
    message, cursor = _tick(instance, warehouse, config, cursor)
    (alert,) = database_alerts(db_url)
    assert (alert.state, alert.labels["dependency"]) == ("firing", "database"), message
    assert alert.labels["check"] == DATABASE_CHECK.check_id


# --- A check whose step fails before recording a result ----------------------------------------


@dg.asset(config_schema={"fail": dg.Field(bool, default_value=False)})
def ledger(context: dg.AssetExecutionContext) -> None:
    """An asset with a check that can fail before recording a result."""
    if context.op_execution_context.op_config["fail"]:
        raise RuntimeError("the asset was told to fail")


@dg.asset_check(asset=ledger, config_schema={"fail": bool})
def ledger_balances(context: dg.AssetCheckExecutionContext) -> dg.AssetCheckResult:
    if context.op_execution_context.op_config["fail"]:
        raise RuntimeError("the check was told to fail")
    return dg.AssetCheckResult(passed=True)


ledger_defs = dg.Definitions(
    assets=[ledger],
    asset_checks=[ledger_balances],
    jobs=[dg.define_asset_job("ledger_job", selection=dg.AssetSelection.assets(ledger))],
)


def ledger_runs(
    db_url: str, tmp_path: Path, instance: dg.DagsterInstance
) -> tuple[Callable[[str | None], str | None], Callable[..., None]]:
    """A tick of the alert-evaluation sensor over ``ledger_defs`` (cursor in, cursor out) and a
    run of ledger_job (``fail``: the check's step fails; ``asset_fails``: the asset's does)."""
    config = tmp_path / "healthmon.yaml"
    config.write_text("alerting: {builtin_channels: [log]}\n")
    context_resources = {
        "warehouse": WarehouseResource(database_url=db_url),
        "healthmon_config": HealthmonConfigResource(config_path=str(config)),
    }
    job = ledger_defs.resolve_job_def("ledger_job")

    def tick(cursor: str | None) -> str | None:
        context = dg.build_sensor_context(
            instance=instance,
            resources=context_resources,
            cursor=cursor,
            repository_def=ledger_defs.get_repository_def(),
        )
        assert isinstance(alert_evaluation_sensor(context), dg.SkipReason)
        return context.cursor

    def check_run(fail: bool, asset_fails: bool = False) -> None:
        job.execute_in_process(
            run_config={
                "ops": {
                    "ledger": {"config": {"fail": asset_fails}},
                    "ledger_ledger_balances": {"config": {"fail": fail}},
                }
            },
            instance=instance,
            raise_on_error=False,
        )

    return tick, check_run


def test_a_check_whose_step_fails_before_recording_a_result_alerts_until_it_runs(
    db_url: str, tmp_path: Path, instance: dg.DagsterInstance
) -> None:
    tick, check_run = ledger_runs(db_url, tmp_path, instance)
    cursor = tick(None)
    check_run(fail=True)  # Dagster: PLANNED in a failed run, nothing in etl.check_results
    cursor = tick(cursor)
    cursor = tick(cursor)  # the next tick finds nothing new: the alert stays
    (alert,) = [a for a in open_alerts(db_url) if a.rule_id == "asset_check_error"]
    assert (alert.state, alert.title) == ("firing", "ledger_balances on ledger could not run")
    assert (alert.labels["asset"], alert.labels["check"], alert.labels["execution"]) == (
        "ledger",
        "ledger_balances",
        "failed",
    )
    assert "could not run" in alert.title and "told to fail" not in alert.description

    # The asset fails: the check is planned, never run. It says nothing about the check.
    check_run(fail=False, asset_fails=True)
    cursor = tick(cursor)
    (alert,) = [a for a in open_alerts(db_url) if a.rule_id == "asset_check_error"]
    assert alert.state == "firing"
    key = ledger_balances.check_key
    (planned,) = instance.event_log_storage.get_latest_asset_check_execution_by_key([key]).values()
    assert planned.status.value == "PLANNED"
    assert cursor is not None and json.loads(cursor)["checks"] == planned.id  # not read again

    check_run(fail=False)
    tick(cursor)
    (alert,) = [a for a in open_alerts(db_url) if a.rule_id == "asset_check_error"]
    assert alert.state == "resolved"


def test_a_run_that_only_planned_the_check_does_not_hide_the_runs_before_it(
    db_url: str, tmp_path: Path, instance: dg.DagsterInstance
) -> None:
    tick, check_run = ledger_runs(db_url, tmp_path, instance)

    def states() -> list[str]:
        return [str(a.state) for a in open_alerts(db_url) if a.rule_id == "asset_check_error"]

    cursor = tick(None)
    check_run(fail=True)
    cursor = tick(cursor)
    assert states() == ["firing"]

    # Between two ticks the check passes, then a run only plans it (its asset fails): the
    # latest record says nothing, the evaluation before it resolves the alert.
    check_run(fail=False)
    check_run(fail=False, asset_fails=True)
    cursor = tick(cursor)
    assert states() == ["resolved"]
    cursor = tick(cursor)
    assert states() == ["resolved"]

    # Its step fails, then a run only plans it: the failed step fires the alert again.
    check_run(fail=True)
    check_run(fail=False, asset_fails=True)
    cursor = tick(cursor)
    assert states() == ["resolved", "firing"]

    # Only runs that planned it since: nothing new, the alert stays as it was.
    check_run(fail=False, asset_fails=True)
    check_run(fail=False, asset_fails=True)
    tick(cursor)
    assert states() == ["resolved", "firing"]


@pytest.mark.parametrize("kind", ["sqlite_folder_is_a_file", "invalid_url", "postgres_down"])
def test_a_store_outage_skips_both_sensors_and_names_it(
    kind: str, tmp_path: Path, instance: dg.DagsterInstance
) -> None:
    blocker = tmp_path / "not_a_folder"
    blocker.write_text("")
    url = {
        "sqlite_folder_is_a_file": f"sqlite:///{blocker}/health.db",
        "invalid_url": "mysql://healthmon@127.0.0.1/health",
        "postgres_down": f"postgresql+psycopg2://postgres@127.0.0.1:{free_port()}/health",
    }[kind]
    config = tmp_path / "healthmon.yaml"
    config.write_text("{}\n")
    resources = {
        "warehouse": WarehouseResource(database_url=url),
        "healthmon_config": HealthmonConfigResource(config_path=str(config)),
    }
    evaluation = alert_evaluation_sensor(
        dg.build_sensor_context(instance=instance, resources=resources)
    )
    dispatch = alert_dispatch_sensor(
        dg.build_sensor_context(instance=instance, resources={"warehouse": resources["warehouse"]})
    )
    assert isinstance(evaluation, dg.SkipReason) and isinstance(dispatch, dg.SkipReason)
    assert (evaluation.skip_message or "").startswith(
        "health store unavailable, no alert evaluated: "
    )
    assert (dispatch.skip_message or "").startswith(
        "health store unavailable, no notification dispatched: "
    )


def test_the_sensor_intervals_come_from_healthmon_yaml() -> None:
    assert alert_evaluation_sensor.minimum_interval_seconds == 30  # the defaults
    assert alert_dispatch_sensor.minimum_interval_seconds == 15
    config = load_config_text(
        "sensor_intervals: {alert_evaluation_sensor: 7, alert_dispatch_sensor: 5}\n"
    )
    repo = build_defs(config).get_repository_def()
    assert repo.get_sensor_def("alert_evaluation_sensor").minimum_interval_seconds == 7
    assert repo.get_sensor_def("alert_dispatch_sensor").minimum_interval_seconds == 5
    assert repo.get_sensor_def("alert_dispatch_sensor").job_name == "alert_dispatch_job"
    with pytest.raises(ConfigError, match="alert_evaluation_sensor"):
        load_config_text("sensor_intervals: {alert_evaluation_sensor: 0}\n")
