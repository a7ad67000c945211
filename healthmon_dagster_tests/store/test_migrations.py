"""Migration 0002: health-check and benchmark rows get ``critical`` and a CheckSeverity, asset-check
rows keep theirs."""

from datetime import UTC, datetime

import sqlalchemy as sa

from healthmon_dagster.store.db import create_db_engine
from healthmon_dagster.store.migrate import current_revision, head_revision, upgrade
from healthmon_dagster.store.tables import check_results

TS = datetime(2026, 3, 2, tzinfo=UTC)

# (source, check_name, status, severity before 0002)
OLD_ROWS = [
    ("health_check", "db_down", "critical", "critical"),
    ("health_check", "db_slow", "warning", "critical"),
    ("health_check", "db_ok", "healthy", "critical"),
    ("health_check", "disk_down", "critical", "non_critical"),
    ("health_check", "disk_unknown", "unknown", "non_critical"),
    ("benchmark", "bench_raw", "warning", "non_critical"),
    ("benchmark", "bench_core", "healthy", "non_critical"),
    ("asset_check", "not_null", "failed", "ERROR"),
    ("asset_check", "volume", "warn", "WARN"),
]


def test_0002_converts_old_health_check_and_benchmark_rows(fresh_db_url: str) -> None:
    engine = create_db_engine(fresh_db_url)
    try:
        upgrade(engine, "0001")
        old = sa.table(
            "check_results",
            *(sa.column(c) for c in ("ts", "source", "check_name", "target", "status")),
            sa.column("severity"),
            sa.column("details", sa.JSON),
            schema="etl",
        )
        with engine.begin() as conn:
            conn.execute(
                old.insert(),
                [
                    {
                        "ts": TS,
                        "source": source,
                        "check_name": name,
                        "target": "database",
                        "status": status,
                        "severity": severity,
                        "details": {},
                    }
                    for source, name, status, severity in OLD_ROWS
                ],
            )
        upgrade(engine)
        assert current_revision(engine) == head_revision()
        c = check_results.c
        with engine.connect() as conn:
            rows = {
                r.check_name: (r.severity, r.critical)
                for r in conn.execute(sa.select(c.check_name, c.severity, c.critical))
            }
    finally:
        engine.dispose()
    assert rows == {
        "db_down": ("ERROR", True),
        "db_slow": ("WARN", True),
        "db_ok": (None, True),
        "disk_down": ("WARN", False),  # a non-critical check warns at most
        "disk_unknown": ("WARN", False),  # could not judge: never green
        "bench_raw": ("WARN", False),
        "bench_core": (None, False),
        "not_null": ("ERROR", None),
        "volume": ("WARN", None),
    }
