"""The network check (TCP to a refusing endpoint) and the system-resources thresholds."""

from pytest_httpserver import HTTPServer

from healthmon_dagster.enums import HealthStatus
from healthmon_dagster_tests.fixtures import free_port
from healthmon_dagster_tests.health.checks.fixtures import run


def test_network_reports_the_endpoint_that_refuses(httpserver: HTTPServer) -> None:
    closed = free_port()
    result = run(
        "network",
        endpoints=[f"127.0.0.1:{httpserver.port}", f"127.0.0.1:{closed}"],
        dns_names=["localhost"],
    )

    assert result.status == HealthStatus.CRITICAL
    assert result.errors == [
        f"TCP connect to 127.0.0.1:{closed} failed: Connection refused; check that the service "
        "is up and that no firewall blocks it"
    ]
    assert result.metrics["endpoints_reachable"] == 1


def test_system_resources_thresholds_come_from_parameters() -> None:
    calm = run(
        "system_resources",
        cpu_percent_warning=101,
        cpu_percent_critical=101,
        load_per_cpu_warning=1000,
        load_per_cpu_critical=1000,
    )
    strained = run(
        "system_resources",
        memory_percent_warning=0.0001,
        disk_percent_critical=0.0001,
        cpu_percent_warning=101,
        cpu_percent_critical=101,
    )

    assert {"cpu_percent", "memory_percent", "disk_percent", "load_1m", "process_rss_mb"} <= set(
        calm.metrics
    )
    assert strained.status == HealthStatus.CRITICAL
    assert any(e.startswith("disk usage of . is") for e in strained.errors)
    assert any(w.startswith("memory usage is") for w in strained.warnings)
