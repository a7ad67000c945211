"""Configuration history: every distinct effective configuration a process ran with, once."""

from datetime import datetime

import sqlalchemy as sa
import yaml
from sqlalchemy import exc as sa_exc
from sqlalchemy.engine import Engine

from healthmon_dagster.config import HealthConfiguration, config_hash
from healthmon_dagster.store.connection import write_transaction
from healthmon_dagster.store.metrics import utcnow
from healthmon_dagster.store.tables import config_versions


def record_config_version(engine: Engine, config: HealthConfiguration, source: str | None) -> bool:
    """Store ``config`` unless the same content (by hash) is stored already; True when new.

    The unique hash makes concurrent processes that load the same file record it once.
    """
    digest = config_hash(config)
    with engine.connect() as conn:
        if conn.execute(
            sa.select(config_versions.c.version_id).where(config_versions.c.config_hash == digest)
        ).first():
            return False
    content = yaml.safe_dump(config.model_dump(mode="json"), sort_keys=False)
    try:
        with write_transaction(engine) as conn:
            conn.execute(
                config_versions.insert().values(
                    config_hash=digest,
                    version=config.version,
                    source=source,
                    updated_by=config.updated_by,
                    content=content,
                    recorded_at=utcnow(),
                )
            )
    except sa_exc.IntegrityError:
        return False
    return True


def config_history(
    engine: Engine, since: datetime | None = None
) -> list[sa.Row[tuple[int, str, str, str | None, str | None, datetime]]]:
    """Recorded configurations, newest first (without their content)."""
    c = config_versions.c
    query = sa.select(c.version_id, c.config_hash, c.version, c.source, c.updated_by, c.recorded_at)
    if since is not None:
        query = query.where(c.recorded_at >= since)
    with engine.connect() as conn:
        return list(conn.execute(query.order_by(c.version_id.desc())))
