"""Engines for the warehouse and the health store: one code path for SQLite and Postgres.

SQLite stands in for Postgres schemas with ATTACHed database files (``healthmon.db`` gets
``healthmon.raw.db``, ``healthmon.stg.db``, ``healthmon.core.db``, ``healthmon.etl.db`` beside it), in WAL
mode with a busy timeout, because the Dagster daemon, run workers, the CLI and the API all write to the
same files. Write transactions on SQLite start with ``BEGIN IMMEDIATE`` so two writers queue on the
busy timeout instead of failing when one upgrades a read lock; a ``BEGIN IMMEDIATE`` still refused
after the busy timeout (a long load holding the lock, or SQLite answering "locked" without waiting)
is retried a few times with backoff, which is safe because nothing of the transaction has run yet.

Every URL is checked before an engine is made (:func:`check_url`): one that can never work
(unparsable, a port that is not a number, a database other than Postgres or SQLite, an in-memory
SQLite database that would keep nothing) raises :class:`InvalidDatabaseUrl`, whose one-line message
names the variable that holds it and what to write instead, never the password.
"""

import hashlib
import os
import random
import re
import sqlite3
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, Concatenate, ParamSpec, TypeVar

import sqlalchemy as sa
from sqlalchemy import exc as sa_exc
from sqlalchemy.engine import URL, Connection, Engine, make_url

from healthmon_dagster.settings import Settings, redact_url, url_origin
from healthmon_dagster.store.connection import SCHEMAS, is_sqlite
from healthmon_dagster.store.errors import error_text
from healthmon_dagster.store.migrate import current_revision, head_revision, upgrade

SQLITE_BUSY_TIMEOUT_MS = 30_000
SQLITE_BEGIN_RETRIES = 3
"""Further attempts of a ``BEGIN IMMEDIATE`` refused as locked, after 0.5 s, 1 s and 2 s (+-25 %)."""
SQLITE_BEGIN_BACKOFF_SECONDS = 0.5

SUPPORTED_DRIVERS: dict[str, tuple[str, ...]] = {
    "postgresql": ("psycopg2",),
    "sqlite": ("pysqlite",),
}
"""The databases healthmon runs on, and their DBAPI drivers (COPY needs psycopg2)."""
URL_EXAMPLES = (
    "postgresql+psycopg2://user:password@host:5432/dbname or sqlite:////absolute/path/healthmon.db"
)
_KEYWORD_STRING = re.compile(r"^\s*\w+\s*=")

T = TypeVar("T")
P = ParamSpec("P")


class DatabaseUnavailable(Exception):
    """The database could not be reached; the message names it (without password) and says what to do."""


class InvalidDatabaseUrl(DatabaseUnavailable):
    """A database URL that can never work; the one-line message names where it is set (the
    variable), what is wrong and what to write instead, never its password."""


def url_problem(url: str) -> str | None:
    """What makes ``url`` unusable for healthmon and how to fix it, or None when it is usable."""
    examples = f"set it to a URL such as {URL_EXAMPLES}"
    if "://" not in url:
        if _KEYWORD_STRING.match(url):
            return (
                "it is a libpq keyword string (host=... dbname=...), not a URL; write it as "
                "postgresql+psycopg2://user:password@host:5432/dbname (percent-encode special "
                "characters of the password)"
            )
        return f"it is not a database URL; {examples}"
    try:
        parsed = make_url(url)
    except sa_exc.ArgumentError:
        return f"it cannot be parsed as a database URL; {examples}"
    except ValueError:  # int() of the port; its text is not shown (it may be a misplaced password)
        return (
            "its port is not a number (a password containing ':', '/' or '@' must be "
            f"percent-encoded); {examples}"
        )
    backend = parsed.get_backend_name()
    drivers = SUPPORTED_DRIVERS.get(backend)
    if drivers is None:
        return f"'{backend}' databases are not supported, only PostgreSQL and SQLite; {examples}"
    driver = parsed.get_driver_name()
    if driver not in drivers:
        if "+" not in parsed.drivername:
            return (
                f"SQLAlchemy reads {backend}:// as the {driver} driver, which healthmon does not "
                f"use; write {backend}+{drivers[0]}:// instead"
            )
        return f"driver '{driver}' is not supported for {backend}; write {backend}+{drivers[0]}://"
    if backend == "sqlite":
        database = parsed.database or ""
        in_memory = database in ("", ":memory:") or parsed.query.get("mode") == "memory"
        if in_memory or (database.startswith("file:") and "mode=memory" in database):
            return (
                "it is an in-memory SQLite database, which keeps nothing: each process (sensor, "
                "run, CLI) would see its own empty database and every load would vanish; use a "
                "file such as sqlite:////absolute/path/healthmon.db, or unset the variable for "
                "the default under HEALTHMON_HOME"
            )
    return None


