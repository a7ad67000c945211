"""Built-in checks against real components: Postgres/SQLite up and down, moto S3 up and stopped,
aiosmtpd up and down, a local Slack stand-in, a read-only and a full landing filesystem, psutil,
and Dagster's own history (materializations, runs, daemon heartbeats)."""

import subprocess
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import dagster as dg
import pytest
from aiosmtpd.controller import Controller
from pytest_httpserver import HTTPServer

from healthmon_dagster.defs.health.instance_facts import InstanceFacts, make_s3_client
from healthmon_dagster.enums import HealthComponent, HealthStatus
from healthmon_dagster.health.context import CheckEnvironment
from healthmon_dagster.health.result import HealthCheck, HealthCheckResult
from healthmon_dagster.health.runner import HealthCheckRunner
from healthmon_dagster_tests.fixtures import free_port


def run(kind: str, env: CheckEnvironment | None = None, **params: object) -> HealthCheckResult:
    check = HealthCheck(
        f"{kind}_check",
        HealthComponent.NETWORK,
        kind,
        timeout_seconds=10,
        custom_parameters=params,
    )
    result = HealthCheckRunner(env or CheckEnvironment()).run_health_check(check)
    assert "Traceback" not in str(result.to_dict())
    return result


# --- database --------------------------------------------------------------------------------


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


# --- S3 --------------------------------------------------------------------------------------


def s3_env(bucket: str, endpoint: str) -> CheckEnvironment:
    return CheckEnvironment(
        s3_bucket=bucket,
        aws_endpoint_url=endpoint,
        aws_region="us-east-1",
        s3_client=make_s3_client,
    )


def test_s3_up_lists_one_key(s3_bucket: str, moto_server: str) -> None:
    result = run("s3", s3_env(s3_bucket, moto_server))

    assert result.status == HealthStatus.HEALTHY, result.errors
    assert result.metrics["head_bucket_ms"] > 0 and "list_ms" in result.metrics


def test_s3_missing_bucket_says_it_does_not_exist(s3_bucket: str, moto_server: str) -> None:
    result = run("s3", s3_env("no-such-bucket-" + uuid.uuid4().hex[:6], moto_server))

    assert result.status == HealthStatus.CRITICAL
    assert "does not exist" in result.errors[0]


