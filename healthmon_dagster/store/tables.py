"""SQLAlchemy Core tables: the health store (schema ``etl``) and the warehouse (``raw``, ``stg``, ``core``).

The Alembic migrations in ``store/migrations`` create and evolve exactly these tables; a test compares
the migrated database against this metadata so the two cannot drift.
"""

from typing import Any

import sqlalchemy as sa

metadata = sa.MetaData()

# SQLite only auto-increments an INTEGER PRIMARY KEY; Postgres gets BIGINT identity columns.
BigId = sa.BigInteger().with_variant(sa.Integer(), "sqlite")
Timestamp = sa.DateTime(timezone=True)

# --- The Synthea patients contract -------------------------------------------------------------

REQUIRED_COLUMNS: tuple[str, ...] = (
    "Id",
    "BIRTHDATE",
    "DEATHDATE",
    "SSN",
    "DRIVERS",
    "PASSPORT",
    "PREFIX",
    "FIRST",
    "LAST",
    "SUFFIX",
    "MAIDEN",
    "MARITAL",
    "RACE",
    "ETHNICITY",
    "GENDER",
    "BIRTHPLACE",
    "ADDRESS",
    "CITY",
    "STATE",
    "COUNTY",
    "ZIP",
    "LAT",
    "LON",
    "HEALTHCARE_EXPENSES",
    "HEALTHCARE_COVERAGE",
)
OPTIONAL_COLUMNS: tuple[str, ...] = ("MIDDLE", "FIPS", "INCOME")  # newer Synthea versions
SOURCE_COLUMNS: tuple[str, ...] = REQUIRED_COLUMNS + OPTIONAL_COLUMNS
SYNTHEA_COLUMN_ORDER: tuple[str, ...] = (
    *REQUIRED_COLUMNS[:8],  # Id .. FIRST
    "MIDDLE",
    *REQUIRED_COLUMNS[8:20],  # LAST .. COUNTY
    "FIPS",
    *REQUIRED_COLUMNS[20:],  # ZIP .. HEALTHCARE_COVERAGE
    "INCOME",
)
"""Synthea 3.x's full patients.csv order. A header is in order when its contract columns are a
subsequence of it: older exports (no MIDDLE, FIPS, INCOME) and newer ones both are."""


def db_column(source_column: str) -> str:
    """The warehouse column name of a CSV column (lower case, so Postgres needs no quoting)."""
    return source_column.lower()


# --- Health store: schema etl -----------------------------------------------------------------

files = sa.Table(
    "files",
    metadata,
    sa.Column("file_id", BigId, primary_key=True, autoincrement=True),
    sa.Column("source", sa.String(500), nullable=False),
    sa.Column("file_key", sa.String(1024), nullable=False),
    sa.Column("fingerprint", sa.String(200)),
    sa.Column("sha256", sa.String(64), nullable=False),
    sa.Column("size_bytes", sa.BigInteger, nullable=False),
    # loaded: rows are in raw; empty: nothing to load; rejected: the file breaks the contract
    sa.Column("status", sa.String(20), nullable=False),
    sa.Column("rows_raw", sa.BigInteger, nullable=False, server_default="0"),
    sa.Column("malformed_rows", sa.BigInteger, nullable=False, server_default="0"),
    sa.Column("delimiter", sa.String(4)),
    sa.Column("had_bom", sa.Boolean, nullable=False, server_default=sa.false()),
    sa.Column("crlf", sa.Boolean, nullable=False, server_default=sa.false()),
    # Comma-separated 1-based positions ("#26,#27") of header fields outside the contract: never
    # their text, which may be patient data (a headerless file). Rows before 2026-12 hold names.
    sa.Column("unexpected_columns", sa.Text),
    sa.Column("missing_columns", sa.Text),
    sa.Column("error", sa.Text),
    sa.Column("dagster_run_id", sa.String(64)),
    sa.Column("loaded_at", Timestamp, nullable=False),
    sa.Column("staged_at", Timestamp),
    sa.Column("merged_at", Timestamp),
    # Normalisations the loader applied (counts and flags, never header text): header names
    # trimmed of spaces, contract names matched ignoring case, contract columns in another order
    # than Synthea's, blank lines skipped.
    sa.Column("header_whitespace", sa.Integer, nullable=False, server_default="0"),
    sa.Column("header_case", sa.Integer, nullable=False, server_default="0"),
    sa.Column("columns_reordered", sa.Boolean, nullable=False, server_default=sa.false()),
    sa.Column("blank_lines", sa.BigInteger, nullable=False, server_default="0"),
    # Lines ended by a lone CR (old Mac exports): read as lines, like CRLF.
    sa.Column("cr_line_endings", sa.Boolean, nullable=False, server_default=sa.false()),
    sa.CheckConstraint("status IN ('loaded', 'empty', 'rejected')", name="ck_files_status"),
    schema="etl",
)
# A file's content is loaded once: concurrent loads of the same bytes collide here, not in memory.
sa.Index(
    "uq_files_sha256_loaded",
    files.c.sha256,
    unique=True,
    postgresql_where=sa.text("status IN ('loaded', 'empty')"),
    sqlite_where=sa.text("status IN ('loaded', 'empty')"),
)
sa.Index("ix_files_file_key", files.c.file_key)