def check_url(url: str, origin: str | None = None) -> URL:
    """``url`` parsed, or :class:`InvalidDatabaseUrl` saying what is wrong with it.

    ``origin`` names where the URL is set (default: the ``HEALTHMON_*`` variable that holds it).
    """
    problem = url_problem(url)
    if problem is not None:
        where = origin or url_origin(url)
        raise InvalidDatabaseUrl(f"{where} ({redact_url(url)}) is not usable: {problem}")
    return make_url(url)


def _md5(value: str | None) -> str | None:
    return None if value is None else hashlib.md5(value.encode("utf-8")).hexdigest()


def _translate(value: str | None, source: str, target: str) -> str | None:
    """Postgres' ``translate(text, from, to)`` for SQLite: each character of ``from`` becomes the
    one at its position in ``to`` (dropped when ``to`` is shorter)."""
    if value is None:
        return None
    return value.translate(
        {ord(c): (target[i] if i < len(target) else None) for i, c in enumerate(source)}
    )


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
        dbapi_conn.create_function("translate", 3, _translate, deterministic=True)

    @sa.event.listens_for(engine, "begin")
    def _on_begin(conn: Connection) -> None:
        mode = conn.get_execution_options().get("sqlite_begin", "")
        if not mode:  # a deferred BEGIN takes no lock: nothing to wait for
            conn.exec_driver_sql("BEGIN")
            return
        _begin_with_retries(conn, f"BEGIN {mode}")


_SQLITE_UNAVAILABLE = ("locked", "busy", "unable to open", "disk i/o", "readonly", "is full")


def _is_unavailable(exc: sa_exc.DBAPIError) -> bool:
    """Whether ``exc`` says the database cannot be used now (rather than that a statement is
    wrong): psycopg2 raises OperationalError only for the server's state (connection, shutdown,
    resources, locks); sqlite3 also for a missing table or a syntax error."""
    if isinstance(exc, sa_exc.InterfaceError) or exc.connection_invalidated:
        return True
    if isinstance(exc.orig, sqlite3.Error):
        text = str(exc.orig).lower()
        return any(word in text for word in _SQLITE_UNAVAILABLE)
    return True


def _is_locked(exc: sa_exc.OperationalError) -> bool:
    text = str(exc.orig)
    return "database is locked" in text or "database is busy" in text


def _begin_with_retries(conn: Connection, statement: str) -> None:
    """Run ``statement`` (``BEGIN IMMEDIATE``/``EXCLUSIVE``), retrying it up to
    :data:`SQLITE_BEGIN_RETRIES` times with exponential backoff and jitter while SQLite answers
    "database is locked": after the busy timeout (a writer holding the lock that long), or at once
    (SQLite does not wait in some cases, e.g. while another connection recovers the WAL). Safe to
    repeat: a refused BEGIN has started nothing."""
    delay = SQLITE_BEGIN_BACKOFF_SECONDS
    for retries_left in range(SQLITE_BEGIN_RETRIES, -1, -1):
        try:
            conn.exec_driver_sql(statement)
            return
        except sa_exc.OperationalError as exc:
            if retries_left == 0 or not _is_locked(exc):
                raise
        time.sleep(delay * random.uniform(0.75, 1.25))
        delay *= 2


_engines: dict[str, Engine] = {}
_engines_lock = threading.Lock()


def database_url_problems(settings: Settings) -> list[str]:
    """One message per database URL of ``settings`` that can never work (the warehouse's and the
    health store's), as :func:`check_url` words them."""
    found = []
    for url, origin in dict.fromkeys(
        [
            (settings.database_url, settings.database_url_origin),
            (settings.health_database_url, settings.health_database_url_origin),
        ]
    ):
        try:
            check_url(url, origin)
        except InvalidDatabaseUrl as exc:
            found.append(str(exc))
    return found


def check_database_urls(settings: Settings) -> None:
    """:class:`InvalidDatabaseUrl` when a database URL of ``settings`` can never work, naming each
    (for the code location's load: a configuration error, like a broken healthmon.yaml)."""
    problems = database_url_problems(settings)
    if problems:
        raise InvalidDatabaseUrl("; ".join(problems))


def _prepare_sqlite_folder(url: str, database: str) -> None:
    """Create the folder of a SQLite database file; :class:`DatabaseUnavailable` saying which
    folder and what to do when it cannot be created or written (SQLite also writes its ``-wal``
    and ``-shm`` files there)."""
    folder = Path(database).parent
    advice = f"create it and make it writable, or point {url_origin(url)} elsewhere"
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise DatabaseUnavailable(
            f"cannot create the folder {folder} of the SQLite database {redact_url(url)}: "
            f"{exc.strerror or type(exc).__name__}; {advice}"
        ) from None
    if not os.access(folder, os.W_OK | os.X_OK):
        raise DatabaseUnavailable(
            f"the folder {folder} of the SQLite database {redact_url(url)} is not writable by "
            f"this user; {advice}"
        )


