"""Migration 0015: incident timeline entries get a unique ``dedup_key``; the existing
``notification_sent`` entries get theirs (the first of each notification), so that no notification
is recorded again after the upgrade."""

from datetime import UTC, datetime

import sqlalchemy as sa

from healthmon_dagster.store.db import create_db_engine
from healthmon_dagster.store.migrate import current_revision, head_revision, upgrade
from healthmon_dagster.store.tables import incident_events

TS = datetime(2026, 12, 1, tzinfo=UTC)


def test_0015_keys_the_existing_notification_entries(fresh_db_url: str) -> None:
    engine = create_db_engine(fresh_db_url)
    try:
        upgrade(engine, "0014")
        incidents = sa.table(
            "incidents",
            *(sa.column(c) for c in ("incident_id", "root_key", "title", "severity", "status")),
            *(sa.column(c) for c in ("component", "impact", "started_at", "created_at")),
            *(sa.column(c) for c in ("last_failure_at", "updated_at")),
            *(sa.column(c, sa.JSON) for c in ("asset_keys", "resources", "tags", "metadata")),
            schema="etl",
        )
        old = sa.table(
            "incident_events",
            *(sa.column(c) for c in ("incident_id", "at", "kind", "actor", "source", "text")),
            sa.column("details", sa.JSON),
            schema="etl",
        )
        with engine.begin() as conn:
            conn.execute(
                incidents.insert().values(
                    incident_id=1,
                    root_key="asset:raw/patients",
                    title="t",
                    severity="medium",
                    status="open",
                    component="raw_loader",
                    impact="minor",
                    started_at=TS,
                    created_at=TS,
                    last_failure_at=TS,
                    updated_at=TS,
                    asset_keys=[],
                    resources=[],
                    tags=[],
                    metadata={},
                )
            )
            conn.execute(
                old.insert(),
                [
                    {
                        "incident_id": 1,
                        "at": TS,
                        "kind": kind,
                        "actor": "sensor",
                        "source": "sensor",
                        "text": text,
                        "details": details,
                    }
                    for kind, text, details in [
                        ("created", "opened", {}),
                        ("notification_sent", "n7", {"notification_id": 7}),
                        ("notification_sent", "n7 again (an old race)", {"notification_id": 7}),
                        ("notification_sent", "n8", {"notification_id": 8}),
                    ]
                ],
            )
        upgrade(engine)
        assert current_revision(engine) == head_revision()
        e = incident_events.c
        with engine.connect() as conn:
            keys = dict(conn.execute(sa.select(e.text, e.dedup_key).order_by(e.event_id)).all())
    finally:
        engine.dispose()
    assert keys == {
        "opened": None,
        "n7": "notification:7",
        "n7 again (an old race)": None,
        "n8": "notification:8",
    }
