"""Which failures heal by themselves: an exception (or a run that died) -> an error class, whether it
is transient, and the rule that said so.

Transient failures (the database or S3 unreachable, a connection reset, a timeout, a serialization
failure, a lock wait that timed out, a run worker that died) are retried: inside the run by the ETL
steps, across runs by the landing sensor's attempts. Everything else (a file that breaks the
contract, bad configuration, a database error that is not an outage, an exception no rule knows) is
not retried: running it again gives the same answer.

The rules are data (an ordered tuple of :class:`Rule`), so the self-healing sensor can put its own
rules in front (``classify(exc, rules=(*custom, *RULES))``) and record which rule decided. No Dagster
here: the Dagster adapters and the CLI use it alike. Nothing here reads a field value: rules look at
exception types, driver error codes and the fixed wording of driver messages.
"""

import sqlite3
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any

from sqlalchemy import exc as sa_exc

from healthmon_dagster.config import ConfigError
from healthmon_dagster.etl.landing import LandingError, LandingFileMissing, LandingFileUnreadable
from healthmon_dagster.store.db import DatabaseUnavailable

WAREHOUSE = "warehouse"
"""The dependency of a failure that says the warehouse (the database the loader writes) cannot be
reached right now."""
LANDING = "landing"
"""The dependency of a failure that says the landing area (S3) cannot be reached right now."""


@dataclass(frozen=True)
class Classification:
    """What a failure is: ``error_class`` (a short code, stored with the attempt), whether running
    again may succeed, the name of the rule that decided, and the ``dependency`` it says was
    unavailable (:data:`WAREHOUSE`, :data:`LANDING`; None when the failure does not implicate one):
    the landing sensor retries such a failure as soon as it sees that dependency answer again."""

    error_class: str
    transient: bool
    rule: str
    dependency: str | None = None


# Metadata of a failed step (an ETL step's or a check step's ``dg.Failure``): its error class, whether
# it is transient, the rule that said so, and the dependency it found unavailable (only when there is
# one). The landing sensor, the incident hook and the self-healing sensor read them from the step's
# failure event; they are plain strings so that this module needs no Dagster import.
ERROR_CLASS_METADATA = "healthmon/error_class"
TRANSIENT_METADATA = "healthmon/transient"
ERROR_RULE_METADATA = "healthmon/error_rule"
DEPENDENCY_METADATA = "healthmon/dependency"


def failure_metadata(found: Classification) -> dict[str, str | bool]:
    """The metadata a failed step carries for ``found``."""
    meta: dict[str, str | bool] = {
        ERROR_CLASS_METADATA: found.error_class,
        TRANSIENT_METADATA: found.transient,
        ERROR_RULE_METADATA: found.rule,
    }
    if found.dependency:
        meta[DEPENDENCY_METADATA] = found.dependency
    return meta


@dataclass(frozen=True)
class Rule:
    """``matches(exc)`` true for one exception of the chain -> ``error_class``, ``transient``, and
    the ``dependency`` whose unavailability it means (None: no dependency is known to be down)."""

    name: str
    error_class: str
    transient: bool
    matches: Callable[[BaseException], bool]
    dependency: str | None = None

    def classification(self) -> Classification:
        return Classification(self.error_class, self.transient, self.name, self.dependency)


UNCLASSIFIED = Classification("unclassified", False, "no_rule_matched")


def from_step_metadata(meta: Mapping[str, Any], default_rule: str) -> Classification | None:
    """The classification a step attached to its failure (:func:`failure_metadata`, read back as
    plain values), None when it attached none. The failure hooks, the run-failure and the
    self-healing sensors read it here."""
    if ERROR_CLASS_METADATA not in meta:
        return None
    dependency = meta.get(DEPENDENCY_METADATA)
    return Classification(
        str(meta[ERROR_CLASS_METADATA]),
        bool(meta.get(TRANSIENT_METADATA, False)),
        str(meta.get(ERROR_RULE_METADATA, default_rule)),
        str(dependency) if dependency else None,
    )


def _chain(exc: BaseException) -> Iterator[BaseException]:
    """``exc``, the driver error a SQLAlchemy error wraps, then its causes, outermost first."""
    seen: set[int] = set()
    todo: list[BaseException] = [exc]
    while todo:
        current = todo.pop(0)
        if id(current) in seen:
            continue
        seen.add(id(current))
        yield current
        orig = getattr(current, "orig", None)
        if isinstance(orig, BaseException):
            todo.append(orig)
        if current.__cause__ is not None:
            todo.append(current.__cause__)
        elif current.__context__ is not None and not current.__suppress_context__:
            todo.append(current.__context__)


