"""The planner registry: every check kind of the config models can be evaluated and described."""

from typing import get_args

import pytest

import healthmon_dagster.quality  # noqa: F401 - imported as its users do: every planner registers
from healthmon_dagster.config.models import CheckSpec, NotNullCheck, QualityCheckSpec, UniqueCheck
from healthmon_dagster.quality.plan import PLANNERS, planner

SPEC_CLASSES: tuple[type[CheckSpec], ...] = get_args(get_args(QualityCheckSpec)[0])


def test_the_spec_union_is_read_as_classes() -> None:
    assert NotNullCheck in SPEC_CLASSES and UniqueCheck in SPEC_CLASSES


@pytest.mark.parametrize("spec_class", SPEC_CLASSES, ids=lambda c: c.__name__)
def test_every_check_kind_has_a_planner_and_a_description(spec_class: type[CheckSpec]) -> None:
    assert spec_class in PLANNERS, f"no @planner({spec_class.__name__}) in quality/kinds/"
    assert spec_class.kind_description.strip(), f"{spec_class.__name__}.kind_description is empty"


def test_every_planner_plans_a_kind_of_the_config() -> None:
    assert set(PLANNERS) == set(SPEC_CLASSES)


def test_a_kind_cannot_be_registered_twice() -> None:
    with pytest.raises(ValueError, match="already registered"):
        planner(NotNullCheck)(PLANNERS[NotNullCheck])
