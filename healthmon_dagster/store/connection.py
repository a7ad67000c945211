"""The lowest layer of the stores: schema names and write transactions, shared by the engines
(:mod:`healthmon_dagster.store.db`) and the migrations (:mod:`healthmon_dagster.store.migrate`).
"""

from collections.abc import Iterator
from contextlib import contextmanager

from sqlalchemy.engine import Connection, Engine

SCHEMAS = ("raw", "stg", "core", "etl")


def is_sqlite(bind: Engine | Connection) -> bool:
    return bind.dialect.name == "sqlite"


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