# Each run the landing sensor requested for one version (key and fingerprint) of a landing file.
# requested: the run is queued, running, or its outcome not seen yet; succeeded; failed: the
# sensor requests attempt + 1 from retry_at; stuck: no further attempt (the bound was reached, or
# the failure is not transient) until the file lands with other content.
file_attempts = sa.Table(
    "file_attempts",
    metadata,
    sa.Column("attempt_id", BigId, primary_key=True, autoincrement=True),
    sa.Column("file_key", sa.String(1024), nullable=False),
    sa.Column("fingerprint", sa.String(200), nullable=False),
    sa.Column("attempt", sa.Integer, nullable=False),  # 1, 2, ... per key and fingerprint
    sa.Column("run_key", sa.Text, nullable=False),  # Dagster's run key: key@fingerprint#attempt
    sa.Column("status", sa.String(20), nullable=False),
    sa.Column("requested_at", Timestamp, nullable=False),
    sa.Column("finished_at", Timestamp),
    sa.Column("retry_at", Timestamp),  # failed: when the next attempt may be requested
    sa.Column("dagster_run_id", sa.String(64)),  # the last run of the attempt (run_retries)
    sa.Column("runs", sa.Integer, nullable=False, server_default="0"),  # runs of the attempt
    sa.Column("error_class", sa.String(64)),  # etl.failures: connection_refused, timeout, ...
    sa.Column("transient", sa.Boolean),
    sa.Column("rule", sa.String(200)),  # the classification rule that decided
    sa.Column("error", sa.Text),  # the failure's message, rendered without data values
    sa.Column("reason", sa.String(200)),  # why it was requested: new file, backoff, release...
    sa.Column("dependency", sa.String(40)),  # what a failed attempt found down: warehouse, landing
    sa.CheckConstraint(
        "status IN ('requested', 'succeeded', 'failed', 'stuck')", name="ck_file_attempts_status"
    ),
    sa.CheckConstraint("attempt >= 1", name="ck_file_attempts_attempt"),
    schema="etl",
)
# One row per attempt: two sensor ticks or processes racing to request the same attempt collide
# here, and only the one whose insert wins requests the run.
sa.Index(
    "uq_file_attempts_key_attempt",
    file_attempts.c.file_key,
    file_attempts.c.fingerprint,
    file_attempts.c.attempt,
    unique=True,
)
sa.Index("ix_file_attempts_status", file_attempts.c.status)

# A person released a stuck (or rejected) version of a landing file: the sensor requests it again
# with a fresh attempt budget counted after ``after_attempt``. Attempts are never deleted.
file_releases = sa.Table(
    "file_releases",
    metadata,
    sa.Column("release_id", BigId, primary_key=True, autoincrement=True),
    sa.Column("file_key", sa.String(1024), nullable=False),
    sa.Column("fingerprint", sa.String(200), nullable=False),
    sa.Column("released_status", sa.String(20), nullable=False),  # stuck | rejected
    sa.Column("after_attempt", sa.Integer, nullable=False),  # the version's last attempt then
    sa.Column("released_by", sa.String(200), nullable=False),
    sa.Column("released_at", Timestamp, nullable=False),
    sa.CheckConstraint("released_status IN ('stuck', 'rejected')", name="ck_file_releases_status"),
    # Two people releasing the same file at once make one release.
    sa.UniqueConstraint(
        "file_key", "fingerprint", "after_attempt", name="uq_file_releases_version_attempt"
    ),
    schema="etl",
)

