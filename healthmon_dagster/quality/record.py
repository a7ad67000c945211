"""Quality results in the health store: written as ``etl.check_results`` rows (source
``asset_check``) and ``etl.metrics`` points, and read back by the checks that compare with their
own history."""

from collections.abc import Mapping, Sequence
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Engine

from healthmon_dagster.enums import QualityStatus, RecordSource
from healthmon_dagster.etl.catalog import component_for
from healthmon_dagster.quality.result import CheckResult
from healthmon_dagster.store.connection import write_transaction
from healthmon_dagster.store.metrics import MetricPoint, utcnow, write_metrics
from healthmon_dagster.store.tables import check_results

_VERDICTS = (QualityStatus.PASSED, QualityStatus.WARN, QualityStatus.FAILED)


def check_metric_name(check_name: str, figure: str) -> str:
    """The metric of one figure of a check's results: ``check.<check_name>.<figure>``."""
    return f"check.{check_name}.{figure}"


def metric_points(result: CheckResult) -> list[MetricPoint]:
    """The numbers of one result as metrics ``check.<check_name>.<figure>`` of its layer."""
    component = str(component_for(result.asset))
    tags = {
        "asset": result.asset,
        "check": result.check_name,
        "kind": result.kind,
        "status": str(result.status),
    }
    figures: dict[str, tuple[float | None, str]] = {
        "passed": (1.0 if result.passed else 0.0, "bool"),  # learning is no failure
        "observed_value": (result.observed_value, ""),
        "failing_rows": (result.failing_rows, "rows"),
        "total_rows": (result.total_rows, "rows"),
        "failing_fraction": (result.failing_fraction, "ratio"),
        "duration_ms": (result.duration_ms, "ms"),
    }
    return [
        MetricPoint(component, check_metric_name(result.check_name, name), float(value), unit, tags)
        for name, (value, unit) in figures.items()
        if value is not None and value == value and abs(value) != float("inf")
    ]


def record_results(
    health_engine: Engine,
    results: Sequence[CheckResult],
    dagster_run_id: str | None = None,
    *,
    unreachable: str | None = None,
) -> None:
    """One check_results row per result and its metrics, in one transaction. ``unreachable``:
    the dependency (``etl.failures.WAREHOUSE``) found down when checks could not be evaluated,
    recorded as ``details["dependency"]`` of the rows of status ``error``."""
    if not results:
        return
    now = utcnow()
    rows = [
        {
            "ts": now,
            "source": str(RecordSource.ASSET_CHECK),
            "check_name": r.check_name,
            "target": r.asset,
            "status": str(r.status),
            "severity": None if r.severity is None else str(r.severity),
            "observed_value": r.observed_value,
            "threshold": r.threshold,
            "failing_rows": r.failing_rows,
            "response_time_ms": r.duration_ms,
            "message": r.message,
            "details": {
                **dict(r.details),
                **({"total_rows": r.total_rows} if r.total_rows is not None else {}),
                **(
                    {"dependency": unreachable}
                    if unreachable and r.status == QualityStatus.ERROR
                    else {}
                ),
            },
            "dagster_run_id": dagster_run_id,
        }
        for r in results
    ]
    points = [p for r in results for p in metric_points(r)]
    with write_transaction(health_engine) as conn:
        conn.execute(check_results.insert(), rows)
        write_metrics(
            health_engine,
            [MetricPoint(p.component, p.metric_name, p.value, p.unit, p.tags, now) for p in points],
            conn,
        )


def latest_details(health_engine: Engine, asset: str, check_name: str) -> Mapping[str, Any] | None:
    """The details of the newest verdict (passed, warn or failed) of a check on an asset."""
    r = check_results.c
    with health_engine.connect() as conn:
        details: Mapping[str, Any] | None = conn.execute(
            sa.select(r.details)
            .where(
                r.target == asset,
                r.check_name == check_name,
                r.status.in_(_VERDICTS),
            )
            .order_by(r.ts.desc(), r.result_id.desc())
            .limit(1)
        ).scalar()
    return details
