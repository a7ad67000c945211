"""One source of truth for what a failure blames: the failure hooks, the run-failure sensor, the
self-healing sensor and a dependency alert name one S3 outage (and one database outage) alike, so
that it has one root key and one incident."""

from typing import Any

import pytest
from sqlalchemy.engine import Engine

from healthmon_dagster.defs.selfheal.sensors import heal_failure as selfheal_failure
from healthmon_dagster.enums import IncidentSeverity
from healthmon_dagster.etl.failures import Classification
from healthmon_dagster.incidents.alerts import alert_failure
from healthmon_dagster.incidents.detect import component_of, run_failure, step_failure
from healthmon_dagster.incidents.records import open_or_absorb
from healthmon_dagster.incidents.rootkey import root_key_for
from healthmon_dagster_tests.incidents.fixtures import HOOK, SENSOR, T0

S3_DOWN = Classification("s3_unavailable", True, "s3_unreachable")
DB_DOWN = Classification("connection_refused", True, "pg_connection_refused")


class _AlertRow:
    """The columns of an alert row ``alert_failure`` reads."""

    def __init__(self, **values: Any) -> None:
        self.__dict__.update(values)


def _dependency_alert(dependency: str) -> _AlertRow:
    return _AlertRow(
        alert_id=9,
        title="dependency down",
        labels={"dependency": dependency},
        component=dependency,
        rule_id="dependency_down",
        fired_at=T0,
        started_at=T0,
    )


@pytest.mark.parametrize("bucket", ["hospital-landing", None])
def test_one_s3_outage_has_one_root_key_whoever_reports_it(
    engine: Engine, monkeypatch: pytest.MonkeyPatch, bucket: str | None
) -> None:
    if bucket:
        monkeypatch.setenv("HEALTHMON_S3_BUCKET", bucket)
    else:
        monkeypatch.delenv("HEALTHMON_S3_BUCKET", raising=False)
    hook = step_failure(
        job_name="patients_etl_job",
        run_id="r1",
        step_key="raw__patients",
        asset_keys=["raw/patients"],
        found=S3_DOWN,
        occurred_at=T0,
    )
    healer = selfheal_failure(["stg/patients", "raw/patients"], S3_DOWN, "run r1 failed", {})
    alert = alert_failure(_dependency_alert("s3_discovery"))
    expected = f"s3:{bucket or 'landing'}"
    assert hook.cause_resource == healer.cause_resource == alert.cause_resource == expected
    keys = {root_key_for(engine, f) for f in (hook, healer, alert)}
    assert keys == {f"resource:{expected}"}
    first = open_or_absorb(engine, keys.pop(), hook, HOOK, T0)
    assert open_or_absorb(engine, f"resource:{expected}", healer, SENSOR, T0).incident_id == (
        first.incident_id
    )
    # The same severity, impact and component rules for both reporters.
    assert (healer.severity, healer.impact) == (hook.severity, hook.impact)
    assert healer.severity == IncidentSeverity.HIGH
    assert healer.component == hook.component == "raw_loader"  # the most upstream layer


def test_one_database_outage_has_one_root_key_whoever_reports_it(engine: Engine) -> None:
    hook = step_failure(
        job_name="patients_etl_job",
        run_id="r1",
        step_key="stg__patients",
        asset_keys=["stg/patients"],
        found=DB_DOWN,
        occurred_at=T0,
    )
    healer = selfheal_failure(["stg/patients"], DB_DOWN, "run r1 failed", {})
    alert = alert_failure(_dependency_alert("database"))
    assert {root_key_for(engine, f) for f in (hook, healer, alert)} == {
        "resource:database:warehouse"
    }


def test_a_data_error_blames_no_resource_and_failures_name_themselves() -> None:
    broken = Classification("contract_break", False, "contract_break")
    hook = step_failure(
        job_name="patients_etl_job",
        run_id="r1",
        step_key="raw__patients",
        asset_keys=["raw/patients"],
        found=broken,
        occurred_at=T0,
    )
    assert hook.cause_resource is None and hook.severity == IncidentSeverity.MEDIUM
    assert hook.dedup_key == "failure:step:r1:raw__patients"
    run = run_failure(job_name="j", run_id="r2", found=broken, occurred_at=T0)
    assert run.dedup_key == "failure:run:r2"
    assert selfheal_failure(["raw/patients"], broken, "t", {}).dedup_key is None
    assert component_of(["core/dim_patient", "raw/patients"]) == "raw_loader"
    assert component_of([]) == "dagster_runs"