def _pgcode(exc: BaseException) -> str:
    """The SQLSTATE of a psycopg2 error ('' for other errors and for connection failures, which
    happen before the server says anything)."""
    code = getattr(exc, "pgcode", None)
    return code if isinstance(code, str) else ""


def _is_driver_error(exc: BaseException) -> bool:
    """A DB-API error of psycopg2 or sqlite3 (not the SQLAlchemy wrapper)."""
    module = type(exc).__module__
    return module.startswith("psycopg2") or module == "sqlite3"


def _driver_says(*phrases: str) -> Callable[[BaseException], bool]:
    def matches(exc: BaseException) -> bool:
        if not _is_driver_error(exc):
            return False
        text = str(exc).lower()
        return any(p in text for p in phrases)

    return matches


def _sqlstate(*prefixes: str) -> Callable[[BaseException], bool]:
    def matches(exc: BaseException) -> bool:
        code = _pgcode(exc)
        return bool(code) and code.startswith(prefixes)

    return matches


def _is(*types: type[BaseException]) -> Callable[[BaseException], bool]:
    return lambda exc: isinstance(exc, types)


def _named(*names: str) -> Callable[[BaseException], bool]:
    """An exception whose class (or a base class) has one of ``names``: botocore's, without
    importing botocore here."""
    return lambda exc: any(t.__name__ in names for t in type(exc).__mro__)


_S3_RETRYABLE_CODES = frozenset(
    {
        "500",
        "502",
        "503",
        "504",
        "InternalError",
        "ServiceUnavailable",
        "SlowDown",
        "RequestTimeout",
        "RequestTimeTooSkewed",
        "Throttling",
        "ThrottlingException",
    }
)


def _s3_error_code(exc: BaseException) -> str:
    response = getattr(exc, "response", None)
    if not isinstance(response, dict):
        return ""
    return str(response.get("Error", {}).get("Code", ""))


def _s3_says_retry(exc: BaseException) -> bool:
    return _s3_error_code(exc) in _S3_RETRYABLE_CODES


def _s3_refuses(exc: BaseException) -> bool:
    code = _s3_error_code(exc)
    return bool(code) and code not in _S3_RETRYABLE_CODES


def _postgres_refuses_login(exc: BaseException) -> bool:
    """Authentication, or a role or database that does not exist: a configuration to fix, not an
    outage. libpq reports them while connecting, before the server sends a SQLSTATE."""
    if not type(exc).__module__.startswith("psycopg2"):
        return False
    code = _pgcode(exc)
    if code:
        return code.startswith("28") or code == "3D000"
    return _driver_says(
        "password authentication failed",
        "no password supplied",
        "does not exist",  # role "x" / database "x" does not exist
        "pg_hba.conf",
    )(exc)


