"""etl.check_results.critical: a health check's criticality gets its own column

Health-check and benchmark rows stored their criticality in ``severity`` (``critical`` or
``non_critical``) while asset checks store a CheckSeverity there (``WARN``/``ERROR``). This adds
``critical`` and converts the health-check and benchmark rows: ``critical = (severity = 'critical')``
and ``severity`` becomes the CheckSeverity of the row (``health.record.severity_of``): ERROR for
CRITICAL from a critical check; WARN for WARNING, UNKNOWN and a non-critical check's CRITICAL; NULL
for HEALTHY.

Revision ID: 0002
Revises: 0001
Create Date: 2026-12-06 20:00:00
"""

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None

_results = sa.table(
    "check_results",
    sa.column("source", sa.String),
    sa.column("status", sa.String),
    sa.column("severity", sa.String),
    sa.column("critical", sa.Boolean),
    schema="etl",
)
# Benchmark rows (source 'benchmark') were written like health-check rows, always 'non_critical'.
_HEALTH = _results.c.source.in_(("health_check", "benchmark"))


def upgrade() -> None:
    with op.batch_alter_table("check_results", schema="etl") as batch_op:
        batch_op.add_column(sa.Column("critical", sa.Boolean(), nullable=True))
    op.execute(
        _results.update()
        .where(_HEALTH)
        .values(
            critical=sa.case((_results.c.severity == "critical", sa.true()), else_=sa.false()),
            severity=sa.case(
                (
                    sa.and_(_results.c.status == "critical", _results.c.severity == "critical"),
                    "ERROR",
                ),
                (_results.c.status.in_(("critical", "warning", "unknown")), "WARN"),
                else_=sa.null(),
            ),
        )
    )


def downgrade() -> None:
    op.execute(
        _results.update()
        .where(_HEALTH)
        .values(
            severity=sa.case((_results.c.critical == sa.true(), "critical"), else_="non_critical")
        )
    )
    with op.batch_alter_table("check_results", schema="etl") as batch_op:
        batch_op.drop_column("critical")
