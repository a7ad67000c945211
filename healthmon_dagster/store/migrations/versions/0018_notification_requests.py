"""etl.notification_requests: what a channel's rate limit counts once a request is over

The dispatcher counted a channel's requests from the outbox rows: sent rows by their ``sent_at``
(taken before the messages were even built, so a slow build or a busy pool made arrivals bunch
up past the per-second limit) and rows in flight by their lease; a failed attempt was not counted
at all once over (its row is pending again, carrying only its last attempt). Now every request
to a rate-limited channel, sent or failed, is a row here from when its answer (or its failure)
came, written in the transaction that records the outcome and releases the lease: a request is
counted from its claim until a full window after it ended, which is after the receiver got it.
Rows older than a minute (the longest window) are deleted as the dispatcher claims.

Revision ID: 0018
Revises: 0017
Create Date: 2026-12-10 09:00:00
"""

import sqlalchemy as sa
from alembic import op

revision = "0018"
down_revision = "0017"
branch_labels = None
depends_on = None

BigId = sa.BigInteger().with_variant(sa.Integer(), "sqlite")
Timestamp = sa.DateTime(timezone=True)


def upgrade() -> None:
    op.create_table(
        "notification_requests",
        sa.Column("request_id", BigId, primary_key=True, autoincrement=True),
        sa.Column("channel", sa.String(100), nullable=False),
        sa.Column("ended_at", Timestamp, nullable=False),
        schema="etl",
    )
    op.create_index(
        "ix_notification_requests_channel_ended",
        "notification_requests",
        ["channel", "ended_at"],
        schema="etl",
    )


def downgrade() -> None:
    op.drop_table("notification_requests", schema="etl")
