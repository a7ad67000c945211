"""etl.alerts, etl.alert_events, etl.silences, etl.notifications: the alert engine's store

An alert is one episode of a fingerprint (the stable hash of its labels), opened pending or firing
and ended resolved; the partial unique index on the fingerprint of open episodes is what dedups
alerts between overlapping sensor ticks and processes. ``alert_events`` is every transition and
action in order. ``notifications`` is the outbox: one row per (event, channel), written with the
event, marked sent only after the channel accepted it.

Revision ID: 0008
Revises: 0007
Create Date: 2026-12-06 22:50:00
"""

import sqlalchemy as sa
from alembic import op

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None

BigId = sa.BigInteger().with_variant(sa.Integer(), "sqlite")
Timestamp = sa.DateTime(timezone=True)


def upgrade() -> None:
    # Metric alert rules read the samples of their longest window, whatever the component.
    op.create_index("ix_metrics_ts", "metrics", ["ts"], schema="etl")
    op.create_table(
        "alerts",
        sa.Column("alert_id", BigId, primary_key=True, autoincrement=True),
        sa.Column("fingerprint", sa.String(64), nullable=False),
        sa.Column("rule_id", sa.String(200), nullable=False),
        sa.Column("state", sa.String(20), nullable=False),
        sa.Column("status", sa.String(20), nullable=False),
        sa.Column("severity", sa.String(20), nullable=False),
        sa.Column("component", sa.String(64)),
        sa.Column("labels", sa.JSON, nullable=False),
        sa.Column("title", sa.String(500), nullable=False),
        sa.Column("description", sa.Text, nullable=False, server_default=""),
        sa.Column("details", sa.JSON, nullable=False),
        sa.Column("value", sa.Float),
        sa.Column("group_key", sa.String(500), nullable=False),
        sa.Column("started_at", Timestamp, nullable=False),
        sa.Column("fired_at", Timestamp),
        sa.Column("last_active_at", Timestamp, nullable=False),
        sa.Column("last_evaluated_at", Timestamp, nullable=False),
        sa.Column("resolved_at", Timestamp),
        sa.Column("resolved_by", sa.String(200)),
        sa.Column("resolution", sa.Text),
        sa.Column("acknowledged_by", sa.String(200)),
        sa.Column("acknowledged_at", Timestamp),
        sa.Column("ack_note", sa.Text),
        sa.Column("suppressed_by", sa.String(500)),
        sa.Column("inhibited_by", sa.BigInteger),
        sa.Column("escalation_level", sa.Integer, nullable=False, server_default="0"),
        sa.Column("escalations", sa.Integer, nullable=False, server_default="0"),
        sa.Column("next_escalation_at", Timestamp),
        sa.CheckConstraint("state IN ('pending', 'firing', 'resolved')", name="ck_alerts_state"),
        sa.CheckConstraint(
            "status IN ('active', 'acknowledged', 'resolved', 'suppressed')",
            name="ck_alerts_status",
        ),
        schema="etl",
    )
    op.create_index(
        "uq_alerts_open_fingerprint",
        "alerts",
        ["fingerprint"],
        unique=True,
        schema="etl",
        postgresql_where=sa.text("state <> 'resolved'"),
        sqlite_where=sa.text("state <> 'resolved'"),
    )
    op.create_index("ix_alerts_state_rule", "alerts", ["state", "rule_id"], schema="etl")
    op.create_index("ix_alerts_started_at", "alerts", ["started_at"], schema="etl")
    op.create_table(
        "alert_events",
        sa.Column("event_id", BigId, primary_key=True, autoincrement=True),
        sa.Column(
            "alert_id",
            sa.BigInteger,
            sa.ForeignKey("etl.alerts.alert_id", ondelete="CASCADE"),
            nullable=False,
        ),
        sa.Column("at", Timestamp, nullable=False),
        sa.Column("kind", sa.String(20), nullable=False),
        sa.Column("from_state", sa.String(20)),
        sa.Column("to_state", sa.String(20)),
        sa.Column("actor", sa.String(200), nullable=False),
        sa.Column("note", sa.Text),
        sa.Column("details", sa.JSON, nullable=False),
        schema="etl",
    )
    op.create_index("ix_alert_events_alert_at", "alert_events", ["alert_id", "at"], schema="etl")
    op.create_table(
        "silences",
        sa.Column("silence_id", BigId, primary_key=True, autoincrement=True),
        sa.Column("matchers", sa.JSON, nullable=False),
        sa.Column("starts_at", Timestamp, nullable=False),
        sa.Column("ends_at", Timestamp, nullable=False),
        sa.Column("created_by", sa.String(200), nullable=False),
        sa.Column("comment", sa.Text, nullable=False),
        sa.Column("created_at", Timestamp, nullable=False),
        sa.Column("expired_at", Timestamp),
        sa.CheckConstraint("ends_at > starts_at", name="ck_silences_window"),
        schema="etl",
    )
    op.create_table(
        "notifications",
        sa.Column("notification_id", BigId, primary_key=True, autoincrement=True),
        sa.Column(
            "event_id",
            sa.BigInteger,
            sa.ForeignKey("etl.alert_events.event_id", ondelete="CASCADE"),
            nullable=False,
        ),
        sa.Column("alert_id", sa.BigInteger, nullable=False),
        sa.Column("channel", sa.String(100), nullable=False),
        sa.Column("kind", sa.String(20), nullable=False),
        sa.Column("group_key", sa.String(500), nullable=False),
        sa.Column("status", sa.String(20), nullable=False),
        sa.Column("attempts", sa.Integer, nullable=False, server_default="0"),
        sa.Column("not_before", Timestamp, nullable=False),
        sa.Column("last_error", sa.Text),
        sa.Column("created_at", Timestamp, nullable=False),
        sa.Column("sent_at", Timestamp),
        sa.Column("delivery_key", sa.String(64)),
        sa.Column("claimed_by", sa.String(100)),
        sa.Column("claimed_until", Timestamp),
        sa.UniqueConstraint("event_id", "channel", name="uq_notifications_event_channel"),
        sa.CheckConstraint(
            "status IN ('pending', 'sent', 'failed', 'cancelled')",
            name="ck_notifications_status",
        ),
        schema="etl",
    )
    op.create_index(
        "ix_notifications_pending",
        "notifications",
        ["channel", "not_before"],
        schema="etl",
        postgresql_where=sa.text("status = 'pending'"),
        sqlite_where=sa.text("status = 'pending'"),
    )


def downgrade() -> None:
    op.drop_index("ix_metrics_ts", table_name="metrics", schema="etl")
    op.drop_table("notifications", schema="etl")
    op.drop_table("silences", schema="etl")
    op.drop_table("alert_events", schema="etl")
    op.drop_table("alerts", schema="etl")
