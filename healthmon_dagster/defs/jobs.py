"""Jobs. The ETL chain runs in-process: its steps are sequential, and a subprocess per step costs ~2 s."""

import dagster as dg

from healthmon_dagster.defs.assets import GROUP

patients_etl_job = dg.define_asset_job(
    "patients_etl_job",
    selection=dg.AssetSelection.groups(GROUP),
    executor_def=dg.in_process_executor,
    description="Load landing file(s) into raw, stage them, and merge them into core (SCD2).",
)


def raw_file_run_config(file_key: str, fingerprint: str | None = None) -> dict[str, object]:
    """Run config of ``patients_etl_job`` that loads one landing file."""
    return {
        "ops": {"raw__patients": {"config": {"file_key": file_key, "fingerprint": fingerprint}}}
    }


def definitions() -> dg.Definitions:
    return dg.Definitions(jobs=[patients_etl_job])
