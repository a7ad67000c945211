"""Shared fixtures: SQLite and Postgres databases, a moto S3 server, an isolated HEALTHMON_HOME.

Postgres: ``HEALTHMON_TEST_POSTGRES_URL`` (default ``postgresql+psycopg2://postgres@127.0.0.1:5432/postgres``)
is the admin connection; the session creates its own database and drops it at the end. When the server
is unreachable, Postgres-parametrized tests are skipped with the reason; ``.ci/run`` fails the build if
any were skipped.

Temporary files (``tmp_path``, Dagster's test instances, the TMPDIR of every subprocess) go to
``HEALTHMON_TEST_TMPDIR``, default ``/dev/shm`` when it is a writable folder (memory): SQLite syncs
each commit to disk, about 5 ms a commit on a disk against 0.2 ms in memory, and a Dagster run
commits every one of its ~100 events to the instance's SQLite event log. An empty
``HEALTHMON_TEST_TMPDIR`` leaves TMPDIR as it is.
"""

import os
import tempfile
import uuid
from collections.abc import Iterator
from pathlib import Path

import boto3
import pytest
import sqlalchemy as sa
from sqlalchemy import exc as sa_exc
from sqlalchemy.engine import Engine, make_url

from healthmon_dagster.store.db import dispose_engines, get_engine
from healthmon_dagster.store.tables import metadata
from healthmon_dagster_tests.fixtures import ADMIN_URL, free_port


def pytest_configure(config: pytest.Config) -> None:
    """Temporary files in memory (see the module docstring), before pytest picks its basetemp and
    before xdist starts its workers (which inherit TMPDIR)."""
    root = os.environ.get("HEALTHMON_TEST_TMPDIR", "/dev/shm")
    if root and os.path.isdir(root) and os.access(root, os.W_OK):
        os.environ["TMPDIR"] = root
        tempfile.tempdir = root


@pytest.fixture(scope="session")
def postgres_url() -> Iterator[str]:
    """A fresh database on the test Postgres server for this session."""
    admin = sa.create_engine(
        ADMIN_URL, isolation_level="AUTOCOMMIT", connect_args={"connect_timeout": 5}
    )
    name = f"healthmon_test_{uuid.uuid4().hex[:10]}"
    try:
        with admin.connect() as conn:
            conn.execute(sa.text(f'CREATE DATABASE "{name}"'))
    except sa_exc.OperationalError as exc:
        admin.dispose()
        pytest.skip(f"Postgres unavailable at {make_url(ADMIN_URL).render_as_string()}: {exc.orig}")
    url = make_url(ADMIN_URL).set(database=name).render_as_string(hide_password=False)
    try:
        yield url
    finally:
        dispose_engines()
        with admin.connect() as conn:
            conn.execute(sa.text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()


def _truncate_all(engine: Engine) -> None:
    """Empty the project's tables and drop any other table a test created in their schemas."""
    tables = [t for t in metadata.sorted_tables]
    ours = {(t.schema, t.name) for t in tables} | {("etl", "alembic_version")}
    with engine.begin() as conn:
        if engine.dialect.name == "postgresql":
            for schema, name in conn.execute(
                sa.text(
                    "SELECT schemaname, tablename FROM pg_tables "
                    "WHERE schemaname IN ('raw', 'stg', 'core', 'etl')"
                )
            ):
                if (schema, name) not in ours:
                    conn.execute(sa.text(f'DROP TABLE "{schema}"."{name}"'))
            names = ", ".join(f"{t.schema}.{t.name}" for t in tables)
            conn.execute(sa.text(f"TRUNCATE {names} RESTART IDENTITY"))
        else:
            for t in reversed(tables):
                conn.execute(t.delete())


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def db_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """The same test on SQLite (a fresh file) and on Postgres (the session database, emptied)."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'healthmon.db'}"
        return
    url = request.getfixturevalue("postgres_url")
    _truncate_all(get_engine(url))
    yield url


@pytest.fixture
def engine(db_url: str) -> Engine:
    return get_engine(db_url)


@pytest.fixture
def healthmon_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path, db_url: str) -> Path:
    """An isolated HEALTHMON_HOME, database and Dagster home; returns the home folder."""
    home = tmp_path / "home"
    monkeypatch.setenv("HEALTHMON_HOME", str(home))
    monkeypatch.setenv("HEALTHMON_DATABASE_URL", db_url)
    monkeypatch.delenv("HEALTHMON_HEALTH_DATABASE_URL", raising=False)
    monkeypatch.delenv("HEALTHMON_S3_BUCKET", raising=False)
    monkeypatch.delenv("HEALTHMON_CONFIG", raising=False)
    monkeypatch.setenv("DAGSTER_HOME", str(tmp_path / "dagster"))
    (tmp_path / "dagster").mkdir()
    return home


@pytest.fixture(scope="session")
def moto_server() -> Iterator[str]:
    """A real S3 HTTP endpoint (moto) on a free loopback port; yields its URL."""
    # Imported here: moto's server pulls in Flask and every AWS service model (~1 s), which only
    # the tests that use S3 should pay for.
    from moto.server import ThreadedMotoServer

    port = free_port()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.stop()


@pytest.fixture
def s3_bucket(moto_server: str, monkeypatch: pytest.MonkeyPatch) -> str:
    """A new empty bucket on the moto server, with AWS_* variables pointing at it."""
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
    monkeypatch.setenv("AWS_ENDPOINT_URL", moto_server)
    name = f"landing-{uuid.uuid4().hex[:8]}"
    boto3.client("s3", endpoint_url=moto_server, region_name="us-east-1").create_bucket(Bucket=name)
    return name


@pytest.fixture(autouse=True)
def _dispose_engines() -> Iterator[None]:
    """Each test closes the engines it opened (SQLite files live in per-test folders)."""
    yield
    dispose_engines()
