"""Pydantic models of ``healthmon.yaml``.

Every model forbids unknown keys, so a typo is an error rather than a silently ignored setting,
and every section has a default, so an empty file is a valid configuration. Validators that find a
problem raise :class:`ConfigProblem` with locations relative to the model, which the loader turns
into path-precise messages with YAML line numbers.
"""

import difflib
import re
from datetime import datetime
from typing import TYPE_CHECKING, Annotated, Any, ClassVar, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from healthmon_dagster.enums import (
    Aggregation,
    AlertSeverity,
    ChannelType,
    ConditionOperator,
    HealthCheckType,
    HealthComponent,
)

Loc = tuple[str | int, ...]

ASSET_KEY_PATTERN = re.compile(r"^[A-Za-z0-9_]+(/[A-Za-z0-9_]+)*$")
NAME_PATTERN = re.compile(r"^[A-Za-z0-9_]+$")
ENV_VAR_PATTERN = re.compile(r"^[A-Z_][A-Z0-9_]*$")
IMPL_PATTERN = re.compile(r"^[A-Za-z_][\w.]*:[A-Za-z_][\w.]*$")
# Channel configuration keys that hold secrets; their value must come from an environment variable.
SECRET_KEY_PATTERN = re.compile(
    r"(token|password|passwd|secret|api_key|routing_key|integration_key|webhook_url|auth)$"
)
STRING_OPERATORS = frozenset({ConditionOperator.CONTAINS, ConditionOperator.NOT_CONTAINS})
EQUALITY_OPERATORS = frozenset({ConditionOperator.EQUALS, ConditionOperator.NOT_EQUALS})
LOWER_IS_WORSE_OPERATORS = frozenset(
    {ConditionOperator.LESS_THAN, ConditionOperator.LESS_THAN_OR_EQUALS}
)

# Known feature flags and their defaults; a flag not listed here is rejected as a probable typo.
DEFAULT_FEATURE_FLAGS: dict[str, bool] = {
    "self_healing": False,
    "anomaly_detection": True,
    "forecasting": True,
    "incident_correlation": True,
    "alert_grouping": True,
    "status_page": True,
}

HealthCheckKind = Literal[
    "database",
    "s3",
    "landing_folder",
    "network",
    "smtp",
    "slack",
    "system_resources",
    "etl_component",
    "daemon",
    "capacity",
    "custom",
]


class ConfigProblem(ValueError):
    """One or more validation problems, each at a location relative to the model that raised it."""

    def __init__(self, problems: list[tuple[Loc, str]]) -> None:
        super().__init__("; ".join(f"{'.'.join(map(str, loc))}: {msg}" for loc, msg in problems))
        self.problems = problems


def _raise_if(problems: list[tuple[Loc, str]]) -> None:
    if problems:
        raise ConfigProblem(problems)


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_default=True)


# --------------------------------------------------------------------------------------------------
# Staging rules

StagingAction = Literal["reject", "flag"]

# Every staging rule (its reason code) and what a row that breaks it gets by default. Identity and
# typing rules reject: the row cannot be joined or typed. Formats that vary by country and source
# (postal code, SSN, passport, driver's licence) keep the row and flag it.
STAGING_RULES: dict[str, StagingAction] = {
    "malformed_record": "reject",
    "id_missing": "reject",
    "id_not_uuid": "reject",
    "id_duplicate_in_file": "reject",
    "birthdate_missing": "reject",
    "birthdate_invalid": "reject",
    "birthdate_in_future": "reject",
    "deathdate_invalid": "reject",
    "deathdate_in_future": "reject",
    "deathdate_before_birthdate": "reject",
    "gender_invalid": "reject",
    "lat_invalid": "reject",
    "lon_invalid": "reject",
    "healthcare_expenses_invalid": "reject",
    "healthcare_coverage_invalid": "reject",
    "income_invalid": "reject",
    "zip_invalid": "flag",
    "ssn_invalid": "flag",
    "passport_invalid": "flag",
    "drivers_invalid": "flag",
}
# Rules whose breaking rows can be kept: the value stays text in stg (the others are typed, or
# identify the row).
FLAGGABLE_RULES: frozenset[str] = frozenset(
    {"gender_invalid", "zip_invalid", "ssn_invalid", "passport_invalid", "drivers_invalid"}
)
COUNTRY_PATTERN = re.compile(r"^[A-Z]{2}$")


class StagingConfiguration(_Model):
    """What staging does with a row that breaks each rule (``reject`` or ``flag``), and the
    country whose postal-code and id formats apply when a record's state implies none."""

    # ISO 3166 alpha-2 ('DE'); empty: a record whose state names no known country gets the generic
    # postal-code pattern.
    default_country: str | None = None
    rules: dict[str, StagingAction] = Field(default_factory=dict)

    @field_validator("default_country")
    @classmethod
    def _country_code(cls, value: str | None) -> str | None:
        if value is not None and not COUNTRY_PATTERN.match(value):
            _raise_if([((), f"'{value}' is not a 2-letter ISO country code like 'DE'")])
        return value

    @field_validator("rules")
    @classmethod
    def _known_rules(cls, value: dict[str, StagingAction]) -> dict[str, StagingAction]:
        problems: list[tuple[Loc, str]] = []
        for name, action in value.items():
            if name not in STAGING_RULES:
                problems.append(((name,), _unknown("staging rule", name, list(STAGING_RULES))))
            elif action == "flag" and name not in FLAGGABLE_RULES:
                problems.append(
                    (
                        (name,),
                        f"a row that breaks {name} cannot be kept (it could not be typed or "
                        f"joined): only reject; rules that can flag: "
                        f"{', '.join(sorted(FLAGGABLE_RULES))}",
                    )
                )
        _raise_if(problems)
        return value

    def action(self, rule: str) -> StagingAction:
        """What a row that breaks ``rule`` gets."""
        return self.rules.get(rule, STAGING_RULES[rule])

    def flagged(self) -> list[str]:
        """The rules that keep and flag a breaking row, in rule order."""
        return [r for r in STAGING_RULES if self.action(r) == "flag"]


