"""Engines for the warehouse and the health store: one code path for SQLite and Postgres.

SQLite stands in for Postgres schemas with ATTACHed database files (``healthmon.db`` gets
``healthmon.raw.db``, ``healthmon.stg.db``, ``healthmon.core.db``, ``healthmon.etl.db`` beside it), in WAL
mode with a busy timeout, because the Dagster daemon, run workers, the CLI and the API all write to the
same files. Write transactions on SQLite start with ``BEGIN IMMEDIATE`` so two writers queue on the
busy timeout instead of failing when one upgrades a read lock.
"""

import hashlib
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import URL, Connection, Engine, make_url

SCHEMAS = ("raw", "stg", "core", "etl")
SQLITE_BUSY_TIMEOUT_MS = 30_000


class DatabaseUnavailable(Exception):
    """The database could not be reached; the message names it (without password) and says what to do."""


def is_sqlite(bind: Engine | Connection) -> bool:
    return bind.dialect.name == "sqlite"


def _md5(value: str | None) -> str | None:
    return None if value is None else hashlib.md5(value.encode("utf-8")).hexdigest()


def _attach_paths(url: URL) -> dict[str, str]:
    database = url.database or ""
    if database in ("", ":memory:"):
        return {schema: ":memory:" for schema in SCHEMAS}
    main = Path(database)
    return {
        schema: str(main.with_name(f"{main.stem}.{schema}{main.suffix or '.db'}"))
        for schema in SCHEMAS
    }


def _configure_sqlite(engine: Engine, url: URL) -> None:
    attach = _attach_paths(url)

    @sa.event.listens_for(engine, "connect")
    def _on_connect(dbapi_conn: Any, _record: Any) -> None:
        # Let SQLAlchemy emit BEGIN itself (pysqlite's implicit transactions defer it unpredictably).
        dbapi_conn.isolation_level = None
        cur = dbapi_conn.cursor()
        cur.execute(f"PRAGMA busy_timeout = {SQLITE_BUSY_TIMEOUT_MS}")
        for schema, path in attach.items():
            cur.execute("ATTACH DATABASE ? AS " + schema, (path,))
        if attach["etl"] != ":memory:":
            for schema in ("main", *SCHEMAS):
                cur.execute(f"PRAGMA {schema}.journal_mode = WAL")
                cur.execute(f"PRAGMA {schema}.synchronous = NORMAL")
        cur.close()
        dbapi_conn.create_function("md5", 1, _md5, deterministic=True)

    @sa.event.listens_for(engine, "begin")
    def _on_begin(conn: Connection) -> None:
        mode = conn.get_execution_options().get("sqlite_begin", "")
        conn.exec_driver_sql(f"BEGIN {mode}".strip())


_engines: dict[str, Engine] = {}
_engines_lock = threading.Lock()


def create_db_engine(url: str) -> Engine:
    """A new engine for ``url`` (SQLite files and their folder are created on first connect)."""
    parsed = make_url(url)
    if parsed.get_backend_name() == "sqlite":
        if parsed.database and parsed.database != ":memory:":
            Path(parsed.database).parent.mkdir(parents=True, exist_ok=True)
        engine = sa.create_engine(parsed, connect_args={"timeout": SQLITE_BUSY_TIMEOUT_MS / 1000})
        _configure_sqlite(engine, parsed)
        return engine
    connect_args = {"connect_timeout": 10} if parsed.get_backend_name() == "postgresql" else {}
    return sa.create_engine(parsed, pool_pre_ping=True, connect_args=connect_args)


def get_engine(url: str) -> Engine:
    """The process-wide engine for ``url``, migrated to the latest schema on first use."""
    with _engines_lock:
        engine = _engines.get(url)
        if engine is None:
            engine = create_db_engine(url)
            from healthmon_dagster.store.migrate import upgrade

            upgrade(engine)
            _engines[url] = engine
        return engine


def dispose_engines() -> None:
    """Close every cached engine (tests, and processes that fork)."""
    with _engines_lock:
        for engine in _engines.values():
            engine.dispose()
        _engines.clear()


@contextmanager
def write_transaction(engine: Engine) -> Iterator[Connection]:
    """A transaction meant to write: ``BEGIN IMMEDIATE`` on SQLite, a plain transaction elsewhere."""
    conn = engine.connect()
    if is_sqlite(engine):
        conn = conn.execution_options(sqlite_begin="IMMEDIATE")
    try:
        with conn.begin():
            yield conn
    finally:
        conn.close()


def describe_unavailable(where: Engine | str, exc: BaseException) -> DatabaseUnavailable:
    """Turn a connection error into a message that names the database and says what to do.

    ``where`` is the engine, or a description of the database(s) already free of passwords.
    """
    if isinstance(where, Engine):
        where = where.url.render_as_string(hide_password=True)
    reason = (
        str(getattr(exc, "orig", exc)).strip().splitlines()[0] if str(exc) else type(exc).__name__
    )
    return DatabaseUnavailable(
        f"database {where} is unavailable: {reason}. Nothing was written; check that the server is "
        "running and reachable, then re-run (loads are idempotent)."
    )


def analyze(engine: Engine, *tables: sa.Table) -> None:
    """Refresh planner statistics after a bulk write (Postgres; autovacuum would lag behind the
    next step of the pipeline and leave it planning for an empty table)."""
    if is_sqlite(engine):
        return
    with engine.begin() as conn:
        for table in tables:
            conn.execute(sa.text(f"ANALYZE {table.schema}.{table.name}"))
