"""The monitor survives the pipeline: while a load holds a long write transaction on the warehouse,
health-check runs, check results, metrics and configuration versions are recorded without waiting
for it, and a long health-store write does not hold up a load. On SQLite (the embedded default:
the health store is its own database file) and on Postgres (one database: row locks only)."""

import threading
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path

import dagster as dg
import pytest
import sqlalchemy as sa
from sqlalchemy.engine import Connection, Engine

from healthmon_dagster.config import load_config_text
from healthmon_dagster.defs.health import definitions as build_health_definitions
from healthmon_dagster.defs.resources import (
    HealthmonConfigResource,
    LandingResource,
    WarehouseResource,
)
from healthmon_dagster.enums import QualityStatus
from healthmon_dagster.quality import record_results
from healthmon_dagster.quality.result import CheckResult
from healthmon_dagster.settings import get_settings
from healthmon_dagster.store import db
from healthmon_dagster.store.config_versions import record_config_version
from healthmon_dagster.store.connection import write_transaction
from healthmon_dagster.store.db import create_db_engine, get_engine
from healthmon_dagster.store.metrics import MetricPoint, write_metrics
from healthmon_dagster.store.tables import (
    SOURCE_COLUMNS,
    check_results,
    config_versions,
    db_column,
    files,
    metrics,
    raw_patients,
)

CONFIG = """
health_checks:
  - check_id: database_connectivity
    component: database
    kind: database
    interval_seconds: 60
    critical: true
  - check_id: landing_folder
    component: filesystem
    kind: landing_folder
    interval_seconds: 60
"""
HOLD_AT_MOST_SECONDS = 120


def a_load(conn: Connection) -> None:
    """What a load writes in its transaction: the file's audit row and raw rows."""
    now = datetime.now(UTC)
    file_id = conn.execute(
        files.insert()
        .values(
            source="local",
            file_key=f"patients_{uuid.uuid4().hex[:8]}.csv",
            sha256=uuid.uuid4().hex * 2,
            size_bytes=1,
            status="loaded",
            loaded_at=now,
        )
        .returning(files.c.file_id)
    ).scalar_one()
    conn.execute(
        raw_patients.insert(),
        [
            {
                "_file_id": file_id,
                "_row_number": n,
                "_file": "patients.csv",
                "_loaded_at": now,
                **{db_column(c): None for c in SOURCE_COLUMNS},
            }
            for n in range(1, 2001)
        ],
    )


def a_health_write(conn: Connection) -> None:
    conn.execute(
        check_results.insert().values(
            ts=datetime.now(UTC),
            source="health_check",
            check_name="slow_one",
            target="database",
            status="healthy",
            details={},
        )
    )


@contextmanager
def held_open(engine: Engine, write: object) -> Iterator[threading.Event]:
    """Another thread runs ``write(conn)`` in a write transaction on ``engine`` and keeps it open
    until the block ends (at most :data:`HOLD_AT_MOST_SECONDS`). Yields an event that is set if
    the transaction had to end before the block did."""
    written, release, gave_up = threading.Event(), threading.Event(), threading.Event()
    errors: list[BaseException] = []

    def hold() -> None:
        try:
            with write_transaction(engine) as conn:
                write(conn)  # type: ignore[operator]
                written.set()
                if not release.wait(HOLD_AT_MOST_SECONDS):
                    gave_up.set()
        except BaseException as exc:  # reported in the test's thread
            errors.append(exc)
            written.set()

    thread = threading.Thread(target=hold)
    thread.start()
    assert written.wait(60) and not errors, errors
    try:
        yield gave_up
    finally:
        release.set()
        thread.join()
    assert not errors, errors


def health_defs(landing: Path, warehouse_url: str, store_url: str) -> dg.Definitions:
    return dg.Definitions.merge(
        build_health_definitions(load_config_text(CONFIG)),
        dg.Definitions(
            resources={
                "warehouse": WarehouseResource(
                    database_url=warehouse_url, health_database_url=store_url
                ),
                "landing": LandingResource(local_dir=str(landing)),
                "healthmon_config": HealthmonConfigResource(),  # the jobs' alert fast path
            }
        ),
    )


