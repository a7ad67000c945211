"""etl.files: files whose lines end with a lone CR

The raw loader reads a file with CR-only line endings (an old Mac export) instead of failing on it,
and records that it did, like CRLF, so the ``file_anomalies`` check can warn about it. Files loaded
before this revision could not have CR-only line endings (the loader failed on them): false.

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-06 23:30:00
"""

import sqlalchemy as sa
from alembic import op

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("files", schema="etl") as batch_op:
        batch_op.add_column(
            sa.Column("cr_line_endings", sa.Boolean(), nullable=False, server_default=sa.false())
        )


def downgrade() -> None:
    with op.batch_alter_table("files", schema="etl") as batch_op:
        batch_op.drop_column("cr_line_endings")
