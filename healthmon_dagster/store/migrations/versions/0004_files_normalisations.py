"""etl.files: the normalisations the raw loader applied to a file

The loader tolerates a header whose names carry surrounding spaces (trimmed), are spelt in another
case (matched ignoring case) or come in another order than Synthea's (mapped by name), and skips
blank lines. Each is recorded per file as a count or flag (never header text) so the
``file_anomalies`` check can warn about it. Files loaded before this revision were not inspected for
these, so the defaults (0, false) are recorded for them.

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-06 22:40:00
"""

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None

_COLUMNS = ("header_whitespace", "header_case", "columns_reordered", "blank_lines")


def upgrade() -> None:
    with op.batch_alter_table("files", schema="etl") as batch_op:
        batch_op.add_column(
            sa.Column("header_whitespace", sa.Integer(), nullable=False, server_default="0")
        )
        batch_op.add_column(
            sa.Column("header_case", sa.Integer(), nullable=False, server_default="0")
        )
        batch_op.add_column(
            sa.Column("columns_reordered", sa.Boolean(), nullable=False, server_default=sa.false())
        )
        batch_op.add_column(
            sa.Column("blank_lines", sa.BigInteger(), nullable=False, server_default="0")
        )


def downgrade() -> None:
    with op.batch_alter_table("files", schema="etl") as batch_op:
        for name in reversed(_COLUMNS):
            batch_op.drop_column(name)
