"""Engines for the warehouse and the health store: one code path for SQLite and Postgres.

SQLite stands in for Postgres schemas with ATTACHed database files (``healthmon.db`` gets
``healthmon.raw.db``, ``healthmon.stg.db``, ``healthmon.core.db``, ``healthmon.etl.db`` beside it), in WAL
mode with a busy timeout, because the Dagster daemon, run workers, the CLI and the API all write to the
same files. Write transactions on SQLite start with ``BEGIN IMMEDIATE`` so two writers queue on the
busy timeout instead of failing when one upgrades a read lock.
"""

import hashlib
import sqlite3
import threading
import time
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from sqlalchemy import exc as sa_exc
from sqlalchemy.engine import URL, Connection, Engine, make_url

from healthmon_dagster.store.connection import SCHEMAS, is_sqlite
from healthmon_dagster.store.errors import error_text
from healthmon_dagster.store.migrate import current_revision, head_revision, upgrade

SQLITE_BUSY_TIMEOUT_MS = 30_000


class DatabaseUnavailable(Exception):
    """The database could not be reached; the message names it (without password) and says what to do."""


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


def _use_wal(cur: Any, schema: str) -> None:
    """Switch ``schema`` to WAL once (it persists in the file). Two processes opening a new
    database at once race for the exclusive lock the switch needs, and SQLite can answer "database
    is locked" without waiting on the busy timeout: retry for as long as the timeout would wait."""
    deadline = time.monotonic() + SQLITE_BUSY_TIMEOUT_MS / 1000
    delay = 0.01
    while True:
        try:
            if cur.execute(f"PRAGMA {schema}.journal_mode").fetchone()[0] != "wal":
                cur.execute(f"PRAGMA {schema}.journal_mode = WAL")
            return
        except sqlite3.OperationalError as exc:
            if "locked" not in str(exc) or time.monotonic() > deadline:
                raise
            time.sleep(delay)
            delay = min(0.5, delay * 2)


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
                _use_wal(cur, schema)
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
        engine = sa.create_engine(
            parsed,
            connect_args={"timeout": SQLITE_BUSY_TIMEOUT_MS / 1000},
            hide_parameters=True,  # bound values are patient data: never in an error message
        )
        _configure_sqlite(engine, parsed)
        return engine
    connect_args = {"connect_timeout": 10} if parsed.get_backend_name() == "postgresql" else {}
    return sa.create_engine(
        parsed, pool_pre_ping=True, connect_args=connect_args, hide_parameters=True
    )


def get_engine(url: str) -> Engine:
    """The process-wide engine for ``url``, migrated to the latest schema on first use."""
    with _engines_lock:
        engine = _engines.get(url)
        if engine is None:
            engine = create_db_engine(url)
            upgrade(engine)
            _engines[url] = engine
        return engine


def dispose_engines() -> None:
    """Close every cached engine (tests, and processes that fork)."""
    with _engines_lock:
        for engine in _engines.values():
            engine.dispose()
        _engines.clear()


def describe_unavailable(
    where: Engine | str,
    exc: BaseException,
    advice: str = "Nothing was written; check that the server is running and reachable, then "
    "re-run (loads are idempotent).",
) -> DatabaseUnavailable:
    """Turn a connection error into a message that names the database and says what to do.

    ``where`` is the engine, or a description of the database(s) already free of passwords.
    """
    if isinstance(where, Engine):
        where = where.url.render_as_string(hide_password=True)
    return DatabaseUnavailable(f"database {where} is unavailable: {error_text(exc)}. {advice}")


def analyze(engine: Engine, *tables: sa.Table) -> None:
    """Refresh planner statistics after a bulk write (Postgres; autovacuum would lag behind the
    next step of the pipeline and leave it planning for an empty table)."""
    if is_sqlite(engine):
        return
    with engine.begin() as conn:
        for table in tables:
            conn.execute(sa.text(f"ANALYZE {table.schema}.{table.name}"))


def vacuum_analyze(engine: Engine, *tables: sa.Table) -> None:
    """``VACUUM (ANALYZE)`` after a bulk write that the checks read next (Postgres; SQLite needs
    neither).

    ANALYZE keeps the planner's estimates right for the rows just written: without it, Postgres
    takes a new file id for a value that occurs once (the statistics list every file id it saw as
    all there is) and plans the next checks as if the file had one row. VACUUM marks the pages
    just written all-visible, so index-only probes skip the heap, and removes the row versions the
    write replaced; it only visits pages that are not all-visible yet (those the write touched)
    and skips the indexes while dead rows are few (Postgres 14+), so its cost follows the write.
    Neither can run inside a transaction: autocommit."""
    if is_sqlite(engine):
        return
    with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
        for table in tables:
            conn.execute(sa.text(f"VACUUM (ANALYZE) {table.schema}.{table.name}"))


def open_for_reading(url: str) -> Engine:
    """An engine on an existing, migrated database, for commands that only read.

    Unlike :func:`get_engine` it creates nothing (no folder, no file, no tables), so a mistyped
    ``HEALTHMON_HOME`` or URL is reported instead of looking like an empty store. Raises
    :class:`DatabaseUnavailable` with what to do.
    """
    try:
        parsed = make_url(url)
    except sa_exc.ArgumentError:
        raise DatabaseUnavailable(
            f"database URL {url.split(':', 1)[0]}://... cannot be parsed; set it to a SQLAlchemy "
            "URL such as postgresql+psycopg2://user@host:5432/db or sqlite:////path/healthmon.db"
        ) from None
    shown = parsed.render_as_string(hide_password=True)
    database = parsed.database or ""
    is_file_db = parsed.get_backend_name() == "sqlite" and database not in ("", ":memory:")
    if is_file_db and not Path(database).exists():
        raise DatabaseUnavailable(
            f"no database at {parsed.database}: nothing has been recorded there yet; check "
            "HEALTHMON_HOME / HEALTHMON_HEALTH_DATABASE_URL, or run the pipeline first"
        )
    engine = create_db_engine(url)
    try:
        revision = current_revision(engine)
    except sa_exc.DBAPIError as exc:
        engine.dispose()
        raise describe_unavailable(
            shown, exc, "Check that the server is running and reachable."
        ) from None
    if revision != head_revision():
        engine.dispose()
        raise DatabaseUnavailable(
            f"database {shown} is at schema revision {revision or 'none'}, not "
            f"{head_revision()}: run `healthmon db upgrade`"
        )
    return engine
