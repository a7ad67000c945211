"""The quality full sweep: every asset check over whole tables (ETL runs check only each new file's
rows)."""

import dagster as dg

from healthmon_dagster.defs.quality.checks import QUALITY_MODE_TAG

quality_full_sweep_job = dg.define_asset_job(
    "quality_full_sweep_job",
    selection=dg.AssetSelection.all_asset_checks(),
    executor_def=dg.in_process_executor,
    tags={QUALITY_MODE_TAG: "full"},
    description="Evaluate every configured quality check over the whole tables.",
)

JOBS = [quality_full_sweep_job]
