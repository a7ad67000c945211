"""``healthmon db``: create or upgrade the warehouse and health-store tables, show their revision.

In the embedded default these are two SQLite databases (``healthmon.db`` and ``health.db`` under
``$HEALTHMON_HOME``); with ``HEALTHMON_DATABASE_URL`` set and no ``HEALTHMON_HEALTH_DATABASE_URL``,
one. Every database gets every table (one migration history); each table is used in one of them.
"""

import sys

import click
from sqlalchemy import exc as sa_exc

from healthmon_dagster.settings import get_settings, redact_url
from healthmon_dagster.store.db import create_db_engine, describe_unavailable
from healthmon_dagster.store.migrate import current_revision, head_revision, upgrade


def _urls() -> list[str]:
    s = get_settings()
    return list(dict.fromkeys([s.database_url, s.health_database_url]))


@click.group()
def db() -> None:
    """Database schema management (Alembic migrations)."""


@db.command("upgrade")
def upgrade_cmd() -> None:
    """Create or upgrade every table to the latest revision (safe to run from several processes)."""
    for url in _urls():
        engine = create_db_engine(url)
        try:
            upgrade(engine)
            click.echo(f"{redact_url(url)}: at revision {current_revision(engine)}")
        except sa_exc.DBAPIError as exc:
            click.echo(str(describe_unavailable(engine, exc)), err=True)
            sys.exit(1)
        finally:
            engine.dispose()


@db.command("status")
def status_cmd() -> None:
    """Show each database's revision against the latest one; exit 1 when one is behind."""
    head, behind = head_revision(), False
    for url in _urls():
        engine = create_db_engine(url)
        try:
            rev = current_revision(engine)
        except sa_exc.DBAPIError as exc:
            click.echo(str(describe_unavailable(engine, exc, "")), err=True)
            sys.exit(1)
        finally:
            engine.dispose()
        behind |= rev != head
        click.echo(f"{redact_url(url)}: revision {rev or 'none'} (latest {head})")
    sys.exit(1 if behind else 0)