# --------------------------------------------------------------------------------------------------
# Landing and thresholds


class LandingConfiguration(_Model):
    """Which landing files are picked up and how they are parsed."""

    file_pattern: str = "patients*.csv"
    accepted_delimiters: list[str] = Field(default_factory=lambda: [","], min_length=1)
    # Header names outside the Synthea contract that a source is known to send: not loaded, not
    # reported as unknown, and the only names besides the contract's that messages may show.
    accepted_extra_columns: list[str] = Field(default_factory=list)
    # A record (one line, or several while a quoted field is open) longer than this is kept as
    # malformed and reading goes on with the next line: a stray quote cannot swallow the file.
    max_record_bytes: int = Field(default=1 << 20, ge=1 << 10, le=1 << 28)

    @field_validator("accepted_delimiters")
    @classmethod
    def _single_characters(cls, value: list[str]) -> list[str]:
        _raise_if(
            [((i,), "a delimiter is one character") for i, d in enumerate(value) if len(d) != 1]
        )
        return value

    @field_validator("accepted_extra_columns")
    @classmethod
    def _column_names(cls, value: list[str]) -> list[str]:
        seen: set[str] = set()
        problems: list[tuple[Loc, str]] = []
        for i, name in enumerate(value):
            if not name.strip() or name != name.strip():
                problems.append(((i,), "a column name is not empty and has no surrounding spaces"))
            elif name.upper() in seen:
                problems.append(((i,), f"'{name}' is listed twice (names match ignoring case)"))
            seen.add(name.upper())
        _raise_if(problems)
        return value


class ThresholdConfiguration(_Model):
    """Warning and critical levels for one metric of one component."""

    threshold_id: str
    component: HealthComponent
    metric_name: str
    warning_threshold: float
    critical_threshold: float
    operator: ConditionOperator = ConditionOperator.GREATER_THAN
    enabled: bool = True
    description: str = ""

    @model_validator(mode="after")
    def _ordered(self) -> "ThresholdConfiguration":
        if self.operator in STRING_OPERATORS:
            _raise_if([(("operator",), f"'{self.operator}' needs a string threshold")])
        w, c = self.warning_threshold, self.critical_threshold
        if self.operator in LOWER_IS_WORSE_OPERATORS and w < c:
            msg = f"with '{self.operator}', warning_threshold ({w}) must be >= critical ({c})"
            _raise_if([(("warning_threshold",), msg)])
        if self.operator not in LOWER_IS_WORSE_OPERATORS | EQUALITY_OPERATORS and w > c:
            msg = f"with '{self.operator}', warning_threshold ({w}) must be <= critical ({c})"
            _raise_if([(("warning_threshold",), msg)])
        return self


# --------------------------------------------------------------------------------------------------
# Health checks


class HealthCheckConfiguration(_Model):
    """One scheduled health check: a built-in implementation (``kind``) or a custom callable."""

    check_id: str = Field(pattern=NAME_PATTERN.pattern)
    name: str = ""
    description: str = ""
    component: HealthComponent
    check_type: HealthCheckType = HealthCheckType.CONNECTIVITY
    kind: HealthCheckKind
    impl: str | None = None
    interval_seconds: int = Field(default=60, ge=1)
    timeout_seconds: float = Field(default=10, gt=0)
    retry_attempts: int = Field(default=0, ge=0, le=10)
    enabled: bool = True
    critical: bool = False
    dependencies: list[str] = Field(default_factory=list)
    custom_parameters: dict[str, Any] = Field(default_factory=dict)

    @model_validator(mode="after")
    def _check(self) -> "HealthCheckConfiguration":
        if not self.name:
            self.name = self.check_id
        problems: list[tuple[Loc, str]] = []
        if self.kind == "custom" and self.impl is None:
            problems.append((("impl",), "kind 'custom' needs impl: 'module.path:callable'"))
        if self.kind != "custom" and self.impl is not None:
            problems.append(
                (("impl",), f"impl is only allowed with kind 'custom', not '{self.kind}'")
            )
        if self.impl is not None and not IMPL_PATTERN.match(self.impl):
            problems.append((("impl",), f"'{self.impl}' is not of the form 'module.path:callable'"))
        if self.timeout_seconds > self.interval_seconds:
            problems.append(
                (
                    ("timeout_seconds",),
                    f"timeout_seconds ({self.timeout_seconds}) must be <= "
                    f"interval_seconds ({self.interval_seconds})",
                )
            )
        if self.check_id in self.dependencies:
            i = self.dependencies.index(self.check_id)
            problems.append((("dependencies", i), "a health check cannot depend on itself"))
        _raise_if(problems)
        return self


