"""etl.notifications.retry_until: retries bounded by time, not by a count

The outbox dispatcher retries a failing notification (a 5xx, a timeout, a refused connection, a
429) until ``retry_until``, written by its first failed attempt from the channel's
``retry_for_minutes`` (default 60), and only then marks it ``failed``: a count of a few backoff
steps gave up on a receiver that was down for more than about a minute.

Revision ID: 0014
Revises: 0013
Create Date: 2026-12-07 05:30:00
"""

import sqlalchemy as sa
from alembic import op

revision = "0014"
down_revision = "0013"
branch_labels = None
depends_on = None

Timestamp = sa.DateTime(timezone=True)


def upgrade() -> None:
    with op.batch_alter_table("notifications", schema="etl") as batch_op:
        batch_op.add_column(sa.Column("retry_until", Timestamp, nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("notifications", schema="etl") as batch_op:
        batch_op.drop_column("retry_until")
