"""Root keys: a blamed resource gathers every asset's failure, an asset failure belongs to its
lineage's incident (the most upstream asset of its connected asset graph), otherwise the component
names the root cause. Raw and stg failing at once, in threads or processes, open one incident whose
component is the most upstream failing asset's."""

import multiprocessing
import threading
from dataclasses import replace
from typing import Any

from sqlalchemy.engine import Engine

from healthmon_dagster.alerting.lineage import Lineage
from healthmon_dagster.definitions import defs
from healthmon_dagster.enums import HealthComponent
from healthmon_dagster.etl import catalog
from healthmon_dagster.incidents import lifecycle
from healthmon_dagster.incidents.records import (
    get_incident,
    list_incidents,
    open_or_absorb,
    timeline,
)
from healthmon_dagster.incidents.rootkey import connected, lineage_root, root_key_for
from healthmon_dagster.store.db import dispose_engines, get_engine
from healthmon_dagster_tests.incidents.fixtures import ALICE, HOOK, SENSOR, T0, failure, minutes

STG = HealthComponent.STAGING_TRANSFORMER
RAW = HealthComponent.RAW_LOADER


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


def test_every_asset_of_a_lineage_has_the_lineage_root_key(engine: Engine) -> None:
    for assets in [
        ("raw/patients",),
        ("stg/patients",),
        ("stg/patients_rejected",),
        ("core/dim_patient",),
        ("core/dim_patient", "stg/patients"),
    ]:
        assert root_key_for(engine, failure(T0, assets=assets)) == "asset:raw/patients", assets
    # Still after the lineage's incident resolved: the next failure opens its next incident.
    raw = failure(T0, error_class="contract_break")
    opened = open_or_absorb(engine, root_key_for(engine, raw), raw, HOOK, T0)
    lifecycle.resolve(engine, opened.incident_id, "file replaced", ALICE)
    core = failure(T0 + minutes(2), component=HealthComponent.CORE_MERGER, assets=("core/x",))
    assert root_key_for(engine, core) == "asset:core/x"  # outside the pipeline: its own lineage
    health = failure(T0, component=HealthComponent.NETWORK, assets=())
    assert root_key_for(engine, health) == "component:network"


def test_the_lineage_root_of_a_graph_with_two_sources_and_two_graphs() -> None:
    lineage = Lineage.from_parents({"b/joined": ["a/one", "a/two"], "c/out": ["b/joined"]})
    assert connected(["c/out"], lineage) == {"a/one", "a/two", "b/joined", "c/out"}
    assert lineage_root(["a/two"], lineage) == "a/one"  # one lineage: the first source by name
    assert lineage_root(["z/alone"], lineage) == "z/alone"


def test_the_bundled_lineage_is_the_code_locations_asset_graph() -> None:
    """Hooks and sensors use the bundled lineage to agree on a root key; it must be Dagster's."""
    graph = defs.resolve_asset_graph()
    parents = {
        key.to_user_string(): [p.to_user_string() for p in graph.get(key).parent_keys]
        for key in graph.get_all_asset_keys()
    }
    pipeline = {a.key for a in catalog.ASSETS}
    dagster = Lineage.from_parents(parents)
    assert connected(pipeline, dagster) == pipeline  # no other asset joins the pipeline's lineage
    ours = Lineage.from_parents({k: v for k, v in parents.items() if k in pipeline})
    assert ours == Lineage.bundled()


def test_stg_first_then_raw_moves_the_component_upstream(engine: Engine) -> None:
    stg = failure(T0, component=STG, assets=("stg/patients",), error_class="contract_break")
    first = open_or_absorb(engine, root_key_for(engine, stg), stg, HOOK, T0)
    raw = failure(T0 + minutes(1), error_class="contract_break")
    again = open_or_absorb(engine, root_key_for(engine, raw), raw, HOOK, T0 + minutes(1))
    assert again.incident_id == first.incident_id and not again.created
    inc = get_incident(engine, first.incident_id)
    assert inc.component == RAW and inc.asset_keys == ("raw/patients", "stg/patients")
    assert (
        "component staging_transformer -> raw_loader" in timeline(engine, inc.incident_id)[-1].text
    )
    # A downstream failure later leaves it at the most upstream one.
    core = failure(
        T0 + minutes(2), component=HealthComponent.CORE_MERGER, assets=("core/dim_patient",)
    )
    open_or_absorb(engine, root_key_for(engine, core), core, HOOK, T0 + minutes(2))
    assert get_incident(engine, first.incident_id).component == RAW


def _raw_or_stg(n: int) -> Any:
    if n % 2:
        return failure(
            T0, component=STG, assets=("stg/patients",), error_class="contract_break", worker=n
        )
    return failure(T0, error_class="contract_break", worker=n)


def _assert_one_incident_at_raw(engine: Engine, n: int) -> None:
    (inc,) = list_incidents(engine, include_ended=True)
    assert inc.root_key == "asset:raw/patients"
    assert inc.failure_count == n
    assert inc.asset_keys == ("raw/patients", "stg/patients")
    assert inc.component == RAW  # the most upstream failing asset, whoever won the race
    events = timeline(engine, inc.incident_id)
    assert [e.kind for e in events].count("created") == 1
    assert sorted(e.details["worker"] for e in events if e.kind == "failure") == list(range(n))


def test_raw_and_stg_failing_at_once_in_threads_open_one_incident(engine: Engine) -> None:
    barrier = threading.Barrier(4)
    errors: list[BaseException] = []

    def run(n: int) -> None:
        try:
            f = _raw_or_stg(n)
            barrier.wait()
            open_or_absorb(engine, root_key_for(engine, f), f, SENSOR)
        except BaseException as exc:  # surfaced below
            errors.append(exc)

    threads = [threading.Thread(target=run, args=(n,)) for n in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    _assert_one_incident_at_raw(engine, 4)


def _race(url: str, barrier: Any, n: int) -> None:
    engine = get_engine(url)
    f = _raw_or_stg(n)
    barrier.wait()
    open_or_absorb(engine, root_key_for(engine, f), f, SENSOR)
    dispose_engines()


def test_raw_and_stg_failing_at_once_in_two_processes_open_one_incident(
    engine: Engine, db_url: str
) -> None:
    ctx = multiprocessing.get_context("spawn")
    barrier = ctx.Barrier(2)
    procs = [ctx.Process(target=_race, args=(db_url, barrier, n)) for n in range(2)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(120)
    assert [p.exitcode for p in procs] == [0, 0]
    _assert_one_incident_at_raw(engine, 2)
