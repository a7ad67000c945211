"""Landing sources: where patient CSV files arrive. One interface, two implementations.

``S3LandingSource`` reads a bucket/prefix through a boto3 client it is given (the Dagster resource
builds it, see ``healthmon_dagster.defs.resources``); ``LocalLandingSource`` reads a folder (the
embedded default). Sensors and assets only see :class:`LandingSource`, never which one it is.
"""

import fnmatch
import hashlib
import os
import shutil
import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any, Protocol

S3ClientFactory = Callable[[str | None, str | None, int], Any]
"""Builds a boto3 S3 client from ``(endpoint_url, region_name, max_attempts)``."""


class LandingError(Exception):
    """A landing source could not be read; the message says which source and what to do."""


class LandingFileMissing(LandingError):
    """A file that was listed is gone by the time it is read."""


class LandingFileUnreadable(LandingError):
    """Transient: a landed file could not be read (permission denied, an I/O error) or changed
    while it was read. Nothing was loaded and, its content being unknown, nothing recorded in
    ``etl.files``: load it again later."""


class LandingFileExists(LandingError):
    """A write that must not overwrite found the key taken."""


@dataclass(frozen=True)
class LandingFile:
    key: str
    size: int
    fingerprint: str  # cheap identity of this version of the file: S3 ETag, or size+mtime locally
    last_modified: float  # unix seconds

    @property
    def name(self) -> str:
        return self.key.rsplit("/", 1)[-1]


class LandingSource(Protocol):
    description: str

    def list_files(self, pattern: str = "*.csv") -> list[LandingFile]:
        """Files whose base name matches ``pattern``, oldest first."""
        ...

    @contextmanager
    def download(self, key: str) -> Iterator[Path]:
        """A local copy of ``key`` for the duration of the block (the original file when local)."""
        ...

    def put(self, key: str, data: bytes, overwrite: bool = True) -> None:
        """Write ``data`` at ``key`` (used by the sample generator and tests); with
        ``overwrite=False`` an existing key raises :class:`LandingFileExists`."""
        ...


def sha256_file(path: Path, chunk_size: int = 1 << 20) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(chunk_size):
            h.update(chunk)
    return h.hexdigest()


class LocalLandingSource:
    """A folder on the local filesystem (created on first use)."""

    def __init__(self, root: Path) -> None:
        self.root = Path(root)
        self.description = f"local folder {self.root}"

    def list_files(self, pattern: str = "*.csv") -> list[LandingFile]:
        if not self.root.exists():
            return []
        files = []
        for path in self.root.rglob("*"):
            if not path.is_file() or not fnmatch.fnmatch(path.name, pattern):
                continue
            try:
                st = path.stat()
            except FileNotFoundError:  # removed while listing
                continue
            files.append(
                LandingFile(
                    key=path.relative_to(self.root).as_posix(),
                    size=st.st_size,
                    fingerprint=f"{st.st_size}-{st.st_mtime_ns}",
                    last_modified=st.st_mtime,
                )
            )
        return sorted(files, key=lambda f: (f.last_modified, f.key))

    def _path(self, key: str) -> Path:
        path = (self.root / key).resolve()
        if self.root.resolve() not in path.parents:
            raise LandingError(f"landing key {key!r} points outside {self.description}")
        return path

    @contextmanager
    def download(self, key: str) -> Iterator[Path]:
        path = self._path(key)
        if not path.is_file():
            raise LandingFileMissing(
                f"landing file {key!r} is no longer in {self.description}: it disappeared between "
                "listing and reading; nothing was loaded (if it was moved, its new key is loaded "
                "when the sensor sees it)"
            )
        yield path

    def put(self, key: str, data: bytes, overwrite: bool = True) -> None:
        path = self._path(key)
        path.parent.mkdir(parents=True, exist_ok=True)
        # A temporary file of its own (two writers never share one), then one atomic step:
        # readers never see a half-written file.
        fd, name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
        tmp = Path(name)
        try:
            with os.fdopen(fd, "wb") as f:
                f.write(data)
            if overwrite:
                os.replace(tmp, path)
            else:
                os.link(tmp, path)  # fails if the name exists, even when another writer won
        except FileExistsError:
            raise LandingFileExists(
                f"{key!r} already exists in {self.description}; nothing was overwritten"
            ) from None
        finally:
            tmp.unlink(missing_ok=True)


