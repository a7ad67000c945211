"""Health check definitions and results: what to run (:class:`HealthCheck`), what an implementation
saw (:class:`Observation`) and what is reported (:class:`HealthCheckResult`).

An implementation records metrics, details, warnings and errors on an :class:`Observation`; the status
follows from them (any error: CRITICAL, else any warning: WARNING, else HEALTHY) unless the
implementation sets one. Results never hold a stack trace: messages are one line (:func:`short`).
"""

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from healthmon_dagster.enums import HealthCheckType, HealthComponent, HealthStatus
from healthmon_dagster.store.errors import error_text

MAX_MESSAGE_CHARS = 500


@dataclass(frozen=True)
class HealthCheck:
    """One health check: what to run, how often, and how patiently.

    ``timeout_seconds`` bounds each attempt; a CRITICAL attempt (including a timeout) is retried up
    to ``retry_attempts`` more times before the result is reported.
    """

    check_id: str
    component: HealthComponent
    kind: str
    name: str = ""
    description: str = ""
    check_type: HealthCheckType = HealthCheckType.CONNECTIVITY
    impl: str | None = None
    interval_seconds: int = 60
    timeout_seconds: float = 10.0
    retry_attempts: int = 0
    enabled: bool = True
    critical: bool = False
    dependencies: tuple[str, ...] = ()
    custom_parameters: Mapping[str, Any] = field(default_factory=dict)

    @classmethod
    def from_config(cls, config: Any) -> "HealthCheck":
        """From a ``HealthCheckConfiguration`` of ``healthmon.yaml``."""
        return cls(
            check_id=config.check_id,
            component=HealthComponent(config.component),
            kind=config.kind,
            name=config.name or config.check_id,
            description=config.description,
            check_type=HealthCheckType(config.check_type),
            impl=config.impl,
            interval_seconds=config.interval_seconds,
            timeout_seconds=float(config.timeout_seconds),
            retry_attempts=config.retry_attempts,
            enabled=config.enabled,
            critical=config.critical,
            dependencies=tuple(config.dependencies),
            custom_parameters=dict(config.custom_parameters),
        )

    def param(self, name: str, default: Any = None) -> Any:
        """``custom_parameters[name]``, else ``default``."""
        value = self.custom_parameters.get(name)
        return default if value is None else value

    def float_param(self, name: str, default: float | None) -> float | None:
        """A numeric parameter; a non-number raises :class:`CheckFailed` naming the parameter."""
        value = self.custom_parameters.get(name)
        if value is None:
            return default
        try:
            return float(value)
        except (TypeError, ValueError):
            raise CheckFailed(
                f"custom_parameters.{name} of health check '{self.check_id}' is {value!r}, "
                "not a number; fix it in healthmon.yaml"
            ) from None


@dataclass
class HealthCheckResult:
    """The outcome of one check run."""

    check_id: str
    timestamp: datetime
    status: HealthStatus
    response_time_ms: float
    details: dict[str, Any] = field(default_factory=dict)
    errors: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    metrics: dict[str, float] = field(default_factory=dict)
    attempts: int = 1

    @property
    def message(self) -> str:
        """One line for people: the errors, else the warnings, else 'ok'."""
        return "; ".join(self.errors or self.warnings) or "ok"

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict."""
        return {
            "check_id": self.check_id,
            "timestamp": self.timestamp.isoformat(),
            "status": self.status.value,
            "response_time_ms": self.response_time_ms,
            "details": self.details,
            "errors": self.errors,
            "warnings": self.warnings,
            "metrics": self.metrics,
            "attempts": self.attempts,
        }


class CheckFailed(Exception):
    """Raised by an implementation to report CRITICAL with exactly this message."""


@dataclass
class Observation:
    """What an implementation saw; the runner turns it into a :class:`HealthCheckResult`."""

    status: HealthStatus | None = None  # None: derived from errors and warnings
    details: dict[str, Any] = field(default_factory=dict)
    errors: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    metrics: dict[str, float] = field(default_factory=dict)

    def error(self, message: str) -> "Observation":
        self.errors.append(short(message))
        return self

    def warn(self, message: str) -> "Observation":
        self.warnings.append(short(message))
        return self

    def metric(self, name: str, value: float | int | None) -> None:
        if value is not None and value == value:  # drop None and NaN
            self.metrics[name] = round(float(value), 3)

    def threshold(
        self,
        name: str,
        value: float | None,
        warning: float | None,
        critical: float | None,
        what: str,
        unit: str = "",
        higher_is_worse: bool = True,
    ) -> None:
        """Record ``value`` as metric ``name`` and warn/fail when it crosses a threshold.

        The message names the measurement, its value and the threshold it crossed.
        """
        self.metric(name, value)
        if value is None:
            return

        def crossed(limit: float | None) -> bool:
            if limit is None:
                return False
            return value > limit if higher_is_worse else value < limit

        side = "above" if higher_is_worse else "below"
        shown = f"{_figure(value)}{unit}" if isinstance(value, float) else f"{value}{unit}"
        if crossed(critical):
            self.error(f"{what} is {shown}, {side} the critical threshold {critical:g}{unit}")
        elif crossed(warning):
            self.warn(f"{what} is {shown}, {side} the warning threshold {warning:g}{unit}")

    def derived_status(self) -> HealthStatus:
        if self.status is not None:
            return self.status
        if self.errors:
            return HealthStatus.CRITICAL
        return HealthStatus.WARNING if self.warnings else HealthStatus.HEALTHY


def short(message: str) -> str:
    """One line, at most ``MAX_MESSAGE_CHARS``: never a multi-line dump or a traceback."""
    line = " ".join(str(message).split())
    return line if len(line) <= MAX_MESSAGE_CHARS else line[: MAX_MESSAGE_CHARS - 3] + "..."


def describe_exception(exc: BaseException) -> str:
    """``Type: first line of the message``, quoted values redacted (see ``store.errors``)."""
    return error_text(exc)


def metric_safe(text: str) -> str:
    """``text`` (an asset key, a host:port) as part of a metric name: non-alphanumerics -> ``_``."""
    return "".join(c if c.isalnum() else "_" for c in text)


def _figure(value: float) -> str:
    """A measured value as people read it: whole from 100 on, one decimal from 1, three
    significant digits below (a failure rate of 0.25 must not read 0.2)."""
    if abs(value) >= 100:
        return f"{value:.0f}"
    if abs(value) >= 1:
        return f"{value:.1f}"
    return f"{value:.3g}"
