"""etl.incidents, etl.incident_events, etl.incident_alerts, etl.related_incidents: incidents

An incident is opened for a root cause (``root_key``); the partial unique index on the root key of
incidents that are neither resolved nor closed is what makes two hooks or sensors that race on the
same root cause open one incident (the loser appends its failure to the winner's timeline).
``incident_events`` is the timeline; ``incident_alerts`` and ``related_incidents`` are the links.

Revision ID: 0010
Revises: 0009
Create Date: 2026-12-07 02:00:00
"""

import sqlalchemy as sa
from alembic import op

revision = "0010"
down_revision = "0009"
branch_labels = None
depends_on = None

BigId = sa.BigInteger().with_variant(sa.Integer(), "sqlite")
Timestamp = sa.DateTime(timezone=True)
ENDED = "status IN ('resolved', 'closed')"


def _incident_fk(name: str, nullable: bool = False, primary_key: bool = False) -> "sa.Column[int]":
    return sa.Column(
        name,
        sa.BigInteger,
        sa.ForeignKey("etl.incidents.incident_id", ondelete="CASCADE"),
        nullable=nullable,
        primary_key=primary_key,
    )


def upgrade() -> None:
    op.create_table(
        "incidents",
        sa.Column("incident_id", BigId, primary_key=True, autoincrement=True),
        sa.Column("root_key", sa.String(500), nullable=False),
        sa.Column("title", sa.String(500), nullable=False),
        sa.Column("description", sa.Text, nullable=False, server_default=""),
        sa.Column("severity", sa.String(20), nullable=False),
        sa.Column("status", sa.String(20), nullable=False),
        sa.Column("component", sa.String(64), nullable=False),
        sa.Column("asset_keys", sa.JSON, nullable=False),
        sa.Column("resources", sa.JSON, nullable=False),
        sa.Column("impact", sa.String(20), nullable=False),
        sa.Column("root_cause", sa.Text),
        sa.Column("resolution", sa.Text),
        sa.Column("assigned_to", sa.String(200)),
        sa.Column("tags", sa.JSON, nullable=False),
        sa.Column("metadata", sa.JSON, nullable=False),
        sa.Column("failure_count", sa.Integer, nullable=False, server_default="1"),
        sa.Column("started_at", Timestamp, nullable=False),
        sa.Column("created_at", Timestamp, nullable=False),
        sa.Column("last_failure_at", Timestamp, nullable=False),
        sa.Column("acknowledged_at", Timestamp),
        sa.Column("ended_at", Timestamp),
        sa.Column("duration_minutes", sa.Float),
        sa.Column("closed_at", Timestamp),
        sa.Column("updated_at", Timestamp, nullable=False),
        sa.CheckConstraint(
            "severity IN ('low', 'medium', 'high', 'critical')", name="ck_incidents_severity"
        ),
        sa.CheckConstraint(
            "status IN ('open', 'investigating', 'identified', 'monitoring', 'resolved', 'closed')",
            name="ck_incidents_status",
        ),
        sa.CheckConstraint(
            "impact IN ('none', 'minor', 'major', 'critical')", name="ck_incidents_impact"
        ),
        schema="etl",
    )
    op.create_index(
        "uq_incidents_open_root_key",
        "incidents",
        ["root_key"],
        unique=True,
        schema="etl",
        postgresql_where=sa.text(f"NOT ({ENDED})"),
        sqlite_where=sa.text(f"NOT ({ENDED})"),
    )
    op.create_index(
        "ix_incidents_component_started", "incidents", ["component", "started_at"], schema="etl"
    )
    op.create_index("ix_incidents_status", "incidents", ["status"], schema="etl")
    op.create_table(
        "incident_events",
        sa.Column("event_id", BigId, primary_key=True, autoincrement=True),
        _incident_fk("incident_id", nullable=False),
        sa.Column("at", Timestamp, nullable=False),
        sa.Column("kind", sa.String(30), nullable=False),
        sa.Column("actor", sa.String(200), nullable=False),
        sa.Column("source", sa.String(10), nullable=False),
        sa.Column("from_status", sa.String(20)),
        sa.Column("to_status", sa.String(20)),
        sa.Column("text", sa.Text, nullable=False),
        sa.Column("details", sa.JSON, nullable=False),
        sa.CheckConstraint(
            "source IN ('hook', 'sensor', 'cli', 'api')", name="ck_incident_events_source"
        ),
        schema="etl",
    )
    op.create_index(
        "ix_incident_events_incident_at",
        "incident_events",
        ["incident_id", "at"],
        schema="etl",
    )
    op.create_table(
        "incident_alerts",
        _incident_fk("incident_id", primary_key=True),
        sa.Column(
            "alert_id",
            sa.BigInteger,
            sa.ForeignKey("etl.alerts.alert_id", ondelete="CASCADE"),
            primary_key=True,
        ),
        sa.Column("linked_at", Timestamp, nullable=False),
        sa.Column("linked_by", sa.String(200), nullable=False),
        schema="etl",
    )
    op.create_index("ix_incident_alerts_alert", "incident_alerts", ["alert_id"], schema="etl")
    op.create_table(
        "related_incidents",
        _incident_fk("incident_id", primary_key=True),
        _incident_fk("related_id", primary_key=True),
        sa.Column("strength", sa.Float, nullable=False),
        sa.Column("reason", sa.Text, nullable=False),
        sa.Column("linked_at", Timestamp, nullable=False),
        sa.Column("linked_by", sa.String(200), nullable=False),
        sa.CheckConstraint("incident_id < related_id", name="ck_related_incidents_order"),
        sa.CheckConstraint("strength >= 0 AND strength <= 1", name="ck_related_incidents_strength"),
        schema="etl",
    )
    op.create_index(
        "ix_related_incidents_related", "related_incidents", ["related_id"], schema="etl"
    )


def downgrade() -> None:
    op.drop_table("related_incidents", schema="etl")
    op.drop_table("incident_alerts", schema="etl")
    op.drop_table("incident_events", schema="etl")
    op.drop_table("incidents", schema="etl")
