"""Configured thresholds (``healthmon.yaml`` ``thresholds:``) judged on a check result's metrics."""

from collections.abc import Callable, Sequence
from typing import Any

from healthmon_dagster.enums import ConditionOperator, HealthComponent, HealthStatus
from healthmon_dagster.health.result import HealthCheckResult, short

_COMPARE: dict[ConditionOperator, tuple[Callable[[float, float], bool], str]] = {
    ConditionOperator.GREATER_THAN: (lambda v, t: v > t, "above"),
    ConditionOperator.GREATER_THAN_OR_EQUALS: (lambda v, t: v >= t, "at or above"),
    ConditionOperator.LESS_THAN: (lambda v, t: v < t, "below"),
    ConditionOperator.LESS_THAN_OR_EQUALS: (lambda v, t: v <= t, "at or below"),
    ConditionOperator.EQUALS: (lambda v, t: v == t, "equal to"),
    ConditionOperator.NOT_EQUALS: (lambda v, t: v != t, "not equal to"),
}


def apply_thresholds(
    result: HealthCheckResult, component: HealthComponent, thresholds: Sequence[Any]
) -> HealthCheckResult:
    """Judge ``result``'s metrics against the configured ``thresholds`` of its component.

    A threshold (``healthmon.yaml`` ``thresholds:``) names a component, a metric of its checks and a
    warning and critical level; crossing one adds a warning or an error that names the threshold,
    and raises the status (never lowers it). Thresholds on metrics the result does not carry, and
    the string operators (contains/not_contains), do not apply here.
    """
    for t in thresholds:
        if not t.enabled or HealthComponent(t.component) != component:
            continue
        compare = _COMPARE.get(ConditionOperator(t.operator))
        if compare is None:
            continue
        test, words = compare
        # "query_time_ms" also matches "warehouse.query_time_ms" (checks with several targets).
        matching = [
            (n, v)
            for n, v in result.metrics.items()
            if n == t.metric_name or n.endswith("." + t.metric_name)
        ]
        for name, value in matching:
            for level, status, sink in (
                (t.critical_threshold, HealthStatus.CRITICAL, result.errors),
                (t.warning_threshold, HealthStatus.WARNING, result.warnings),
            ):
                if test(value, level):
                    sink.append(
                        short(
                            f"{name} is {value:g}, {words} the {status.value} "
                            f"threshold {level:g} (threshold {t.threshold_id})"
                        )
                    )
                    result.status = HealthStatus.worst([result.status, status])
                    break
    return result