load_runs = sa.Table(
    "load_runs",
    metadata,
    sa.Column("load_run_id", BigId, primary_key=True, autoincrement=True),
    sa.Column("dagster_run_id", sa.String(64)),
    sa.Column("layer", sa.String(20), nullable=False),  # raw | stg | core
    sa.Column("file_id", sa.BigInteger),
    sa.Column("file_key", sa.String(1024)),
    sa.Column("status", sa.String(20), nullable=False),  # success | skipped | rejected | failed
    sa.Column("rows_in", sa.BigInteger, nullable=False, server_default="0"),
    sa.Column("rows_out", sa.BigInteger, nullable=False, server_default="0"),
    sa.Column("rows_rejected", sa.BigInteger, nullable=False, server_default="0"),
    sa.Column("bytes", sa.BigInteger, nullable=False, server_default="0"),
    sa.Column("started_at", Timestamp, nullable=False),
    sa.Column("finished_at", Timestamp, nullable=False),
    sa.Column("duration_ms", sa.Float, nullable=False),
    sa.Column("error", sa.Text),
    sa.CheckConstraint(
        "status IN ('success', 'skipped', 'rejected', 'failed')", name="ck_load_runs_status"
    ),
    schema="etl",
)
sa.Index("ix_load_runs_layer_started", load_runs.c.layer, load_runs.c.started_at)

metrics = sa.Table(
    "metrics",
    metadata,
    sa.Column("metric_id", BigId, primary_key=True, autoincrement=True),
    sa.Column("ts", Timestamp, nullable=False),
    sa.Column("component", sa.String(64), nullable=False),
    sa.Column("metric_name", sa.String(200), nullable=False),
    sa.Column("value", sa.Float, nullable=False),
    sa.Column("unit", sa.String(32), nullable=False, server_default=""),
    sa.Column("tags", sa.JSON, nullable=False),
    schema="etl",
)
sa.Index("ix_metrics_component_name_ts", metrics.c.component, metrics.c.metric_name, metrics.c.ts)
# Metric alert rules read the samples of their longest window, whatever the component.
sa.Index("ix_metrics_ts", metrics.c.ts)

check_results = sa.Table(
    "check_results",
    metadata,
    sa.Column("result_id", BigId, primary_key=True, autoincrement=True),
    sa.Column("ts", Timestamp, nullable=False),
    sa.Column("source", sa.String(20), nullable=False),  # asset_check | health_check
    sa.Column("check_name", sa.String(200), nullable=False),
    sa.Column("target", sa.String(300), nullable=False),  # asset key ("stg/patients") or component
    sa.Column("status", sa.String(30), nullable=False),
    # CheckSeverity (WARN/ERROR) of a result that did not pass, NULL otherwise
    sa.Column("severity", sa.String(20)),
    sa.Column("critical", sa.Boolean),  # health checks: counts fully in its component's status
    sa.Column("observed_value", sa.Float),
    sa.Column("threshold", sa.Float),
    sa.Column("failing_rows", sa.BigInteger),
    sa.Column("response_time_ms", sa.Float),
    sa.Column("message", sa.Text),
    sa.Column("details", sa.JSON, nullable=False),
    sa.Column("dagster_run_id", sa.String(64)),
    schema="etl",
)
sa.Index(
    "ix_check_results_target_name_ts",
    check_results.c.target,
    check_results.c.check_name,
    check_results.c.ts,
)
# The alert fast path finds the results its run recorded.
sa.Index("ix_check_results_dagster_run_id", check_results.c.dagster_run_id)

config_versions = sa.Table(
    "config_versions",
    metadata,
    sa.Column("version_id", BigId, primary_key=True, autoincrement=True),
    sa.Column("config_hash", sa.String(64), nullable=False, unique=True),
    sa.Column("version", sa.String(64), nullable=False),
    sa.Column("source", sa.String(1024)),
    sa.Column("updated_by", sa.String(200)),
    sa.Column("content", sa.Text, nullable=False),
    sa.Column("recorded_at", Timestamp, nullable=False),
    schema="etl",
)

# --- Alerting: alerts, their history, silences, the notification outbox ------------------------

