"""etl.self_heal_attempts: the self-healing sensor's re-runs, escalations and breaker resets

One row per (asset, attempt): the unique index on (asset_key, attempt) lets one sensor tick or
process win each attempt, and the unique index on (source_run_id, asset_key) re-runs one failed
run once per asset.

Revision ID: 0013
Revises: 0012
Create Date: 2026-12-07 02:40:00
"""

import sqlalchemy as sa
from alembic import op

revision = "0013"
down_revision = "0012"
branch_labels = None
depends_on = None

BigId = sa.BigInteger().with_variant(sa.Integer(), "sqlite")
Timestamp = sa.DateTime(timezone=True)


def upgrade() -> None:
    op.create_table(
        "self_heal_attempts",
        sa.Column("attempt_id", BigId, primary_key=True, autoincrement=True),
        sa.Column("asset_key", sa.String(500), nullable=False),
        sa.Column("attempt", sa.Integer, nullable=False),
        sa.Column("status", sa.String(20), nullable=False),
        sa.Column("reason", sa.String(30), nullable=False),
        sa.Column("source_run_id", sa.String(64)),
        sa.Column("run_key", sa.String(500), nullable=False),
        sa.Column("rerun_run_id", sa.String(64)),
        sa.Column("incident_id", sa.BigInteger),
        sa.Column("error_class", sa.String(64)),
        sa.Column("rule", sa.String(200), nullable=False),
        sa.Column("requested_at", Timestamp, nullable=False),
        sa.Column("finished_at", Timestamp),
        sa.Column("retry_at", Timestamp),
        sa.CheckConstraint(
            "status IN ('requested', 'succeeded', 'failed', 'skipped', 'escalated', 'reset')",
            name="ck_self_heal_attempts_status",
        ),
        sa.CheckConstraint("attempt >= 1", name="ck_self_heal_attempts_attempt"),
        schema="etl",
    )
    op.create_index(
        "uq_self_heal_attempts_asset_attempt",
        "self_heal_attempts",
        ["asset_key", "attempt"],
        unique=True,
        schema="etl",
    )
    op.create_index(
        "uq_self_heal_attempts_source_asset",
        "self_heal_attempts",
        ["source_run_id", "asset_key"],
        unique=True,
        schema="etl",
    )
    op.create_index("ix_self_heal_attempts_status", "self_heal_attempts", ["status"], schema="etl")


def downgrade() -> None:
    op.drop_table("self_heal_attempts", schema="etl")
