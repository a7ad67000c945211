"""What a quality check found: :class:`CheckResult`, with numbers and column names only (PHI rule)."""

from collections.abc import Mapping
from dataclasses import dataclass, field

PASSED = "passed"
WARN = "warn"
FAILED = "failed"
ERROR = "error"  # the check could not be evaluated (missing table/column, SQL error): never a pass
INSUFFICIENT_HISTORY = "insufficient_history"  # not enough history for a verdict: reported as WARN
STATUSES = (PASSED, WARN, FAILED, ERROR, INSUFFICIENT_HISTORY)

SEVERITY_WARN = "WARN"
SEVERITY_ERROR = "ERROR"


def severity_of(status: str) -> str | None:
    """WARN for warn and insufficient history, ERROR for failed and error, None for a pass."""
    if status in (FAILED, ERROR):
        return SEVERITY_ERROR
    if status in (WARN, INSUFFICIENT_HISTORY):
        return SEVERITY_WARN
    return None


@dataclass(frozen=True)
class CheckResult:
    """One evaluation of one check on one asset.

    ``message`` carries counts, rates and column names; ``details`` numbers only. Neither ever holds
    a field value of the checked data.
    """

    check_name: str
    asset: str  # asset key path, "stg/patients"
    kind: str
    status: str
    observed_value: float | None = None
    threshold: float | None = None
    failing_rows: int | None = None
    total_rows: int | None = None
    message: str = ""
    details: Mapping[str, float] = field(default_factory=dict)
    blocking: bool = False
    duration_ms: float = 0.0

    def __post_init__(self) -> None:
        if self.status not in STATUSES:
            raise ValueError(f"status {self.status!r} is not one of {', '.join(STATUSES)}")
        for key, value in self.details.items():
            if isinstance(value, bool) or not isinstance(value, int | float):
                raise TypeError(f"details[{key!r}] must be a number, got {type(value).__name__}")

    @property
    def severity(self) -> str | None:
        return severity_of(self.status)

    @property
    def passed(self) -> bool:
        return self.status == PASSED

    @property
    def failing_fraction(self) -> float | None:
        if self.failing_rows is None or not self.total_rows:
            return None
        return self.failing_rows / self.total_rows
