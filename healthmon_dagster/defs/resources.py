"""Dagster resources shared by every domain: the configuration, the databases, the landing source.

Every field is optional: an unset field falls back to ``healthmon_dagster.settings`` (the environment,
read when the resource is used, not at import), so the embedded default needs no configuration and a
deployment sets ``HEALTHMON_*`` variables or passes ``dg.EnvVar`` values here.

The S3 client of the landing source is built here (through dagster-aws ``S3Resource``) and handed to
``healthmon_dagster.etl.landing``, which knows nothing of Dagster.
"""

from functools import lru_cache
from pathlib import Path
from typing import Any

import dagster as dg
from sqlalchemy.engine import Engine

from healthmon_dagster.config import HealthConfiguration, load_config
from healthmon_dagster.etl.landing import LandingSource, open_landing_source
from healthmon_dagster.settings import get_settings
from healthmon_dagster.store.db import get_engine

# ``dg.ConfigurableResource`` is generic to the type checker only (its parameter is the resource
# itself); subscripting it at run time would derive a new pydantic class, hence the type: ignores.

CONFIG_RESOURCE = "healthmon_config"
"""Resource key of :class:`HealthmonConfigResource` (``config`` is taken by Dagster's run config)."""


@lru_cache(maxsize=16)
def _load_config(path: Path | None, stamp: tuple[int, int] | None) -> HealthConfiguration:
    """``load_config(path)``, cached per file version (``stamp``); errors are not cached."""
    return load_config(path)


def load_config_cached(path: Path | None) -> HealthConfiguration:
    """The configuration at ``path`` (None: built-in defaults), parsed once per process and file
    version: an edited file (other size or mtime) is read again, as before the cache."""
    stamp = None
    if path is not None:
        try:
            st = path.stat()
            stamp = (st.st_mtime_ns, st.st_size)
        except OSError:  # missing or unreadable: load_config raises the ConfigError that says so
            return load_config(path)
    return _load_config(path, stamp)


class HealthmonConfigResource(dg.ConfigurableResource):  # type: ignore[type-arg]
    """healthmon.yaml: ``config_path``, else ``$HEALTHMON_CONFIG``, else the project's file."""

    config_path: str | None = None

    def path(self) -> Path | None:
        """The file in use; None means the built-in defaults."""
        return Path(self.config_path) if self.config_path else get_settings().config_path

    def load(self) -> HealthConfiguration:
        """The parsed configuration (cached per process); raises ``ConfigError`` when invalid."""
        return load_config_cached(self.path())


class WarehouseResource(dg.ConfigurableResource):  # type: ignore[type-arg]
    """The warehouse (raw/stg/core + etl audit) and the health store (etl metrics, check results)."""

    database_url: str | None = None
    health_database_url: str | None = None

    def url(self) -> str:
        return self.database_url or get_settings().database_url

    def health_url(self) -> str:
        return self.health_database_url or self.database_url or get_settings().health_database_url

    def engine(self) -> Engine:
        return get_engine(self.url())

    def health_engine(self) -> Engine:
        return get_engine(self.health_url())


def s3_client(endpoint_url: str | None, region_name: str | None, max_attempts: int) -> Any:
    """A boto3 S3 client from dagster-aws ``S3Resource`` (credentials from the AWS environment).

    ``max_attempts`` bounds botocore's retries: a sensor tick against an endpoint that is down
    should report it in seconds, not after five backed-off attempts.
    """
    # Imported here: dagster-aws adds ~0.35 s to every import of this module (the CLI imports it),
    # and only a deployment that lands from S3 calls this.
    from dagster_aws.s3 import S3Resource

    return S3Resource(
        endpoint_url=endpoint_url, region_name=region_name, max_attempts=max_attempts
    ).get_client()


class LandingResource(dg.ConfigurableResource):  # type: ignore[type-arg]
    """Where patient files land: ``s3://bucket/prefix`` when a bucket is set, else a local folder."""

    s3_bucket: str | None = None
    s3_prefix: str | None = None
    endpoint_url: str | None = None
    region_name: str | None = None
    local_dir: str | None = None

    max_attempts: int = 2

    def source(self) -> LandingSource:
        s = get_settings()
        return open_landing_source(
            self.s3_bucket or s.s3_bucket,
            self.s3_prefix if self.s3_prefix is not None else s.s3_prefix,
            self.endpoint_url or s.aws_endpoint_url,
            self.region_name or s.aws_region,
            Path(self.local_dir) if self.local_dir else s.landing_dir,
            client_factory=s3_client,
            max_attempts=self.max_attempts,
        )


def definitions(config: HealthConfiguration) -> dg.Definitions:
    """The resources every domain uses, under the keys their assets, ops and sensors name."""
    return dg.Definitions(
        resources={
            CONFIG_RESOURCE: HealthmonConfigResource(),
            "warehouse": WarehouseResource(),
            "landing": LandingResource(),
        }
    )
