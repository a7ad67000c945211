"""etl.file_attempts: each run the landing sensor requested for a landing file, and stuck files

A run that fails no longer uses a file's only run key up: the sensor requests attempt 2, 3, ...
with backoff (run key ``key@fingerprint#attempt``) until the file loads or is stuck. The unique
index on (file_key, fingerprint, attempt) is what keeps two sensor ticks or processes from
requesting the same attempt twice.

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-06 23:00:00
"""

import sqlalchemy as sa
from alembic import op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "file_attempts",
        sa.Column(
            "attempt_id",
            sa.BigInteger().with_variant(sa.Integer(), "sqlite"),
            autoincrement=True,
            nullable=False,
        ),
        sa.Column("file_key", sa.String(length=1024), nullable=False),
        sa.Column("fingerprint", sa.String(length=200), nullable=False),
        sa.Column("attempt", sa.Integer(), nullable=False),
        sa.Column("run_key", sa.Text(), nullable=False),
        sa.Column("status", sa.String(length=20), nullable=False),
        sa.Column("requested_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("finished_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("retry_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("dagster_run_id", sa.String(length=64), nullable=True),
        sa.Column("runs", sa.Integer(), server_default="0", nullable=False),
        sa.Column("error_class", sa.String(length=64), nullable=True),
        sa.Column("transient", sa.Boolean(), nullable=True),
        sa.Column("rule", sa.String(length=200), nullable=True),
        sa.Column("error", sa.Text(), nullable=True),
        sa.CheckConstraint(
            "status IN ('requested', 'succeeded', 'failed', 'stuck')",
            name="ck_file_attempts_status",
        ),
        sa.CheckConstraint("attempt >= 1", name="ck_file_attempts_attempt"),
        sa.PrimaryKeyConstraint("attempt_id"),
        schema="etl",
    )
    with op.batch_alter_table("file_attempts", schema="etl") as batch_op:
        batch_op.create_index(
            "uq_file_attempts_key_attempt", ["file_key", "fingerprint", "attempt"], unique=True
        )
        batch_op.create_index("ix_file_attempts_status", ["status"], unique=False)


def downgrade() -> None:
    with op.batch_alter_table("file_attempts", schema="etl") as batch_op:
        batch_op.drop_index("ix_file_attempts_status")
        batch_op.drop_index("uq_file_attempts_key_attempt")
    op.drop_table("file_attempts", schema="etl")
