"""Health store: migrations match tables, concurrent upgrades, metrics, DB-enforced keys."""

import math
import threading
from datetime import UTC, datetime, timedelta, timezone

import pytest
import sqlalchemy as sa
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy import exc as sa_exc
from sqlalchemy.engine import Engine

from healthmon_dagster.store.db import create_db_engine
from healthmon_dagster.store.metrics import (
    MetricPoint,
    metric_aggregate,
    metric_history,
    write_metrics,
)
from healthmon_dagster.store.migrate import current_revision, head_revision, upgrade
from healthmon_dagster.store.tables import dim_patient, files, metadata

T0 = datetime(2026, 1, 1, 12, 0, tzinfo=UTC)


def _diffs(engine: Engine) -> list[object]:
    with engine.connect() as conn:
        ctx = MigrationContext.configure(
            conn,
            opts={
                "version_table_schema": "etl",
                "include_schemas": True,
                "compare_type": True,
                "include_name": lambda name, type_, parent: (
                    type_ != "schema" or name in metadata.schemas or name in (None, "main")
                ),
            },
        )
        return compare_metadata(ctx, metadata)


def test_migrated_database_matches_table_definitions(engine: Engine) -> None:
    assert current_revision(engine) == head_revision()
    assert _diffs(engine) == []


def test_upgrade_twice_is_a_no_op(engine: Engine) -> None:
    with engine.begin() as conn:
        conn.execute(files.insert().values(**_file_row("loaded", "k.csv")))
    upgrade(engine)
    upgrade(engine)
    assert current_revision(engine) == head_revision()
    with engine.connect() as conn:
        assert conn.execute(sa.select(sa.func.count()).select_from(files)).scalar_one() == 1


def test_two_processes_upgrading_a_fresh_database_at_once_both_succeed(fresh_db_url: str) -> None:
    engines = [create_db_engine(fresh_db_url) for _ in range(2)]
    barrier = threading.Barrier(2)
    errors: list[BaseException] = []

    def run(e: Engine) -> None:
        try:
            barrier.wait()
            upgrade(e)
        except BaseException as exc:  # reported below, with the thread's traceback
            errors.append(exc)

    threads = [threading.Thread(target=run, args=(e,)) for e in engines]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    try:
        assert errors == []
        assert current_revision(engines[0]) == head_revision()
        assert _diffs(engines[1]) == []
    finally:
        for e in engines:
            e.dispose()


# --- metrics -----------------------------------------------------------------------------------


def _seed_metrics(engine: Engine) -> None:
    points = [
        MetricPoint("db", "latency_ms", v, "ms", {"env": env}, T0 + timedelta(minutes=i))
        for i, (v, env) in enumerate([(10, "prod"), (20, "prod"), (30, "dev"), (40, "prod")])
    ]
    points.append(MetricPoint("db", "other_metric", 1000, ts=T0 + timedelta(minutes=1)))
    points.append(MetricPoint("api", "latency_ms", 1000, ts=T0 + timedelta(minutes=1)))
    assert write_metrics(engine, points) == 6


@pytest.mark.parametrize(
    ("aggregation", "expected"),
    [("avg", 25.0), ("min", 10.0), ("max", 40.0), ("sum", 100.0), ("count", 4.0)],
)
def test_metric_aggregate(engine: Engine, aggregation: str, expected: float) -> None:
    _seed_metrics(engine)
    end = T0 + timedelta(hours=1)
    assert metric_aggregate(engine, "db", "latency_ms", T0, end, aggregation) == expected


def test_metric_aggregate_tag_filter_and_window_boundaries(engine: Engine) -> None:
    _seed_metrics(engine)
    end = T0 + timedelta(hours=1)
    assert metric_aggregate(engine, "db", "latency_ms", T0, end, "sum", {"env": "prod"}) == 70.0
    assert metric_aggregate(engine, "db", "latency_ms", T0, end, "count", {"env": "dev"}) == 1.0
    assert metric_aggregate(engine, "db", "latency_ms", T0, end, "count", {"env": "qa"}) == 0.0
    # both ends are inclusive: [minute 1, minute 3] holds 20, 30, 40
    t1, t3 = T0 + timedelta(minutes=1), T0 + timedelta(minutes=3)
    assert metric_aggregate(engine, "db", "latency_ms", t1, t3, "sum") == 90.0
    # a point exactly at start == end is found; one microsecond later is not
    assert metric_aggregate(engine, "db", "latency_ms", t1, t1, "sum") == 20.0
    just_after = t1 + timedelta(microseconds=1)
    assert (
        metric_aggregate(engine, "db", "latency_ms", just_after, t3 - timedelta(minutes=1), "sum")
        == 30.0
    )


def test_metric_window_in_another_timezone_means_the_same_instant(engine: Engine) -> None:
    _seed_metrics(engine)
    start = (T0 + timedelta(minutes=1)).astimezone(timezone(timedelta(hours=2)))
    assert start.hour == 14
    assert metric_aggregate(engine, "db", "latency_ms", start, start, "sum") == 20.0


def test_metric_aggregate_of_empty_window_is_none(engine: Engine) -> None:
    _seed_metrics(engine)
    later = T0 + timedelta(days=1)
    for aggregation in ("avg", "min", "max", "sum"):
        assert metric_aggregate(engine, "db", "latency_ms", later, later, aggregation) is None
    assert metric_aggregate(engine, "db", "latency_ms", later, later, "count") == 0.0


def test_metric_aggregate_rejects_bad_arguments(engine: Engine) -> None:
    with pytest.raises(ValueError, match="median"):
        metric_aggregate(engine, "db", "latency_ms", T0, T0, "median")
    with pytest.raises(ValueError, match="after it ends"):
        metric_aggregate(engine, "db", "latency_ms", T0 + timedelta(seconds=1), T0)
    with pytest.raises(ValueError, match="after it ends"):
        metric_history(engine, "db", "latency_ms", T0 + timedelta(seconds=1), T0)


