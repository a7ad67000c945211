"""Dagster resources: the warehouse/health-store databases and the landing source.

Every field is optional: an unset field falls back to ``healthmon_dagster.settings`` (the environment,
read when the resource is used, not at import), so the embedded default needs no configuration and a
deployment sets ``HEALTHMON_*`` variables or passes ``dg.EnvVar`` values here.
"""

from pathlib import Path

import dagster as dg
from sqlalchemy.engine import Engine

from healthmon_dagster.etl.landing import LandingSource, open_landing_source
from healthmon_dagster.settings import get_settings
from healthmon_dagster.store.db import get_engine


class WarehouseResource(dg.ConfigurableResource):
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


class LandingResource(dg.ConfigurableResource):
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
            self.max_attempts,
        )


def definitions() -> dg.Definitions:
    return dg.Definitions(
        resources={"warehouse": WarehouseResource(), "landing": LandingResource()}
    )
