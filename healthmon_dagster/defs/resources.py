"""Dagster resources: the warehouse/health-store databases and the landing source.

Every field is optional: an unset field falls back to ``healthmon_dagster.settings`` (the environment,
read when the resource is used, not at import), so the embedded default needs no configuration and a
deployment sets ``HEALTHMON_*`` variables or passes ``dg.EnvVar`` values here.
"""

import dagster as dg
from dagster_aws.s3 import S3Resource
from sqlalchemy.engine import Engine

from healthmon_dagster.etl.landing import LandingSource, LocalLandingSource, S3LandingSource
from healthmon_dagster.settings import get_settings
from healthmon_dagster.store.db import get_engine


class WarehouseResource(dg.ConfigurableResource):
    """The warehouse (raw/stg/core + etl audit) and the health store (etl metrics, check results)."""

    database_url: str | None = None
    health_database_url: str | None = None

    def engine(self) -> Engine:
        return get_engine(self.database_url or get_settings().database_url)

    def health_engine(self) -> Engine:
        url = self.health_database_url or self.database_url
        return get_engine(url or get_settings().health_database_url)


class LandingResource(dg.ConfigurableResource):
    """Where patient files land: ``s3://bucket/prefix`` when a bucket is set, else a local folder."""

    s3_bucket: str | None = None
    s3_prefix: str | None = None
    endpoint_url: str | None = None
    region_name: str | None = None
    local_dir: str | None = None

    def source(self) -> LandingSource:
        settings = get_settings()
        bucket = self.s3_bucket or settings.s3_bucket
        if bucket:
            client = S3Resource(
                endpoint_url=self.endpoint_url or settings.aws_endpoint_url,
                region_name=self.region_name or settings.aws_region,
            ).get_client()
            prefix = self.s3_prefix if self.s3_prefix is not None else settings.s3_prefix
            return S3LandingSource(client, bucket, prefix)
        return LocalLandingSource(self.local_dir or settings.landing_dir)


def resource_defs() -> dict[str, dg.ConfigurableResource]:
    return {"warehouse": WarehouseResource(), "landing": LandingResource()}
