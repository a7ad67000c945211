"""What a quality check found: :class:`CheckResult`, with numbers and column names only (PHI rule)."""

from collections.abc import Mapping
from dataclasses import dataclass, field

from healthmon_dagster.enums import CheckSeverity, QualityStatus


def severity_of(status: QualityStatus) -> CheckSeverity | None:
    """WARN for warn and insufficient history, ERROR for failed and error, None for a pass."""
    if status in (QualityStatus.FAILED, QualityStatus.ERROR):
        return CheckSeverity.ERROR
    if status in (QualityStatus.WARN, QualityStatus.INSUFFICIENT_HISTORY):
        return CheckSeverity.WARN
    return None


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
        return self.status == QualityStatus.PASSED

    @property
    def failing_fraction(self) -> float | None:
        if self.failing_rows is None or not self.total_rows:
            return None
        return self.failing_rows / self.total_rows
