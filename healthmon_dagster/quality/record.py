"""Write check results to the health store: ``etl.check_results`` rows and ``etl.metrics`` points."""

from collections.abc import Sequence

from sqlalchemy.engine import Engine

from healthmon_dagster.quality.engine import component_for
from healthmon_dagster.quality.results import PASSED, CheckResult
from healthmon_dagster.store.db import write_transaction
from healthmon_dagster.store.metrics import MetricPoint, utcnow, write_metrics
from healthmon_dagster.store.tables import check_results

SOURCE = "asset_check"


def metric_points(result: CheckResult) -> list[MetricPoint]:
    """The numbers of one result as metrics ``check.<check_name>.<figure>`` of its layer."""
    component = component_for(result.asset)
    tags = {
        "asset": result.asset,
        "check": result.check_name,
        "kind": result.kind,
        "status": result.status,
    }
    figures: dict[str, tuple[float | None, str]] = {
        "passed": (1.0 if result.status == PASSED else 0.0, "bool"),
        "observed_value": (result.observed_value, ""),
        "failing_rows": (result.failing_rows, "rows"),
        "total_rows": (result.total_rows, "rows"),
        "failing_fraction": (result.failing_fraction, "ratio"),
        "duration_ms": (result.duration_ms, "ms"),
    }
    return [
        MetricPoint(component, f"check.{result.check_name}.{name}", float(value), unit, tags)
        for name, (value, unit) in figures.items()
        if value is not None and value == value and abs(value) != float("inf")
    ]


def record_results(
    health_engine: Engine, results: Sequence[CheckResult], dagster_run_id: str | None = None
) -> None:
    """One check_results row per result and its metrics, in one transaction."""
    if not results:
        return
    now = utcnow()
    rows = [
        {
            "ts": now,
            "source": SOURCE,
            "check_name": r.check_name,
            "target": r.asset,
            "status": r.status,
            "severity": r.severity,
            "observed_value": r.observed_value,
            "threshold": r.threshold,
            "failing_rows": r.failing_rows,
            "response_time_ms": r.duration_ms,
            "message": r.message,
            "details": {
                **dict(r.details),
                **({"total_rows": r.total_rows} if r.total_rows is not None else {}),
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
