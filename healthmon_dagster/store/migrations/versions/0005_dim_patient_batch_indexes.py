"""core.dim_patient: indexes on _file_id and on valid_to, for the per-load checks

The checks of a run that loads a file judge that file's versions only. Without these indexes they
read the whole dimension (or probe it once per row of the file) to find them:

- ``ix_dim_patient_file_id`` (``_file_id``): the versions a file opened, as one index range
  (identity stability, stg vs core reconciliation).
- ``ix_dim_patient_valid_to`` (``valid_to``, closed versions only): the versions a file closed,
  which end where its versions start (identity stability).

Both grow at their right edge (file ids and merge times only increase), so the merge maintains
them cheaply. On Postgres, CREATE INDEX blocks writes to core.dim_patient while it builds (seconds
per million rows): upgrade outside a load.

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-06 23:00:00
"""

import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_index("ix_dim_patient_file_id", "dim_patient", ["_file_id"], schema="core")
    op.create_index(
        "ix_dim_patient_valid_to",
        "dim_patient",
        ["valid_to"],
        schema="core",
        postgresql_where=sa.text("valid_to IS NOT NULL"),
        sqlite_where=sa.text("valid_to IS NOT NULL"),
    )


def downgrade() -> None:
    op.drop_index("ix_dim_patient_valid_to", "dim_patient", schema="core")
    op.drop_index("ix_dim_patient_file_id", "dim_patient", schema="core")
