"""Errors rendered for logs, run failures and check results carry no data value."""

import pytest
import sqlalchemy as sa
from sqlalchemy import exc as sa_exc
from sqlalchemy.engine import Engine

from healthmon_dagster.defs.pipeline.assets import _db_failure
from healthmon_dagster.defs.resources import WarehouseResource
from healthmon_dagster.store.db import get_engine
from healthmon_dagster.store.errors import error_text
from healthmon_dagster.store.tables import dim_patient

SECRET = "Zebediah-0xBEEF-4471"  # stands for a patient value that must never be shown


@pytest.fixture
def pg_engine(postgres_url: str) -> Engine:
    return get_engine(postgres_url)


def _data_error(engine: Engine) -> sa_exc.DBAPIError:
    """A real driver error whose message quotes the value: Postgres' invalid uuid text (SQLite's
    messages name constraints and columns, not values)."""
    with engine.connect() as conn, pytest.raises(sa_exc.DBAPIError) as caught:
        conn.execute(sa.text(f"SELECT CAST('{SECRET}' AS uuid)"))
    return caught.value


@pytest.mark.postgres
def test_driver_messages_lose_their_quoted_values(pg_engine: Engine) -> None:
    exc = _data_error(pg_engine)
    assert SECRET in str(exc.orig)  # the driver did quote it: the test is meaningful
    text = error_text(exc)
    assert SECRET not in text and text.startswith(type(exc.orig).__name__)


def test_bound_parameters_are_hidden_and_detail_lines_dropped(engine: Engine) -> None:
    # valid_from is NOT NULL: the insert fails. SQLAlchemy hides the parameters; Postgres still
    # echoes the failing row in its DETAIL line, which error_text drops.
    row = {
        "patient_id": "4b1f0c3e-2a6d-4c8e-9f7a-1d2e3f4a5b6c",
        "hash_diff": SECRET,
        "valid_from": None,
        "is_current": True,
        "_file_id": 1,
        "_row_number": 1,
    }
    with engine.begin() as conn, pytest.raises(sa_exc.DBAPIError) as caught:
        conn.execute(dim_patient.insert(), [row])
    assert "parameters hidden" in str(caught.value)
    assert "valid_from" in error_text(caught.value)
    assert SECRET not in error_text(caught.value)


@pytest.mark.postgres
def test_a_failed_step_describes_the_error_without_the_value(
    pg_engine: Engine, postgres_url: str
) -> None:
    failure = _db_failure(WarehouseResource(database_url=postgres_url), _data_error(pg_engine))
    assert SECRET not in (failure.description or "")
    assert "database error" in (failure.description or "")


def test_key_values_and_unbalanced_quotes_are_redacted() -> None:
    class Boom(Exception):
        pass

    text = error_text(Boom(f'duplicate key: Key (id)=({SECRET}) already exists; near "{SECRET}'))
    assert SECRET not in text
    assert "Key (id)=(?)" in text
