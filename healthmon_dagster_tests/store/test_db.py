"""Engines: a database URL that can never work is refused with one line naming its variable (never
its password), a SQLite folder that cannot be created is a clear error, ``using_engine`` turns an
unreachable database into ``DatabaseUnavailable``, and a SQLite write refused as locked after the
busy timeout is retried with backoff, a bounded number of times."""

import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
import sqlalchemy as sa
from sqlalchemy.engine import Engine

from healthmon_dagster.settings import get_settings
from healthmon_dagster.store import db
from healthmon_dagster.store.connection import write_transaction
from healthmon_dagster.store.db import (
    DatabaseUnavailable,
    InvalidDatabaseUrl,
    check_database_urls,
    check_url,
    create_db_engine,
    database_url_problems,
    get_engine,
    open_for_reading,
    using_engine,
)
from healthmon_dagster.store.metrics import MetricPoint, write_metrics
from healthmon_dagster.store.tables import metrics
from healthmon_dagster_tests.fixtures import free_port

SECRET = "s3cretpw"

# (URL, what the message must say). Each holds the password where a user would have put it.
UNUSABLE_URLS = [
    (f"postgresql+psycopg2://etl:{SECRET}@db:port/wh", "port is not a number"),
    (f"postgresql://etl:{SECRET}/wh", "port is not a number"),  # no "@": the password is the port
    (f"mysql://etl:{SECRET}@db/wh", "'mysql' databases are not supported"),
    (f"http://etl:{SECRET}@example.org/wh", "'http' databases are not supported"),
    (f"postgresql+asyncpg://etl:{SECRET}@db/wh", "driver 'asyncpg' is not supported"),
    # SQLAlchemy 2.1 reads postgresql:// as psycopg 3 (not installed; COPY needs psycopg2).
    (f"postgresql://etl:{SECRET}@db/wh", "write postgresql+psycopg2://"),
    (f"host=db user=etl password={SECRET} dbname=wh", "libpq keyword string"),
    (f"{SECRET}", "not a database URL"),
    ("sqlite://", "in-memory SQLite database"),
    ("sqlite:///:memory:", "in-memory SQLite database"),
]