RULES: tuple[Rule, ...] = (
    # Data and configuration: running again gives the same answer.
    Rule("file_missing", "landing_file_missing", False, _is(LandingFileMissing)),
    Rule("configuration", "configuration", False, _is(ConfigError)),
    Rule("database_url", "database_url", False, _is(sa_exc.ArgumentError)),
    Rule("database_login", "database_login", False, _postgres_refuses_login),
    # Postgres, by SQLSTATE (the server answered).
    Rule("pg_serialization", "serialization_failure", True, _sqlstate("40001")),
    Rule("pg_deadlock", "deadlock", True, _sqlstate("40P01")),
    Rule("pg_lock_timeout", "lock_timeout", True, _sqlstate("55P03")),
    Rule("pg_statement_timeout", "timeout", True, _sqlstate("57014")),
    Rule(
        "pg_shutdown",
        "database_unavailable",
        True,
        _sqlstate("57P01", "57P02", "57P03"),
        dependency=WAREHOUSE,
    ),
    Rule("pg_connection", "connection_reset", True, _sqlstate("08"), dependency=WAREHOUSE),
    Rule("pg_resources", "database_resources", True, _sqlstate("53")),
    # Drivers before the server answered (no SQLSTATE): the wording of libpq and SQLite.
    Rule(
        "driver_refused",
        "connection_refused",
        True,
        _driver_says("connection refused"),
        dependency=WAREHOUSE,
    ),
    Rule(
        "driver_timeout",
        "timeout",
        True,
        _driver_says("timeout expired", "timed out"),
        dependency=WAREHOUSE,
    ),
    Rule(
        "driver_reset",
        "connection_reset",
        True,
        _driver_says(
            "server closed the connection",
            "connection reset",
            "terminating connection",
            "ssl syscall error",
            "connection already closed",
            "could not receive data",
            "could not send data",
            "broken pipe",
        ),
        dependency=WAREHOUSE,
    ),
    Rule(
        "driver_network",
        "network_unreachable",
        True,
        _driver_says(
            "could not translate host name",
            "no route to host",
            "network is unreachable",
            "name or service not known",
        ),
        dependency=WAREHOUSE,
    ),
    Rule(
        "sqlite_locked",
        "lock_timeout",
        True,
        _driver_says("database is locked", "database is busy", "database table is locked"),
    ),
    Rule(
        "sqlite_unavailable",
        "database_unavailable",
        True,
        _driver_says("unable to open database file", "disk i/o error"),
        dependency=WAREHOUSE,
    ),
    # Whatever else a connection-level driver error is: the database cannot be used right now.
    Rule(
        "driver_operational",
        "database_unavailable",
        True,
        lambda exc: (
            _is_driver_error(exc)
            and type(exc).__name__ == "OperationalError"
            and type(exc).__module__.startswith("psycopg2")
            and not _pgcode(exc)
        ),
        dependency=WAREHOUSE,
    ),
    Rule(
        "sqlalchemy_disconnect",
        "connection_reset",
        True,
        _is(sa_exc.DisconnectionError),
        dependency=WAREHOUSE,
    ),
    Rule("sqlalchemy_pool_timeout", "timeout", True, _is(sa_exc.TimeoutError)),
    Rule(
        "sqlalchemy_interface",
        "connection_reset",
        True,
        _is(sa_exc.InterfaceError),
        dependency=WAREHOUSE,
    ),
    Rule(
        "database_unavailable",
        "database_unavailable",
        True,
        _is(DatabaseUnavailable),
        dependency=WAREHOUSE,
    ),
    # S3 (botocore's exceptions, seen through the LandingError that wraps them).
    Rule(
        "s3_unreachable",
        "s3_unavailable",
        True,
        _named(
            "EndpointConnectionError",
            "ConnectTimeoutError",
            "ReadTimeoutError",
            "ConnectionClosedError",
            "ResponseStreamingError",
        ),
        dependency=LANDING,
    ),
    Rule("s3_retryable", "s3_unavailable", True, _s3_says_retry, dependency=LANDING),
    Rule("s3_refused", "s3_access", False, _s3_refuses),
    # The operating system's network errors.
    Rule("os_refused", "connection_refused", True, _is(ConnectionRefusedError)),
    Rule(
        "os_reset",
        "connection_reset",
        True,
        _is(ConnectionResetError, ConnectionAbortedError, BrokenPipeError),
    ),
    Rule("os_timeout", "timeout", True, _is(TimeoutError)),
    # A landing source error without a known cause: a path outside the folder, a bad endpoint.
    # A file that could not be read or changed while read: read it again later.
    Rule("file_unreadable", "landing_file_unreadable", True, _is(LandingFileUnreadable)),
    Rule("landing_error", "landing_error", False, _is(LandingError)),
    # A database error that is not an outage (a constraint, a missing table, bad SQL).
    Rule("database_error", "database_error", False, _is(sa_exc.DBAPIError, sqlite3.Error)),
)


def classify(exc: BaseException, rules: tuple[Rule, ...] = RULES) -> Classification:
    """The first rule (in ``rules`` order) that matches any exception of ``exc``'s chain (the
    exception, the driver error it wraps, its causes); :data:`UNCLASSIFIED` (not transient) when
    none does."""
    chain = list(_chain(exc))
    for rule in rules:
        if any(rule.matches(e) for e in chain):
            return rule.classification()
    return UNCLASSIFIED


# How a Dagster run can end without a step having failed (Dagster's RunFailureReason values, as
# plain strings so that this module needs no Dagster import).
_RUN_FAILURES = {
    None: "run_worker_lost",  # the run worker died (SIGKILL, OOM) and its code server said so
    "UNEXPECTED_TERMINATION": "run_worker_lost",
    "RUN_WORKER_RESTART": "run_worker_lost",
    "START_TIMEOUT": "run_start_timeout",
    "JOB_INITIALIZATION_FAILURE": "run_initialization_failed",
    "RUN_EXCEPTION": "run_exception",
    "UNKNOWN": "run_worker_lost",
}


def classify_run_failure(reason: str | None) -> Classification:
    """A run that failed without a failed step (``reason``: Dagster's failure reason, None when it
    recorded none): the worker died, never started or crashed outside the steps. Transient: the
    next run gets a new worker."""
    error_class = _RUN_FAILURES.get(reason, "run_failed")
    return Classification(error_class, True, f"run_failure:{reason or 'none'}")


RUN_CANCELED = Classification("run_canceled", False, "run_canceled")
"""A run someone (or run monitoring's timeouts) canceled: not retried behind their back."""
