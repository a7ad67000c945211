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
