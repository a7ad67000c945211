"""The project's shared vocabulary: one enum per concept, used by config, quality, health, the rollup,
alerting, incidents and the API. Deciding code compares members of these enums, never bare strings.

The one order of health: ``HEALTHY < UNKNOWN < WARNING < CRITICAL``. UNKNOWN ranks above HEALTHY
because "we cannot tell" must never hide behind green, and below WARNING because a confirmed problem
outranks a missing answer: an on-call engineer should look at what is known to be broken first.
"""

from collections.abc import Iterable
from enum import StrEnum


class HealthComponent(StrEnum):
    """A monitored part of the pipeline or its infrastructure."""

    S3_DISCOVERY = "s3_discovery"
    RAW_LOADER = "raw_loader"
    STAGING_TRANSFORMER = "staging_transformer"
    CORE_MERGER = "core_merger"
    AUDIT_MANAGER = "audit_manager"
    DATABASE = "database"
    FILESYSTEM = "filesystem"
    NETWORK = "network"
    SYSTEM_RESOURCES = "system_resources"


class HealthCheckType(StrEnum):
    CONNECTIVITY = "connectivity"
    PERFORMANCE = "performance"
    DATA_QUALITY = "data_quality"
    CAPACITY = "capacity"
    CUSTOM = "custom"


class HealthStatus(StrEnum):
    """The health of a check, component, asset or the whole system, ordered by :attr:`rank`."""

    HEALTHY = "healthy"
    WARNING = "warning"
    CRITICAL = "critical"
    UNKNOWN = "unknown"

    @property
    def rank(self) -> int:
        """0 for HEALTHY up to 3 for CRITICAL: HEALTHY < UNKNOWN < WARNING < CRITICAL."""
        return _HEALTH_RANK[self]

    @classmethod
    def from_rank(cls, rank: int) -> "HealthStatus":
        return _HEALTH_BY_RANK[rank]

    @classmethod
    def worst(cls, statuses: Iterable[str]) -> "HealthStatus":
        """The worst of ``statuses`` (members or their values); HEALTHY for none."""
        return _HEALTH_BY_RANK[max((cls(s).rank for s in statuses), default=0)]


_HEALTH_RANK = {
    HealthStatus.HEALTHY: 0,
    HealthStatus.UNKNOWN: 1,
    HealthStatus.WARNING: 2,
    HealthStatus.CRITICAL: 3,
}
_HEALTH_BY_RANK = {rank: status for status, rank in _HEALTH_RANK.items()}


class QualityStatus(StrEnum):
    """What one evaluation of a quality (asset) check found."""

    PASSED = "passed"
    WARN = "warn"
    FAILED = "failed"
    ERROR = "error"  # the check could not be evaluated (missing table/column, SQL error)
    INSUFFICIENT_HISTORY = "insufficient_history"  # not enough history for a verdict yet


class CheckSeverity(StrEnum):
    """The one severity vocabulary of ``etl.check_results.severity`` (Dagster's
    ``AssetCheckSeverity`` values): WARN or ERROR for a result that did not pass, NULL for a pass
    (and for a health check that had nothing to check). A health check's criticality is not a
    severity: it has its own column, ``critical``; how the two combine is
    ``health.record.severity_of``."""

    WARN = "WARN"
    ERROR = "ERROR"


class RecordSource(StrEnum):
    """Who wrote a row of ``etl.check_results``."""

    ASSET_CHECK = "asset_check"
    HEALTH_CHECK = "health_check"
    BENCHMARK = "benchmark"


class Layer(StrEnum):
    """A layer of the warehouse; also the database schema its tables live in."""

    RAW = "raw"
    STG = "stg"
    CORE = "core"


class ConditionOperator(StrEnum):
    GREATER_THAN = "greater_than"
    LESS_THAN = "less_than"
    EQUALS = "equals"
    NOT_EQUALS = "not_equals"
    GREATER_THAN_OR_EQUALS = "greater_than_or_equals"
    LESS_THAN_OR_EQUALS = "less_than_or_equals"
    CONTAINS = "contains"
    NOT_CONTAINS = "not_contains"


class AlertSeverity(StrEnum):
    INFO = "info"
    WARNING = "warning"
    ERROR = "error"
    CRITICAL = "critical"


class AlertStatus(StrEnum):
    ACTIVE = "active"
    ACKNOWLEDGED = "acknowledged"
    RESOLVED = "resolved"
    SUPPRESSED = "suppressed"