# One row per alert episode: an alert is opened (pending or firing) for a fingerprint, the stable
# hash of its labels, and ends resolved. A later episode of the same fingerprint is a new row.
alerts = sa.Table(
    "alerts",
    metadata,
    sa.Column("alert_id", BigId, primary_key=True, autoincrement=True),
    sa.Column("fingerprint", sa.String(64), nullable=False),
    sa.Column("rule_id", sa.String(200), nullable=False),
    sa.Column("state", sa.String(20), nullable=False),  # AlertState: pending | firing | resolved
    # AlertStatus: active | acknowledged | resolved | suppressed (what a person acts on)
    sa.Column("status", sa.String(20), nullable=False),
    sa.Column("severity", sa.String(20), nullable=False),  # AlertSeverity
    sa.Column("component", sa.String(64)),
    sa.Column("labels", sa.JSON, nullable=False),  # identify the alert; never field values
    sa.Column("title", sa.String(500), nullable=False),
    sa.Column("description", sa.Text, nullable=False, server_default=""),
    sa.Column("details", sa.JSON, nullable=False),  # counts, rates, column names, row numbers
    sa.Column("value", sa.Float),  # the observed value that made the condition true
    sa.Column("group_key", sa.String(500), nullable=False),
    sa.Column("started_at", Timestamp, nullable=False),  # condition first true (pending)
    sa.Column("fired_at", Timestamp),
    sa.Column("last_active_at", Timestamp, nullable=False),  # condition last seen true
    sa.Column("last_evaluated_at", Timestamp, nullable=False),
    sa.Column("resolved_at", Timestamp),
    sa.Column("resolved_by", sa.String(200)),
    sa.Column("resolution", sa.Text),
    sa.Column("acknowledged_by", sa.String(200)),
    sa.Column("acknowledged_at", Timestamp),
    sa.Column("ack_note", sa.Text),
    # Why no notification goes out while it fires: "silence 3", "inhibited by alert 17 (...)",
    # "mute interval weekend"; NULL when not suppressed.
    sa.Column("suppressed_by", sa.String(500)),
    sa.Column("inhibited_by", sa.BigInteger),  # alert_id of the root cause that mutes this one
    sa.Column("escalation_level", sa.Integer, nullable=False, server_default="0"),
    sa.Column("escalations", sa.Integer, nullable=False, server_default="0"),
    sa.Column("next_escalation_at", Timestamp),
    sa.CheckConstraint("state IN ('pending', 'firing', 'resolved')", name="ck_alerts_state"),
    sa.CheckConstraint(
        "status IN ('active', 'acknowledged', 'resolved', 'suppressed')", name="ck_alerts_status"
    ),
    schema="etl",
)
# Dedup is a constraint: at most one open episode per fingerprint, whichever process evaluates.
sa.Index(
    "uq_alerts_open_fingerprint",
    alerts.c.fingerprint,
    unique=True,
    postgresql_where=sa.text("state <> 'resolved'"),
    sqlite_where=sa.text("state <> 'resolved'"),
)
sa.Index("ix_alerts_state_rule", alerts.c.state, alerts.c.rule_id)
sa.Index("ix_alerts_started_at", alerts.c.started_at)

# Every transition and action on an alert, in order: its history.
alert_events = sa.Table(
    "alert_events",
    metadata,
    sa.Column("event_id", BigId, primary_key=True, autoincrement=True),
    sa.Column(
        "alert_id",
        sa.BigInteger,
        sa.ForeignKey("etl.alerts.alert_id", ondelete="CASCADE"),
        nullable=False,
    ),
    sa.Column("at", Timestamp, nullable=False),
    # AlertEventKind: pending | firing | resolved | acknowledged | suppressed | unsuppressed |
    # escalated | repeated | note
    sa.Column("kind", sa.String(20), nullable=False),
    sa.Column("from_state", sa.String(20)),
    sa.Column("to_state", sa.String(20)),
    sa.Column("actor", sa.String(200), nullable=False),  # "sensor", "cli:<user>", ...
    sa.Column("note", sa.Text),
    sa.Column("details", sa.JSON, nullable=False),
    # Names an event that must exist once (``incident_event:<id>``: the update notification of an
    # incident's timeline entry); NULL for every other event. Unique: concurrent writers add it once.
    sa.Column("dedup_key", sa.String(300)),
    schema="etl",
)
sa.Index("ix_alert_events_alert_at", alert_events.c.alert_id, alert_events.c.at)
sa.Index("uq_alert_events_dedup_key", alert_events.c.dedup_key, unique=True)

silences = sa.Table(
    "silences",
    metadata,
    sa.Column("silence_id", BigId, primary_key=True, autoincrement=True),
    # [{"name": label, "value": v, "is_regex": bool, "is_equal": bool}], all must match
    sa.Column("matchers", sa.JSON, nullable=False),
    sa.Column("starts_at", Timestamp, nullable=False),
    sa.Column("ends_at", Timestamp, nullable=False),
    sa.Column("created_by", sa.String(200), nullable=False),
    sa.Column("comment", sa.Text, nullable=False),
    sa.Column("created_at", Timestamp, nullable=False),
    sa.Column("expired_at", Timestamp),  # set when expired early
    sa.CheckConstraint("ends_at > starts_at", name="ck_silences_window"),
    schema="etl",
)

