"""Pydantic models of ``healthmon.yaml``.

Every model forbids unknown keys, so a typo is an error rather than a silently ignored setting,
and every section has a default, so an empty file is a valid configuration. Every number has bounds
that the code using it can honour (a window of a year, not one past the range of a timedelta or a
C int) and no float may be infinite or NaN: what passes validation works at run time. Validators that find a
problem raise :class:`ConfigProblem` with locations relative to the model, which the loader turns
into path-precise messages with YAML line numbers.
"""

import difflib
import re
from collections.abc import Iterable
from datetime import datetime
from typing import TYPE_CHECKING, Annotated, Any, ClassVar, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from healthmon_dagster.enums import (
    Aggregation,
    AlertSeverity,
    ChannelType,
    CheckSeverity,
    ConditionOperator,
    EventKind,
    HealthCheckType,
    HealthComponent,
    HealthStatus,
    IncidentSeverity,
)

Loc = tuple[str | int, ...]

# Bounds of the numbers (a value outside them is a typo or would break where it is used).
MAX_WINDOW_DAYS = 366
"""Longest time window, delay or cooldown: a year (a longer one means the check never fires)."""
MAX_WINDOW_MINUTES = MAX_WINDOW_DAYS * 24 * 60
MAX_WINDOW_HOURS = MAX_WINDOW_DAYS * 24
MAX_RETENTION_DAYS = 36_500
"""Longest retention: a century (records of patients may have to be kept for decades)."""
MAX_INTERVAL_SECONDS = 86_400
"""Longest health-check interval: schedules are cron, which runs a job at most daily."""
MAX_TIMEOUT_SECONDS = 3_600
MIN_SENSOR_INTERVAL_SECONDS = 5
"""dagster-daemon looks at its sensors every 5 s: a shorter interval would not tick more often."""
MAX_SENSOR_INTERVAL_SECONDS = 3_600
MAX_RETRIES = 10
MAX_RETRY_FOR_MINUTES = 7 * 24 * 60
"""Longest a notification is retried: a week (an alert older than that is news to no one)."""
MAX_ROWS = 10**12
"""Largest row count or count threshold (a trillion rows)."""
MAX_GROWTH_PCT = 100_000.0
MAX_SENSITIVITY = 100.0
"""Largest volume-anomaly sensitivity, in robust standard deviations."""
MAX_HISTORY_LOADS = 10_000
MAX_ESCALATION_LEVELS = 100
MAX_RATE_PER_MINUTE = 60_000
"""Fastest notification rate of a channel (1,000 a second; the services allow far fewer)."""
INT64_MAX = 2**63 - 1

ASSET_KEY_PATTERN = re.compile(r"^[A-Za-z0-9_]+(/[A-Za-z0-9_]+)*$")
NAME_PATTERN = re.compile(r"^[A-Za-z0-9_]+$")
ENV_VAR_PATTERN = re.compile(r"^[A-Z_][A-Z0-9_]*$")
IMPL_PATTERN = re.compile(r"^[A-Za-z_][\w.]*:[A-Za-z_][\w.]*$")
# Channel configuration keys that hold secrets; their value must come from an environment variable.
SECRET_KEY_PATTERN = re.compile(
    r"(token|password|passwd|secret|api_key|routing_key|integration_key|webhook_url|auth)$"
)
# Labels the alert engine sets on every alert; a rule's own labels cannot override them.
RESERVED_LABELS = frozenset({"rule_id", "severity", "component", "asset", "check", "source", "job"})
STRING_OPERATORS = frozenset({ConditionOperator.CONTAINS, ConditionOperator.NOT_CONTAINS})
EQUALITY_OPERATORS = frozenset({ConditionOperator.EQUALS, ConditionOperator.NOT_EQUALS})
LOWER_IS_WORSE_OPERATORS = frozenset(
    {ConditionOperator.LESS_THAN, ConditionOperator.LESS_THAN_OR_EQUALS}
)

