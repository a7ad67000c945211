"""Planners: how each kind of check is evaluated, registered by the spec class they evaluate.

A planner turns one spec into a :class:`Plan`: aggregate expressions that :func:`evaluate
<healthmon_dagster.quality.evaluation.evaluate>` fuses into one query per table, and a ``finish`` step
that grades their values (and may run queries of its own). Planners live in
:mod:`healthmon_dagster.quality.kinds`, one module per family of kinds, and register themselves::

    @planner(NotNullCheck)
    def plan_not_null(ctx: EvalContext, spec: NotNullCheck) -> Plan: ...
"""

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, TypeVar

from sqlalchemy.sql.elements import ColumnElement

from healthmon_dagster.config.models import CheckSpec
from healthmon_dagster.quality.context import CheckError, EvalContext
from healthmon_dagster.quality.result import CheckResult

Finish = Callable[[Mapping[str, Any], int], CheckResult]
"""``finish(values, total)``: the values of the plan's fused expressions and the scope's row count."""


@dataclass
class Plan:
    """How one spec is evaluated: aggregate expressions fused into the table's row query (may be
    empty), then ``finish(values, total)`` (which may run queries of its own). ``needs_total``
    asks for the row count even without expressions of its own."""

    exprs: dict[str, ColumnElement[Any]] = field(default_factory=dict)
    finish: Finish | None = None
    needs_total: bool = False

    @property
    def fused(self) -> bool:
        """Whether the plan takes part in the table's fused row query."""
        return bool(self.exprs) or self.needs_total


S = TypeVar("S", bound=CheckSpec)
Planner = Callable[[EvalContext, S], Plan]

PLANNERS: dict[type[CheckSpec], Planner[Any]] = {}
"""The planner of each spec class (filled by the modules of :mod:`healthmon_dagster.quality.kinds`)."""


def planner(spec_type: type[S]) -> Callable[[Planner[S]], Planner[S]]:
    """Register the decorated function as the planner of ``spec_type``."""

    def register(fn: Planner[S]) -> Planner[S]:
        if spec_type in PLANNERS:
            raise ValueError(f"a planner for {spec_type.__name__} is already registered")
        PLANNERS[spec_type] = fn
        return fn

    return register


def plan_for(ctx: EvalContext, spec: CheckSpec) -> Plan:
    """The plan of ``spec`` by its registered planner."""
    fn = PLANNERS.get(type(spec))
    if fn is None:
        raise CheckError(f"no planner is registered for check kind {getattr(spec, 'kind', '?')}")
    return fn(ctx, spec)
