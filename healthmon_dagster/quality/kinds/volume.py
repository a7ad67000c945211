"""Volume against history: row_count_change (the row count against the previous evaluation) and
volume_anomaly (a robust score of the latest load's volume against the asset's own history).

History comes from the health store: per-load metrics of the bundled assets (``etl.metrics``, as
the catalog names them), else the check's own recorded observations."""

from collections.abc import Mapping
from datetime import datetime
from typing import Any

import sqlalchemy as sa

from healthmon_dagster.analytics.anomaly import AnomalyStatus, detect_volume_anomaly
from healthmon_dagster.config.models import RowCountChangeCheck, VolumeAnomalyCheck
from healthmon_dagster.enums import QualityStatus
from healthmon_dagster.etl import catalog
from healthmon_dagster.quality.context import EvalContext
from healthmon_dagster.quality.grading import learning_result, make_result
from healthmon_dagster.quality.plan import Plan, planner
from healthmon_dagster.quality.record import check_metric_name, latest_details
from healthmon_dagster.quality.result import CheckResult
from healthmon_dagster.quality.sql import table_count, timestamp_utc
from healthmon_dagster.store.tables import metrics

VOLUME_HISTORY_LIMIT = 400
"""Most recent observations a volume check learns from."""
DETECTION_WINDOW = 1
"""Most recent history points kept out of training (see analytics.anomaly): they enter it later."""


def volume_loads_needed(n_history: int, n_training: int, min_history: int) -> int:
    """More loads until ``min_history`` training observations exist, from ``n_history`` earlier
    observations of which ``n_training`` train (each new load moves one point into training once
    the detection window is full); ``n_history = -1``: not even the current load is recorded."""
    return min_history - n_training + max(DETECTION_WINDOW - n_history, 0)


@planner(RowCountChangeCheck)
def plan_row_count_change(ctx: EvalContext, spec: RowCountChangeCheck) -> Plan:
    def finish(_v: Mapping[str, Any], total: int) -> CheckResult:
        current = total if not ctx.scope else table_count(ctx)
        previous_details = latest_details(ctx.health, ctx.asset, spec.check_name)
        previous = (previous_details or {}).get("row_count")
        if previous is None:
            return learning_result(
                ctx,
                spec,
                0,
                1,
                1,
                f"the row count of {ctx.asset} (no previous evaluation to compare with)",
                total_rows=current,
                details={"row_count": current},
            )
        change = (current - previous) / previous * 100 if previous else (100.0 if current else 0.0)
        too_low = spec.max_drop_pct is not None and -change > spec.max_drop_pct
        too_high = spec.max_growth_pct is not None and change > spec.max_growth_pct
        status = QualityStatus.FAILED if too_low or too_high else QualityStatus.PASSED
        if status == QualityStatus.FAILED and spec.warn is not None and spec.fail is None:
            status = QualityStatus.WARN
        limit = spec.max_drop_pct if change < 0 else spec.max_growth_pct
        return make_result(
            ctx,
            spec,
            status,
            f"{current} rows, {change:+.1f}% against the previous {int(previous)}; "
            f"allowed drop {spec.max_drop_pct}%, growth {spec.max_growth_pct}%",
            observed_value=change,
            threshold=None if limit is None else float(limit),
            total_rows=current,
            details={"row_count": current, "previous_row_count": previous, "change_pct": change},
        )

    return Plan({}, finish, needs_total=True)


Point = tuple[datetime, float]


def volume_history(ctx: EvalContext, spec: VolumeAnomalyCheck) -> tuple[list[Point], Point | None]:
    """(history, current) of the asset's volume: per-load metrics of the bundled assets, else
    the check's own previous observations, with the table's row count now as current."""
    m = metrics.c
    bundled = catalog.asset(ctx.asset)
    if spec.metric == "row_count" and bundled is not None:
        component, name = str(bundled.component), bundled.volume_metric
        own = False
    elif spec.metric != "row_count":
        component, name, own = catalog.component_for(ctx.asset), spec.metric, False
    else:
        component = catalog.component_for(ctx.asset)
        name, own = check_metric_name(spec.check_name, "observed_value"), True
    with ctx.health.connect() as conn:
        rows = conn.execute(
            sa.select(m.ts, m.value)
            .where(
                m.component == component,
                m.metric_name == name,
                m.tags["asset"].as_string() == ctx.asset,
            )
            .order_by(m.ts.desc(), m.metric_id.desc())
            .limit(VOLUME_HISTORY_LIMIT)
        ).all()
    points: list[Point] = []
    for ts, value in reversed(rows):
        when = timestamp_utc(ts)
        if when is not None:
            points.append((when, float(value)))
    if own:
        current = (ctx.now, float(table_count(ctx)))
        return [p for p in points if p[0] < ctx.now], current
    if not points:
        return [], None
    return points[:-1], points[-1]


@planner(VolumeAnomalyCheck)
def plan_volume_anomaly(ctx: EvalContext, spec: VolumeAnomalyCheck) -> Plan:
    def finish(_v: Mapping[str, Any], _total: int) -> CheckResult:
        history, current = volume_history(ctx, spec)
        if current is None:
            return learning_result(
                ctx,
                spec,
                0,
                spec.min_history,
                volume_loads_needed(-1, 0, spec.min_history),
                f"{spec.metric} of {ctx.asset} (none recorded yet)",
            )
        found = detect_volume_anomaly(
            history,
            current,
            direction=spec.direction,
            sensitivity=spec.sensitivity,
            min_history=spec.min_history,
            seasonality=spec.seasonality,
            detection_window=DETECTION_WINDOW,
        )
        if found.status == AnomalyStatus.INSUFFICIENT_HISTORY:
            return learning_result(
                ctx,
                spec,
                found.n_history,
                spec.min_history,
                volume_loads_needed(len(history), found.n_history, spec.min_history),
                f"{spec.metric} of {ctx.asset}",
                observed_value=current[1],
                details={"current": current[1], "sensitivity": spec.sensitivity},
            )
        if found.status == AnomalyStatus.ANOMALY:
            fail_score = spec.fail
            strong = fail_score is not None and abs(found.score or 0.0) >= fail_score
            status = QualityStatus.FAILED if strong else QualityStatus.WARN
        else:
            status = QualityStatus.PASSED
        details = {
            "current": current[1],
            "n_history": found.n_history,
            "min_history": spec.min_history,
            "sensitivity": spec.sensitivity,
            "score": found.score,
            "expected": found.expected,
            "lower": found.lower,
            "upper": found.upper,
        }
        return make_result(
            ctx,
            spec,
            status,
            f"{spec.metric}: {found.message} (method {found.method})",
            observed_value=current[1],
            threshold=spec.sensitivity,
            details=details,
        )

    return Plan({}, finish)
