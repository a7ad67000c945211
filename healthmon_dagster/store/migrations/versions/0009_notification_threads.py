"""etl.notification_threads: where each alert's conversation lives in a channel

The first message a threaded channel (Slack, email) sends about an alert starts its thread; its
reference (Slack's message ``ts`` with the conversation id, or the email's ``Message-ID``) is
recorded here, so the acknowledgement and the resolve are posted as replies in that thread and
Slack's original message can be updated. One thread per (channel, alert), a constraint: two
dispatchers that race record one.

Revision ID: 0009
Revises: 0008
Create Date: 2026-12-07 09:00:00
"""

import sqlalchemy as sa
from alembic import op

revision = "0009"
down_revision = "0008"
branch_labels = None
depends_on = None

BigId = sa.BigInteger().with_variant(sa.Integer(), "sqlite")
Timestamp = sa.DateTime(timezone=True)


def upgrade() -> None:
    op.create_table(
        "notification_threads",
        sa.Column("thread_id", BigId, primary_key=True, autoincrement=True),
        sa.Column("channel", sa.String(100), nullable=False),
        sa.Column(
            "alert_id",
            sa.BigInteger,
            sa.ForeignKey("etl.alerts.alert_id", ondelete="CASCADE"),
            nullable=False,
        ),
        sa.Column("thread_ref", sa.String(255), nullable=False),
        sa.Column("conversation", sa.String(100)),
        sa.Column("created_at", Timestamp, nullable=False),
        sa.UniqueConstraint("channel", "alert_id", name="uq_notification_threads_channel_alert"),
        schema="etl",
    )
    op.create_index(
        "ix_notification_threads_ref",
        "notification_threads",
        ["channel", "thread_ref"],
        schema="etl",
    )


def downgrade() -> None:
    op.drop_table("notification_threads", schema="etl")