# The outbox: written in the transaction that records the alert event, before anything is sent;
# marked sent only after the channel accepted it. Exactly once per (event, channel).
notifications = sa.Table(
    "notifications",
    metadata,
    sa.Column("notification_id", BigId, primary_key=True, autoincrement=True),
    sa.Column(
        "event_id",
        sa.BigInteger,
        sa.ForeignKey("etl.alert_events.event_id", ondelete="CASCADE"),
        nullable=False,
    ),
    sa.Column("alert_id", sa.BigInteger, nullable=False),
    sa.Column("channel", sa.String(100), nullable=False),  # name under channels: in healthmon.yaml
    # NotificationKind: firing | resolved | acknowledged | escalated | repeated
    sa.Column("kind", sa.String(20), nullable=False),
    sa.Column("group_key", sa.String(500), nullable=False),
    # NotificationStatus: pending | sent | failed (gave up after retries) | cancelled
    sa.Column("status", sa.String(20), nullable=False),
    sa.Column("attempts", sa.Integer, nullable=False, server_default="0"),
    sa.Column("not_before", Timestamp, nullable=False),  # group_wait / backoff / Retry-After
    sa.Column("last_error", sa.Text),
    sa.Column("created_at", Timestamp, nullable=False),
    sa.Column("sent_at", Timestamp),
    sa.Column("delivery_key", sa.String(64)),  # idempotency key of the request that carried it
    # A dispatcher's lease while it sends: a row claimed by a process killed mid-send is
    # taken again once the lease ends, with the same delivery_key (the receiver dedups).
    sa.Column("claimed_by", sa.String(100)),
    sa.Column("claimed_until", Timestamp),
    # Set by the first failed attempt: a failing row is retried until then, then ``failed``.
    sa.Column("retry_until", Timestamp),
    sa.UniqueConstraint("event_id", "channel", name="uq_notifications_event_channel"),
    sa.CheckConstraint(
        "status IN ('pending', 'sent', 'failed', 'cancelled')", name="ck_notifications_status"
    ),
    schema="etl",
)
sa.Index(
    "ix_notifications_pending",
    notifications.c.channel,
    notifications.c.not_before,
    postgresql_where=sa.text("status = 'pending'"),
    sqlite_where=sa.text("status = 'pending'"),
)

# Where each alert's conversation lives in a threaded channel: the first message about an alert
# starts its thread (Slack ts + conversation id, or the email Message-ID); the acknowledgement and
# the resolve reply there. One thread per (channel, alert).
notification_threads = sa.Table(
    "notification_threads",
    metadata,
    sa.Column("thread_id", BigId, primary_key=True, autoincrement=True),
    sa.Column("channel", sa.String(100), nullable=False),
    sa.Column(
        "alert_id",
        sa.BigInteger,
        sa.ForeignKey("etl.alerts.alert_id", ondelete="CASCADE"),
        nullable=False,
    ),
    sa.Column("thread_ref", sa.String(255), nullable=False),
    sa.Column("conversation", sa.String(100)),  # Slack's channel id; NULL for email
    sa.Column("created_at", Timestamp, nullable=False),
    sa.UniqueConstraint("channel", "alert_id", name="uq_notification_threads_channel_alert"),
    schema="etl",
)
sa.Index(
    "ix_notification_threads_ref", notification_threads.c.channel, notification_threads.c.thread_ref
)

# Every request a dispatcher made to a rate-limited channel, sent or failed, from when its answer
# (or its failure) came: what the channel's rate limit counts once the request is over (a request
# in flight is counted from its outbox rows' lease). An outbox row keeps only its last attempt,
# so retries are counted here. Rows older than the longest window (a minute) are deleted as the
# dispatcher claims.
notification_requests = sa.Table(
    "notification_requests",
    metadata,
    sa.Column("request_id", BigId, primary_key=True, autoincrement=True),
    sa.Column("channel", sa.String(100), nullable=False),
    sa.Column("ended_at", Timestamp, nullable=False),
    schema="etl",
)
sa.Index(
    "ix_notification_requests_channel_ended",
    notification_requests.c.channel,
    notification_requests.c.ended_at,
)

# --- Incidents: records, their timeline, linked alerts and related incidents -------------------

INCIDENT_SEVERITIES = "('low', 'medium', 'high', 'critical')"
INCIDENT_STATUSES = "('open', 'investigating', 'identified', 'monitoring', 'resolved', 'closed')"
INCIDENT_IMPACTS = "('none', 'minor', 'major', 'critical')"
INCIDENT_SOURCES = "('hook', 'sensor', 'cli', 'api')"
INCIDENT_ENDED = "status IN ('resolved', 'closed')"

