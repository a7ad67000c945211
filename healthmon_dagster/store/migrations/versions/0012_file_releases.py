"""etl.file_releases, and why each attempt was requested

A stuck landing file (or a rejected one, once the configuration that rejected it is fixed) is
released by a person (``healthmon files retry``): a row here says who released which version of
the file and when, and from which attempt its fresh budget counts. Attempts are never deleted, so
the record of what was retried and why survives. One release per version and attempt, a
constraint: two people releasing the same file at once make one release.

``etl.file_attempts`` gains ``reason`` (why the sensor requested the attempt: a new file, the
backoff passed, the dependency answered again, a release) and ``dependency`` (what a failed
attempt found unavailable: ``warehouse`` or ``landing``, from ``etl.failures``).

Revision ID: 0012
Revises: 0011
Create Date: 2026-12-07 02:00:00
"""

import sqlalchemy as sa
from alembic import op

revision = "0012"
down_revision = "0011"
branch_labels = None
depends_on = None

BigId = sa.BigInteger().with_variant(sa.Integer(), "sqlite")
Timestamp = sa.DateTime(timezone=True)


def upgrade() -> None:
    with op.batch_alter_table("file_attempts", schema="etl") as batch_op:
        batch_op.add_column(sa.Column("reason", sa.String(200), nullable=True))
        batch_op.add_column(sa.Column("dependency", sa.String(40), nullable=True))
    op.create_table(
        "file_releases",
        sa.Column("release_id", BigId, primary_key=True, autoincrement=True),
        sa.Column("file_key", sa.String(1024), nullable=False),
        sa.Column("fingerprint", sa.String(200), nullable=False),
        sa.Column("released_status", sa.String(20), nullable=False),
        sa.Column("after_attempt", sa.Integer, nullable=False),
        sa.Column("released_by", sa.String(200), nullable=False),
        sa.Column("released_at", Timestamp, nullable=False),
        sa.CheckConstraint(
            "released_status IN ('stuck', 'rejected')", name="ck_file_releases_status"
        ),
        sa.UniqueConstraint(
            "file_key", "fingerprint", "after_attempt", name="uq_file_releases_version_attempt"
        ),
        schema="etl",
    )


def downgrade() -> None:
    op.drop_table("file_releases", schema="etl")
    with op.batch_alter_table("file_attempts", schema="etl") as batch_op:
        batch_op.drop_column("dependency")
        batch_op.drop_column("reason")
