"""The retention job prunes the health store with the retention of the configuration resource."""

from datetime import timedelta
from pathlib import Path

import dagster as dg
import sqlalchemy as sa
from sqlalchemy.engine import Engine

from healthmon_dagster.defs.maintenance.jobs import retention_job
from healthmon_dagster.defs.resources import HealthmonConfigResource, WarehouseResource
from healthmon_dagster.store.metrics import MetricPoint, utcnow, write_metrics
from healthmon_dagster.store.tables import metrics


def test_retention_comes_from_the_config_resource(
    db_url: str, engine: Engine, tmp_path: Path, instance: dg.DagsterInstance
) -> None:
    now = utcnow()
    write_metrics(
        engine,
        [MetricPoint("database", "q", 1.0, ts=now - timedelta(days=d)) for d in (1, 10, 100)],
    )
    config = tmp_path / "healthmon.yaml"
    config.write_text("retention:\n  metrics_days: 5\n")
    defs = dg.Definitions(
        jobs=[retention_job],
        resources={
            "warehouse": WarehouseResource(database_url=db_url),
            "healthmon_config": HealthmonConfigResource(config_path=str(config)),
        },
    )

    result = defs.resolve_job_def("retention_job").execute_in_process(instance=instance)

    assert result.success
    with engine.connect() as conn:
        kept = conn.execute(sa.select(sa.func.count()).select_from(metrics)).scalar_one()
    assert kept == 1  # only the 1-day-old point is within 5 days
    (output,) = [e for e in result.all_events if e.is_successful_output]
    assert output.step_output_data.metadata["deleted__metrics"].value == 2
