"""etl.self_heal_attempts.file_key: a landing file's failure heals only when that file loads

A failed run of a landing file's attempt is left to the landing sensor (or, for a data error,
never re-run). Its rows now name the file (the run's ``healthmon/file_key`` tag, a key, never its
content), so that only a later successful run of the same file heals the failure: another file's
load no longer moves a stuck file's incident to monitoring.

Revision ID: 0017
Revises: 0016
Create Date: 2026-12-07 08:40:00
"""

import sqlalchemy as sa
from alembic import op

revision = "0017"
down_revision = "0016"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("self_heal_attempts", schema="etl") as batch_op:
        batch_op.add_column(sa.Column("file_key", sa.String(1024), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("self_heal_attempts", schema="etl") as batch_op:
        batch_op.drop_column("file_key")
