"""S3 landing check: head the bucket and list one key under the prefix, with latencies.

The client comes from ``environment.s3_client`` (built like the landing source's). Parameters: ``bucket``,
``prefix``, ``endpoint_url`` (default: the landing settings), ``latency_warning_ms`` (1000),
``latency_critical_ms`` (5000). Without a bucket (embedded mode) there is no S3 to reach: the
check sets ``details.skipped``, and the result is stored and shown as not monitored.
"""

import time
from typing import Any

from healthmon_dagster.health.context import CheckContext, CheckEnvironment
from healthmon_dagster.health.kind import builtin
from healthmon_dagster.health.result import CheckFailed, HealthCheck, Observation


def _client(env: CheckEnvironment, endpoint_url: str | None, region: str | None) -> Any:
    if env.s3_client is None:
        raise CheckFailed(
            "the S3 check has no S3 client factory (CheckEnvironment.s3_client); run it from the "
            "health job"
        )
    try:
        return env.s3_client(endpoint_url, region, 1)  # one attempt: a check reports, not retries
    except Exception as exc:  # botocore raises ValueError for a malformed endpoint URL
        raise CheckFailed(
            f"could not create an S3 client for endpoint {endpoint_url}: {type(exc).__name__}: "
            f"{exc}. Check AWS_ENDPOINT_URL and AWS_REGION"
        ) from None


def _explain(exc: Exception, where: str, endpoint: str | None) -> str:
    code = str(getattr(exc, "response", {}).get("Error", {}).get("Code", ""))
    if code in ("404", "NoSuchBucket"):
        return f"{where} does not exist (endpoint {endpoint}); create it or fix HEALTHMON_S3_BUCKET"
    if code in ("403", "AccessDenied", "InvalidAccessKeyId", "SignatureDoesNotMatch"):
        return f"access to {where} denied ({code}); check the AWS credentials and bucket policy"
    name = type(exc).__name__
    if name in ("EndpointConnectionError", "ConnectTimeoutError", "ConnectionClosedError"):
        return (
            f"S3 endpoint {endpoint} is unreachable for {where} ({name}); check that it is up, "
            "AWS_ENDPOINT_URL and the network"
        )
    first = str(exc).splitlines()[0] if str(exc) else ""
    return f"S3 request for {where} failed (endpoint {endpoint}): {name}: {first}"


@builtin(
    "s3",
    params=(
        "bucket",
        "endpoint_url",
        "latency_critical_ms",
        "latency_warning_ms",
        "prefix",
        "region",
    ),
)
def s3_check(check: HealthCheck, ctx: CheckContext) -> Observation:
    """The landing bucket answers: head_bucket and a one-key listing, each timed."""
    env = ctx.environment
    bucket = check.param("bucket", env.s3_bucket)
    prefix = check.param("prefix", env.s3_prefix)
    endpoint = check.param("endpoint_url", env.aws_endpoint_url)
    obs = Observation(details={"bucket": bucket, "prefix": prefix, "endpoint": endpoint})
    if not bucket:
        obs.details["skipped"] = "no S3 bucket configured: landing is the local folder"
        return obs
    client = _client(env, endpoint, check.param("region", env.aws_region))
    where = f"s3://{bucket}/{prefix}"
    start = time.perf_counter()
    try:
        client.head_bucket(Bucket=bucket)
        head_ms = (time.perf_counter() - start) * 1000
        t = time.perf_counter()
        page = client.list_objects_v2(Bucket=bucket, Prefix=prefix, MaxKeys=1)
        list_ms = (time.perf_counter() - t) * 1000
    except Exception as exc:
        obs.metric("connection_time_ms", (time.perf_counter() - start) * 1000)
        return obs.error(_explain(exc, where, endpoint))
    obs.metric("head_bucket_ms", head_ms)
    obs.metric("key_count", int(page.get("KeyCount", 0)))
    obs.threshold(
        "list_ms",
        list_ms,
        check.float_param("latency_warning_ms", 1000),
        check.float_param("latency_critical_ms", 5000),
        f"listing {where}",
        "ms",
    )
    obs.metric("connection_time_ms", head_ms + list_ms)
    return obs