class EventKind(StrEnum):
    """What an event rule watches (``alert_rules[].event.kind``)."""

    CHECK_FAILED = "check_failed"  # an asset check did not pass (WARN / ERROR) or could not run
    CONTRACT_BREAK = "contract_break"  # a landing file rejected whole by the loader
    FRESHNESS = "freshness"  # an asset's freshness check warned or failed
    RUN_FAILURE = "run_failure"  # a Dagster run failed, including runs that never reached a step
    HEALTH_CHECK = "health_check"  # a health check reported warning or critical
    DEPENDENCY_UNREACHABLE = "dependency_unreachable"  # a connectivity check is critical
    INCIDENT = "incident"  # an incident is open (incidents/announce.py passes these signals in)


class AlertState(StrEnum):
    """Where an alert episode is in Prometheus's rule lifecycle (``etl.alerts.state``). An
    inactive condition has no open episode; ``pending`` holds until the rule's ``for`` has passed."""

    PENDING = "pending"
    FIRING = "firing"
    RESOLVED = "resolved"


class AlertEventKind(StrEnum):
    """What happened to an alert (``etl.alert_events.kind``)."""

    PENDING = "pending"
    FIRING = "firing"
    RESOLVED = "resolved"
    ACKNOWLEDGED = "acknowledged"
    SUPPRESSED = "suppressed"
    UNSUPPRESSED = "unsuppressed"
    ESCALATED = "escalated"
    REPEATED = "repeated"
    NOTE = "note"


class NotificationKind(StrEnum):
    """Why a notification goes out (``etl.notifications.kind``)."""

    FIRING = "firing"
    RESOLVED = "resolved"
    ACKNOWLEDGED = "acknowledged"
    ESCALATED = "escalated"
    REPEATED = "repeated"
    UPDATED = "updated"
    """An incident's alert: the incident changed (status, assignment, an absorbed failure)."""


class NotificationStatus(StrEnum):
    """An outbox row (``etl.notifications.status``): ``sent`` only once the channel accepted it."""

    PENDING = "pending"
    SENT = "sent"
    FAILED = "failed"  # gave up after the channel's retries; the error is kept
    CANCELLED = "cancelled"  # the alert resolved or was silenced before it could be sent


class IncidentSeverity(StrEnum):
    """How bad an incident is, ordered by :attr:`rank` (LOW 0 .. CRITICAL 3)."""

    LOW = "low"
    MEDIUM = "medium"
    HIGH = "high"
    CRITICAL = "critical"

    @property
    def rank(self) -> int:
        return list(IncidentSeverity).index(self)


class IncidentStatus(StrEnum):
    OPEN = "open"
    INVESTIGATING = "investigating"
    IDENTIFIED = "identified"
    MONITORING = "monitoring"
    RESOLVED = "resolved"
    CLOSED = "closed"


class IncidentImpact(StrEnum):
    NONE = "none"
    MINOR = "minor"
    MAJOR = "major"
    CRITICAL = "critical"


class TrendDirection(StrEnum):
    UPWARD = "upward"
    DOWNWARD = "downward"
    STABLE = "stable"
    VOLATILE = "volatile"


class Aggregation(StrEnum):
    """How an alert condition folds the metric samples of its window into one value."""

    AVG = "avg"
    MAX = "max"
    MIN = "min"
    COUNT = "count"
    SUM = "sum"


class ChannelType(StrEnum):
    """A notification channel; ``log`` needs no configuration and always works."""

    EMAIL = "email"
    SLACK = "slack"
    TEAMS = "teams"
    WEBHOOK = "webhook"
    SMS = "sms"
    PAGERDUTY = "pagerduty"
    LOG = "log"


class IncidentEventKind(StrEnum):
    """What happened to an incident (``etl.incident_events.kind``): its timeline."""

    CREATED = "created"
    FAILURE = "failure"  # a failure opened the incident or was absorbed into it
    STATUS_CHANGED = "status_changed"
    ESCALATED = "escalated"  # severity raised (by an absorbed failure or by hand)
    UPDATED = "updated"  # title, description, impact, root cause, tags... edited
    ASSIGNED = "assigned"
    NOTE = "note"
    ALERT_LINKED = "alert_linked"
    INCIDENT_LINKED = "incident_linked"
    NOTIFICATION_SENT = "notification_sent"
    SELF_HEAL_ATTEMPT = "self_heal_attempt"
    SELF_HEAL_OUTCOME = "self_heal_outcome"
    RESOLVED = "resolved"
    REOPENED = "reopened"
    CLOSED = "closed"


class IncidentSource(StrEnum):
    """Which part of the system acted on an incident (``etl.incident_events.source``)."""

    HOOK = "hook"  # a Dagster failure hook inside the run
    SENSOR = "sensor"  # a sensor of the daemon (run failure, self-healing, alerts)
    CLI = "cli"
    API = "api"