def test_s3_stopped_server_is_critical_and_says_unreachable(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from moto.server import ThreadedMotoServer

    for k, v in {"AWS_ACCESS_KEY_ID": "t", "AWS_SECRET_ACCESS_KEY": "t"}.items():
        monkeypatch.setenv(k, v)
    port = free_port()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    endpoint = f"http://127.0.0.1:{port}"
    import boto3

    boto3.client("s3", endpoint_url=endpoint, region_name="us-east-1").create_bucket(
        Bucket="bucket-one"
    )
    assert run("s3", s3_env("bucket-one", endpoint)).status == HealthStatus.HEALTHY
    server.stop()

    result = run("s3", s3_env("bucket-one", endpoint))

    assert result.status == HealthStatus.CRITICAL
    assert f"S3 endpoint {endpoint} is unreachable for s3://bucket-one/" in result.errors[0]


# --- SMTP ------------------------------------------------------------------------------------


class _Sink:
    async def handle_DATA(self, server: object, session: object, envelope: object) -> str:
        return "250 OK"


def test_smtp_up_answers_ehlo_then_down_is_critical() -> None:
    port = free_port()
    controller = Controller(_Sink(), hostname="127.0.0.1", port=port)
    controller.start()
    try:
        up = run("smtp", host="127.0.0.1", port=port)
    finally:
        controller.stop()
    down = run("smtp", host="127.0.0.1", port=port)

    assert up.status == HealthStatus.HEALTHY, up.errors
    assert "ehlo_ms" in up.metrics
    assert down.status == HealthStatus.CRITICAL
    assert f"SMTP server 127.0.0.1:{port} is unavailable: Connection refused" in down.errors[0]


# --- Slack -----------------------------------------------------------------------------------


def test_slack_auth_test_ok_and_invalid_auth(
    httpserver: HTTPServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("TEST_SLACK_TOKEN", "xoxb-good")
    base = httpserver.url_for("/api/")
    httpserver.expect_ordered_request("/api/auth.test", method="POST").respond_with_json(
        {"ok": True, "team": "Data Platform", "user": "healthmon"}
    )
    httpserver.expect_ordered_request("/api/auth.test", method="POST").respond_with_json(
        {"ok": False, "error": "invalid_auth"}
    )

    ok = run("slack", token_env="TEST_SLACK_TOKEN", base_url=base)
    bad = run("slack", token_env="TEST_SLACK_TOKEN", base_url=base)

    assert ok.status == HealthStatus.HEALTHY, ok.errors
    assert bad.status == HealthStatus.CRITICAL
    assert bad.errors[0].startswith("Slack rejected the token in TEST_SLACK_TOKEN: invalid_auth")
    assert "xoxb-good" not in str(bad.to_dict())
    httpserver.check_assertions()


def test_slack_without_a_token_says_which_variable(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("TEST_SLACK_TOKEN", raising=False)

    result = run("slack", token_env="TEST_SLACK_TOKEN", base_url="http://127.0.0.1:9/")

    assert result.status == HealthStatus.CRITICAL
    assert "TEST_SLACK_TOKEN is not set" in result.errors[0]


# --- landing folder --------------------------------------------------------------------------


@pytest.fixture
def read_only_dir(tmp_path: Path) -> Iterator[Path]:
    """A read-only tmpfs mount (tests run as root, where chmod would not stop writes)."""
    target = tmp_path / "ro"
    target.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "ro,size=1m", "tmpfs", str(target)], check=True)
    try:
        yield target
    finally:
        subprocess.run(["umount", str(target)], check=True)


def test_landing_folder_on_a_read_only_filesystem_is_critical(read_only_dir: Path) -> None:
    env = CheckEnvironment(landing_dir=read_only_dir)
    # A 1 MB tmpfs: free-space thresholds off so only the write probe decides.
    result = run("landing_folder", env, free_space_warning_mb=0, free_space_critical_mb=0)

    assert result.status == HealthStatus.CRITICAL
    assert result.errors == [
        f"landing folder {read_only_dir} is not writable: Read-only file system; new files "
        "cannot land there: fix the permissions or remount it read-write"
    ]


def test_landing_folder_that_cannot_be_created_is_critical(tmp_path: Path) -> None:
    (tmp_path / "plain_file").write_text("x")
    folder = tmp_path / "plain_file" / "landing"

    result = run("landing_folder", CheckEnvironment(landing_dir=folder))

    assert result.status == HealthStatus.CRITICAL
    assert (
        "cannot be created" in result.errors[0] and "is a file, not a directory" in result.errors[0]
    )


def test_landing_folder_writable_and_full(tmp_path: Path) -> None:
    env = CheckEnvironment(landing_dir=tmp_path)
    ok = run("landing_folder", env)
    huge = 1e12  # MB: more than any real free space
    full = run("landing_folder", env, free_space_critical_mb=huge)

    assert ok.status == HealthStatus.HEALTHY, ok.errors
    assert ok.metrics["writable"] == 1 and ok.metrics["free_mb"] > 0
    assert full.status == HealthStatus.CRITICAL
    assert f"free space on the filesystem of {tmp_path} is" in full.errors[0]
    assert "below the critical threshold 1e+12 MB" in full.errors[0]


def test_landing_folder_warns_about_pending_files(tmp_path: Path) -> None:
    for i in range(3):
        (tmp_path / f"patients_{i}.csv").write_text("Id\n")
    result = run("landing_folder", CheckEnvironment(landing_dir=tmp_path), max_pending_files=2)

    assert result.status == HealthStatus.WARNING
    assert result.metrics["pending_files"] == 3
    assert "pending landing files is 3, above the warning threshold 2" in result.warnings[0]


# --- network and system ----------------------------------------------------------------------


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


# --- Dagster history -------------------------------------------------------------------------


@dg.asset(key=["raw", "patients"])
def fake_raw() -> None:
    """Stands in for the pipeline's asset: only its materialization events matter here."""


@dg.op
def maybe_fail(context: dg.OpExecutionContext) -> None:
    if context.run.tags.get("fail") == "yes":
        raise dg.Failure("planned failure")


@dg.job(name="patients_etl_job")
def fake_etl_job() -> None:
    maybe_fail()


def test_etl_component_reads_materialization_age_and_failure_rate() -> None:
    with dg.instance_for_test() as instance:
        env = CheckEnvironment(dagster=InstanceFacts(instance))
        never = run("etl_component", env, assets=["raw/patients"])
        dg.materialize([fake_raw], instance=instance)
        for fail in ("no", "yes", "yes"):
            fake_etl_job.execute_in_process(
                instance=instance, tags={"fail": fail}, raise_on_error=False
            )
        result = run("etl_component", env, assets=["raw/patients"])

    assert never.status == HealthStatus.WARNING
    assert "asset raw/patients has never been materialized" in never.warnings[0]
    assert result.metrics["raw_patients.age_minutes"] < 1
    assert result.status == HealthStatus.CRITICAL
    assert result.errors == [
        "failure rate of the last 3 patients_etl_job runs (2 failed) is 0.7, above the critical "
        "threshold 0.5"
    ]


def test_daemon_heartbeats_missing_then_fresh() -> None:
    from dagster._daemon.types import DaemonHeartbeat  # no public way to fake a live daemon

    with dg.instance_for_test() as instance:
        env = CheckEnvironment(dagster=InstanceFacts(instance))
        down = run("daemon", env, daemon_types=["SCHEDULER", "SENSOR"])
        for daemon_type in ("SCHEDULER", "SENSOR"):
            instance.add_daemon_heartbeat(DaemonHeartbeat(time.time(), daemon_type, "test"))
        up = run("daemon", env, daemon_types=["SCHEDULER", "SENSOR"])

    assert down.status == HealthStatus.CRITICAL
    assert down.errors == [
        "2 Dagster daemon(s) never sent a heartbeat (SCHEDULER, SENSOR): schedules and sensors "
        "do not run; start `dagster-daemon run` (or `dagster dev`) with this DAGSTER_HOME"
    ]
    assert up.status == HealthStatus.HEALTHY, up.errors
    assert up.metrics["daemons_healthy"] == 2