@pytest.mark.parametrize(("url", "why"), UNUSABLE_URLS)
def test_an_unusable_url_is_one_line_naming_its_variable_without_the_password(
    url: str, why: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("HEALTHMON_DATABASE_URL", url)

    with pytest.raises(InvalidDatabaseUrl) as info:
        create_db_engine(url)

    message = str(info.value)
    assert message.startswith("HEALTHMON_DATABASE_URL (")
    assert why in message
    assert "\n" not in message and SECRET not in message
    # Every path refuses it the same way: readers, the migrated engine, the load-time check.
    for refuse in (open_for_reading, get_engine, check_url):
        with pytest.raises(InvalidDatabaseUrl) as again:
            refuse(url)
        assert str(again.value) == message
    with pytest.raises(InvalidDatabaseUrl, match="HEALTHMON_DATABASE_URL"):
        check_database_urls(get_settings())


def test_the_health_store_variable_is_named_for_its_own_url(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("HEALTHMON_DATABASE_URL", f"sqlite:///{tmp_path / 'wh.db'}")
    monkeypatch.setenv("HEALTHMON_HEALTH_DATABASE_URL", "sqlite://")

    problems = database_url_problems(get_settings())

    assert len(problems) == 1
    assert problems[0].startswith("HEALTHMON_HEALTH_DATABASE_URL (sqlite://) is not usable")


def test_usable_urls_pass(tmp_path: Path) -> None:
    for url in (
        f"sqlite:///{tmp_path / 'a.db'}",
        "sqlite+pysqlite:///relative.db",
        "postgresql+psycopg2://etl@db/wh",
        "postgresql+psycopg2://etl:pw@db:5432/wh?sslmode=require",
    ):
        assert check_url(url).database


def test_a_sqlite_folder_that_cannot_be_created_is_a_clear_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")
    url = f"sqlite:///{blocker / 'sub' / 'healthmon.db'}"
    monkeypatch.setenv("HEALTHMON_DATABASE_URL", url)

    with pytest.raises(DatabaseUnavailable) as info:
        get_engine(url)

    message = str(info.value)
    assert f"cannot create the folder {blocker / 'sub'}" in message
    assert "point HEALTHMON_DATABASE_URL elsewhere" in message
    assert "\n" not in message


def test_using_engine_reports_a_server_that_does_not_answer() -> None:
    url = f"postgresql+psycopg2://etl:{SECRET}@127.0.0.1:{free_port()}/wh"

    with pytest.raises(DatabaseUnavailable) as info:
        using_engine(url, lambda engine: None)

    message = str(info.value)
    assert message.startswith("database postgresql+psycopg2://etl:***@127.0.0.1:")
    assert "OperationalError" in message and "check that the server is running" in message.lower()
    assert SECRET not in message and "\n" not in message


def count(engine: Engine, table: sa.Table) -> int:
    with engine.connect() as conn:
        return int(conn.execute(sa.select(sa.func.count()).select_from(table)).scalar_one())


def test_using_engine_passes_arguments_and_lets_a_wrong_statement_through(db_url: str) -> None:
    assert using_engine(db_url, count, metrics) == 0

    missing = sa.Table("no_such_table", sa.MetaData(), sa.Column("x", sa.Integer), schema="etl")
    with pytest.raises(sa.exc.DBAPIError) as info:  # a bug to see, not an outage to wait out
        using_engine(db_url, count, missing)
    assert not isinstance(info.value, DatabaseUnavailable)


@pytest.fixture
def short_busy_timeout(monkeypatch: pytest.MonkeyPatch) -> None:
    """A 0.2 s SQLite busy timeout and short backoff, so lock waits take seconds, not minutes."""
    monkeypatch.setattr(db, "SQLITE_BUSY_TIMEOUT_MS", 200)
    monkeypatch.setattr(db, "SQLITE_BEGIN_BACKOFF_SECONDS", 0.2)


@contextmanager
def write_lock_held(engine: Engine, seconds: float) -> Iterator[None]:
    """Another connection holds ``engine``'s write lock (``BEGIN IMMEDIATE``) for ``seconds``."""
    locked = threading.Event()

    def hold() -> None:
        with write_transaction(engine):
            locked.set()
            time.sleep(seconds)

    thread = threading.Thread(target=hold)
    thread.start()
    assert locked.wait(10)
    try:
        yield
    finally:
        thread.join()


def one_point() -> list[MetricPoint]:
    return [MetricPoint("database", "test.value", 1.0)]


def test_a_write_locked_past_the_busy_timeout_is_retried_and_succeeds(
    tmp_path: Path, short_busy_timeout: None
) -> None:
    url = f"sqlite:///{tmp_path / 'store.db'}"
    holder, writer = get_engine(url), create_db_engine(url)

    # 0.2 s busy timeout, then retries after ~0.2, 0.4, 0.8 s: a 1 s lock is outlasted.
    with write_lock_held(holder, 1.0):
        start = time.monotonic()
        write_metrics(writer, one_point())
        waited = time.monotonic() - start

    assert waited > 0.9
    with writer.connect() as conn:
        assert conn.execute(sa.select(sa.func.count()).select_from(metrics)).scalar_one() == 1
    writer.dispose()


def test_retries_are_bounded(tmp_path: Path, short_busy_timeout: None) -> None:
    url = f"sqlite:///{tmp_path / 'store.db'}"
    holder, writer = get_engine(url), create_db_engine(url)

    with write_lock_held(holder, 8.0):
        start = time.monotonic()
        with pytest.raises(sa.exc.OperationalError, match="database is locked"):
            write_metrics(writer, one_point())
        waited = time.monotonic() - start

    # 4 attempts of 0.2 s and backoff of about 0.2 + 0.4 + 0.8 s (+-25 %): about 2.2 s.
    assert 1.5 < waited < 5
    writer.dispose()