class S3LandingSource:
    """Objects under ``s3://bucket/prefix`` read through a boto3 S3 client."""

    def __init__(self, client: Any, bucket: str, prefix: str = "") -> None:
        self.client = client
        self.bucket = bucket
        self.prefix = prefix
        self.description = f"s3://{bucket}/{prefix}"

    def _error(self, exc: Exception, action: str) -> LandingError:
        endpoint = getattr(getattr(self.client, "meta", None), "endpoint_url", None)
        return LandingError(
            f"could not {action} {self.description} (endpoint {endpoint}): "
            f"{type(exc).__name__}: {exc}. Check that the endpoint is reachable, the bucket exists "
            "and the credentials allow it."
        )

    def list_files(self, pattern: str = "*.csv") -> list[LandingFile]:
        files = []
        try:
            paginator = self.client.get_paginator("list_objects_v2")
            for page in paginator.paginate(Bucket=self.bucket, Prefix=self.prefix):
                for obj in page.get("Contents", []):
                    key = obj["Key"]
                    if key.endswith("/") or not fnmatch.fnmatch(key.rsplit("/", 1)[-1], pattern):
                        continue
                    files.append(
                        LandingFile(
                            key=key,
                            size=int(obj["Size"]),
                            fingerprint=str(obj["ETag"]).strip('"'),
                            last_modified=obj["LastModified"].timestamp(),
                        )
                    )
        except Exception as exc:
            raise self._error(exc, "list") from exc
        return sorted(files, key=lambda f: (f.last_modified, f.key))

    @contextmanager
    def download(self, key: str) -> Iterator[Path]:
        tmpdir = tempfile.mkdtemp(prefix="healthmon-landing-")
        target = Path(tmpdir) / key.rsplit("/", 1)[-1]
        try:
            try:
                body: IO[bytes] = self.client.get_object(Bucket=self.bucket, Key=key)["Body"]
                with open(target, "wb") as out:
                    shutil.copyfileobj(body, out, 1 << 20)
            except Exception as exc:
                code = getattr(exc, "response", {}).get("Error", {}).get("Code")
                if code in ("NoSuchKey", "404"):
                    raise LandingFileMissing(
                        f"landing file {key!r} is no longer in {self.description}: it disappeared "
                        "between listing and reading; nothing was loaded"
                    ) from exc
                raise self._error(exc, f"read {key!r} from") from exc
            yield target
        finally:
            shutil.rmtree(tmpdir, ignore_errors=True)

    def put(self, key: str, data: bytes, overwrite: bool = True) -> None:
        full_key = key if key.startswith(self.prefix) else f"{self.prefix}{key}"
        # A conditional write (If-None-Match: *) fails when the key exists, even when another
        # writer created it a moment ago.
        condition = {} if overwrite else {"IfNoneMatch": "*"}
        try:
            self.client.put_object(Bucket=self.bucket, Key=full_key, Body=data, **condition)
        except Exception as exc:
            code = str(getattr(exc, "response", {}).get("Error", {}).get("Code", ""))
            if code in ("PreconditionFailed", "412"):
                raise LandingFileExists(
                    f"{full_key!r} already exists in {self.description}; nothing was overwritten"
                ) from None
            raise self._error(exc, f"write {full_key!r} to") from exc


def open_landing_source(
    s3_bucket: str | None,
    s3_prefix: str,
    endpoint_url: str | None,
    region_name: str | None,
    local_dir: Path,
    client_factory: S3ClientFactory | None,
    max_attempts: int = 2,
) -> LandingSource:
    """S3 when a bucket is given, through a client from ``client_factory`` (the Dagster resource
    passes one built by dagster-aws), else the local folder.

    Raises:
        LandingError: a bucket is given but no client factory, or the client cannot be built.

    ``max_attempts`` bounds botocore's retries: a sensor tick against an endpoint that is down
    should report it in seconds, not after five backed-off attempts.
    """
    if not s3_bucket:
        return LocalLandingSource(local_dir)
    if client_factory is None:
        raise LandingError(
            f"no S3 client factory to reach s3://{s3_bucket}/{s3_prefix}: the caller must pass "
            "one (the Dagster resources do)"
        )
    try:
        client = client_factory(endpoint_url, region_name, max_attempts)
    except Exception as exc:  # botocore raises plain ValueErrors for a malformed endpoint URL
        raise LandingError(
            f"could not create an S3 client for s3://{s3_bucket}/{s3_prefix} (endpoint "
            f"{endpoint_url}): {type(exc).__name__}: {exc}. Check AWS_ENDPOINT_URL and AWS_REGION."
        ) from exc
    return S3LandingSource(client, s3_bucket, s3_prefix)
