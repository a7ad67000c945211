"""The failure classifier on real errors (Postgres, SQLite, S3, the OS): outages, timeouts and lock
waits are transient; data, configuration and unknown errors are not; a rule put first decides."""

import socket
import sqlite3
from collections.abc import Callable, Iterator
from pathlib import Path

import boto3
import pytest
import sqlalchemy as sa
from botocore.config import Config
from sqlalchemy.engine import make_url

from healthmon_dagster.config import ConfigError
from healthmon_dagster.config.loader import load_config_text
from healthmon_dagster.etl.failures import (
    RULES,
    UNCLASSIFIED,
    Rule,
    classify,
    classify_run_failure,
)
from healthmon_dagster.etl.landing import LandingError, LocalLandingSource, S3LandingSource
from healthmon_dagster.store.db import create_db_engine
from healthmon_dagster_tests.fixtures import free_port


def raised(action: Callable[[], object]) -> BaseException:
    try:
        action()
    except Exception as exc:
        return exc
    raise AssertionError("no exception was raised")


def found(exc: BaseException) -> tuple[str, bool]:
    c = classify(exc)
    return c.error_class, c.transient


def test_postgres_refusing_connections_is_transient() -> None:
    engine = create_db_engine(f"postgresql+psycopg2://etl:s3cret@127.0.0.1:{free_port()}/x")
    try:
        assert found(raised(engine.connect)) == ("connection_refused", True)
    finally:
        engine.dispose()


@pytest.fixture
def pg(postgres_url: str) -> Iterator[sa.Engine]:
    engine = create_db_engine(postgres_url)
    with engine.begin() as conn:
        conn.execute(sa.text("CREATE TABLE IF NOT EXISTS failures_probe (id int PRIMARY KEY)"))
        conn.execute(sa.text("TRUNCATE failures_probe"))
        conn.execute(sa.text("INSERT INTO failures_probe VALUES (1)"))
    try:
        yield engine
    finally:
        with engine.begin() as conn:
            conn.execute(sa.text("DROP TABLE failures_probe"))
        engine.dispose()


@pytest.mark.postgres
def test_postgres_waits_and_timeouts_are_transient(pg: sa.Engine) -> None:
    with pg.connect() as holder, pg.connect() as waiter:
        holder.execute(sa.text("SELECT id FROM failures_probe WHERE id = 1 FOR UPDATE"))
        waiter.execute(sa.text("SET lock_timeout = '50ms'"))
        lock = raised(
            lambda: waiter.execute(sa.text("SELECT id FROM failures_probe WHERE id = 1 FOR UPDATE"))
        )
        waiter.rollback()
        waiter.execute(sa.text("SET statement_timeout = '20ms'"))
        slow = raised(lambda: waiter.execute(sa.text("SELECT pg_sleep(1)")))
        holder.rollback()
    assert found(lock) == ("lock_timeout", True)
    assert found(slow) == ("timeout", True)


@pytest.mark.postgres
def test_postgres_serialization_failure_is_transient(pg: sa.Engine) -> None:
    first, second = pg.connect(), pg.connect()
    try:
        for conn in (first, second):
            conn.execute(sa.text("SET TRANSACTION ISOLATION LEVEL SERIALIZABLE"))
            conn.execute(sa.text("SELECT count(*) FROM failures_probe")).scalar()
        first.execute(sa.text("INSERT INTO failures_probe VALUES (2)"))
        second.execute(sa.text("INSERT INTO failures_probe VALUES (3)"))
        first.commit()
        error = raised(second.commit)
    finally:
        first.close()
        second.close()
    assert found(error) == ("serialization_failure", True)


@pytest.mark.postgres
def test_postgres_terminated_connection_is_transient(pg: sa.Engine) -> None:
    with pg.connect() as victim, pg.connect() as admin:
        pid = victim.execute(sa.text("SELECT pg_backend_pid()")).scalar_one()
        admin.execute(sa.text("SELECT pg_terminate_backend(:pid)"), {"pid": pid})
        admin.commit()
        error = raised(lambda: victim.execute(sa.text("SELECT 1")))
    assert found(error)[1] is True
    assert found(error)[0] in ("database_unavailable", "connection_reset")


@pytest.mark.postgres
def test_postgres_data_and_configuration_errors_are_not_transient(
    pg: sa.Engine, postgres_url: str
) -> None:
    with pg.connect() as conn:
        duplicate = raised(lambda: conn.execute(sa.text("INSERT INTO failures_probe VALUES (1)")))
        conn.rollback()
        missing = raised(lambda: conn.execute(sa.text("SELECT * FROM no_such_table")))
    nowhere = create_db_engine(
        make_url(postgres_url).set(database="no_such_database").render_as_string(False)
    )
    try:
        no_database = raised(nowhere.connect)
    finally:
        nowhere.dispose()
    assert found(duplicate) == ("database_error", False)
    assert found(missing) == ("database_error", False)
    assert found(no_database) == ("database_login", False)


def test_sqlite_lock_wait_and_unopenable_file_are_transient(tmp_path: Path) -> None:
    path = tmp_path / "locked.db"
    holder = sqlite3.connect(path, isolation_level=None)
    holder.execute("CREATE TABLE t (id int)")
    holder.execute("BEGIN IMMEDIATE")
    impatient = sa.create_engine(f"sqlite:///{path}", connect_args={"timeout": 0})
    folder = tmp_path / "a_folder.db"
    folder.mkdir()
    unopenable = sa.create_engine(f"sqlite:///{folder}")
    try:
        with impatient.connect() as conn:
            locked = raised(lambda: conn.execute(sa.text("INSERT INTO t VALUES (1)")))
            no_table = raised(lambda: conn.execute(sa.text("SELECT * FROM no_such_table")))
        gone = raised(unopenable.connect)
    finally:
        holder.execute("ROLLBACK")
        holder.close()
        impatient.dispose()
        unopenable.dispose()
    assert found(locked) == ("lock_timeout", True)
    assert found(gone) == ("database_unavailable", True)
    assert found(no_table) == ("database_error", False)