# One row per incident. ``root_key`` names its root cause (e.g. "resource:database:<host/db>" or
# "asset:raw/patients"); while an incident is not resolved or closed, a failure with the same
# root key is absorbed into it as a timeline entry instead of opening another (the partial
# unique index below).
incidents = sa.Table(
    "incidents",
    metadata,
    sa.Column("incident_id", BigId, primary_key=True, autoincrement=True),
    sa.Column("root_key", sa.String(500), nullable=False),
    sa.Column("title", sa.String(500), nullable=False),
    sa.Column("description", sa.Text, nullable=False, server_default=""),
    sa.Column("severity", sa.String(20), nullable=False),  # IncidentSeverity
    sa.Column("status", sa.String(20), nullable=False),  # IncidentStatus
    sa.Column("component", sa.String(64), nullable=False),  # HealthComponent value
    sa.Column("asset_keys", sa.JSON, nullable=False),  # ["raw/patients", ...]
    sa.Column("resources", sa.JSON, nullable=False),  # ["database:host/db", "s3:bucket"]
    sa.Column("impact", sa.String(20), nullable=False),  # IncidentImpact
    sa.Column("root_cause", sa.Text),
    sa.Column("resolution", sa.Text),
    sa.Column("assigned_to", sa.String(200)),
    sa.Column("tags", sa.JSON, nullable=False),
    sa.Column("metadata", sa.JSON, nullable=False),  # counts, error classes; never field values
    sa.Column("failure_count", sa.Integer, nullable=False, server_default="1"),
    sa.Column("started_at", Timestamp, nullable=False),  # the first failure happened
    sa.Column("created_at", Timestamp, nullable=False),  # the row was written (detected)
    sa.Column("last_failure_at", Timestamp, nullable=False),
    sa.Column("acknowledged_at", Timestamp),  # first assignment or move out of 'open'
    sa.Column("ended_at", Timestamp),  # resolved
    sa.Column("duration_minutes", sa.Float),  # ended_at - started_at
    sa.Column("closed_at", Timestamp),
    sa.Column("updated_at", Timestamp, nullable=False),
    sa.CheckConstraint(f"severity IN {INCIDENT_SEVERITIES}", name="ck_incidents_severity"),
    sa.CheckConstraint(f"status IN {INCIDENT_STATUSES}", name="ck_incidents_status"),
    sa.CheckConstraint(f"impact IN {INCIDENT_IMPACTS}", name="ck_incidents_impact"),
    schema="etl",
)
# One open incident per root cause, whichever hook or sensor process reports the failure first.
sa.Index(
    "uq_incidents_open_root_key",
    incidents.c.root_key,
    unique=True,
    postgresql_where=sa.text(f"NOT ({INCIDENT_ENDED})"),
    sqlite_where=sa.text(f"NOT ({INCIDENT_ENDED})"),
)
sa.Index("ix_incidents_component_started", incidents.c.component, incidents.c.started_at)
sa.Index("ix_incidents_status", incidents.c.status)

# The self-healing sensor's record, one row per (asset, attempt): a re-run it requested (requested,
# then succeeded or failed; a failed one may be followed from retry_at), a failure it will not
# re-run (skipped: a data error, another mechanism's retry), the escalation when the
# asset's circuit breaker opened (escalated: no re-run until the asset materializes again), and the
# breaker's reset (reset). The unique (asset_key, attempt) lets one sensor tick or process win each
# attempt; the unique (source_run_id, asset_key) means one failed run is re-run once per asset.
# incident_id names the incident whose timeline holds the decision (no foreign key: incidents'
# retention deletes old incidents, and this record stays for the attempt counts).
self_heal_attempts = sa.Table(
    "self_heal_attempts",
    metadata,
    sa.Column("attempt_id", BigId, primary_key=True, autoincrement=True),
    sa.Column("asset_key", sa.String(500), nullable=False),  # "raw/patients"
    sa.Column("attempt", sa.Integer, nullable=False),  # 1, 2, ... per asset
    sa.Column("status", sa.String(20), nullable=False),
    sa.Column("reason", sa.String(30), nullable=False),  # failed_run, check_not_evaluated, stale
    sa.Column("source_run_id", sa.String(64)),  # the failed run re-run (None: stale)
    sa.Column("run_key", sa.String(500), nullable=False),  # the re-run's Dagster run key
    sa.Column("rerun_run_id", sa.String(64)),  # the re-run, once seen
    sa.Column("incident_id", sa.BigInteger),
    sa.Column("error_class", sa.String(64)),
    sa.Column("rule", sa.String(200), nullable=False),  # the rule that decided
    sa.Column("requested_at", Timestamp, nullable=False),
    sa.Column("finished_at", Timestamp),
    sa.Column("retry_at", Timestamp),  # failed: the next re-run not before
    # A landing file's failure (its failed run loaded this file): only that file's load heals it.
    sa.Column("file_key", sa.String(1024)),
    sa.CheckConstraint(
        "status IN ('requested', 'succeeded', 'failed', 'skipped', 'escalated', 'reset')",
        name="ck_self_heal_attempts_status",
    ),
    sa.CheckConstraint("attempt >= 1", name="ck_self_heal_attempts_attempt"),
    schema="etl",
)
sa.Index(
    "uq_self_heal_attempts_asset_attempt",
    self_heal_attempts.c.asset_key,
    self_heal_attempts.c.attempt,
    unique=True,
)
sa.Index(
    "uq_self_heal_attempts_source_asset",
    self_heal_attempts.c.source_run_id,
    self_heal_attempts.c.asset_key,
    unique=True,
)
sa.Index("ix_self_heal_attempts_status", self_heal_attempts.c.status)

