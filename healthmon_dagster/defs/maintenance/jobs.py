"""Maintenance jobs: the health store's retention."""

import dagster as dg

from healthmon_dagster.defs.resources import HealthmonConfigResource, WarehouseResource
from healthmon_dagster.store.retention import prune


@dg.op(description="Delete health-store rows older than the retention of healthmon.yaml.")
def prune_health_store(
    context: dg.OpExecutionContext,
    warehouse: WarehouseResource,
    healthmon_config: HealthmonConfigResource,
) -> None:
    retention = healthmon_config.load().retention
    deleted = prune(warehouse.health_engine(), retention, warehouse=warehouse.engine())
    context.add_output_metadata({f"deleted__{k.split('.')[-1]}": v for k, v in deleted.items()})
    context.log.info(", ".join(f"{k}: {v} row(s) deleted" for k, v in deleted.items()))


@dg.job(executor_def=dg.in_process_executor, description="Apply the retention of healthmon.yaml.")
def retention_job() -> None:
    prune_health_store()


JOBS = [retention_job]
