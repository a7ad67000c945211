"""Thresholds and verdicts, without a database."""

import pytest
from pydantic import TypeAdapter

from healthmon_dagster.config.models import QualityCheckSpec
from healthmon_dagster.enums import QualityStatus
from healthmon_dagster.quality.grading import count_thresholds, fraction_thresholds, grade

SPEC: TypeAdapter[QualityCheckSpec] = TypeAdapter(QualityCheckSpec)


def not_null(**levels: float) -> QualityCheckSpec:
    return SPEC.validate_python({"kind": "not_null", "columns": ["id"], **levels})


@pytest.mark.parametrize(
    ("levels", "expected"),
    [
        ({}, (None, 0.0)),  # no level at all: any failing row fails
        ({"warn": 0.01}, (0.01, None)),  # only a warning level: never fails
        ({"warn": 0.01, "fail": 0.05}, (0.01, 0.05)),
        ({"mostly": 0.95}, (None, 0.05)),  # mostly is fail = 1 - mostly
    ],
)
def test_fraction_thresholds(
    levels: dict[str, float], expected: tuple[float | None, float | None]
) -> None:
    assert fraction_thresholds(not_null(**levels)) == expected


def test_count_thresholds_default_to_failing_on_any_row() -> None:
    assert count_thresholds(not_null()) == (None, 0.0)
    assert count_thresholds(not_null(warn=2)) == (2, None)


@pytest.mark.parametrize(
    ("value", "status"),
    [
        (0.0, QualityStatus.PASSED),
        (0.01, QualityStatus.PASSED),  # at the level is within it
        (0.02, QualityStatus.WARN),
        (0.06, QualityStatus.FAILED),
    ],
)
def test_grade_is_strictly_above_the_level(value: float, status: QualityStatus) -> None:
    assert grade(value, 0.01, 0.05) == status