def create_db_engine(url: str) -> Engine:
    """A new engine for ``url`` (SQLite files and their folder are created on first connect).

    Raises :class:`InvalidDatabaseUrl` for a URL that can never work and
    :class:`DatabaseUnavailable` for a SQLite folder that cannot be created or written.
    """
    parsed = check_url(url)
    if parsed.get_backend_name() == "sqlite":
        _prepare_sqlite_folder(url, parsed.database or "")
        engine = sa.create_engine(
            parsed,
            connect_args={"timeout": SQLITE_BUSY_TIMEOUT_MS / 1000},
            hide_parameters=True,  # bound values are patient data: never in an error message
        )
        _configure_sqlite(engine, parsed)
        return engine
    return sa.create_engine(
        parsed, pool_pre_ping=True, connect_args={"connect_timeout": 10}, hide_parameters=True
    )


def get_engine(url: str) -> Engine:
    """The process-wide engine for ``url``, migrated to the latest schema on first use.

    Raises what :func:`create_db_engine` raises, and the driver's error (a ``DBAPIError``) when
    the database cannot be reached or migrated: callers that report database errors their own way
    (a run's failure, a health check) keep doing so; :func:`using_engine` turns both into
    :class:`DatabaseUnavailable`.
    """
    with _engines_lock:
        engine = _engines.get(url)
        if engine is None:
            engine = create_db_engine(url)
            try:
                upgrade(engine)
            except BaseException:
                engine.dispose()
                raise
            _engines[url] = engine
        return engine


def using_engine(
    url: str, use: Callable[Concatenate[Engine, P], T], *args: P.args, **kwargs: P.kwargs
) -> T:
    """``use(get_engine(url), *args, **kwargs)``, with every way the database can be unusable
    right now raised as :class:`DatabaseUnavailable` (a message naming the database without its
    password, the cause and what to do): a bad URL, a SQLite folder that cannot be created, a
    server that does not answer or drops the connection, a lock held past the busy timeout.

    For callers that skip and try again later instead of failing, e.g. a sensor tick::

        try:
            pending = using_engine(warehouse.url(), unloaded_files, source, pattern)
        except DatabaseUnavailable as exc:
            return dg.SensorResult(skip_reason=dg.SkipReason(str(exc)))

    Other database errors (a failing query, a constraint) and errors of ``use`` itself propagate.
    """
    try:
        return use(get_engine(url), *args, **kwargs)
    except (sa_exc.OperationalError, sa_exc.InterfaceError) as exc:
        if not _is_unavailable(exc):
            raise
        shown = redact_url(url)
        advice = f"{_what_to_check(shown).capitalize()}; nothing was done."
        raise describe_unavailable(shown, exc, advice) from None


def dispose_engines() -> None:
    """Close every cached engine (tests, and processes that fork)."""
    with _engines_lock:
        for engine in _engines.values():
            engine.dispose()
        _engines.clear()


def describe_unavailable(
    where: Engine | str,
    exc: BaseException,
    advice: str | None = None,
) -> DatabaseUnavailable:
    """Turn a connection error into a message that names the database and says what to do.

    ``where`` is the engine, or a description of the database(s) already free of passwords.
    ``advice`` defaults to what helps for that kind of database (a server to check, or a SQLite
    file and folder).
    """
    if isinstance(where, Engine):
        where = redact_url(where.url.render_as_string(hide_password=False))
    if advice is None:
        advice = (
            f"Nothing was written; {_what_to_check(where)}, then re-run (loads are idempotent)."
        )
    message = f"database {where} is unavailable: {error_text(exc)}. {advice}"
    return DatabaseUnavailable(message.strip())


def _what_to_check(where: str) -> str:
    if where.startswith("sqlite"):
        return "check that the SQLite file and its folder exist and are writable by this user"
    return "check that the server is running and reachable and the credentials are right"


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
    :class:`DatabaseUnavailable` (:class:`InvalidDatabaseUrl` for a URL that can never work) with
    what to do.
    """
    parsed = check_url(url)
    shown = redact_url(url)
    database = parsed.database or ""
    if parsed.get_backend_name() == "sqlite" and not Path(database).exists():
        raise DatabaseUnavailable(
            f"no database at {database} ({url_origin(url)}): nothing has been recorded there yet; "
            "run the pipeline first (`healthmon demo`), or check HEALTHMON_HOME and that variable"
        )
    engine = create_db_engine(url)
    try:
        revision = current_revision(engine)
    except sa_exc.DBAPIError as exc:
        engine.dispose()
        raise describe_unavailable(shown, exc, f"{_what_to_check(shown).capitalize()}.") from None
    if revision != head_revision():
        engine.dispose()
        raise DatabaseUnavailable(
            f"database {shown} is at schema revision {revision or 'none'}, not "
            f"{head_revision()}: run `healthmon db upgrade`"
        )
    return engine