def record_everything(defs: dg.Definitions, store: Engine) -> dg.ExecuteInProcessResult:
    """What the monitor writes: a health-check run, asset-check results, a load's metrics and a
    configuration version."""
    with dg.instance_for_test() as instance:
        run = defs.resolve_job_def("health_checks_every_60s_job").execute_in_process(
            instance=instance, raise_on_error=False
        )
    record_results(
        store,
        [CheckResult("row_count_is_in_range", "raw/patients", "row_count", QualityStatus.PASSED)],
    )
    write_metrics(store, [MetricPoint("raw_loader", "rows_loaded", 2000.0)])
    record_config_version(store, load_config_text(CONFIG), "under_load.yaml")
    return run


def recorded(store: Engine) -> tuple[int, int, int]:
    with store.connect() as conn:
        return (
            conn.execute(sa.select(sa.func.count()).select_from(check_results)).scalar_one(),
            conn.execute(sa.select(sa.func.count()).select_from(metrics)).scalar_one(),
            conn.execute(sa.select(sa.func.count()).select_from(config_versions)).scalar_one(),
        )


@pytest.fixture
def embedded(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> tuple[str, str]:
    """The embedded default (no database variable set): the warehouse and health-store URLs."""
    monkeypatch.setenv("HEALTHMON_HOME", str(tmp_path / "home"))
    monkeypatch.delenv("HEALTHMON_DATABASE_URL", raising=False)
    monkeypatch.delenv("HEALTHMON_HEALTH_DATABASE_URL", raising=False)
    settings = get_settings()
    return settings.database_url, settings.health_database_url


def test_sqlite_health_writes_do_not_wait_for_a_load_holding_the_warehouse_lock(
    embedded: tuple[str, str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    warehouse_url, store_url = embedded
    assert warehouse_url != store_url
    warehouse, store = get_engine(warehouse_url), get_engine(store_url)
    defs = health_defs(tmp_path, warehouse_url, store_url)

    with held_open(warehouse, a_load) as load_gave_up:
        start = time.monotonic()
        run = record_everything(defs, store)
        took = time.monotonic() - start
        # The lock is real: a write to the warehouse's own files waits for it, and with a short
        # busy timeout and no retries fails (as health writes did when they lived there).
        monkeypatch.setattr(db, "SQLITE_BUSY_TIMEOUT_MS", 100)
        monkeypatch.setattr(db, "SQLITE_BEGIN_RETRIES", 0)
        impatient = create_db_engine(warehouse_url)
        with pytest.raises(sa.exc.OperationalError, match="database is locked"):
            write_metrics(impatient, [MetricPoint("raw_loader", "rows_loaded", 1.0)])
        impatient.dispose()

    assert not load_gave_up.is_set(), f"the monitor waited for the load ({took:.0f} s)"
    assert run.success
    evaluations = {e.check_name: e.passed for e in run.get_asset_check_evaluations()}
    assert evaluations == {"database_connectivity": True, "landing_folder": True}
    # 2 health checks + 1 asset check; the checks' metrics, the load's, the asset check's.
    results, points, versions = recorded(store)
    assert (results, versions) == (3, 1) and points > 3


def test_sqlite_a_load_does_not_wait_for_a_long_health_store_write(
    embedded: tuple[str, str],
) -> None:
    warehouse_url, store_url = embedded
    warehouse, store = get_engine(warehouse_url), get_engine(store_url)

    with held_open(store, a_health_write) as health_gave_up, write_transaction(warehouse) as conn:
        a_load(conn)

    assert not health_gave_up.is_set()
    with warehouse.connect() as conn:
        assert (
            conn.execute(sa.select(sa.func.count()).select_from(raw_patients)).scalar_one() == 2000
        )


@pytest.mark.parametrize(
    "db_url", [pytest.param("postgres", marks=pytest.mark.postgres)], indirect=True
)
def test_postgres_loads_and_health_writes_take_row_locks_only(
    db_url: str, engine: Engine, tmp_path: Path
) -> None:
    # One database for both, as a Postgres deployment sets it up.
    defs = health_defs(tmp_path, db_url, db_url)

    with held_open(engine, a_load) as load_gave_up:
        run = record_everything(defs, engine)
    with held_open(engine, a_health_write) as health_gave_up, write_transaction(engine) as conn:
        a_load(conn)

    assert not load_gave_up.is_set() and not health_gave_up.is_set()
    assert run.success
    results, points, versions = recorded(engine)
    assert (results, versions) == (4, 1) and points > 3
