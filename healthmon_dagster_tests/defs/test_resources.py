"""The shared resources: the configuration read once per file version, the landing source built
from the settings with its S3 client from dagster-aws."""

import os
from pathlib import Path

import pytest

from healthmon_dagster.config import ConfigError
from healthmon_dagster.defs.resources import HealthmonConfigResource, LandingResource, s3_client
from healthmon_dagster.etl.landing import LocalLandingSource, S3LandingSource


def test_config_resource_reads_the_configured_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "healthmon.yaml"
    path.write_text("landing:\n  file_pattern: 'a*.csv'\n")
    monkeypatch.setenv("HEALTHMON_CONFIG", str(path))

    resource = HealthmonConfigResource()

    assert resource.path() == path
    assert resource.load().landing.file_pattern == "a*.csv"
    assert resource.load() is resource.load()  # parsed once
    other = tmp_path / "other.yaml"
    other.write_text("landing:\n  file_pattern: 'b*.csv'\n")
    assert HealthmonConfigResource(config_path=str(other)).load().landing.file_pattern == "b*.csv"


def test_an_edited_config_file_is_read_again(tmp_path: Path) -> None:
    path = tmp_path / "healthmon.yaml"
    path.write_text("retention:\n  metrics_days: 30\n")
    resource = HealthmonConfigResource(config_path=str(path))
    assert resource.load().retention.metrics_days == 30

    path.write_text("retention:\n  metrics_days: 7\n")
    os.utime(path, ns=(1, 1))  # another version even on a coarse-mtime filesystem

    assert resource.load().retention.metrics_days == 7


def test_an_invalid_or_missing_config_raises_each_time(tmp_path: Path) -> None:
    path = tmp_path / "healthmon.yaml"
    resource = HealthmonConfigResource(config_path=str(path))
    with pytest.raises(ConfigError, match="not found"):
        resource.load()
    path.write_text("retention:\n  metrics_dayz: 30\n")
    with pytest.raises(ConfigError):
        resource.load()
    path.write_text("retention:\n  metrics_days: 30\n")
    assert resource.load().retention.metrics_days == 30


def test_landing_resource_is_the_local_folder_without_a_bucket(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("HEALTHMON_S3_BUCKET", raising=False)
    monkeypatch.setenv("HEALTHMON_HOME", str(tmp_path))

    source = LandingResource().source()

    assert isinstance(source, LocalLandingSource) and source.root == tmp_path / "landing"
    assert LandingResource(local_dir=str(tmp_path / "x")).source().description.endswith("/x")


def test_landing_resource_builds_the_s3_client(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HEALTHMON_S3_BUCKET", "landing")
    monkeypatch.setenv("HEALTHMON_S3_PREFIX", "incoming/")
    monkeypatch.setenv("AWS_ENDPOINT_URL", "http://127.0.0.1:9")
    monkeypatch.delenv("AWS_PROFILE", raising=False)

    source = LandingResource(region_name="eu-west-1").source()

    assert isinstance(source, S3LandingSource)
    assert source.description == "s3://landing/incoming/"
    meta = source.client.meta
    assert (meta.endpoint_url, meta.region_name) == ("http://127.0.0.1:9", "eu-west-1")
    assert meta.config.retries["total_max_attempts"] == 3  # max_attempts=2 retries, plus the call


def test_s3_client_has_the_endpoint_region_and_bounded_retries(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv("AWS_PROFILE", raising=False)
    client = s3_client("http://127.0.0.1:9", "eu-west-1", 3)

    assert client.meta.endpoint_url == "http://127.0.0.1:9"
    assert client.meta.region_name == "eu-west-1"
    # botocore counts the first call too: 3 retries are 4 attempts in all.
    assert client.meta.config.retries == {"total_max_attempts": 4, "mode": "standard"}