# The timeline: every event of an incident, in order, with who did it and from where. ``text``
# is built from counts, asset keys, column names and error classes, never field values.
incident_events = sa.Table(
    "incident_events",
    metadata,
    sa.Column("event_id", BigId, primary_key=True, autoincrement=True),
    sa.Column(
        "incident_id",
        sa.BigInteger,
        sa.ForeignKey("etl.incidents.incident_id", ondelete="CASCADE"),
        nullable=False,
    ),
    sa.Column("at", Timestamp, nullable=False),
    sa.Column("kind", sa.String(30), nullable=False),  # IncidentEventKind
    sa.Column("actor", sa.String(200), nullable=False),  # "sensor:run_failure", "cli:alice", ...
    sa.Column("source", sa.String(10), nullable=False),  # IncidentSource
    sa.Column("from_status", sa.String(20)),
    sa.Column("to_status", sa.String(20)),
    sa.Column("text", sa.Text, nullable=False),
    sa.Column("details", sa.JSON, nullable=False),
    # Names an entry that must be on the timelines once, whoever writes it and when: a failure
    # ("failure:step:<run>:<step>", "failure:alert:<id>"), a sent notification
    # ("notification:<id>"). NULL (most entries) never conflicts.
    sa.Column("dedup_key", sa.String(300)),
    sa.CheckConstraint(f"source IN {INCIDENT_SOURCES}", name="ck_incident_events_source"),
    schema="etl",
)
sa.Index("ix_incident_events_incident_at", incident_events.c.incident_id, incident_events.c.at)
sa.Index("uq_incident_events_dedup_key", incident_events.c.dedup_key, unique=True)

