"""Root keys: a blamed resource gathers every asset's failure, a downstream failure joins its open
upstream incident, otherwise the most upstream asset or the component names the root cause."""

from dataclasses import replace

from sqlalchemy.engine import Engine

from healthmon_dagster.enums import HealthComponent
from healthmon_dagster.incidents import lifecycle
from healthmon_dagster.incidents.records import get_incident, open_or_absorb
from healthmon_dagster.incidents.rootkey import root_key_for
from healthmon_dagster_tests.incidents.fixtures import ALICE, HOOK, T0, failure, minutes

STG = HealthComponent.STAGING_TRANSFORMER


def test_raw_and_stg_failing_on_one_database_outage_are_one_incident(engine: Engine) -> None:
    raw = replace(failure(T0), cause_resource="database:warehouse", resources=())
    stg = replace(
        failure(T0 + minutes(1), component=STG, assets=("stg/patients",), resources=()),
        cause_resource="database:warehouse",
    )
    keys = {root_key_for(engine, f) for f in (raw, stg)}
    assert keys == {"resource:database:warehouse"}
    first = open_or_absorb(engine, keys.pop(), raw, HOOK, T0)
    again = open_or_absorb(engine, root_key_for(engine, stg), stg, HOOK, T0 + minutes(1))
    assert again.incident_id == first.incident_id
    inc = get_incident(engine, first.incident_id)
    assert inc.asset_keys == ("raw/patients", "stg/patients")
    assert inc.resources == ("database:warehouse",)


def test_a_downstream_failure_joins_the_open_upstream_incident(engine: Engine) -> None:
    raw = failure(T0, error_class="contract_break")
    key = root_key_for(engine, raw)
    assert key == "asset:raw/patients"
    opened = open_or_absorb(engine, key, raw, HOOK, T0)
    core = failure(
        T0 + minutes(2), component=HealthComponent.CORE_MERGER, assets=("core/dim_patient",)
    )
    assert root_key_for(engine, core) == "asset:raw/patients"
    lifecycle.resolve(engine, opened.incident_id, "file replaced", ALICE)
    assert root_key_for(engine, core) == "asset:core/dim_patient"  # the upstream one is over


def test_the_most_upstream_own_asset_or_the_component(engine: Engine) -> None:
    both = failure(T0, assets=("core/dim_patient", "stg/patients"))
    assert root_key_for(engine, both) == "asset:stg/patients"
    health = failure(T0, component=HealthComponent.NETWORK, assets=())
    assert root_key_for(engine, health) == "component:network"