# --------------------------------------------------------------------------------------------------
# Data quality


class CheckSpec(_Model):
    """Fields shared by every quality check.

    ``warn`` and ``fail`` are the failing fraction (or count, for count-based checks) above which
    the check warns or fails. A ``blocking`` check that fails stops downstream assets.
    ``description`` is the user's text for one check; ``kind_description`` is what the kind means
    to the business, shown in the UI when a check has no description of its own.
    """

    kind_description: ClassVar[str] = ""
    if TYPE_CHECKING:
        # Every concrete spec declares ``kind`` as its Literal discriminator; not a field here.
        kind: str

    name: str | None = Field(default=None, pattern=NAME_PATTERN.pattern)
    warn: float | None = Field(default=None, ge=0)
    fail: float | None = Field(default=None, ge=0)
    blocking: bool = False
    description: str = ""

    def default_name(self) -> str:
        raise NotImplementedError

    @property
    def check_name(self) -> str:
        """The Dagster asset-check name: ``name``, else a predicate derived from the spec."""
        return self.name or self.default_name()

    @model_validator(mode="after")
    def _warn_below_fail(self) -> "CheckSpec":
        if self.warn is not None and self.fail is not None and self.warn > self.fail:
            _raise_if([(("warn",), f"warn ({self.warn}) must be <= fail ({self.fail})")])
        return self


def _no_levels(spec: "CheckSpec", allowed: tuple[str, ...], why: str) -> None:
    """Reject ``warn``/``fail`` where the kind does not read them as levels (they would do
    nothing); ``allowed`` lists the ones the kind does read."""
    problems: list[tuple[Loc, str]] = []
    for name in ("warn", "fail"):
        if getattr(spec, name) is not None and name not in allowed:
            problems.append(((name,), f"{name} has no effect on a {spec.kind} check: {why}"))
    _raise_if(problems)


def _breach_levels(spec: "CheckSpec") -> None:
    """A bounds check either holds or not: warn/fail may only be 0 (a breach warns / fails)."""
    _raise_if(
        [
            (
                (name,),
                f"{name} must be 0 for a {spec.kind} check (a breach warns with warn: 0, "
                f"fails with fail: 0, the default); the bounds are min/max or the *_pct fields",
            )
            for name in ("warn", "fail")
            if getattr(spec, name) not in (None, 0)
        ]
    )


class _MostlyCheckSpec(CheckSpec):
    # Fraction of rows that must pass (Great Expectations' ``mostly``); an alternative to ``fail``.
    mostly: float | None = Field(default=None, gt=0, le=1)

    @model_validator(mode="after")
    def _mostly_or_fail(self) -> "_MostlyCheckSpec":
        if self.mostly is not None and self.fail is not None:
            _raise_if([(("mostly",), "set either mostly or fail, not both")])
        return self


def _join(columns: list[str]) -> str:
    return "_".join(c.lower() for c in columns)


class NotNullCheck(_MostlyCheckSpec):
    kind_description = "Every row has a value in the key column(s): a missing id cannot be joined."

    kind: Literal["not_null"]
    columns: list[str] = Field(min_length=1)

    def default_name(self) -> str:
        return f"{_join(self.columns)}_is_not_null"


class UniqueCheck(_MostlyCheckSpec):
    """Uniqueness of one column, or of the combination of several (compound key)."""

    kind_description = "No two rows share the key: duplicates double-count patients downstream."

    kind: Literal["unique"]
    columns: list[str] = Field(min_length=1)
    scope: Literal["table", "latest_file"] = "table"

    def default_name(self) -> str:
        return f"{_join(self.columns)}_is_unique"


class AcceptedValuesCheck(_MostlyCheckSpec):
    kind_description = "The column holds only the agreed codes, so reports group correctly."

    kind: Literal["accepted_values"]
    column: str
    values: list[str | int | float] = Field(min_length=1)

    def default_name(self) -> str:
        return f"{self.column.lower()}_has_accepted_values"


class RangeCheck(_MostlyCheckSpec):
    kind_description = "Values lie within their physical range (e.g. a latitude within +-90)."

    kind: Literal["range"]
    column: str
    min: float | None = None
    max: float | None = None

    def default_name(self) -> str:
        return f"{self.column.lower()}_is_in_range"

    @model_validator(mode="after")
    def _bounds(self) -> "RangeCheck":
        if self.min is None and self.max is None:
            _raise_if([(("min",), "give min, max or both")])
        if self.min is not None and self.max is not None and self.min > self.max:
            _raise_if([(("min",), f"min ({self.min}) must be <= max ({self.max})")])
        return self


class RegexCheck(_MostlyCheckSpec):
    kind_description = "Values have the agreed format."

    kind: Literal["regex"]
    column: str
    pattern: str

    def default_name(self) -> str:
        return f"{self.column.lower()}_matches_pattern"

    @field_validator("pattern")
    @classmethod
    def _compiles(cls, value: str) -> str:
        try:
            re.compile(value)
        except re.error as exc:
            raise ValueError(f"not a valid regular expression: {exc}") from None
        return value


