"""Correlation: incidents and alerts related by asset, lineage, shared resource, component and
time, the strength and its reasons in words, the suggested root cause, and recording the links."""

from datetime import timedelta

import pytest
from sqlalchemy.engine import Engine

from healthmon_dagster.alerting.lineage import Lineage
from healthmon_dagster.enums import HealthComponent
from healthmon_dagster.incidents import lifecycle
from healthmon_dagster.incidents.alerts import open_for_critical_alerts
from healthmon_dagster.incidents.correlation import correlate, link_correlated, link_open_incidents
from healthmon_dagster.incidents.records import get_incident, open_or_absorb, timeline
from healthmon_dagster.store.tables import alerts
from healthmon_dagster_tests.incidents.fixtures import HOOK, SENSOR, T0, failure, minutes
from healthmon_dagster_tests.incidents.test_lifecycle import add_alert

NOW = T0 + minutes(30)


def open_at(engine: Engine, key: str, at_min: float, **kw: object) -> int:
    at = T0 + minutes(at_min)
    return open_or_absorb(engine, key, failure(at, **kw), HOOK, at).incident_id  # type: ignore[arg-type]


def test_raw_and_stg_failing_together_correlate_with_raw_as_root_cause(engine: Engine) -> None:
    raw = open_at(engine, "asset:raw/patients", 0, resources=("s3:landing",))
    stg = open_at(
        engine,
        "asset:stg/patients",
        2,
        component=HealthComponent.STAGING_TRANSFORMER,
        assets=("stg/patients",),
        resources=(),
    )
    result = correlate(engine, stg, now=NOW)
    (only,) = result.correlated_incidents
    assert only.id == raw
    assert [f.explanation for f in only.factors] == [
        f"stg/patients is downstream of raw/patients (incident {raw})",
        "active at the same time",
    ]
    assert result.correlation_strength == pytest.approx(1 - 0.5 * 0.7)
    assert result.common_factors == (
        f"stg/patients is downstream of raw/patients (incident {raw})",
    )
    assert result.root_cause_key == "asset:raw/patients" and result.root_cause_incident_id == raw
    assert result.suggested_root_cause == (
        f"asset raw/patients (incident {raw}), the most upstream failing asset; "
        "stg/patients failed downstream of it"
    )
    assert f"strongest: incident {raw} at 0.65" in result.explanation


def test_a_database_incident_is_the_root_of_asset_failures_that_use_it(engine: Engine) -> None:
    db = open_at(
        engine,
        "component:database",
        0,
        component=HealthComponent.DATABASE,
        assets=(),
        resources=("database:warehouse",),
    )
    raw = open_at(engine, "asset:raw/patients", 1)
    core = open_at(
        engine,
        "asset:core/dim_patient",
        3,
        component=HealthComponent.CORE_MERGER,
        assets=("core/dim_patient",),
    )
    result = correlate(engine, core, now=NOW)
    strengths = {c.id: c for c in result.correlated_incidents}
    assert set(strengths) == {db, raw}
    # raw shares lineage and the database; the database incident shares only the database.
    assert strengths[raw].strength > strengths[db].strength
    assert "both use database:warehouse" in result.common_factors
    assert result.root_cause_key == "component:database"
    assert result.suggested_root_cause.startswith(f"component database (incident {db})")


def test_time_alone_or_distance_correlates_nothing(engine: Engine) -> None:
    lone = open_at(
        engine,
        "component:network",
        0,
        component=HealthComponent.NETWORK,
        assets=(),
        resources=(),
    )
    open_at(  # unrelated: other component, asset and resource, same time
        engine,
        "asset:core/dim_patient",
        1,
        component=HealthComponent.CORE_MERGER,
        assets=("core/dim_patient",),
        resources=("s3:other",),
    )
    result = correlate(engine, lone, now=NOW)
    assert result.correlated_incidents == () and result.correlation_strength == 0.0
    assert result.explanation.startswith("no other incident within 60m")
    assert result.root_cause_incident_id == lone
    # A related incident long resolved before the window is not a candidate.
    old = open_at(engine, "asset:stg/patients", -600, assets=("stg/patients",))
    lifecycle.resolve(engine, old, "fixed", SENSOR, now=T0 - minutes(590))
    raw = open_at(engine, "asset:raw/patients", 0)
    ids = [c.id for c in correlate(engine, raw, now=NOW).correlated_incidents]
    assert old not in ids


def test_closeness_in_time_raises_the_strength(engine: Engine) -> None:
    a = open_at(engine, "asset:raw/patients", 0)
    lifecycle.resolve(engine, a, "fixed", SENSOR, now=T0 + minutes(1))
    near = open_at(engine, "resource:x", 5, assets=(), resources=(), error_class="x")
    far = open_at(engine, "resource:y", 50, assets=(), resources=(), error_class="x")
    result = correlate(engine, a, window=timedelta(hours=1), now=T0 + minutes(60))
    by_id = {c.id: c for c in result.correlated_incidents}
    assert by_id[near].strength > by_id[far].strength > 0.4  # both: same component
    assert [f.explanation for f in by_id[near].factors] == [
        "both on component raw_loader",
        "4m apart",
    ]