@pytest.mark.parametrize("bad", [math.nan, math.inf, -math.inf])
def test_non_finite_metric_values_are_rejected_and_nothing_written(
    engine: Engine, bad: float
) -> None:
    points = [
        MetricPoint("db", "latency_ms", 1.0, ts=T0),
        MetricPoint("db", "latency_ms", bad, ts=T0),
    ]
    with pytest.raises(ValueError, match="not a finite number"):
        write_metrics(engine, points)
    assert metric_aggregate(engine, "db", "latency_ms", T0, T0, "count") == 0.0


def test_metric_history_is_oldest_first_with_tags_and_units(engine: Engine) -> None:
    _seed_metrics(engine)
    history = metric_history(engine, "db", "latency_ms", T0, T0 + timedelta(hours=1))
    assert [p.value for p in history] == [10, 20, 30, 40]
    assert [p.ts for p in history] == [T0 + timedelta(minutes=i) for i in range(4)]
    assert all(p.ts is not None and p.ts.tzinfo is not None for p in history)
    assert history[2].tags == {"env": "dev"} and history[2].unit == "ms"
    prod = metric_history(engine, "db", "latency_ms", T0, T0 + timedelta(hours=1), {"env": "prod"})
    assert [p.value for p in prod] == [10, 20, 40]
    assert (
        len(metric_history(engine, "db", "latency_ms", T0, T0 + timedelta(hours=1), limit=2)) == 2
    )


def test_ten_thousand_points_in_one_call(engine: Engine) -> None:
    n = 10_000
    points = [
        MetricPoint(
            "bench", "rows", float(i), "rows", {"shard": str(i % 4)}, T0 + timedelta(seconds=i)
        )
        for i in range(n)
    ]
    assert write_metrics(engine, points) == n
    end = T0 + timedelta(seconds=n)
    assert metric_aggregate(engine, "bench", "rows", T0, end, "count") == n
    assert metric_aggregate(engine, "bench", "rows", T0, end, "sum") == n * (n - 1) / 2
    assert metric_aggregate(engine, "bench", "rows", T0, end, "count", {"shard": "3"}) == n / 4
    history = metric_history(engine, "bench", "rows", T0, end)
    assert len(history) == n and history[-1].value == n - 1


# --- constraints the database enforces -----------------------------------------------------------


def _file_row(status: str, key: str) -> dict[str, object]:
    return {
        "source": "test",
        "file_key": key,
        "sha256": "b" * 64,
        "size_bytes": 10,
        "status": status,
        "loaded_at": T0,
    }


def test_same_content_cannot_be_loaded_twice(engine: Engine) -> None:
    with engine.begin() as conn:
        conn.execute(files.insert().values(**_file_row("loaded", "a.csv")))
    with pytest.raises(sa_exc.IntegrityError), engine.begin() as conn:
        conn.execute(files.insert().values(**_file_row("loaded", "b.csv")))
    with pytest.raises(sa_exc.IntegrityError), engine.begin() as conn:
        conn.execute(files.insert().values(**_file_row("empty", "c.csv")))


def test_same_content_may_be_rejected_many_times(engine: Engine) -> None:
    with engine.begin() as conn:
        for key in ("a.csv", "b.csv", "c.csv"):
            conn.execute(files.insert().values(**_file_row("rejected", key)))
        conn.execute(files.insert().values(**_file_row("loaded", "d.csv")))
    with engine.connect() as conn:
        statuses = conn.execute(sa.select(files.c.status).order_by(files.c.file_key)).scalars()
        assert list(statuses) == ["rejected", "rejected", "rejected", "loaded"]


def _version(patient_id: str, current: bool, valid_from: datetime) -> dict[str, object]:
    return {
        "patient_id": patient_id,
        "hash_diff": "0" * 32,
        "valid_from": valid_from,
        "valid_to": None if current else valid_from + timedelta(days=1),
        "is_current": current,
        "_file_id": 1,
        "_row_number": 1,
    }


PATIENT = "4b1f0c3e-2a6d-4c8e-9f7a-1d2e3f4a5b6c"
OTHER_PATIENT = "9c8b7a6d-5e4f-4a3b-8c2d-1e0f9a8b7c6d"


def test_database_allows_only_one_current_version_per_patient(engine: Engine) -> None:
    with engine.begin() as conn:
        conn.execute(dim_patient.insert().values(**_version(PATIENT, True, T0)))
        conn.execute(
            dim_patient.insert().values(**_version(PATIENT, False, T0 - timedelta(days=5)))
        )
        conn.execute(dim_patient.insert().values(**_version(OTHER_PATIENT, True, T0)))
    with pytest.raises(sa_exc.IntegrityError), engine.begin() as conn:
        conn.execute(dim_patient.insert().values(**_version(PATIENT, True, T0 + timedelta(days=1))))
    with engine.connect() as conn:
        current = conn.execute(
            sa.select(sa.func.count()).where(
                dim_patient.c.patient_id == PATIENT, dim_patient.c.is_current
            )
        ).scalar_one()
    assert current == 1


def test_metric_with_the_default_empty_unit_is_written(engine: Engine) -> None:
    # Postgres COPY reads an unquoted empty CSV field as NULL; unit is NOT NULL with default "".
    assert write_metrics(engine, [MetricPoint("db", "up", 1.0, ts=T0)]) == 1
    [point] = metric_history(engine, "db", "up", T0, T0)
    assert point.unit == "" and point.tags == {}