# Alerts linked to an incident; a link is made once (the primary key).
incident_alerts = sa.Table(
    "incident_alerts",
    metadata,
    sa.Column(
        "incident_id",
        sa.BigInteger,
        sa.ForeignKey("etl.incidents.incident_id", ondelete="CASCADE"),
        primary_key=True,
    ),
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
sa.Index("ix_incident_alerts_alert", incident_alerts.c.alert_id)

# Related incidents, one row per pair (the lower id first), with why and how strongly.
related_incidents = sa.Table(
    "related_incidents",
    metadata,
    sa.Column(
        "incident_id",
        sa.BigInteger,
        sa.ForeignKey("etl.incidents.incident_id", ondelete="CASCADE"),
        primary_key=True,
    ),
    sa.Column(
        "related_id",
        sa.BigInteger,
        sa.ForeignKey("etl.incidents.incident_id", ondelete="CASCADE"),
        primary_key=True,
    ),
    sa.Column("strength", sa.Float, nullable=False),
    sa.Column("reason", sa.Text, nullable=False),
    sa.Column("linked_at", Timestamp, nullable=False),
    sa.Column("linked_by", sa.String(200), nullable=False),
    sa.CheckConstraint("incident_id < related_id", name="ck_related_incidents_order"),
    sa.CheckConstraint("strength >= 0 AND strength <= 1", name="ck_related_incidents_strength"),
    schema="etl",
)
sa.Index("ix_related_incidents_related", related_incidents.c.related_id)

# --- Warehouse: raw -> stg -> core ------------------------------------------------------------

raw_patients = sa.Table(
    "patients",
    metadata,
    sa.Column("_file_id", sa.BigInteger, primary_key=True),
    sa.Column("_row_number", sa.BigInteger, primary_key=True),  # 1 = first data record of the file
    *(sa.Column(db_column(c), sa.Text) for c in SOURCE_COLUMNS),
    sa.Column("_file", sa.String(1024), nullable=False),
    sa.Column("_loaded_at", Timestamp, nullable=False),
    sa.Column("_error", sa.Text),  # why the record could not be split into the header's fields
    schema="raw",
)

# Postgres keeps patient ids as native uuid (16 bytes, compared by memcmp: index maintenance on
# 1M random keys is several times cheaper than on 36-character text); SQLite keeps the text.
PatientId = sa.Uuid(as_uuid=False).with_variant(sa.String(36), "sqlite")

STG_TYPES: dict[str, sa.types.TypeEngine[Any]] = {
    "id": PatientId,
    "birthdate": sa.Date(),
    "deathdate": sa.Date(),
    "lat": sa.Float(),
    "lon": sa.Float(),
    "healthcare_expenses": sa.Numeric(18, 2),
    "healthcare_coverage": sa.Numeric(18, 2),
    "income": sa.Numeric(18, 2),
}
STG_COLUMNS: tuple[str, ...] = tuple(db_column(c) for c in SOURCE_COLUMNS)

stg_patients = sa.Table(
    "patients",
    metadata,
    sa.Column("_file_id", sa.BigInteger, primary_key=True),
    sa.Column("_row_number", sa.BigInteger, primary_key=True),
    *(
        sa.Column(c, STG_TYPES.get(c, sa.Text()), nullable=c not in ("id", "birthdate"))
        for c in STG_COLUMNS
    ),
    sa.Column("_staged_at", Timestamp, nullable=False),
    # ';'-separated codes of the flag rules the kept row breaks (staging.rules), never values.
    sa.Column("_flags", sa.Text),
    schema="stg",
)

stg_patients_rejected = sa.Table(
    "patients_rejected",
    metadata,
    sa.Column("_file_id", sa.BigInteger, primary_key=True),
    sa.Column("_row_number", sa.BigInteger, primary_key=True),
    sa.Column("reasons", sa.Text, nullable=False),  # ';'-separated reason codes, never values
    sa.Column("_staged_at", Timestamp, nullable=False),
    schema="stg",
)

# Attributes whose change opens a new SCD2 version (everything the source sends about a patient).
TRACKED_COLUMNS: tuple[str, ...] = tuple(c for c in STG_COLUMNS if c != "id")

dim_patient = sa.Table(
    "dim_patient",
    metadata,
    sa.Column("patient_sk", BigId, primary_key=True, autoincrement=True),
    sa.Column("patient_id", PatientId, nullable=False),
    *(sa.Column(c, STG_TYPES.get(c, sa.Text())) for c in TRACKED_COLUMNS),
    sa.Column("hash_diff", sa.String(32), nullable=False),
    sa.Column("valid_from", Timestamp, nullable=False),
    sa.Column("valid_to", Timestamp),  # NULL while current
    sa.Column("is_current", sa.Boolean, nullable=False),
    sa.Column("_file_id", sa.BigInteger, nullable=False),
    sa.Column("_row_number", sa.BigInteger, nullable=False),
    sa.CheckConstraint("valid_to IS NULL OR valid_to > valid_from", name="ck_dim_patient_window"),
    sa.CheckConstraint(
        "(is_current AND valid_to IS NULL) OR (NOT is_current AND valid_to IS NOT NULL)",
        name="ck_dim_patient_current",
    ),
    schema="core",
)
# Exactly one current version per patient, enforced by the database.
sa.Index(
    "uq_dim_patient_current",
    dim_patient.c.patient_id,
    unique=True,
    postgresql_where=sa.text("is_current"),
    sqlite_where=sa.text("is_current = 1"),
)
sa.Index("uq_dim_patient_version", dim_patient.c.patient_id, dim_patient.c.valid_from, unique=True)
# The versions one file opened, and the versions a merge closed (they end where the file's start):
# what the checks of a load read instead of the whole table (quality/kinds/identity.py,
# reconciliation.py).
sa.Index("ix_dim_patient_file_id", dim_patient.c._file_id)
sa.Index(
    "ix_dim_patient_valid_to",
    dim_patient.c.valid_to,
    postgresql_where=sa.text("valid_to IS NOT NULL"),
    sqlite_where=sa.text("valid_to IS NOT NULL"),
)
