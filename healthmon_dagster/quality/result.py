"""What a quality check found: :class:`CheckResult`, with numbers and column names only (PHI rule).

A check that learns from history (``volume_anomaly``, ``row_count_change``) and lacks the history to
judge is *learning*: status ``insufficient_history``, which passes (no severity, never a failure)
and says in ``details`` how much history it has (``n_history``) and needs (``min_history``).
"""

from collections.abc import Mapping
from dataclasses import dataclass, field

from healthmon_dagster.enums import CheckSeverity, QualityStatus

PASSING = frozenset({QualityStatus.PASSED, QualityStatus.INSUFFICIENT_HISTORY})
"""Statuses that are no failure: a pass, and learning (too little history to judge yet)."""


def severity_of(status: QualityStatus) -> CheckSeverity | None:
    """WARN for warn, ERROR for failed and error, None for a pass or learning."""
    if status in (QualityStatus.FAILED, QualityStatus.ERROR):
        return CheckSeverity.ERROR
    if status == QualityStatus.WARN:
        return CheckSeverity.WARN
    return None


def _count(value: object) -> int | None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    return int(value)


def loads_needed(details: Mapping[str, object]) -> int | None:
    """How many more loads a learning check needs: its ``loads_needed`` detail, else
    ``min_history - n_history`` (at least 1); None when the details do not say."""
    if (needed := _count(details.get("loads_needed"))) is not None:
        return max(needed, 1)
    n_history, min_history = _count(details.get("n_history")), _count(details.get("min_history"))
    if n_history is None or min_history is None:
        return None
    return max(min_history - n_history, 1)


def learning_label(needed: int | None) -> str:
    """``LEARNING (needs 4 more loads)``, or ``LEARNING`` when the number is not known."""
    if needed is None:
        return "LEARNING"
    return f"LEARNING (needs {needed} more load{'s' if needed != 1 else ''})"


@dataclass(frozen=True)
class CheckResult:
    """One evaluation of one check on one asset.

    ``status`` is a :class:`QualityStatus`; its plain value (``"passed"``) is accepted and converted.
    ``message`` carries counts, rates and column names; ``details`` numbers only. Neither ever holds
    a field value of the checked data.
    """

    check_name: str
    asset: str  # asset key path, "stg/patients"
    kind: str
    status: QualityStatus
    observed_value: float | None = None
    threshold: float | None = None
    failing_rows: int | None = None
    total_rows: int | None = None
    message: str = ""
    details: Mapping[str, float] = field(default_factory=dict)
    blocking: bool = False
    duration_ms: float = 0.0

    def __post_init__(self) -> None:
        try:
            # A frozen dataclass: the conversion writes through object.__setattr__.
            object.__setattr__(self, "status", QualityStatus(self.status))
        except ValueError:
            known = ", ".join(QualityStatus)
            raise ValueError(f"status {self.status!r} is not one of {known}") from None
        for key, value in self.details.items():
            if isinstance(value, bool) or not isinstance(value, int | float):
                raise TypeError(f"details[{key!r}] must be a number, got {type(value).__name__}")

    @property
    def severity(self) -> CheckSeverity | None:
        return severity_of(self.status)

    @property
    def passed(self) -> bool:
        """No failure: a pass, or a check still learning its history."""
        return self.status in PASSING

    @property
    def learning(self) -> bool:
        """Too little history for a verdict yet (passes; see the module docstring)."""
        return self.status == QualityStatus.INSUFFICIENT_HISTORY

    @property
    def loads_needed(self) -> int | None:
        """How many more loads a learning check needs (None when it is not learning)."""
        if not self.learning:
            return None
        return loads_needed(self.details)

    @property
    def failing_fraction(self) -> float | None:
        if self.failing_rows is None or not self.total_rows:
            return None
        return self.failing_rows / self.total_rows