def test_s3_unreachable_is_transient_and_a_missing_bucket_is_not(
    moto_server: str, s3_bucket: str, tmp_path: Path
) -> None:
    fast = Config(retries={"max_attempts": 1}, connect_timeout=1)
    down = boto3.client(
        "s3", endpoint_url=f"http://127.0.0.1:{free_port()}", region_name="us-east-1", config=fast
    )
    up = boto3.client("s3", endpoint_url=moto_server, region_name="us-east-1", config=fast)
    unreachable = raised(lambda: S3LandingSource(down, s3_bucket).list_files())
    no_bucket = raised(lambda: S3LandingSource(up, "no-such-bucket").list_files())
    vanished = raised(lambda: S3LandingSource(up, s3_bucket).download("gone.csv").__enter__())
    outside = raised(lambda: LocalLandingSource(tmp_path).download("../etc/passwd").__enter__())
    assert all(isinstance(e, LandingError) for e in (unreachable, no_bucket, vanished, outside))
    assert found(unreachable) == ("s3_unavailable", True)
    assert found(no_bucket) == ("s3_access", False)
    assert found(vanished) == ("landing_file_missing", False)
    assert found(outside) == ("landing_error", False)


def test_network_errors_of_the_os_are_transient() -> None:
    refused = raised(lambda: socket.create_connection(("127.0.0.1", free_port()), timeout=1))
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(1)
    try:
        client = socket.create_connection(server.getsockname(), timeout=0.05)
        timeout = raised(lambda: client.recv(1))
        client.close()
    finally:
        server.close()
    assert found(refused) == ("connection_refused", True)
    assert found(timeout) == ("timeout", True)
    assert found(ConnectionResetError(104, "Connection reset by peer")) == (
        "connection_reset",
        True,
    )


def test_configuration_and_unknown_errors_are_not_transient() -> None:
    config = raised(lambda: load_config_text("landing: {file_pattern: [1, 2]}", "x.yaml"))
    assert isinstance(config, ConfigError)
    assert found(config) == ("configuration", False)
    assert classify(ValueError("some bug")) == UNCLASSIFIED
    assert UNCLASSIFIED.transient is False


def test_the_cause_of_a_wrapping_error_decides_and_a_rule_put_first_wins() -> None:
    try:
        try:
            raise ConnectionRefusedError(111, "Connection refused")
        except OSError as exc:
            raise RuntimeError("while loading") from exc
    except RuntimeError as wrapped:
        assert found(wrapped) == ("connection_refused", True)
        custom = Rule("ours", "maintenance_window", False, lambda e: isinstance(e, RuntimeError))
        decided = classify(wrapped, rules=(custom, *RULES))
    assert (decided.error_class, decided.transient, decided.rule) == (
        "maintenance_window",
        False,
        "ours",
    )


def test_a_run_that_ended_without_a_failed_step_is_transient() -> None:
    assert classify_run_failure(None).error_class == "run_worker_lost"
    assert classify_run_failure("UNEXPECTED_TERMINATION").error_class == "run_worker_lost"
    assert classify_run_failure("START_TIMEOUT").error_class == "run_start_timeout"
    assert classify_run_failure("SOMETHING_NEW").error_class == "run_failed"
    assert all(classify_run_failure(r).transient for r in (None, "START_TIMEOUT", "RUN_EXCEPTION"))


def test_every_rule_has_a_unique_name() -> None:
    names = [r.name for r in RULES]
    assert len(names) == len(set(names))


def test_an_unavailable_warehouse_or_landing_area_is_named_as_the_dependency(
    moto_server: str, s3_bucket: str, tmp_path: Path
) -> None:
    refused = create_db_engine(f"postgresql+psycopg2://etl:s3cret@127.0.0.1:{free_port()}/x")
    folder = tmp_path / "a_folder.db"
    folder.mkdir()
    unopenable = sa.create_engine(f"sqlite:///{folder}")
    path = tmp_path / "locked.db"
    holder = sqlite3.connect(path, isolation_level=None)
    holder.execute("CREATE TABLE t (id int)")
    holder.execute("BEGIN IMMEDIATE")
    impatient = sa.create_engine(f"sqlite:///{path}", connect_args={"timeout": 0})
    down = boto3.client(
        "s3",
        endpoint_url=f"http://127.0.0.1:{free_port()}",
        region_name="us-east-1",
        config=Config(retries={"max_attempts": 1}, connect_timeout=1),
    )
    try:
        with impatient.connect() as conn:
            locked = raised(lambda: conn.execute(sa.text("INSERT INTO t VALUES (1)")))
        errors = {
            "pg_refused": raised(refused.connect),
            "sqlite_gone": raised(unopenable.connect),
            "s3_down": raised(lambda: S3LandingSource(down, s3_bucket).list_files()),
            "sqlite_locked": locked,
            "config": ConfigError("bad"),
        }
    finally:
        holder.execute("ROLLBACK")
        holder.close()
        for engine in (refused, unopenable, impatient):
            engine.dispose()

    assert {name: classify(exc).dependency for name, exc in errors.items()} == {
        "pg_refused": "warehouse",
        "sqlite_gone": "warehouse",
        "s3_down": "landing",
        # A lock wait is not an outage: the database answered; backoff applies.
        "sqlite_locked": None,
        "config": None,
    }
    # Only transient rules name a dependency: a retry at its return must be able to succeed.
    assert all(r.transient for r in RULES if r.dependency is not None)