# Known feature flags and their defaults; a flag not listed here is rejected as a probable typo.
DEFAULT_FEATURE_FLAGS: dict[str, bool] = {
    # On: it re-runs only transient failures, within attempts per window, backoff and a circuit
    # breaker, never a data error, and leaves the landing sensor's and run_retries' runs alone.
    "self_healing": True,
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
    # allow_inf_nan: "inf" and "nan" are floats to Python and YAML (.inf, 1e999), and break every
    # comparison and timedelta they reach.
    model_config = ConfigDict(extra="forbid", validate_default=True, allow_inf_nan=False)


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


class LandingRetryConfiguration(_Model):
    """How a landing file whose load failed is tried again, until it loads or is stuck.

    Inside a run, a step that fails on a transient error (the database or S3 unreachable, a reset
    connection, a timeout, a lock wait) is retried ``step_retries`` times, waiting about
    ``step_retry_delay_seconds`` x 1, 3, 7, ... (exponential, with jitter). When the run still
    fails, the landing sensor requests a new run of the file (a new attempt) after
    ``initial_delay_seconds``, doubling each time up to ``max_delay_seconds``. After
    ``max_attempts`` attempts, or once ``give_up_after_minutes`` have passed since the first, or at
    once for a failure that running again cannot fix, the file is stuck: ``healthmon status`` and
    the ``landing_files_are_not_stuck`` check show it until it lands again with other content.
    """

    max_attempts: int = Field(default=10, ge=1, le=100)
    initial_delay_seconds: int = Field(default=60, ge=1, le=86_400)
    max_delay_seconds: int = Field(default=600, ge=1, le=86_400)
    give_up_after_minutes: int = Field(default=60, ge=1, le=10_080)
    step_retries: int = Field(default=3, ge=0, le=10)
    step_retry_delay_seconds: float = Field(default=2.0, ge=0, le=300)

    @model_validator(mode="after")
    def _delays_ordered(self) -> "LandingRetryConfiguration":
        if self.max_delay_seconds < self.initial_delay_seconds:
            _raise_if(
                [
                    (
                        ("max_delay_seconds",),
                        f"max_delay_seconds ({self.max_delay_seconds}) must be >= "
                        f"initial_delay_seconds ({self.initial_delay_seconds})",
                    )
                ]
            )
        return self


class LandingConfiguration(_Model):
    """Which landing files are picked up and how they are parsed."""

    file_pattern: str = "patients*.csv"
    accepted_delimiters: list[str] = Field(default_factory=lambda: [","], min_length=1)
    retry: LandingRetryConfiguration = Field(default_factory=LandingRetryConfiguration)
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
    interval_seconds: int = Field(default=60, ge=1, le=MAX_INTERVAL_SECONDS)
    timeout_seconds: float = Field(default=10, gt=0, le=MAX_TIMEOUT_SECONDS)
    retry_attempts: int = Field(default=0, ge=0, le=MAX_RETRIES)
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
    warn: float | None = Field(default=None, ge=0, le=MAX_ROWS)
    fail: float | None = Field(default=None, ge=0, le=MAX_ROWS)
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

    @field_validator("values")
    @classmethod
    def _bound_integers(cls, value: list[str | int | float]) -> list[str | int | float]:
        # The values are bound parameters of the check's SQL: a database integer is 64 bits.
        _raise_if(
            [
                ((i,), f"{v} is beyond the 64-bit integer range of a database")
                for i, v in enumerate(value)
                if isinstance(v, int) and not -INT64_MAX <= v <= INT64_MAX
            ]
        )
        return value


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
    min: int | None = Field(default=None, ge=0, le=MAX_ROWS)
    max: int | None = Field(default=None, ge=0, le=MAX_ROWS)

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
    max_growth_pct: float | None = Field(default=None, ge=0, le=MAX_GROWTH_PCT)

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
    warn_after_minutes: int | None = Field(default=None, ge=1, le=MAX_WINDOW_MINUTES)
    fail_after_minutes: int = Field(ge=1, le=MAX_WINDOW_MINUTES)

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
    # The full sweep judges the files loaded in the last window_hours (default: a day, the
    # sweep's period), so one bad file does not fail every later sweep; null: the whole table.
    window_hours: int | None = Field(default=24, ge=1, le=MAX_WINDOW_HOURS)

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
    # The full sweep judges the files loaded in the last window_hours (default: a day, the
    # sweep's period), so one bad file does not fail every later sweep; null: the whole table.
    window_hours: int | None = Field(default=24, ge=1, le=MAX_WINDOW_HOURS)

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
    warn: float | None = Field(default=0, ge=0, le=MAX_ROWS)
    # The full sweep judges the files loaded in the last window_hours (default: a day, the
    # sweep's period), so one bad file does not fail every later sweep; null: the whole table.
    window_hours: int | None = Field(default=24, ge=1, le=MAX_WINDOW_HOURS)

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
    the run's files; the full sweep those opened by the files loaded in the last ``window_hours``
    (null: every version transition of the table).
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
    # The full sweep judges the files loaded in the last window_hours (default: a day, the
    # sweep's period), so one bad file does not fail every later sweep; null: the whole table.
    window_hours: int | None = Field(default=24, ge=1, le=MAX_WINDOW_HOURS)

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
    sensitivity: float = Field(default=3.0, gt=0, le=MAX_SENSITIVITY)
    min_history: int = Field(default=7, ge=2, le=MAX_HISTORY_LOADS)
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
    window_hours: int = Field(default=24, ge=1, le=MAX_WINDOW_HOURS)

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

    warn_window_minutes: int | None = Field(default=None, ge=1, le=MAX_WINDOW_MINUTES)
    fail_window_minutes: int = Field(ge=1, le=MAX_WINDOW_MINUTES)
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
    # Deprecated and ignored: retries are bounded by time (``retry_for_minutes``), since a count of
    # a few backoff steps gave up on a receiver down for more than about a minute and lost the
    # page. Still accepted and range-checked, so an existing healthmon.yaml loads; the dispatcher
    # logs a warning naming the channel.
    retry_attempts: int | None = Field(default=None, ge=0, le=MAX_RETRIES)
    retry_delay_minutes: float = Field(default=1, ge=0, le=24 * 60)
    # How long a failing notification is retried before it is ``failed`` (from its first failed
    # attempt); None: ``alerting.dispatch.retry_for_minutes``.
    retry_for_minutes: float | None = Field(default=None, gt=0, le=MAX_RETRY_FOR_MINUTES)
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

    @model_validator(mode="after")
    def _configuration_of_its_type(self) -> "NotificationChannel":
        # Each channel type's keys are declared by its notifier (notify/<type>.py); imported here,
        # not at the top, because notify/ builds on this module.
        from pydantic import ValidationError

        from healthmon_dagster.notify.channels import UnsupportedChannel, config_model

        try:
            config_model(self.type).model_validate(self.configuration)
        except UnsupportedChannel as exc:
            _raise_if([(("type",), str(exc))])
        except ValidationError as exc:
            keys = sorted(config_model(self.type).model_fields)
            problems = [
                (("configuration", *e["loc"]), _channel_problem(e, keys)) for e in exc.errors()
            ]
            _raise_if(problems)
        return self


def _channel_problem(error: Any, keys: list[str]) -> str:
    if error["type"] == "extra_forbidden":
        close = difflib.get_close_matches(str(error["loc"][-1]), keys, n=1, cutoff=0.6)
        if close:
            return f"unknown key; did you mean '{close[0]}'?"
        return f"unknown key; allowed: {', '.join(keys)}"
    if error["type"] == "value_error" and "error" in error.get("ctx", {}):
        msg = str(error["ctx"]["error"])  # a validator's own text, without "Value error, "
    else:
        msg = str(error["msg"])
    return msg[:1].lower() + msg[1:]


class AlertCondition(_Model):
    """A metric rule's condition: ``aggregation(metric_name)`` of the rule's component over the last
    ``window_minutes`` of ``etl.metrics``, compared with ``threshold``. It must hold for
    ``duration_minutes`` (Prometheus's ``for``: the alert is pending until then) before it fires.
    ``contains``/``not_contains`` compare the text of the metric's tags (``key=value`` pairs)."""

    metric_name: str
    operator: ConditionOperator = ConditionOperator.GREATER_THAN
    threshold: float | str
    duration_minutes: int = Field(default=0, ge=0, le=MAX_WINDOW_MINUTES)
    aggregation: Aggregation = Aggregation.AVG
    window_minutes: int = Field(default=5, ge=1, le=10_080)

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


class EventCondition(_Model):
    """An event rule's condition: the latest result of each matching check (or each failed run)
    is a signal; the alert is active while the latest result is bad. A check that passes while it
    learns (``insufficient_history``) is a pass: it never alerts."""

    kind: EventKind
    assets: list[str] = Field(default_factory=list)  # empty: every asset
    checks: list[str] = Field(default_factory=list)  # empty: every check
    # check_failed / contract_break / freshness: which severities fire
    severities: list[CheckSeverity] = Field(
        default_factory=lambda: [CheckSeverity.WARN, CheckSeverity.ERROR]
    )
    execution_errors: bool = True  # check_failed: also a check that could not be evaluated
    # health_check: which statuses fire
    statuses: list[HealthStatus] = Field(default_factory=lambda: [HealthStatus.CRITICAL])
    jobs: list[str] = Field(default_factory=list)  # run_failure: empty = every job

    @field_validator("statuses")
    @classmethod
    def _bad_statuses(cls, value: list[HealthStatus]) -> list[HealthStatus]:
        if HealthStatus.HEALTHY in value:
            _raise_if([((), "'healthy' is not a bad status; use warning, critical or unknown")])
        return value


class AlertRule(_Model):
    """A metric rule (``condition``) or an event rule (``event``), with Prometheus's ``for``
    (``condition.duration_minutes``, or ``for_minutes`` on event rules) and ``keep_firing_for``."""

    rule_id: str = Field(pattern=NAME_PATTERN.pattern)
    name: str = ""
    description: str = ""
    enabled: bool = True
    # Metric rules read this component's metrics; event rules take it from what they watch unless
    # set (then only signals of this component fire).
    component: HealthComponent | None = None
    condition: AlertCondition | None = None
    event: EventCondition | None = None
    for_minutes: int = Field(default=0, ge=0, le=10_080)  # event rules (metric: duration_minutes)
    keep_firing_for_minutes: int = Field(default=0, ge=0, le=10_080)
    severity: AlertSeverity = AlertSeverity.WARNING
    channels: list[str] = Field(default_factory=lambda: ["log"])
    escalation_policy: str | None = None
    cooldown_period_minutes: int = Field(default=15, ge=0, le=MAX_WINDOW_MINUTES)
    labels: dict[str, str] = Field(default_factory=dict)
    mute_time_intervals: list[str] = Field(default_factory=list)

    @model_validator(mode="after")
    def _one_condition(self) -> "AlertRule":
        if not self.name:
            self.name = self.rule_id
        if (self.condition is None) == (self.event is None):
            _raise_if([((), "a rule has exactly one of 'condition' (metric) or 'event'")])
        if self.condition is not None and self.component is None:
            _raise_if([(("component",), "a metric rule names the component of its metric")])
        if self.condition is not None and self.for_minutes:
            msg = "a metric rule's 'for' is condition.duration_minutes"
            _raise_if([(("for_minutes",), msg)])
        reserved = sorted(set(self.labels) & RESERVED_LABELS)
        if reserved:
            msg = f"labels {', '.join(reserved)} are set by the engine"
            _raise_if([(("labels",), msg)])
        return self

    @property
    def pending_minutes(self) -> int:
        """Prometheus's ``for``: how long the condition holds before the alert fires."""
        return self.condition.duration_minutes if self.condition is not None else self.for_minutes


class EscalationLevel(_Model):
    level: int = Field(ge=1, le=MAX_ESCALATION_LEVELS)
    delay_minutes: int = Field(default=0, ge=0, le=MAX_WINDOW_MINUTES)
    channels: list[str] = Field(default_factory=list)
    notify_roles: list[str] = Field(default_factory=list)
    notify_users: list[str] = Field(default_factory=list)
    message_template: str = ""


class EscalationPolicy(_Model):
    policy_id: str = Field(pattern=NAME_PATTERN.pattern)
    name: str = ""
    escalation_levels: list[EscalationLevel] = Field(default_factory=list)
    # 0: do not repeat the last level
    repeat_interval_minutes: int = Field(default=0, ge=0, le=MAX_WINDOW_MINUTES)
    max_escalations: int = Field(default=3, ge=1, le=MAX_ESCALATION_LEVELS)

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


class GroupingConfiguration(_Model):
    """How alerts are batched into notifications, with Alertmanager's meaning: alerts whose
    ``group_by`` labels are equal form one group; a new group waits ``group_wait_seconds`` for more
    alerts, a group that was notified waits ``group_interval_seconds`` before the next notification
    about changes, and a group still firing unchanged is notified again every
    ``repeat_interval_minutes``.

    ``group_wait_by_severity`` overrides ``group_wait_seconds`` for a severity: a group holding an
    alert of that severity waits only that long (the shortest wait of its alerts). Error and
    critical alerts wait 0 s by default: an on-call engineer wants a failed check within seconds,
    and batching pays little for them (they are rare and each names its asset); warnings and
    infos keep Alertmanager's 30 s, which folds a burst of them into one message."""

    group_by: list[str] = Field(default_factory=lambda: ["rule_id", "asset", "component"])
    group_wait_seconds: int = Field(default=30, ge=0, le=3600)
    group_wait_by_severity: dict[AlertSeverity, Annotated[int, Field(ge=0, le=3600)]] = Field(
        default_factory=lambda: {AlertSeverity.ERROR: 0, AlertSeverity.CRITICAL: 0}
    )
    group_interval_seconds: int = Field(default=300, ge=1, le=86_400)
    repeat_interval_minutes: int = Field(default=240, ge=1, le=10_080)

    def group_wait_for(self, severities: Iterable[str]) -> int:
        """Seconds a new group of alerts of ``severities`` waits before its first notification."""
        waits = [
            self.group_wait_by_severity.get(AlertSeverity(s), self.group_wait_seconds)
            for s in severities
            if s in _SEVERITY_VALUES
        ]
        return min(waits, default=self.group_wait_seconds)


_SEVERITY_VALUES = frozenset(s.value for s in AlertSeverity)


class DispatchConfiguration(_Model):
    """How the outbox is drained: per-channel rate limits, retry backoff and the send lease."""

    # Slack allows about one message per second per channel; PagerDuty 120 events per minute per
    # routing key. Keys are channel types; a channel's own ``rate_per_minute`` overrides.
    rate_per_minute: dict[ChannelType, Annotated[int, Field(ge=1, le=MAX_RATE_PER_MINUTE)]] = Field(
        default_factory=lambda: {
            ChannelType.SLACK: 60,
            ChannelType.PAGERDUTY: 120,
            ChannelType.TEAMS: 60,
            ChannelType.WEBHOOK: 600,
            ChannelType.EMAIL: 60,
        }
    )
    backoff_initial_seconds: float = Field(default=5, ge=0.1, le=3600)
    # The longest wait between two tries: once a receiver is back, a notification waits at most
    # this long for its next try.
    backoff_max_seconds: float = Field(default=120, ge=1, le=86_400)
    # A failing notification is retried (5xx, timeouts, refused connections, 429) for this long
    # after its first failed attempt, then ``failed``; a channel's own ``retry_for_minutes`` wins.
    retry_for_minutes: float = Field(default=60, gt=0, le=MAX_RETRY_FOR_MINUTES)
    # A claimed row is retaken after this; the dispatcher renews it while it is still sending.
    lease_seconds: int = Field(default=60, ge=5, le=3600)
    request_timeout_seconds: float = Field(default=10, ge=0.5, le=120)


class InhibitRule(_Model):
    """Alertmanager's inhibition: while an alert matching ``source_matchers`` fires, alerts
    matching ``target_matchers`` with the same values of the ``equal`` labels are muted. With
    ``lineage: true`` the target must also be downstream of the source's asset (or of every asset
    when the source has none, e.g. an unreachable database) in Dagster's asset graph."""

    name: str = Field(default="", max_length=100)
    source_matchers: list[str] = Field(min_length=1)  # 'label=value', '!=', '=~', '!~'
    target_matchers: list[str] = Field(min_length=1)
    equal: list[str] = Field(default_factory=list)
    lineage: bool = False

    @field_validator("source_matchers", "target_matchers")
    @classmethod
    def _parsable(cls, value: list[str]) -> list[str]:
        from healthmon_dagster.alerting.labels import MatcherError, parse_matcher

        problems: list[tuple[Loc, str]] = []
        for i, text in enumerate(value):
            try:
                parse_matcher(text)
            except MatcherError as exc:
                problems.append(((i,), str(exc)))
        _raise_if(problems)
        return value


class TimeRange(_Model):
    start_time: str = Field(pattern=r"^([01]\d|2[0-3]):[0-5]\d$|^24:00$")  # "HH:MM"
    end_time: str = Field(pattern=r"^([01]\d|2[0-3]):[0-5]\d$|^24:00$")

    @model_validator(mode="after")
    def _ordered(self) -> "TimeRange":
        if self.end_time <= self.start_time:
            _raise_if([(("end_time",), f"{self.end_time} is not after {self.start_time}")])
        return self


class TimeInterval(_Model):
    """Alertmanager's time interval: every listed field must match (an empty one matches all).
    Weekdays ``monday``..``sunday`` or ranges ``monday:friday``; days of month ``1:7`` or ``-1``
    (last day); months ``1:3`` or names; years ``2026:2027``; times in ``location`` (IANA)."""

    times: list[TimeRange] = Field(default_factory=list)
    weekdays: list[str] = Field(default_factory=list)
    days_of_month: list[str] = Field(default_factory=list)
    months: list[str] = Field(default_factory=list)
    years: list[str] = Field(default_factory=list)
    location: str = "UTC"

    @model_validator(mode="after")
    def _parsable(self) -> "TimeInterval":
        from healthmon_dagster.alerting.timeintervals import TimeIntervalError, compile_interval

        try:
            compile_interval(self)
        except TimeIntervalError as exc:
            _raise_if([(exc.loc, str(exc))])
        return self


class AlertingConfiguration(_Model):
    """The alert engine's settings: built-in rules, inhibition, mute intervals, grouping of
    notifications and the outbox dispatcher."""

    # Built-in event rules (check failed, contract break, freshness, run failure, health check
    # critical, dependency unreachable) alert to the log channel unless turned off.
    builtin_rules: bool = True
    builtin_channels: list[str] = Field(default_factory=lambda: ["log"])
    # An unreachable dependency mutes the check and freshness alerts of everything downstream,
    # and a failed upstream asset its downstream assets' alerts (lineage inhibition).
    builtin_inhibit_rules: bool = True
    inhibit_rules: list[InhibitRule] = Field(default_factory=list)
    # After a source of inhibition resolves, the alerts it muted (and any it would mute) stay
    # muted this long: the outage's echo (stale assets, failed checks and runs that recover with
    # the next load) resolves unannounced; what still fires afterwards is announced, saying what
    # muted it from when to when. 0: unmuted as soon as the source resolves (Alertmanager).
    inhibit_hold_minutes: float = Field(default=10, ge=0, le=1440)
    time_intervals: dict[str, list[TimeInterval]] = Field(default_factory=dict)
    # Named time intervals during which no notification goes out (maintenance, backfills).
    mute_time_intervals: list[str] = Field(default_factory=list)
    grouping: GroupingConfiguration = Field(default_factory=GroupingConfiguration)
    dispatch: DispatchConfiguration = Field(default_factory=DispatchConfiguration)


class RetentionConfiguration(_Model):
    """How long the health store keeps each kind of record, in days."""

    metrics_days: int = Field(default=90, ge=1, le=MAX_RETENTION_DAYS)
    check_results_days: int = Field(default=90, ge=1, le=MAX_RETENTION_DAYS)
    alerts_days: int = Field(default=365, ge=1, le=MAX_RETENTION_DAYS)
    incidents_days: int = Field(default=730, ge=1, le=MAX_RETENTION_DAYS)
    load_runs_days: int = Field(default=365, ge=1, le=MAX_RETENTION_DAYS)


class SelfHealingConfiguration(_Model):
    """The self-healing sensor: bounded re-runs of pipeline assets whose failure was transient.

    A failed run's assets that were planned but not materialized are re-run when the failure is
    classified transient (``etl.failures``), never for a data error and never for an error class in
    ``never_rerun_error_classes``. At most ``max_attempts_per_window`` re-runs per asset within
    ``window_minutes``; after a failed re-run the next waits ``initial_delay_seconds`` doubling up
    to ``max_delay_seconds`` (+- ``jitter``). After ``breaker_failures`` consecutive failed re-runs
    of an asset (since it last materialized) its circuit breaker opens: no more re-runs, the
    incident is escalated to ``escalate_to`` and at least one step above its severity, until the
    asset materializes again. A re-run that succeeds with its checks
    passing moves the incident to monitoring; it resolves after ``quiet_period_minutes`` without a
    new failure. ``stale_reruns``: also re-run an asset past its freshness fail window whose upstream
    has materialized since. The sensor runs while the feature flag ``self_healing`` is on (the
    default); ``feature_flags: {self_healing: false}`` turns it off."""

    max_attempts_per_window: int = Field(default=3, ge=1, le=100)
    window_minutes: int = Field(default=60, ge=1, le=10_080)
    initial_delay_seconds: int = Field(default=60, ge=1, le=86_400)
    max_delay_seconds: int = Field(default=900, ge=1, le=86_400)
    jitter: float = Field(default=0.1, ge=0, le=0.5)
    breaker_failures: int = Field(default=3, ge=1, le=100)
    escalate_to: IncidentSeverity = IncidentSeverity.HIGH
    quiet_period_minutes: float = Field(default=15, ge=0, le=10_080)
    stale_reruns: bool = True
    never_rerun_error_classes: list[str] = Field(default_factory=list)

    @model_validator(mode="after")
    def _delays_ordered(self) -> "SelfHealingConfiguration":
        if self.max_delay_seconds < self.initial_delay_seconds:
            _raise_if(
                [
                    (
                        ("max_delay_seconds",),
                        f"max_delay_seconds ({self.max_delay_seconds}) must be >= "
                        f"initial_delay_seconds ({self.initial_delay_seconds})",
                    )
                ]
            )
        return self


# --------------------------------------------------------------------------------------------------
# Sensors


def _sensor_interval(default: int) -> Any:
    return Field(default=default, ge=MIN_SENSOR_INTERVAL_SECONDS, le=MAX_SENSOR_INTERVAL_SECONDS)


class SensorIntervals(_Model):
    """How often dagster-daemon runs each sensor, in seconds (its ``minimum_interval_seconds``).
    Read when the code location loads, unlike the rest of the file: reload it after a change."""

    landing_files_sensor: int = _sensor_interval(30)
    self_healing_sensor: int = _sensor_interval(30)
    incident_run_failure_sensor: int = _sensor_interval(30)
    alert_evaluation_sensor: int = _sensor_interval(30)
    alert_dispatch_sensor: int = _sensor_interval(15)


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
    alerting: AlertingConfiguration = Field(default_factory=AlertingConfiguration)
    retention: RetentionConfiguration = Field(default_factory=RetentionConfiguration)
    self_healing: SelfHealingConfiguration = Field(default_factory=SelfHealingConfiguration)
    sensor_intervals: SensorIntervals = Field(default_factory=SensorIntervals)
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

        for j, name in enumerate(self.alerting.builtin_channels):
            if name not in self.channels:
                loc = ("alerting", "builtin_channels", j)
                problems.append((loc, _unknown("channel", name, channels)))
        intervals = sorted(self.alerting.time_intervals)
        for j, name in enumerate(self.alerting.mute_time_intervals):
            if name not in self.alerting.time_intervals:
                loc = ("alerting", "mute_time_intervals", j)
                problems.append((loc, _unknown("time interval", name, intervals)))
        for i, rule in enumerate(self.alert_rules):
            for j, name in enumerate(rule.mute_time_intervals):
                if name not in self.alerting.time_intervals:
                    loc = ("alert_rules", i, "mute_time_intervals", j)
                    problems.append((loc, _unknown("time interval", name, intervals)))

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
