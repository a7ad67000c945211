"""System status from etl.check_results: component/overall rules, uptime, MTBF/MTTR, history."""

from datetime import timedelta

import pytest
from sqlalchemy.engine import Engine

from healthmon_dagster.enums import HealthStatus
from healthmon_dagster.formatting import InvalidWindow, parse_duration
from healthmon_dagster.health.history import get_health_history
from healthmon_dagster.health.status import get_component_status, get_system_status, overall_status
from healthmon_dagster.health.uptime import get_uptime, get_uptime_by_component
from healthmon_dagster_tests.health.rows import T0, insert_load_run, insert_results, result, series

H = timedelta(hours=1)
M = timedelta(minutes=1)
NOW = T0 + 10 * H


def test_worst_critical_check_decides_and_non_critical_only_warns(engine: Engine) -> None:
    insert_results(
        engine,
        [
            # database: critical ping is critical -> component critical, despite a healthy check
            result(NOW - 2 * M, "database", "db_ping", "critical", message="connection refused"),
            result(NOW - 2 * M, "database", "db_size", "healthy", critical=False),
            # filesystem: only a non-critical check fails -> at most warning
            result(NOW - 1 * M, "filesystem", "landing_free_space", "critical", critical=False),
            result(NOW - 1 * M, "filesystem", "landing_writable", "healthy"),
            # network: healthy, with an older critical result that no longer counts
            result(NOW - 30 * M, "network", "dns", "critical"),
            result(NOW - 3 * M, "network", "dns", "healthy"),
            # s3_discovery: the only result is older than the staleness window -> unknown
            result(NOW - 2 * H, "s3_discovery", "s3_head_bucket", "healthy"),
        ],
    )
    status = get_system_status(engine, now=NOW, window=24 * H, stale_after=15 * M)
    db = status.component("database")
    assert db.status == HealthStatus.CRITICAL
    assert "db_ping is critical: connection refused" in db.description
    fs = status.component("filesystem")
    assert fs.status == HealthStatus.WARNING
    assert "non-critical check landing_free_space" in fs.description
    assert status.component("network").status == HealthStatus.HEALTHY
    s3 = status.component("s3_discovery")
    assert s3.status == HealthStatus.UNKNOWN and s3.monitored
    assert "no recent result from s3_head_bucket" in s3.description
    assert s3.last_check_age_seconds == pytest.approx(7200)
    raw = status.component("raw_loader")
    assert raw.status == HealthStatus.UNKNOWN and not raw.monitored
    assert status.overall_health == HealthStatus.CRITICAL
    assert "database critical" in status.description
    assert get_component_status(engine, "filesystem", now=NOW).status == HealthStatus.WARNING


def test_overall_status_rules() -> None:
    S = HealthStatus
    assert overall_status([]) == S.UNKNOWN
    assert overall_status([S.UNKNOWN, S.UNKNOWN]) == S.UNKNOWN
    assert overall_status([S.HEALTHY, S.HEALTHY]) == S.HEALTHY
    assert overall_status([S.HEALTHY, S.UNKNOWN]) == S.WARNING  # a silent component is a gap
    assert overall_status([S.WARNING, S.HEALTHY]) == S.WARNING
    assert overall_status([S.WARNING, S.CRITICAL, S.UNKNOWN]) == S.CRITICAL


def test_nothing_reported_is_unknown_not_healthy(engine: Engine) -> None:
    status = get_system_status(engine, now=NOW)
    assert status.overall_health == HealthStatus.UNKNOWN
    assert status.uptime_percentage is None
    assert "nothing is monitored" in status.description


def _database_timeline() -> list[dict]:
    """db_ping every 10 min from T0-1h: critical 2:00-3:00, 6:00-6:30, and from 9:00 on."""

    def db_status(ts):
        t = ts - T0
        down = (2 * H <= t < 3 * H) or (6 * H <= t < 6.5 * H) or t >= 9 * H
        return "critical" if down else "healthy"

    rows = series("database", "db_ping", T0 - H, NOW, 10 * M, db_status)
    # A non-critical check failing all the time does not count as downtime.
    rows += series("database", "db_size", T0 - H, NOW, 10 * M, lambda ts: "critical", False)
    return rows


