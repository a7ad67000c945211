"""etl.alert_events.dedup_key: alert events that exist once, by a unique index

The update notification of an incident (its status changed, it was assigned, it absorbed a
failure) is an alert event of the incident's alert keyed ``incident_event:<timeline entry id>``,
written ``ON CONFLICT DO NOTHING`` against ``uq_alert_events_dedup_key``: one notification per
timeline entry, whichever process queues it. NULL keys (every other event) never conflict.

Revision ID: 0016
Revises: 0015
Create Date: 2026-12-09 10:00:00
"""

import sqlalchemy as sa
from alembic import op

revision = "0016"
down_revision = "0015"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("alert_events", schema="etl") as batch_op:
        batch_op.add_column(sa.Column("dedup_key", sa.String(300), nullable=True))
    op.create_index(
        "uq_alert_events_dedup_key", "alert_events", ["dedup_key"], unique=True, schema="etl"
    )


def downgrade() -> None:
    op.drop_index("uq_alert_events_dedup_key", "alert_events", schema="etl")
    with op.batch_alter_table("alert_events", schema="etl") as batch_op:
        batch_op.drop_column("dedup_key")