class RowCountCheck(CheckSpec):
    kind_description = "The load holds a plausible number of rows (an empty export is an incident)."

    kind: Literal["row_count"]
    min: int | None = Field(default=None, ge=0)
    max: int | None = Field(default=None, ge=0)

    def default_name(self) -> str:
        return "row_count_is_in_range"

    @model_validator(mode="after")
    def _bounds(self) -> "RowCountCheck":
        if self.min is not None and self.max is not None and self.min > self.max:
            _raise_if([(("min",), f"min ({self.min}) must be <= max ({self.max})")])
        _breach_levels(self)
        return self


class RowCountChangeCheck(CheckSpec):
    """Change of the row count against the previous materialization, in percent."""

    kind_description = "The table did not shrink or grow more than allowed since the last check."

    kind: Literal["row_count_change"]
    max_drop_pct: float | None = Field(default=None, ge=0, le=100)
    max_growth_pct: float | None = Field(default=None, ge=0)

    def default_name(self) -> str:
        return "row_count_change_is_within_bounds"

    @model_validator(mode="after")
    def _levels(self) -> "RowCountChangeCheck":
        _breach_levels(self)
        return self


class SchemaCheck(CheckSpec):
    kind_description = "The columns the pipeline relies on are there, with the agreed types."

    kind: Literal["schema"]
    required_columns: list[str] = Field(default_factory=list)
    allow_unexpected: bool = True
    types: dict[str, str] = Field(default_factory=dict)

    def default_name(self) -> str:
        return "schema_matches"

    @field_validator("required_columns")
    @classmethod
    def _no_duplicates(cls, value: list[str]) -> list[str]:
        seen: set[str] = set()
        problems: list[tuple[Loc, str]] = []
        for i, column in enumerate(value):
            if column in seen:
                problems.append(((i,), f"duplicate column '{column}'"))
            seen.add(column)
        _raise_if(problems)
        return value


class FreshnessCheck(CheckSpec):
    """Age of the newest value of a timestamp column."""

    kind_description = "The newest timestamp is recent enough for the data to be trusted."

    kind: Literal["freshness"]
    column: str
    warn_after_minutes: int | None = Field(default=None, ge=1)
    fail_after_minutes: int = Field(ge=1)

    def default_name(self) -> str:
        return f"{self.column.lower()}_is_fresh"

    @model_validator(mode="after")
    def _ordered(self) -> "FreshnessCheck":
        w, f = self.warn_after_minutes, self.fail_after_minutes
        if w is not None and w >= f:
            _raise_if([(("warn_after_minutes",), f"warn_after_minutes ({w}) must be < fail ({f})")])
        _no_levels(self, (), "use warn_after_minutes / fail_after_minutes")
        return self


class ReconciliationCheck(CheckSpec):
    """Row counts of two adjacent layers agree (rejected rows accounted for)."""

    kind_description = "Rows are neither lost nor invented between two layers."

    kind: Literal["reconciliation"]
    between: Literal["raw_vs_stg", "stg_vs_core"]

    def default_name(self) -> str:
        return f"{self.between}_reconciles"


class RejectionRateCheck(CheckSpec):
    """Fraction of rows rejected by staging; warn/fail default to ``quality.rejection_rate``."""

    kind_description = "Few enough source rows are rejected by staging (default warn 1%, fail 5%)."

    kind: Literal["rejection_rate"]

    def default_name(self) -> str:
        return "rejection_rate_below_threshold"


class RejectionReasonsCheck(CheckSpec):
    """Rows of the latest file that staging rejected for any of ``reasons`` (reason codes of
    ``stg.patients_rejected``), as a fraction of the file's rows, with a per-reason breakdown and
    the first row numbers. ``warn``/``fail`` are fractions of the file's rows; with neither, any
    such row fails (``warn: 0`` warns at the first row instead)."""

    kind_description = (
        "No source row is rejected for these reasons: a rejected row is missing downstream."
    )

    kind: Literal["rejection_reasons"]
    reasons: list[str] = Field(min_length=1)

    def default_name(self) -> str:
        return f"no_rows_rejected_for_{_join(self.reasons)}"

    @field_validator("reasons")
    @classmethod
    def _known_reasons(cls, value: list[str]) -> list[str]:
        _raise_if(
            [
                ((i,), _unknown("staging rule", name, list(STAGING_RULES)))
                for i, name in enumerate(value)
                if name not in STAGING_RULES
            ]
        )
        return value


class StagingFlagsCheck(CheckSpec):
    """Rows of the latest file that staging kept and flagged (``stg.patients._flags``) for any of
    ``flags`` (every flag when empty), as a count. Warns at the first row unless warn/fail say
    otherwise."""

    kind_description = (
        "No staged row breaks a format that varies by country (postal code, SSN, passport, "
        "driver's licence): flagged rows are loaded but their value is suspect."
    )

    kind: Literal["staging_flags"]
    flags: list[str] = Field(default_factory=list)
    warn: float | None = Field(default=0, ge=0)

    def default_name(self) -> str:
        return "no_rows_flagged"

    @field_validator("flags")
    @classmethod
    def _known_flags(cls, value: list[str]) -> list[str]:
        known = sorted(FLAGGABLE_RULES)
        _raise_if(
            [
                ((i,), _unknown("flaggable staging rule", name, known))
                for i, name in enumerate(value)
                if name not in FLAGGABLE_RULES
            ]
        )
        return value


