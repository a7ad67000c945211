"""CheckResult: statuses are QualityStatus members (their stored values unchanged), severities
follow the status, details hold numbers only."""

import pytest

from healthmon_dagster.enums import CheckSeverity, QualityStatus
from healthmon_dagster.quality.result import CheckResult, learning_label


def result(status: str, **kw: object) -> CheckResult:
    # Plain status strings and loose details on purpose: the conversion and refusals are under test.
    return CheckResult("c", "stg/patients", "not_null", status, **kw)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("status", "severity"),
    [
        (QualityStatus.PASSED, None),
        (QualityStatus.WARN, CheckSeverity.WARN),
        (QualityStatus.INSUFFICIENT_HISTORY, None),  # learning: no failure
        (QualityStatus.FAILED, CheckSeverity.ERROR),
        (QualityStatus.ERROR, CheckSeverity.ERROR),
    ],
)
def test_severity_follows_the_status(status: QualityStatus, severity: CheckSeverity | None) -> None:
    assert result(status).severity == severity
    assert result(status).passed == (
        status in (QualityStatus.PASSED, QualityStatus.INSUFFICIENT_HISTORY)
    )


def test_learning_says_how_many_more_loads_it_needs() -> None:
    learning = result("insufficient_history", details={"n_history": 3, "min_history": 7})

    assert learning.learning and learning.passed and learning.loads_needed == 4
    told = result("insufficient_history", details={"n_history": 3, "loads_needed": 5})
    assert told.loads_needed == 5  # the check's own count wins (e.g. a detection window)
    assert learning_label(4) == "LEARNING (needs 4 more loads)"
    assert learning_label(1) == "LEARNING (needs 1 more load)"
    assert learning_label(None) == "LEARNING"
    assert result("passed").loads_needed is None and not result("warn").learning


def test_a_plain_status_value_becomes_the_member_with_the_same_value() -> None:
    r = result("warn")
    assert r.status is QualityStatus.WARN and str(r.status) == "warn"
    assert r.severity == "WARN"


def test_an_unknown_status_or_a_non_number_detail_is_refused() -> None:
    with pytest.raises(ValueError, match="status 'ok' is not one of passed, warn"):
        result("ok")
    with pytest.raises(TypeError, match="must be a number"):
        result("passed", details={"x": "1"})
