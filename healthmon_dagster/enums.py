"""Enumerations shared by config, health, alerting and incidents (values as in the seed plan)."""

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
    HEALTHY = "healthy"
    WARNING = "warning"
    CRITICAL = "critical"
    UNKNOWN = "unknown"


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


class IncidentSeverity(StrEnum):
    LOW = "low"
    MEDIUM = "medium"
    HIGH = "high"
    CRITICAL = "critical"


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
