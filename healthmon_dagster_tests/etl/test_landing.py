"""Landing sources: listing, reading and writing a local folder or an S3 bucket, and how
``open_landing_source`` picks one and builds the S3 client from the factory it is given."""

import hashlib
import os
from pathlib import Path
from typing import Any

import boto3
import pytest
from botocore.config import Config

from healthmon_dagster.etl.landing import (
    LandingError,
    LandingFileExists,
    LandingFileMissing,
    LocalLandingSource,
    S3LandingSource,
    open_landing_source,
)
from healthmon_dagster_tests.fixtures import free_port


def test_local_source_lists_matching_files_oldest_first(tmp_path: Path) -> None:
    source = LocalLandingSource(tmp_path / "landing")
    assert source.list_files() == []  # a folder not created yet is empty, not an error
    source.put("b/patients_2.csv", b"two")
    source.put("patients_1.csv", b"one!")
    source.put("notes.txt", b"x")
    os.utime(tmp_path / "landing" / "patients_1.csv", (1_000, 1_000))

    listed = source.list_files("patients*.csv")

    assert [f.key for f in listed] == ["patients_1.csv", "b/patients_2.csv"]
    first = listed[0]
    assert (first.size, first.last_modified, first.name) == (4, 1_000.0, "patients_1.csv")
    assert first.fingerprint.startswith("4-")  # size and mtime: a rewrite changes it
    assert [f.name for f in source.list_files("*.txt")] == ["notes.txt"]
    assert not list((tmp_path / "landing").glob(".*.tmp"))  # writes go through a renamed temp


def test_local_source_reads_the_file_in_place_and_refuses_keys_outside_it(tmp_path: Path) -> None:
    source = LocalLandingSource(tmp_path / "landing")
    source.put("patients_1.csv", b"data")

    with source.download("patients_1.csv") as path:
        assert path == (tmp_path / "landing" / "patients_1.csv").resolve()
        assert path.read_bytes() == b"data"
    with pytest.raises(LandingFileMissing, match="disappeared"), source.download("gone.csv"):
        pass
    with pytest.raises(LandingError, match="outside"):
        source.put("../escape.csv", b"x")


def s3(moto_server: str) -> Any:
    return boto3.client("s3", endpoint_url=moto_server, region_name="us-east-1")


def test_s3_source_lists_under_its_prefix_with_etags(moto_server: str, s3_bucket: str) -> None:
    source = S3LandingSource(s3(moto_server), s3_bucket, "incoming/")
    source.put("patients_1.csv", b"one")  # the prefix is added to a bare key
    source.put("incoming/notes.txt", b"x")
    s3(moto_server).put_object(Bucket=s3_bucket, Key="elsewhere/patients_9.csv", Body=b"no")

    (listed,) = source.list_files("patients*.csv")

    assert listed.key == "incoming/patients_1.csv" and listed.size == 3
    assert listed.fingerprint == hashlib.md5(b"one").hexdigest()
    with source.download(listed.key) as path:
        assert path.read_bytes() == b"one"
    assert not path.exists()  # the local copy lives for the block only
    with (
        pytest.raises(LandingFileMissing, match="disappeared"),
        source.download("incoming/gone.csv"),
    ):
        pass


def test_s3_endpoint_down_gives_a_clear_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    endpoint = f"http://127.0.0.1:{free_port()}"
    client = boto3.client(
        "s3",
        endpoint_url=endpoint,
        region_name="us-east-1",
        config=Config(connect_timeout=1, retries={"max_attempts": 1, "mode": "standard"}),
    )
    with pytest.raises(LandingError) as excinfo:
        S3LandingSource(client, "landing", "in/").list_files()
    message = str(excinfo.value)
    assert "could not list s3://landing/in/" in message
    assert endpoint in message
    assert "reachable" in message


def test_open_without_a_bucket_is_the_local_folder(tmp_path: Path) -> None:
    def no_client(*args: object) -> Any:
        raise AssertionError("no S3 client is built without a bucket")

    source = open_landing_source(None, "", None, None, tmp_path, client_factory=no_client)

    assert isinstance(source, LocalLandingSource) and source.root == tmp_path


def test_open_with_a_bucket_uses_the_client_of_the_factory(tmp_path: Path) -> None:
    calls: list[tuple[object, ...]] = []
    client = object()

    def factory(endpoint_url: str | None, region_name: str | None, max_attempts: int) -> Any:
        calls.append((endpoint_url, region_name, max_attempts))
        return client

    source = open_landing_source(
        "bucket",
        "in/",
        "http://s3.test",
        "eu-west-1",
        tmp_path,
        client_factory=factory,
        max_attempts=1,
    )

    assert isinstance(source, S3LandingSource)
    assert (source.client, source.bucket, source.prefix) == (client, "bucket", "in/")
    assert source.description == "s3://bucket/in/"
    assert calls == [("http://s3.test", "eu-west-1", 1)]


def test_a_client_that_cannot_be_built_is_a_landing_error(tmp_path: Path) -> None:
    message = "malformed endpoint"

    def broken(*args: object) -> Any:
        raise ValueError(message)

    with pytest.raises(LandingError) as excinfo:
        open_landing_source(
            "bucket", "in/", "127.0.0.1:9000", None, tmp_path, client_factory=broken
        )

    text = str(excinfo.value)
    assert "s3://bucket/in/" in text and "127.0.0.1:9000" in text and message in text


def test_a_bucket_without_a_client_factory_is_a_landing_error(tmp_path: Path) -> None:
    with pytest.raises(LandingError, match=r"no S3 client factory to reach s3://bucket/in/"):
        open_landing_source("bucket", "in/", None, None, tmp_path, client_factory=None)


def test_a_write_that_must_not_overwrite_leaves_an_existing_local_file(tmp_path: Path) -> None:
    source = LocalLandingSource(tmp_path)
    source.put("patients_0001.csv", b"first")

    with pytest.raises(LandingFileExists, match="nothing was overwritten"):
        source.put("patients_0001.csv", b"second", overwrite=False)

    assert (tmp_path / "patients_0001.csv").read_bytes() == b"first"
    assert [p.name for p in tmp_path.iterdir()] == ["patients_0001.csv"]  # no temporary left
    source.put("patients_0001.csv", b"third")  # the default overwrites, atomically
    assert (tmp_path / "patients_0001.csv").read_bytes() == b"third"


def test_a_write_that_must_not_overwrite_leaves_an_existing_s3_object(
    s3_bucket: str, moto_server: str
) -> None:
    client = boto3.client("s3", endpoint_url=moto_server, region_name="us-east-1")
    source = S3LandingSource(client, s3_bucket, "in/")
    source.put("patients_0001.csv", b"first", overwrite=False)

    with pytest.raises(LandingFileExists, match="nothing was overwritten"):
        source.put("patients_0001.csv", b"second", overwrite=False)

    body = client.get_object(Bucket=s3_bucket, Key="in/patients_0001.csv")["Body"].read()
    assert body == b"first"
