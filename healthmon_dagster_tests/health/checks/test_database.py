"""The database check against real SQLite and Postgres, and a closed port."""

from healthmon_dagster.enums import HealthStatus
from healthmon_dagster.health.context import CheckEnvironment
from healthmon_dagster_tests.fixtures import free_port
from healthmon_dagster_tests.health.checks.fixtures import run


def test_database_up_reports_latency_and_size(db_url: str, engine: object) -> None:
    result = run("database", CheckEnvironment(database_url=db_url, health_database_url=db_url))

    assert result.status == HealthStatus.HEALTHY, result.errors
    assert result.metrics["query_time_ms"] > 0
    assert result.metrics["database_size_bytes"] > 0
    if db_url.startswith("postgresql"):
        assert 0 < result.metrics["connections"] <= result.metrics["max_connections"]


def test_database_on_a_closed_port_is_critical_and_names_it() -> None:
    url = f"postgresql+psycopg2://postgres:s3cret@127.0.0.1:{free_port()}/healthmon"

    result = run("database", CheckEnvironment(database_url=url, health_database_url=url))

    assert result.status == HealthStatus.CRITICAL
    assert "warehouse database postgresql+psycopg2://postgres:***@127.0.0.1" in result.errors[0]
    assert "is unavailable: OperationalError" in result.errors[0]
    assert "s3cret" not in str(result.to_dict())


def test_database_connection_usage_above_threshold_warns(db_url: str, engine: object) -> None:
    if not db_url.startswith("postgresql"):
        # SQLite has no connection limit: the size threshold is its capacity signal.
        result = run("database", CheckEnvironment(database_url=db_url), size_warning_gb=1e-9)
        assert result.status == HealthStatus.WARNING
        assert "warehouse size is" in result.warnings[0]
        return
    result = run(
        "database", CheckEnvironment(database_url=db_url), connections_warning_percent=0.001
    )
    assert result.status == HealthStatus.WARNING
    assert "connections in use" in result.warnings[0]