class Scd2IntegrityCheck(CheckSpec):
    """One current row per key, no overlapping validity intervals."""

    kind_description = (
        "Patient history is consistent: exactly one current version per patient, no "
        "overlapping validity windows, valid_from before valid_to."
    )

    kind: Literal["scd2_integrity"]
    key: str = "patient_id"
    valid_from: str = "valid_from"
    valid_to: str = "valid_to"
    is_current: str = "is_current"

    def default_name(self) -> str:
        return "scd2_integrity_holds"


class IdentityStabilityCheck(CheckSpec):
    """A key keeps its identity across SCD2 versions.

    Judged on the SCD2 table (``core/dim_patient``), not on staging: a version transition is
    explicit there (the replaced version's ``valid_to`` equals the new one's ``valid_from``, for the
    same key), so the check compares each new version with exactly the version it replaced, however
    many files ago that patient was last sent, and it sees only real changes (unchanged re-sends
    open no version). Staging holds rows per file and no notion of "the version it replaces": it
    would have to rebuild core's history to answer the same question.

    An identity attribute changes when both versions have a value and the values differ; a value
    newly supplied (or withdrawn) is not counted. ``warn``/``fail`` are counts of such version
    changes (default: any one fails, severity ERROR). Incremental runs judge the versions opened by
    the latest batch; the full sweep every version transition of the table.
    """

    kind_description = (
        "A patient Id keeps its identity: a new version never changes who the patient is (birth "
        "date, SSN), only attributes that legitimately change (address, marital status, death)."
    )

    kind: Literal["identity_stability"]
    key: str = "patient_id"
    identity_columns: list[str] = Field(default_factory=lambda: ["birthdate", "ssn"], min_length=1)
    valid_from: str = "valid_from"
    valid_to: str = "valid_to"

    def default_name(self) -> str:
        return "identity_is_stable"

    @field_validator("identity_columns")
    @classmethod
    def _distinct_columns(cls, value: list[str]) -> list[str]:
        seen: set[str] = set()
        problems: list[tuple[Loc, str]] = []
        for i, column in enumerate(value):
            if column.lower() in seen:
                problems.append(((i,), f"duplicate column '{column}'"))
            seen.add(column.lower())
        _raise_if(problems)
        return value


class CustomSqlCheck(CheckSpec):
    """A query returning the failing rows; their count is compared with ``warn``/``fail``."""

    kind_description = "The custom query returns no (or few enough) failing rows."

    kind: Literal["custom_sql"]
    sql: str = Field(min_length=1)

    def default_name(self) -> str:
        return "custom_sql_passes"


class VolumeAnomalyCheck(CheckSpec):
    """A metric of the asset (default: row count) compared with its own history."""

    kind_description = (
        "The load's volume is normal for this asset (robust score against its own history); "
        "while it lacks history it passes as learning and says how many more loads it needs."
    )

    kind: Literal["volume_anomaly"]
    metric: str = "row_count"
    direction: Literal["up", "down", "both"] = "both"
    sensitivity: float = Field(default=3.0, gt=0)
    min_history: int = Field(default=7, ge=2)
    seasonality: bool = False

    def default_name(self) -> str:
        return f"{self.metric}_volume_is_normal"

    @model_validator(mode="after")
    def _levels(self) -> "VolumeAnomalyCheck":
        _no_levels(
            self,
            ("fail",),
            "a value beyond `sensitivity` robust SDs warns; `fail` is "
            "the robust score above which it fails",
        )
        return self


AnomalyAction = Literal["warn", "ignore"]


class FileAnomaliesCheck(CheckSpec):
    """What the raw loader tolerated and normalised in a landing file, from its load audit
    (``etl.files``): each anomaly warns or is ignored. It never fails: a file the loader cannot
    read is rejected whole and reported by the asset's ``schema`` check instead.

    The newest file in runs that load one; in the full sweep every file loaded in the last
    ``window_hours``.
    """

    kind_description = (
        "The landing file needed no normalisation: no byte-order mark, no CRLF or CR-only line "
        "endings, no columns outside the contract, the agreed delimiter, header names exactly as "
        "Synthea writes them and in its order, no blank lines."
    )

    kind: Literal["file_anomalies"]
    bom: AnomalyAction = "warn"
    crlf_line_endings: AnomalyAction = "warn"
    cr_line_endings: AnomalyAction = "warn"  # CR-only line endings (old Mac exports): read as lines
    unexpected_columns: AnomalyAction = "warn"
    other_delimiter: AnomalyAction = "warn"
    missing_optional_columns: AnomalyAction = "ignore"
    malformed_records: AnomalyAction = "warn"
    header_whitespace: AnomalyAction = "warn"  # header names with surrounding spaces (trimmed)
    header_case: AnomalyAction = "warn"  # contract names in another case (matched ignoring case)
    column_order: AnomalyAction = "warn"  # contract columns in another order (mapped by name)
    blank_lines: AnomalyAction = "warn"  # empty lines between records (skipped)
    # The delimiter a file should have; empty: the first of landing.accepted_delimiters (filled in
    # when healthmon.yaml is loaded).
    expected_delimiter: str | None = Field(default=None, min_length=1, max_length=1)
    window_hours: int = Field(default=24, ge=1)

    ANOMALIES: ClassVar[tuple[str, ...]] = (
        "bom",
        "crlf_line_endings",
        "cr_line_endings",
        "unexpected_columns",
        "other_delimiter",
        "missing_optional_columns",
        "malformed_records",
        "header_whitespace",
        "header_case",
        "column_order",
        "blank_lines",
    )

    def default_name(self) -> str:
        return "landing_file_is_clean"

    def action(self, anomaly: str) -> AnomalyAction:
        action: AnomalyAction = getattr(self, anomaly)
        return action

    @model_validator(mode="after")
    def _levels(self) -> "FileAnomaliesCheck":
        _no_levels(self, (), "each anomaly is set to warn or ignore")
        if self.blocking:
            _raise_if([(("blocking",), "a file_anomalies check only warns, so it never blocks")])
        return self


