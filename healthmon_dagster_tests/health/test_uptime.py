"""Uptime, MTBF and MTTR from the transitions of critical checks; time without data is unknown."""

import pytest
from sqlalchemy.engine import Engine

from healthmon_dagster.formatting import InvalidWindow
from healthmon_dagster.health.uptime import get_uptime, get_uptime_by_component
from healthmon_dagster_tests.health.fixtures import (
    NOW,
    T0,
    H,
    M,
    database_timeline,
    insert_results,
    result,
    series,
)


def test_uptime_mtbf_mttr_from_transitions(engine: Engine) -> None:
    rows = database_timeline()
    # filesystem was already down before the window and recovers at 1:00: downtime, no failure
    rows += series(
        "filesystem",
        "landing_writable",
        T0 - 30 * M,
        NOW,
        10 * M,
        lambda ts: "critical" if ts < T0 + H else "healthy",
    )
    insert_results(engine, rows)

    db = get_uptime(engine, T0, NOW, "database")
    assert db.total_time_ms == pytest.approx(10 * 3600_000)
    assert db.downtime_time_ms == pytest.approx(2.5 * 3600_000)
    assert db.uptime_percentage == pytest.approx(75.0)
    assert db.failures == 3 and db.recoveries == 2
    assert db.mean_time_to_recovery_ms == pytest.approx(45 * 60_000)  # (60 + 30) / 2, open one out
    assert db.mean_time_between_failures_ms == pytest.approx(7.5 * 3600_000 / 3)
    assert [o.end is None for o in db.incidents] == [False, False, True]
    assert db.incidents[0].checks == ("db_ping",)

    fs = get_uptime(engine, T0, NOW, "filesystem")
    assert fs.downtime_time_ms == pytest.approx(3600_000)
    assert fs.failures == 0 and fs.mean_time_to_recovery_ms is None
    assert fs.incidents[0].started_before_window

    system = get_uptime(engine, T0, NOW)
    # union: 0:00-1:00, 2:00-3:00, 6:00-6:30, 9:00-10:00
    assert system.downtime_time_ms == pytest.approx(3.5 * 3600_000)
    assert system.failures == 3
    assert set(get_uptime_by_component(engine, T0, NOW)) == {"database", "filesystem"}

    # A window that starts inside an outage: the open part counts as downtime, not as a failure.
    late = get_uptime(engine, T0 + 2.5 * H, T0 + 5 * H, "database")
    assert late.downtime_time_ms == pytest.approx(0.5 * 3600_000)
    assert late.failures == 0 and late.recoveries == 0


def test_inverted_window_is_rejected(engine: Engine) -> None:
    with pytest.raises(InvalidWindow, match="at or after it ends"):
        get_uptime(engine, NOW, T0)


def test_time_without_data_is_unknown_not_down(engine: Engine) -> None:
    rows = series("database", "db_ping", T0, T0 + H, 10 * M, lambda ts: "healthy")
    rows.append(result(T0 + H, "database", "db_ping", "critical"))  # then silent until 5:00
    rows += series("database", "db_ping", T0 + 5 * H, NOW, 10 * M, lambda ts: "healthy")
    # UNKNOWN results are no data either; a skipped check counts nowhere.
    rows += series("network", "dns", T0, NOW, 10 * M, lambda ts: "unknown")
    rows += [
        {**row, "status": "unknown", "details": {"skipped": "no S3 bucket configured"}}
        for row in series("s3_discovery", "s3_landing", T0, NOW, 10 * M, lambda ts: "healthy")
    ]
    insert_results(engine, rows)

    db = get_uptime(engine, T0, NOW, "database")

    # Data 0:00-1:15 (down 1:00-1:15: a result holds 15 minutes) and 5:00-10:00.
    assert db.total_time_ms == pytest.approx(6.25 * 3600_000)
    assert db.no_data_time_ms == pytest.approx(3.75 * 3600_000)
    assert db.downtime_time_ms == pytest.approx(15 * 60_000)
    assert db.uptime_percentage == pytest.approx(100 * 6 / 6.25)
    assert db.failures == 1 and db.recoveries == 0  # followed by no data: not a recovery
    assert db.mean_time_to_recovery_ms is None
    (outage,) = db.incidents
    assert outage.end == T0 + H + 15 * M
    network = get_uptime(engine, T0, NOW, "network")
    assert network.uptime_percentage is None and network.total_time_ms == 0
    assert "s3_discovery" not in get_uptime_by_component(engine, T0, NOW)
    system = get_uptime(engine, T0, NOW)
    assert system.uptime_percentage == pytest.approx(db.uptime_percentage)
