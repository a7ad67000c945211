"""The capacity health check: disk, database size and table growth forecasts from the health store."""

import random
from datetime import UTC, datetime, timedelta

from sqlalchemy.engine import Engine

from healthmon_dagster.enums import HealthComponent, HealthStatus
from healthmon_dagster.health.context import CheckEnvironment
from healthmon_dagster.health.result import HealthCheck
from healthmon_dagster.health.runner import HealthCheckRunner
from healthmon_dagster.store.metrics import MetricPoint, write_metrics

NOW = datetime.now(UTC)


def _capacity(db_url: str, **params: object) -> tuple[HealthStatus, dict[str, object], list[str]]:
    check = HealthCheck(
        "capacity",
        HealthComponent.SYSTEM_RESOURCES,
        "capacity",
        timeout_seconds=20,
        custom_parameters=params,
    )
    env = CheckEnvironment(database_url=db_url, health_database_url=db_url)
    result = HealthCheckRunner(env).run_health_check(check)
    return result.status, result.metrics, result.errors + result.warnings


def _disk(engine: Engine, values: list[float]) -> None:
    start = NOW - timedelta(days=len(values) / 4)
    write_metrics(
        engine,
        [
            MetricPoint(
                "system_resources",
                "system_resources.disk_percent",
                v,
                "%",
                ts=start + timedelta(hours=6 * i),
            )
            for i, v in enumerate(values)
        ],
    )


def test_disk_filling_up_is_critical_with_days_until_full(engine: Engine, db_url: str) -> None:
    # 60% -> 80% over 5 days: 4 points a day, full in about 5 more days (< fail_days 7).
    _disk(engine, [60 + i for i in range(21)])
    status, metrics, messages = _capacity(db_url, database_size_metric="", tables=[])
    assert status == HealthStatus.CRITICAL
    assert 3 < metrics["disk.days_until_full"] < 7
    assert any("disk" in m for m in messages)


def test_noise_gives_no_forecast_and_no_alert(engine: Engine, db_url: str) -> None:
    rng = random.Random(5)
    _disk(engine, [70 + rng.uniform(-3, 3) for _ in range(40)])
    status, metrics, messages = _capacity(db_url, database_size_metric="", tables=[])
    assert status == HealthStatus.HEALTHY, messages
    assert "disk.days_until_full" not in metrics and messages == []


def test_no_history_is_unknown_not_an_alert(engine: Engine, db_url: str) -> None:
    status, metrics, messages = _capacity(db_url)
    assert status == HealthStatus.UNKNOWN
    assert messages == ["not enough history for a forecast yet (see details per resource)"]
    assert set(metrics) == {"response_time_ms"}


def test_table_rows_summed_from_loads_forecast_against_a_row_limit(
    engine: Engine, db_url: str
) -> None:
    write_metrics(
        engine,
        [
            MetricPoint(
                "raw_loader",
                "rows_loaded",
                10_000,
                "rows",
                {"asset": "raw/patients"},
                ts=NOW - timedelta(days=20 - i),
            )
            for i in range(20)
        ],
    )
    tables = [
        {
            "table": "raw.patients",
            "component": "raw_loader",
            "metric": "rows_loaded",
            "asset": "raw/patients",
            "cumulative": True,
            "max_rows": 250_000,
        }
    ]
    status, metrics, _ = _capacity(db_url, disk_metric="", database_size_metric="", tables=tables)
    # 200,000 rows a day ago, growing 10,000 a day: the 250,000 limit is about 4 days away.
    assert status == HealthStatus.CRITICAL
    assert 3.5 < metrics["table.raw.patients.days_until_full"] < 4.5
    assert 9_000 < metrics["table.raw.patients.growth_per_day"] < 11_000
