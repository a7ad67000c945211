"""Incident reports (Markdown and JSON, with the response times) and MTTR/MTBF by component."""

import json

import pytest
from sqlalchemy.engine import Engine

from healthmon_dagster.enums import HealthComponent, IncidentStatus
from healthmon_dagster.health.uptime import mean_time_between_failures
from healthmon_dagster.incidents import lifecycle
from healthmon_dagster.incidents.records import open_or_absorb
from healthmon_dagster.incidents.report import incident_report, reliability_by_component
from healthmon_dagster_tests.incidents.fixtures import ALICE, HOOK, SENSOR, T0, failure, minutes
from healthmon_dagster_tests.incidents.test_lifecycle import add_alert


def test_a_resolved_incident_reports_everything_an_incident_commander_needs(
    engine: Engine,
) -> None:
    # First failure at T0, recorded 30 s later, acknowledged after 5 min, resolved after 42 min.
    iid = open_or_absorb(
        engine, "asset:raw/patients", failure(T0), HOOK, T0 + minutes(0.5)
    ).incident_id
    other = open_or_absorb(
        engine,
        "asset:stg/patients",
        failure(T0, component="staging_transformer", assets=("stg/patients",)),
        HOOK,
        T0 + minutes(1),
    ).incident_id
    alert_id = add_alert(engine, T0)
    lifecycle.link_alert(engine, iid, alert_id, SENSOR, T0 + minutes(1))
    lifecycle.link_incidents(
        engine, iid, other, 0.65, "stg/patients is downstream", SENSOR, T0 + minutes(2)
    )
    lifecycle.assign(engine, iid, "bob | on-call", ALICE, T0 + minutes(5.5))
    lifecycle.set_status(engine, iid, IncidentStatus.IDENTIFIED, ALICE, now=T0 + minutes(10))
    lifecycle.resolve(
        engine, iid, "S3 endpoint restored", ALICE, root_cause="S3 outage", now=T0 + minutes(42)
    )
    report = incident_report(engine, iid, now=T0 + minutes(50))
    assert report.times.time_to_detect == pytest.approx(30, abs=0.01)
    assert report.times.time_to_acknowledge == pytest.approx(300, abs=0.01)
    assert report.times.time_to_recover == pytest.approx(42 * 60, abs=0.01)

    data = json.loads(json.dumps(report.to_dict()))
    assert data["summary"]["status"] == "resolved" and data["summary"]["duration_minutes"] == 42
    assert data["impact"] == {
        "level": "minor",
        "assets": ["raw/patients"],
        "resources": ["database:warehouse"],
        "failures": 1,
        "error_classes": ["database_unavailable"],
    }
    assert [e["kind"] for e in data["timeline"]] == [
        "created",
        "failure",
        "alert_linked",
        "incident_linked",
        "assigned",
        "status_changed",
        "resolved",
    ]
    assert [a["alert_id"] for a in data["related_alerts"]] == [alert_id]
    assert data["related_incidents"][0]["incident_id"] == other
    assert (data["root_cause"], data["resolution"]) == ("S3 outage", "S3 endpoint restored")

    md = report.to_markdown()
    assert md.startswith(f"# Incident {iid}: raw/patients failed\n")
    for heading in (
        "Summary",
        "Impact",
        "Response times",
        "Timeline",
        "Related alerts",
        "Related incidents",
        "Root cause",
        "Resolution",
    ):
        assert f"\n## {heading}\n" in md
    assert "- Time to detect: 30s" in md and "- Time to recover: 42m" in md
    assert "assigned to bob \\| on-call" in md  # a pipe cannot break the table
    assert f"- Incident {other} (open, strength 0.65)" in md


def test_an_open_incident_reports_what_has_not_happened_yet(engine: Engine) -> None:
    iid = open_or_absorb(engine, "asset:raw/patients", failure(T0), SENSOR, T0).incident_id
    report = incident_report(engine, iid)
    assert report.times.time_to_acknowledge is None and report.times.time_to_recover is None
    md = report.to_markdown()
    assert "- Time to acknowledge: not yet" in md
    assert "Not identified yet." in md and "Not resolved yet." in md
    assert "## Related alerts\n\nNone." in md


def test_mttr_and_mtbf_by_component_over_a_window(engine: Engine) -> None:
    raw = HealthComponent.RAW_LOADER
    # raw_loader: incidents start at 0, 60 and 180 min; the first two took 10 and 20 min to fix.
    for start, fix in ((0, 10), (60, 20), (180, None)):
        iid = open_or_absorb(
            engine,
            f"asset:raw/patients:{start}",
            failure(T0 + minutes(start)),
            HOOK,
            T0 + minutes(start),
        ).incident_id
        if fix is not None:
            lifecycle.resolve(engine, iid, "fixed", ALICE, now=T0 + minutes(start + fix))
    # core_merger: one incident, resolved in 5 min; one long before the window (not counted).
    for start in (-5000, 30):
        iid = open_or_absorb(
            engine,
            f"asset:core/dim_patient:{start}",
            failure(T0 + minutes(start), component="core_merger", assets=("core/dim_patient",)),
            HOOK,
            T0 + minutes(start),
        ).incident_id
        lifecycle.resolve(engine, iid, "fixed", ALICE, now=T0 + minutes(start + 5))
    rows = {r.component: r for r in reliability_by_component(engine, T0, T0 + minutes(240))}
    assert set(rows) == {"raw_loader", "core_merger"}
    r = rows[raw]
    assert (r.incidents, r.open, r.resolved) == (3, 1, 2)
    assert r.mttr_seconds == pytest.approx(15 * 60, abs=0.01)
    # Down 10 + 20 + 60 (the last is open at the window end) of 240 min; 3 failures.
    assert r.downtime_seconds == pytest.approx(90 * 60, abs=0.01)
    assert r.mtbf_seconds == pytest.approx((240 - 90) / 3 * 60, abs=0.01)
    c = rows["core_merger"]
    assert (c.incidents, c.open, c.resolved) == (1, 0, 1)
    assert c.mttr_seconds == pytest.approx(300, abs=0.01)
    assert c.mtbf_seconds == pytest.approx((240 - 5) * 60, abs=0.01)  # one failure: uptime / 1
    # A window with nothing in it lists only what is open now.
    later = reliability_by_component(engine, T0 + minutes(10_000), T0 + minutes(10_060))
    assert [(x.component, x.incidents, x.open) for x in later] == [("raw_loader", 0, 1)]


def test_mtbf_is_operating_time_over_failures_with_overlaps_and_carried_over_downtime(
    engine: Engine,
) -> None:
    """Window [0, 100) min. An incident open since -20 until 10 is downtime, not a failure; two
    overlapping ones (30-50 and 40-60) are down 30 min once, two failures: (100 - 10 - 30) / 2."""
    for start, fix in ((-20, 10), (30, 50), (40, 60)):
        iid = open_or_absorb(
            engine,
            f"asset:raw/patients:{start}",
            failure(T0 + minutes(start)),
            HOOK,
            T0 + minutes(start),
        ).incident_id
        lifecycle.resolve(engine, iid, "fixed", ALICE, now=T0 + minutes(fix))
    (r,) = reliability_by_component(engine, T0, T0 + minutes(100))
    assert (r.incidents, r.resolved) == (2, 3)
    assert r.downtime_seconds == pytest.approx(40 * 60, abs=0.01)
    assert r.mtbf_seconds == pytest.approx(30 * 60, abs=0.01)
    # The same definition as the health checks' MTBF.
    assert mean_time_between_failures(60 * 60, 2) == r.mtbf_seconds
    assert mean_time_between_failures(60 * 60, 0) is None