def test_alerts_on_the_asset_or_dependency_correlate_and_links_are_recorded(
    engine: Engine,
) -> None:
    raw = open_at(engine, "asset:raw/patients", 0)
    stg = open_at(
        engine,
        "asset:stg/patients",
        1,
        component=HealthComponent.STAGING_TRANSFORMER,
        assets=("stg/patients",),
        resources=(),
    )
    asset_alert = add_alert(engine, T0 + minutes(1), component="raw_loader", severity="error")
    db_alert = add_alert(
        engine,
        T0 + minutes(1),
        component="database",
        labels={"dependency": "database"},
        severity="error",
    )
    unrelated = add_alert(
        engine, T0 + minutes(1), component="core_merger", labels={"asset": "other/asset"}
    )
    late = add_alert(engine, T0 + minutes(200), component="raw_loader")
    result = correlate(engine, raw, Lineage.bundled(), now=NOW)
    by_id = {c.id: c for c in result.correlated_alerts}
    assert set(by_id) == {asset_alert, db_alert}, (unrelated, late)
    assert [f.explanation for f in by_id[db_alert].factors] == [
        "both use database:warehouse",
        "active at the same time",
    ]
    new_incidents, new_alerts = link_correlated(engine, result, SENSOR, now=NOW)
    assert new_incidents == [stg] and sorted(new_alerts) == sorted([asset_alert, db_alert])
    assert link_correlated(engine, result, SENSOR, now=NOW) == ([], [])  # once
    assert get_incident(engine, stg).related_incidents == (raw,)
    assert any(e.kind == "incident_linked" for e in timeline(engine, stg))
    data = result.to_dict()
    assert data["correlated_incidents"][0]["factors"][0].startswith("stg/patients (incident")


def test_an_incident_that_blames_a_resource_is_the_root_cause(engine: Engine) -> None:
    blamed = open_at(engine, "resource:database:warehouse", 0)
    stg = open_at(
        engine,
        "asset:stg/patients",
        -1,  # reported first, but it is downstream of what the database outage broke
        component=HealthComponent.STAGING_TRANSFORMER,
        assets=("stg/patients",),
    )
    result = correlate(engine, stg, now=NOW)
    assert [c.id for c in result.correlated_incidents] == [blamed]
    assert result.root_cause_key == "resource:database:warehouse"
    assert result.suggested_root_cause.startswith(
        f"resource database:warehouse (incident {blamed}): its failures blame it"
    )


def incident_alert(engine: Engine, incident_id: int, at_min: float, component: str) -> int:
    """The alert announcing incident ``incident_id`` (rule ``incident_high``, as announce.py
    raises it): on the incident's component, active with it."""
    alert_id = add_alert(engine, T0 + minutes(at_min), component=component, labels={})
    with engine.begin() as conn:
        conn.execute(
            alerts.update()
            .where(alerts.c.alert_id == alert_id)
            .values(
                rule_id="incident_high",
                labels={"alertname": "incident", "incident_id": str(incident_id)},
            )
        )
    return alert_id


def test_an_incidents_own_announcement_alert_is_no_evidence(engine: Engine) -> None:
    raw = open_at(engine, "asset:raw/patients", 0)
    incident_alert(engine, raw, 0, "raw_loader")
    check_alert = add_alert(engine, T0 + minutes(1), component="raw_loader")
    result = correlate(engine, raw, now=NOW)
    assert [c.id for c in result.correlated_alerts] == [check_alert]


def test_open_incidents_are_linked_to_what_happens_around_them_once(engine: Engine) -> None:
    raw = open_at(engine, "resource:database:warehouse", 0)
    stg = open_at(
        engine,
        "asset:raw/patients",
        2,
        component=HealthComponent.STAGING_TRANSFORMER,
        assets=("stg/patients",),
        resources=(),
    )
    announcement = incident_alert(engine, stg, 2, "staging_transformer")
    later_alert = add_alert(engine, T0 + minutes(10), component="raw_loader", severity="error")
    critical = add_alert(engine, T0 + minutes(11), component="raw_loader")

    linked = link_open_incidents(engine, now=NOW)

    by_id = {x.incident_id: x for x in linked}
    # The firing critical alert is left to the critical-alert adapter (it joins the incident of
    # its root cause as a failure); correlation links it once the adapter has.
    assert by_id[raw].alerts == (later_alert,)
    assert open_for_critical_alerts(engine, now=NOW) == {critical: stg}  # its root key's
    assert (by_id[raw].incidents or by_id[stg].incidents) in ((stg,), (raw,))
    assert get_incident(engine, stg).related_incidents == (raw,)
    assert announcement not in get_incident(engine, stg).related_alerts
    events = len(timeline(engine, raw)) + len(timeline(engine, stg))
    (again,) = link_open_incidents(engine, now=NOW + minutes(1))
    assert (again.incident_id, again.alerts) == (raw, (critical,))
    events = len(timeline(engine, raw)) + len(timeline(engine, stg))
    assert link_open_incidents(engine, now=NOW + minutes(1)) == []  # nothing new: nothing written
    assert len(timeline(engine, raw)) + len(timeline(engine, stg)) == events
    # The link carries the strength and the factors in words, both ways.
    (entry,) = [e for e in timeline(engine, stg) if e.kind == "incident_linked"]
    assert entry.text.startswith(f"related to incident {raw} (strength 0.65): stg/patients")
