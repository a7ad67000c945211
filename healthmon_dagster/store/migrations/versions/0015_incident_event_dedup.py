"""etl.incident_events.dedup_key: timeline entries that exist once, by a unique index

A failure reported by two writers (the failure hook and the run-failure sensor for one step, two
processes linking one critical alert) and the ``notification_sent`` entry of one notification are
written ``ON CONFLICT DO NOTHING`` against ``uq_incident_events_dedup_key``: the database, not a
read before the write, keeps them single. NULL keys (every other entry) never conflict. The
existing ``notification_sent`` entries get their key (the first entry of each notification), so
that no notification is recorded again after the upgrade.

Revision ID: 0015
Revises: 0014
Create Date: 2026-12-08 10:00:00
"""

import sqlalchemy as sa
from alembic import op

revision = "0015"
down_revision = "0014"
branch_labels = None
depends_on = None

_events = sa.table(
    "incident_events",
    sa.column("event_id", sa.BigInteger),
    sa.column("kind", sa.String),
    sa.column("details", sa.JSON),
    sa.column("dedup_key", sa.String),
    schema="etl",
)


def upgrade() -> None:
    with op.batch_alter_table("incident_events", schema="etl") as batch_op:
        batch_op.add_column(sa.Column("dedup_key", sa.String(300), nullable=True))
    e = _events.c
    notification = e.details["notification_id"].as_string()
    firsts = (
        sa.select(sa.func.min(e.event_id))
        .where(e.kind == "notification_sent", notification.is_not(None))
        .group_by(notification)
        .scalar_subquery()
    )
    op.execute(
        _events.update()
        .where(e.event_id.in_(firsts))
        .values(dedup_key=sa.literal("notification:") + notification)
    )
    op.create_index(
        "uq_incident_events_dedup_key",
        "incident_events",
        ["dedup_key"],
        unique=True,
        schema="etl",
    )


def downgrade() -> None:
    op.drop_index("uq_incident_events_dedup_key", "incident_events", schema="etl")
    with op.batch_alter_table("incident_events", schema="etl") as batch_op:
        batch_op.drop_column("dedup_key")
