"""Uptime, MTBF and MTTR from the transitions of critical checks."""

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