QualityCheckSpec = Annotated[
    NotNullCheck
    | UniqueCheck
    | AcceptedValuesCheck
    | RangeCheck
    | RegexCheck
    | RowCountCheck
    | RowCountChangeCheck
    | SchemaCheck
    | FreshnessCheck
    | ReconciliationCheck
    | RejectionRateCheck
    | RejectionReasonsCheck
    | StagingFlagsCheck
    | Scd2IntegrityCheck
    | CustomSqlCheck
    | VolumeAnomalyCheck
    | IdentityStabilityCheck
    | FileAnomaliesCheck,
    Field(discriminator="kind"),
]


class AssetQualityConfig(_Model):
    checks: list[QualityCheckSpec] = Field(default_factory=list)
    # Column whose latest value identifies the newest load (incremental checks evaluate only those
    # rows); default ``_file_id`` when the table has it.
    batch_column: str | None = None

    @model_validator(mode="after")
    def _unique_names(self) -> "AssetQualityConfig":
        first: dict[str, int] = {}
        problems: list[tuple[Loc, str]] = []
        for i, spec in enumerate(self.checks):
            name = spec.check_name
            if name in first:
                msg = (
                    f"duplicate check name '{name}' (also checks[{first[name]}]); set another name"
                )
                problems.append((("checks", i), msg))
            first.setdefault(name, i)
        _raise_if(problems)
        return self


class RejectionRateThresholds(_Model):
    warn: float = Field(default=0.01, ge=0, le=1)
    fail: float = Field(default=0.05, ge=0, le=1)

    @model_validator(mode="after")
    def _ordered(self) -> "RejectionRateThresholds":
        if self.warn > self.fail:
            _raise_if([(("warn",), f"warn ({self.warn}) must be <= fail ({self.fail})")])
        return self


def _check_asset_keys(value: dict[str, Any]) -> None:
    _raise_if(
        [
            ((key,), f"'{key}' is not an asset key like 'stg/patients'")
            for key in value
            if not ASSET_KEY_PATTERN.match(key)
        ]
    )


class QualityConfiguration(_Model):
    """Data-quality checks per asset, keyed by asset key path (``stg/patients``)."""

    rejection_rate: RejectionRateThresholds = Field(default_factory=RejectionRateThresholds)
    assets: dict[str, AssetQualityConfig] = Field(default_factory=dict)

    @field_validator("assets")
    @classmethod
    def _asset_keys(cls, value: dict[str, AssetQualityConfig]) -> dict[str, AssetQualityConfig]:
        _check_asset_keys(value)
        return value


class FreshnessConfig(_Model):
    """A Dagster freshness time window for one asset."""

    warn_window_minutes: int | None = Field(default=None, ge=1)
    fail_window_minutes: int = Field(ge=1)
    # Load time of a table loaded outside Dagster, for the last-load check (default: the etl.files
    # audit for the bundled assets, else the table's ``_loaded_at``).
    timestamp_column: str | None = None

    @model_validator(mode="after")
    def _ordered(self) -> "FreshnessConfig":
        w, f = self.warn_window_minutes, self.fail_window_minutes
        if w is not None and f <= w:
            msg = f"fail_window_minutes ({f}) must be > warn_window_minutes ({w})"
            _raise_if([(("fail_window_minutes",), msg)])
        return self


# --------------------------------------------------------------------------------------------------
# Notification, alerting, escalation


class NotificationChannel(_Model):
    """A destination for notifications. Secrets are names of env variables (``*_env`` keys)."""

    type: ChannelType
    enabled: bool = True
    retry_attempts: int = Field(default=3, ge=0, le=10)
    retry_delay_minutes: float = Field(default=1, ge=0)
    configuration: dict[str, Any] = Field(default_factory=dict)

    @field_validator("configuration")
    @classmethod
    def _no_literal_secrets(cls, value: dict[str, Any]) -> dict[str, Any]:
        problems: list[tuple[Loc, str]] = []
        for key, item in value.items():
            if key.endswith("_env"):
                if not isinstance(item, str) or not ENV_VAR_PATTERN.match(item):
                    problems.append(((key,), f"{item!r} is not an environment variable name"))
            elif SECRET_KEY_PATTERN.search(key.lower()):
                msg = f"secrets are never literal; use '{key}_env: ENV_VAR_NAME' instead"
                problems.append(((key,), msg))
        _raise_if(problems)
        return value


