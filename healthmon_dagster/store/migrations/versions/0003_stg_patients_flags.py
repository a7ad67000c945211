"""stg.patients._flags: reason codes of the flag rules a kept row breaks

Staging keeps rows that break a format varying by country and source (postal code, SSN, passport,
driver's licence) and records the broken rules' codes here, ``;``-separated (never values); NULL
for a row that breaks none. Existing rows were staged under the old rules, which rejected such
rows, so NULL is right for them.

Revision ID: 0003
Revises: 0002
Create Date: 2026-12-06 21:30:00
"""

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("patients", schema="stg") as batch_op:
        batch_op.add_column(sa.Column("_flags", sa.Text(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("patients", schema="stg") as batch_op:
        batch_op.drop_column("_flags")
