"""Jobs. The ETL chain runs in-process: its steps are sequential, and a subprocess per step costs ~2 s."""

import dagster as dg

from healthmon_dagster.defs.assets import GROUP

patients_etl_job = dg.define_asset_job(
    "patients_etl_job",
    selection=dg.AssetSelection.groups(GROUP),
    executor_def=dg.in_process_executor,
    # dagster.yaml limits runs with this tag to one at a time (see concurrency: there).
    tags={"healthmon/pipeline": "patients_etl"},
    # An asset selection includes the asset checks of the selected assets: every layer is
    # checked in the run that loads it, and blocking checks stop the layers after it.
    description="Load landing file(s) into raw, stage them, and merge them into core (SCD2), "
    "checking each layer.",
)


# Every asset check over whole tables (the ETL runs check only each new file's rows).
quality_full_sweep_job = dg.define_asset_job(
    "quality_full_sweep_job",
    selection=dg.AssetSelection.all_asset_checks(),
    executor_def=dg.in_process_executor,
    tags={"healthmon/quality_mode": "full"},
    description="Evaluate every configured quality check over the whole tables.",
)


def raw_file_run_config(file_key: str, fingerprint: str | None = None) -> dict[str, object]:
    """Run config of ``patients_etl_job`` that loads one landing file."""
    return {
        "ops": {"raw__patients": {"config": {"file_key": file_key, "fingerprint": fingerprint}}}
    }


def definitions() -> dg.Definitions:
    return dg.Definitions(jobs=[patients_etl_job, quality_full_sweep_job])