class AlertCondition(_Model):
    """When a rule fires: ``aggregation(metric_name)`` over ``duration_minutes`` vs threshold."""

    metric_name: str
    operator: ConditionOperator = ConditionOperator.GREATER_THAN
    threshold: float | str
    duration_minutes: int = Field(default=0, ge=0)
    aggregation: Aggregation = Aggregation.AVG

    @model_validator(mode="after")
    def _threshold_type(self) -> "AlertCondition":
        is_str = isinstance(self.threshold, str)
        if self.operator in STRING_OPERATORS and not is_str:
            msg = f"'{self.operator}' needs a string threshold, got {self.threshold!r}"
            _raise_if([(("threshold",), msg)])
        if self.operator not in STRING_OPERATORS | EQUALITY_OPERATORS and is_str:
            msg = f"'{self.operator}' needs a numeric threshold, got {self.threshold!r}"
            _raise_if([(("threshold",), msg)])
        return self


class AlertRule(_Model):
    rule_id: str = Field(pattern=NAME_PATTERN.pattern)
    name: str = ""
    description: str = ""
    enabled: bool = True
    component: HealthComponent
    condition: AlertCondition
    severity: AlertSeverity = AlertSeverity.WARNING
    channels: list[str] = Field(default_factory=lambda: ["log"])
    escalation_policy: str | None = None
    cooldown_period_minutes: int = Field(default=15, ge=0)
    labels: dict[str, str] = Field(default_factory=dict)

    @model_validator(mode="after")
    def _default_name(self) -> "AlertRule":
        if not self.name:
            self.name = self.rule_id
        return self


class EscalationLevel(_Model):
    level: int = Field(ge=1)
    delay_minutes: int = Field(default=0, ge=0)
    channels: list[str] = Field(default_factory=list)
    notify_roles: list[str] = Field(default_factory=list)
    notify_users: list[str] = Field(default_factory=list)
    message_template: str = ""


class EscalationPolicy(_Model):
    policy_id: str = Field(pattern=NAME_PATTERN.pattern)
    name: str = ""
    escalation_levels: list[EscalationLevel] = Field(default_factory=list)
    repeat_interval_minutes: int = Field(default=0, ge=0)  # 0: do not repeat the last level
    max_escalations: int = Field(default=3, ge=1)

    @model_validator(mode="after")
    def _ordered(self) -> "EscalationPolicy":
        if not self.name:
            self.name = self.policy_id
        problems: list[tuple[Loc, str]] = []
        for i in range(1, len(self.escalation_levels)):
            prev, cur = self.escalation_levels[i - 1], self.escalation_levels[i]
            if cur.level <= prev.level:
                msg = f"levels must increase: {cur.level} after {prev.level}"
                problems.append((("escalation_levels", i, "level"), msg))
            if cur.delay_minutes < prev.delay_minutes:
                msg = (
                    f"delay_minutes ({cur.delay_minutes}) < previous level's ({prev.delay_minutes})"
                )
                problems.append((("escalation_levels", i, "delay_minutes"), msg))
        _raise_if(problems)
        return self


class RetentionConfiguration(_Model):
    """How long the health store keeps each kind of record, in days."""

    metrics_days: int = Field(default=90, ge=1)
    check_results_days: int = Field(default=90, ge=1)
    alerts_days: int = Field(default=365, ge=1)
    incidents_days: int = Field(default=730, ge=1)
    load_runs_days: int = Field(default=365, ge=1)


# --------------------------------------------------------------------------------------------------
# The whole file


def _default_channels() -> dict[str, NotificationChannel]:
    return {"log": NotificationChannel(type=ChannelType.LOG)}


