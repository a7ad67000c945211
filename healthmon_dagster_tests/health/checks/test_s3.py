"""The S3 check against a real moto S3 server: up, a missing bucket, the server stopped."""

import uuid

import boto3
import pytest
from moto.server import ThreadedMotoServer

from healthmon_dagster.defs.resources import s3_client
from healthmon_dagster.enums import HealthStatus
from healthmon_dagster.health.context import CheckEnvironment
from healthmon_dagster_tests.fixtures import free_port
from healthmon_dagster_tests.health.checks.fixtures import run


def s3_env(bucket: str, endpoint: str) -> CheckEnvironment:
    return CheckEnvironment(
        s3_bucket=bucket,
        aws_endpoint_url=endpoint,
        aws_region="us-east-1",
        s3_client=s3_client,
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
    for k, v in {"AWS_ACCESS_KEY_ID": "t", "AWS_SECRET_ACCESS_KEY": "t"}.items():
        monkeypatch.setenv(k, v)
    port = free_port()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    endpoint = f"http://127.0.0.1:{port}"
    boto3.client("s3", endpoint_url=endpoint, region_name="us-east-1").create_bucket(
        Bucket="bucket-one"
    )
    assert run("s3", s3_env("bucket-one", endpoint)).status == HealthStatus.HEALTHY
    server.stop()

    result = run("s3", s3_env("bucket-one", endpoint))

    assert result.status == HealthStatus.CRITICAL
    assert f"S3 endpoint {endpoint} is unreachable for s3://bucket-one/" in result.errors[0]
