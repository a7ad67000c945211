"""etl.check_results: an index on dagster_run_id

The alert fast path (``defs/alerting/hooks.py``) evaluates, at the end of every step, the check
results its run recorded: it finds the run's first result through this index instead of scanning
the table.

Revision ID: 0011
Revises: 0010
Create Date: 2026-12-07 02:10:00
"""

from alembic import op

revision = "0011"
down_revision = "0010"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_index(
        "ix_check_results_dagster_run_id",
        "check_results",
        ["dagster_run_id"],
        schema="etl",
    )


def downgrade() -> None:
    op.drop_index("ix_check_results_dagster_run_id", table_name="check_results", schema="etl")
