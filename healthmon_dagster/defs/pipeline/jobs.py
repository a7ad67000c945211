"""Jobs. The ETL chain runs in-process: its steps are sequential, and a subprocess per step costs ~2 s."""

import dagster as dg

from healthmon_dagster.defs.alerting.hooks import ALERT_HOOKS
from healthmon_dagster.etl import catalog
from healthmon_dagster.run_tags import PIPELINE_TAG

patients_etl_job = dg.define_asset_job(
    catalog.ETL_JOB,
    selection=dg.AssetSelection.groups(catalog.GROUP),
    executor_def=dg.in_process_executor,
    # dagster.yaml limits runs with this tag to one at a time (see concurrency: there).
    tags={PIPELINE_TAG: "patients_etl"},
    # A failed check alerts from the run itself, within seconds (the alert fast path).
    hooks=ALERT_HOOKS,
    # An asset selection includes the asset checks of the selected assets: every layer is
    # checked in the run that loads it, and blocking checks stop the layers after it.
    description="Load landing file(s) into raw, stage them, and merge them into core (SCD2), "
    "checking each layer.",
)


def raw_file_run_config(file_key: str, fingerprint: str | None = None) -> dict[str, object]:
    """Run config of ``patients_etl_job`` that loads one landing file."""
    op = "__".join(catalog.RAW_PATIENTS.path)
    return {"ops": {op: {"config": {"file_key": file_key, "fingerprint": fingerprint}}}}


JOBS = [patients_etl_job]
