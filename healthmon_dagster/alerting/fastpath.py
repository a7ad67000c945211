"""The alert fast path: the check results a run just recorded are judged in that run, at the end
of the step that recorded them, instead of waiting for the alert-evaluation sensor's next tick.

It is the same evaluation as the sensor's (:func:`~healthmon_dagster.alerting.engine.evaluate`)
restricted to event rules over the results recorded since the run's first one: every transition is
conditional and every alert and outbox row unique by index, so when the sensor evaluates the same
results later it finds the alerts open and the notifications queued, and nothing happens twice.
"""

import sqlalchemy as sa
from sqlalchemy.engine import Engine

from healthmon_dagster.alerting.engine import EvaluationReport, evaluate
from healthmon_dagster.alerting.lineage import Lineage
from healthmon_dagster.config.models import HealthConfiguration
from healthmon_dagster.store.tables import check_results


def run_cursor(engine: Engine, run_id: str) -> int | None:
    """The cursor just before the first check result recorded by run ``run_id`` (None: it
    recorded none), through ``ix_check_results_dagster_run_id``."""
    c = check_results.c
    with engine.connect() as conn:
        first = conn.execute(
            sa.select(sa.func.min(c.result_id)).where(c.dagster_run_id == run_id)
        ).scalar()
    return None if first is None else int(first) - 1


def evaluate_run(
    engine: Engine, config: HealthConfiguration, run_id: str, lineage: Lineage | None = None
) -> EvaluationReport | None:
    """Judge the newest result of every check run ``run_id`` recorded (and any newer result of
    the same checks); None when the run recorded no check result yet."""
    cursor = run_cursor(engine, run_id)
    if cursor is None:
        return None
    return evaluate(
        engine,
        config,
        cursor=cursor,
        lineage=lineage,
        actor=f"run {run_id[:8]}",
        include_metric_rules=False,
    )


def to_send(report: EvaluationReport) -> list[int]:
    """The alerts whose notifications the fast path sends at once: those that fired, resolved or
    stopped being suppressed in this evaluation."""
    return sorted({*report.fired, *report.resolved, *report.unsuppressed})
