"""The quality full sweep: every asset check of the pipeline's assets over whole tables (ETL runs
check only each new file's rows). The health checks on the ``health/<component>`` assets are not
quality checks: their own jobs run them."""

import dagster as dg

from healthmon_dagster.defs.alerting.hooks import ALERT_HOOKS
from healthmon_dagster.etl import catalog
from healthmon_dagster.run_tags import QUALITY_MODE_TAG

quality_full_sweep_job = dg.define_asset_job(
    "quality_full_sweep_job",
    selection=dg.AssetSelection.all_asset_checks() & dg.AssetSelection.groups(catalog.GROUP),
    executor_def=dg.in_process_executor,
    tags={QUALITY_MODE_TAG: "full"},
    hooks=ALERT_HOOKS,  # a failed check alerts from the run itself (the alert fast path)
    description="Evaluate every configured quality check over the whole tables.",
)

JOBS = [quality_full_sweep_job]