class HealthConfiguration(_Model):
    """The whole of ``healthmon.yaml``."""

    version: str = "1"
    updated_by: str | None = None
    last_updated: datetime | None = None
    landing: LandingConfiguration = Field(default_factory=LandingConfiguration)
    staging: StagingConfiguration = Field(default_factory=StagingConfiguration)
    thresholds: list[ThresholdConfiguration] = Field(default_factory=list)
    health_checks: list[HealthCheckConfiguration] = Field(default_factory=list)
    quality: QualityConfiguration = Field(default_factory=QualityConfiguration)
    freshness: dict[str, FreshnessConfig] = Field(default_factory=dict)
    channels: dict[str, NotificationChannel] = Field(default_factory=_default_channels)
    alert_rules: list[AlertRule] = Field(default_factory=list)
    escalation_policies: list[EscalationPolicy] = Field(default_factory=list)
    retention: RetentionConfiguration = Field(default_factory=RetentionConfiguration)
    feature_flags: dict[str, bool] = Field(default_factory=lambda: dict(DEFAULT_FEATURE_FLAGS))

    @model_validator(mode="before")
    @classmethod
    def _empty_sections(cls, data: Any) -> Any:
        # ``alert_rules:`` with nothing under it is YAML null: treat it as the section's default.
        if isinstance(data, dict):
            return {k: v for k, v in data.items() if v is not None or k == "updated_by"}
        return data

    @field_validator("version", mode="before")
    @classmethod
    def _version_as_text(cls, value: Any) -> Any:
        # ``version: 1`` and ``version: 1.2`` in YAML are numbers; accept them as text.
        return (
            str(value) if isinstance(value, int | float) and not isinstance(value, bool) else value
        )

    @field_validator("freshness")
    @classmethod
    def _asset_keys(cls, value: dict[str, FreshnessConfig]) -> dict[str, FreshnessConfig]:
        _check_asset_keys(value)
        return value

    @field_validator("channels")
    @classmethod
    def _channel_names(
        cls, value: dict[str, NotificationChannel]
    ) -> dict[str, NotificationChannel]:
        bad = [k for k in value if not NAME_PATTERN.match(k)]
        _raise_if([((k,), f"'{k}' is not a valid channel name (letters, digits, _)") for k in bad])
        # The log channel always exists, so rules may rely on it.
        return {"log": NotificationChannel(type=ChannelType.LOG), **value}

    @field_validator("feature_flags")
    @classmethod
    def _known_flags(cls, value: dict[str, bool]) -> dict[str, bool]:
        unknown = [k for k in value if k not in DEFAULT_FEATURE_FLAGS]
        known = ", ".join(repr(k) for k in DEFAULT_FEATURE_FLAGS)
        _raise_if([((k,), f"unknown feature flag; known flags: {known}") for k in unknown])
        return {**DEFAULT_FEATURE_FLAGS, **value}

    @model_validator(mode="after")
    def _cross_references(self) -> "HealthConfiguration":
        problems: list[tuple[Loc, str]] = []
        problems += _duplicates(
            "thresholds", [t.threshold_id for t in self.thresholds], "threshold_id"
        )
        problems += _duplicates(
            "health_checks", [c.check_id for c in self.health_checks], "check_id"
        )
        problems += _duplicates("alert_rules", [r.rule_id for r in self.alert_rules], "rule_id")
        policy_ids = [p.policy_id for p in self.escalation_policies]
        problems += _duplicates("escalation_policies", policy_ids, "policy_id")

        channels = sorted(self.channels)
        for i, rule in enumerate(self.alert_rules):
            for j, name in enumerate(rule.channels):
                if name not in self.channels:
                    problems.append(
                        (("alert_rules", i, "channels", j), _unknown("channel", name, channels))
                    )
            policy = rule.escalation_policy
            if policy is not None and policy not in policy_ids:
                loc: Loc = ("alert_rules", i, "escalation_policy")
                problems.append((loc, _unknown("escalation policy", policy, policy_ids)))
        for i, pol in enumerate(self.escalation_policies):
            for k, level in enumerate(pol.escalation_levels):
                for j, name in enumerate(level.channels):
                    if name not in self.channels:
                        loc = ("escalation_policies", i, "escalation_levels", k, "channels", j)
                        problems.append((loc, _unknown("channel", name, channels)))

        check_ids = [c.check_id for c in self.health_checks]
        for i, check in enumerate(self.health_checks):
            for j, dep in enumerate(check.dependencies):
                if dep not in check_ids:
                    loc = ("health_checks", i, "dependencies", j)
                    problems.append((loc, _unknown("health check", dep, check_ids)))
        problems += _dependency_cycles(self.health_checks)
        _raise_if(problems)
        return self

    @model_validator(mode="after")
    def _file_check_delimiters(self) -> "HealthConfiguration":
        # A file_anomalies check without expected_delimiter expects the landing contract's first.
        for asset in self.quality.assets.values():
            for spec in asset.checks:
                if isinstance(spec, FileAnomaliesCheck) and spec.expected_delimiter is None:
                    spec.expected_delimiter = self.landing.accepted_delimiters[0]
        return self

    def health_check(self, check_id: str) -> HealthCheckConfiguration:
        """The health check with this id (KeyError when there is none)."""
        for check in self.health_checks:
            if check.check_id == check_id:
                return check
        raise KeyError(check_id)

    def feature_enabled(self, flag: str) -> bool:
        return self.feature_flags.get(flag, DEFAULT_FEATURE_FLAGS.get(flag, False))


def _unknown(what: str, name: str, known: list[str]) -> str:
    msg = f"unknown {what} '{name}'"
    close = difflib.get_close_matches(name, known, n=1)
    if close:
        return f"{msg}; did you mean '{close[0]}'?"
    return f"{msg}; defined: {', '.join(repr(k) for k in known) or 'none'}"


def _duplicates(section: str, ids: list[str], field: str) -> list[tuple[Loc, str]]:
    first: dict[str, int] = {}
    problems: list[tuple[Loc, str]] = []
    for i, value in enumerate(ids):
        if value in first:
            msg = f"duplicate {field} '{value}' (first defined at {section}[{first[value]}])"
            problems.append(((section, i, field), msg))
        first.setdefault(value, i)
    return problems


def _dependency_cycles(checks: list[HealthCheckConfiguration]) -> list[tuple[Loc, str]]:
    index = {c.check_id: i for i, c in enumerate(checks)}
    state: dict[str, int] = {}  # 1: on the stack, 2: done
    problems: list[tuple[Loc, str]] = []

    def visit(node: str, stack: list[str]) -> None:
        state[node] = 1
        stack.append(node)
        for j, dep in enumerate(checks[index[node]].dependencies):
            if dep not in index:
                continue
            if state.get(dep) == 1:
                # stack[index(dep):] is dep -> ... -> node, so the cycle reads node -> dep -> node
                cycle = [node, *stack[stack.index(dep) :]]
                msg = f"dependency cycle: {' -> '.join(cycle)}"
                problems.append((("health_checks", index[node], "dependencies", j), msg))
            elif dep not in state:
                visit(dep, stack)
        stack.pop()
        state[node] = 2

    for check in checks:
        if check.check_id not in state:
            visit(check.check_id, [])
    return problems