def test_uptime_mtbf_mttr_from_transitions(engine: Engine) -> None:
    rows = _database_timeline()
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


def test_status_figures_response_time_error_rate_throughput(engine: Engine) -> None:
    rows = series(
        "database",
        "db_ping",
        NOW - 2 * H,
        NOW,
        10 * M,
        lambda ts: "critical" if ts >= NOW - 30 * M else "healthy",
        response_time_ms=20.0,
    )
    insert_results(engine, rows)
    insert_load_run(engine, "raw", 12_000, NOW - 3 * H)
    insert_load_run(engine, "raw", 99_999, NOW - 30 * H)  # outside the window
    status = get_system_status(engine, now=NOW, window=6 * H)
    db = status.component("database")
    assert db.response_time_ms == pytest.approx(20.0)
    assert db.results_in_window == 12
    assert db.error_rate == pytest.approx(3 / 12)
    assert db.uptime is not None and db.uptime.uptime_percentage == pytest.approx(
        100 * (2 * 60 - 30) / (2 * 60)
    )
    assert status.component("raw_loader").throughput == pytest.approx(12_000 / 6)
    assert status.component("database").throughput is None
    assert status.throughput == pytest.approx(12_000 / 6)
    assert status.average_response_time == pytest.approx(20.0)
    data = status.to_dict()
    assert data["overall_health"] == "critical"
    db_json = next(c for c in data["components"] if c["component"] == "database")
    assert db_json["checks"][0]["status"] == "critical"
    assert db_json["last_check"] == (NOW - 10 * M).isoformat()


def test_history_buckets_per_component_and_overall(engine: Engine) -> None:
    insert_results(engine, _database_timeline())
    insert_results(
        engine,
        series(
            "network",
            "dns",
            T0,
            T0 + 5 * H,
            10 * M,
            lambda ts: "warning" if ts >= T0 + 4 * H else "healthy",
        ),
    )
    history = get_health_history(engine, T0, NOW, bucket=H)
    assert len(history.timestamps) == 10 and history.bucket_seconds == 3600
    db = history.component_health["database"]
    # db_size (non-critical, always critical) makes every bucket at least WARNING
    assert db == [HealthStatus.WARNING] * 2 + [HealthStatus.CRITICAL] + [
        HealthStatus.WARNING
    ] * 3 + [HealthStatus.CRITICAL] + [HealthStatus.WARNING] * 2 + [HealthStatus.CRITICAL]
    net = history.component_health["network"]
    assert net[:4] == [HealthStatus.HEALTHY] * 4 and net[4] == HealthStatus.WARNING
    assert net[5:] == [HealthStatus.UNKNOWN] * 5  # silent after 5:00
    assert history.overall_health[0] == HealthStatus.WARNING
    assert history.overall_health[2] == HealthStatus.CRITICAL
    assert len(history.incidents) == 3


def test_history_carries_state_between_sparse_results(engine: Engine) -> None:
    insert_results(engine, series("network", "dns", T0, NOW, 20 * M, lambda ts: "healthy"))
    history = get_health_history(engine, T0, T0 + 2 * H, bucket=10 * M, stale_after=30 * M)
    assert set(history.component_health["network"]) == {HealthStatus.HEALTHY}


@pytest.mark.parametrize(
    ("text", "seconds"),
    [("90s", 90), ("15m", 900), ("24h", 86400), ("7d", 604800), ("2w", 1209600)],
)
def test_parse_duration(text: str, seconds: int) -> None:
    assert parse_duration(text).total_seconds() == seconds


@pytest.mark.parametrize("text", ["", "24", "h", "1.5h", "-1h", "0h", "3 fortnights"])
def test_parse_duration_rejects(text: str) -> None:
    with pytest.raises(InvalidWindow, match="e.g. 30m, 24h|longer than zero"):
        parse_duration(text)


def test_inverted_window_is_rejected(engine: Engine) -> None:
    with pytest.raises(InvalidWindow, match="at or after it ends"):
        get_uptime(engine, NOW, T0)
