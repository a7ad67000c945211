"""Current system status from etl.check_results: component and overall rules, figures, JSON."""

import pytest
from sqlalchemy.engine import Engine

from healthmon_dagster.enums import HealthStatus
from healthmon_dagster.health.status import get_component_status, get_system_status, overall_status
from healthmon_dagster_tests.health.fixtures import (
    NOW,
    H,
    M,
    insert_load_run,
    insert_results,
    result,
    series,
)


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


def test_a_skipped_check_is_not_monitored_never_healthy(engine: Engine) -> None:
    skipped = {"status": "unknown", "details": {"skipped": "no S3 bucket configured"}}
    insert_results(
        engine,
        [
            result(NOW - 2 * M, "database", "db_ping", "healthy"),
            {**result(NOW - 2 * M, "s3_discovery", "s3_landing", "healthy"), **skipped},
            {**result(NOW - 1 * M, "filesystem", "s3_mirror", "healthy"), **skipped},
            result(NOW - 1 * M, "filesystem", "landing_writable", "healthy"),
        ],
    )

    status = get_system_status(engine, now=NOW, window=24 * H, stale_after=15 * M)

    s3 = status.component("s3_discovery")
    assert not s3.monitored and s3.status == HealthStatus.UNKNOWN and s3.uptime is None
    assert s3.description.startswith("not monitored: s3_landing")
    assert s3.results_in_window == 0 and s3.last_check is None
    fs = status.component("filesystem")
    assert fs.monitored and fs.status == HealthStatus.HEALTHY
    assert fs.description == "all 1 check(s) healthy; not monitored: s3_mirror"
    assert status.overall_health == HealthStatus.HEALTHY  # a skipped check is no monitoring gap


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
