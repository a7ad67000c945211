"""The reference pipeline as Dagster assets: landing -> raw/patients -> stg/patients -> core/dim_patient.

The deciding code lives in ``healthmon_dagster.etl``; these functions adapt it: run config in,
numeric metadata out (Dagster plots it), the same figures written to ``etl.metrics``. Keys, group,
components and metric names come from ``healthmon_dagster.etl.catalog``, where the readers of those
figures find them too.

A step that fails on a transient error (``etl.failures``: the database or S3 unreachable, a reset
connection, a timeout, a serialization failure, a lock wait) asks Dagster to retry it
(``RetryRequested``), waiting as a ``RetryPolicy`` with exponential backoff and jitter computes from
``landing.retry`` of healthmon.yaml (read at run time, so the policy needs no code change); any
other failure (a contract break, bad configuration) fails at once. Either way the step's failure
carries its error class and whether it is transient, which the landing sensor reads to decide the
file's next attempt.
"""

from collections.abc import Callable, Iterator
from typing import Any

import dagster as dg
import sqlalchemy as sa
from pydantic import Field
from sqlalchemy import exc as sa_exc

from healthmon_dagster.config import ConfigError, HealthConfiguration
from healthmon_dagster.config.models import LandingRetryConfiguration, SchemaCheck
from healthmon_dagster.defs.quality.checks import RUN_FILE_IDS, to_evaluation
from healthmon_dagster.defs.resources import (
    HealthmonConfigResource,
    LandingResource,
    WarehouseResource,
)
from healthmon_dagster.etl import catalog, core, raw, staging
from healthmon_dagster.etl.catalog import CoreMetrics, PipelineAsset, RawMetrics, StagingMetrics
from healthmon_dagster.etl.failures import (  # the metadata keys: re-exported for the sensors
    DEPENDENCY_METADATA as DEPENDENCY_METADATA,
)
from healthmon_dagster.etl.failures import (
    ERROR_CLASS_METADATA as ERROR_CLASS_METADATA,
)
from healthmon_dagster.etl.failures import (
    ERROR_RULE_METADATA as ERROR_RULE_METADATA,
)
from healthmon_dagster.etl.failures import (
    TRANSIENT_METADATA as TRANSIENT_METADATA,
)
from healthmon_dagster.etl.failures import classify, failure_metadata
from healthmon_dagster.etl.landing import LandingError
from healthmon_dagster.etl.raw import RawLoadResult
from healthmon_dagster.quality import record_results
from healthmon_dagster.quality.kinds.landing_file import contract_break_results
from healthmon_dagster.settings import redact_url
from healthmon_dagster.store.config_versions import record_config_version
from healthmon_dagster.store.db import describe_unavailable
from healthmon_dagster.store.errors import error_text
from healthmon_dagster.store.metrics import MetricPoint, write_metrics
from healthmon_dagster.store.tables import dim_patient

RAW_PATIENTS = dg.AssetKey(catalog.RAW_PATIENTS.path)
STG_PATIENTS = dg.AssetKey(catalog.STG_PATIENTS.path)
STG_PATIENTS_REJECTED = dg.AssetKey(catalog.STG_PATIENTS_REJECTED.path)
CORE_DIM_PATIENT = dg.AssetKey(catalog.CORE_DIM_PATIENT.path)


class RawPatientsConfig(dg.Config):
    file_key: str | None = Field(
        default=None,
        description="Landing key of the file to load; empty loads every landing file not loaded yet.",
    )
    fingerprint: str | None = Field(
        default=None, description="The listing's fingerprint of that file (set by the sensor)."
    )


def _db_failure(warehouse: WarehouseResource, exc: sa_exc.DBAPIError) -> dg.Failure:
    """A run failure that names the database (no password) and what went wrong, with no data
    value in it: driver messages quote values, so they go through ``store.errors.error_text``."""
    if isinstance(exc, sa_exc.OperationalError | sa_exc.InterfaceError):
        urls = list(dict.fromkeys([warehouse.url(), warehouse.health_url()]))
        where = " or ".join(redact_url(u) for u in urls)
        return dg.Failure(description=str(describe_unavailable(where, exc)))
    return dg.Failure(
        description=f"database error: {error_text(exc)}; nothing of this step was committed. "
        "Quoted values are withheld (they may be patient data): see the database server log."
    )


def step_retry_policy(retry: LandingRetryConfiguration) -> dg.RetryPolicy:
    """The retry policy of the ETL steps for transient errors: ``step_retries`` retries, waiting
    ``step_retry_delay_seconds`` x 1, 3, 7, ... give or take that delay (Dagster's exponential
    backoff with plus-minus jitter)."""
    return dg.RetryPolicy(
        max_retries=retry.step_retries,
        delay=retry.step_retry_delay_seconds,
        backoff=dg.Backoff.EXPONENTIAL,
        jitter=dg.Jitter.PLUS_MINUS,
    )


def _step_failed(
    context: dg.AssetExecutionContext,
    warehouse: WarehouseResource,
    exc: Exception,
    retry: LandingRetryConfiguration | None,
) -> Exception:
    """What ends this try of the step on ``exc``: a ``RetryRequested`` for a transient failure
    (Dagster retries the step after the policy's delay, or fails it once the retries are spent),
    else a ``Failure`` that no retry policy applies to. Both carry the classification."""
    if isinstance(exc, sa_exc.DBAPIError):
        description = _db_failure(warehouse, exc).description or error_text(exc)
    elif isinstance(exc, ConfigError | LandingError):
        description = str(exc)
    else:  # an exception's text may quote a value: rendered the way database errors are
        description = error_text(exc)
    found = classify(exc)
    failure = dg.Failure(
        description=description,
        metadata=failure_metadata(found),
        allow_retries=found.transient,
    )
    # The driver's exception is not chained: its text may quote a value (Dagster would show it).
    failure.__suppress_context__ = True
    if not found.transient or retry is None or retry.step_retries == 0:
        return failure
    policy = step_retry_policy(retry)
    attempt = context.retry_number + 1
    wait = max(0.0, float(policy.calculate_delay(attempt)))
    if attempt <= policy.max_retries:
        context.log.warning(
            f"transient failure ({found.error_class}): step retry {attempt} of "
            f"{policy.max_retries} in {wait:.1f} s"
        )
    else:
        context.log.error(
            f"transient failure ({found.error_class}) after {policy.max_retries} step "
            "retries: the run fails; the landing sensor requests the file's next attempt"
        )
    request = dg.RetryRequested(max_retries=policy.max_retries, seconds_to_wait=wait)
    # Dagster takes the failure's description and metadata from the cause once retries are spent.
    request.__cause__ = failure
    return request


def _record(
    warehouse: WarehouseResource, asset: PipelineAsset, values: dict[str, tuple[float, str]]
) -> None:
    """Write the materialization's figures to etl.metrics (health store), under the asset's
    component and tagged with its key, where the volume-anomaly check and benchmarks read them."""
    write_metrics(
        warehouse.health_engine(),
        [
            MetricPoint(asset.component.value, name, float(v), unit, {"asset": asset.key})
            for name, (v, unit) in values.items()
        ],
    )


def _contract_evaluations(
    context: dg.AssetExecutionContext,
    warehouse: WarehouseResource,
    cfg: HealthConfiguration,
    rejected: list[RawLoadResult],
) -> Iterator[dg.AssetCheckEvaluation]:
    """A failed, blocking ERROR evaluation of each ``schema`` check of raw/patients for the files
    the loader rejected, also recorded in etl.check_results. Yielded before the run fails: the
    check's own step never runs once the asset fails, and would leave the check PLANNED. Only
    checks this run plans are reported (none configured: nothing, as before)."""
    quality = cfg.quality.assets.get(catalog.RAW_PATIENTS.key)
    planned = context.job_def.asset_layer.asset_graph.asset_check_keys
    selection = context.run.asset_check_selection
    specs = [
        s
        for s in (quality.checks if quality is not None else [])
        if isinstance(s, SchemaCheck)
        and (key := dg.AssetCheckKey(RAW_PATIENTS, s.check_name)) in planned
        and (selection is None or key in selection)
    ]
    breaks = [(r.file_key, r.contract_break) for r in rejected if r.contract_break is not None]
    results = contract_break_results(
        catalog.RAW_PATIENTS.key, specs, breaks, cfg.landing.accepted_delimiters
    )
    for result in results:
        evaluation = to_evaluation(result, RAW_PATIENTS)
        yield evaluation.with_metadata(
            {
                **evaluation.metadata,
                "reasons": dg.MetadataValue.text(", ".join(sorted({b.reason for _, b in breaks}))),
                "file_keys": dg.MetadataValue.text(", ".join(key for key, _ in breaks)),
            }
        )
    try:
        record_results(warehouse.health_engine(), results, context.run.run_id)
    except sa_exc.DBAPIError as exc:
        context.log.error(
            "the contract check's result could not be recorded in etl.check_results: "
            f"{error_text(exc)}; Dagster's check history has it"
        )


def _progress_logger(context: dg.AssetExecutionContext, key: str) -> Callable[[int], None]:
    """Logs how far the load of ``key`` has come: a long load shows that it moves."""

    def progress(records: int) -> None:
        context.log.info(f"{key}: {records:,} records read")

    return progress


@dg.asset(
    key=RAW_PATIENTS,
    group_name=catalog.GROUP,
    output_required=False,
    kinds={"sql"},
    description=catalog.RAW_PATIENTS.description,
)
def raw_patients(
    context: dg.AssetExecutionContext,
    config: RawPatientsConfig,
    warehouse: WarehouseResource,
    landing: LandingResource,
    healthmon_config: HealthmonConfigResource,
) -> Iterator[dg.MaterializeResult[Any] | dg.AssetCheckEvaluation]:
    """Loads each landing file of the run into raw.patients (once per content), records the file in
    etl.files, and reports a contract break as a failed evaluation of the schema check before failing
    the run."""
    config_path = healthmon_config.path()
    retry: LandingRetryConfiguration | None = None
    try:
        cfg = healthmon_config.load()
        retry = cfg.landing.retry
        if record_config_version(warehouse.health_engine(), cfg, str(config_path or "<defaults>")):
            context.log.info(
                f"recorded a new configuration version from {config_path or 'defaults'}"
            )
        source = landing.source()
        todo = (
            [(config.file_key, config.fingerprint)]
            if config.file_key
            else [
                (f.key, f.fingerprint)
                for f in raw.unloaded_files(warehouse.engine(), source, cfg.landing.file_pattern)
            ]
        )
        results = [
            raw.load_file(
                warehouse.engine(),
                source,
                key,
                context.run.run_id,
                cfg.landing.accepted_delimiters,
                fingerprint,
                accepted_extra_columns=cfg.landing.accepted_extra_columns,
                max_record_bytes=cfg.landing.max_record_bytes,
                progress=_progress_logger(context, key),
            )
            for key, fingerprint in todo
        ]
    except Exception as exc:
        raise _step_failed(context, warehouse, exc, retry)  # noqa: B904 (driver text withheld)

    rejected = [r for r in results if r.status == "rejected"]
    loaded = [r for r in results if r.status in ("loaded", "empty")]
    for r in results:
        if r.status == "already_loaded":
            context.log.info(f"{r.file_key}: {r.message}")
        elif r.status == "empty":
            context.log.warning(f"{r.file_key}: {r.message}")
    if loaded:
        rows = sum(r.rows for r in loaded)
        duration = sum(r.duration_s for r in loaded)
        figures = {
            RawMetrics.ROWS_LOADED: (rows, "rows"),
            RawMetrics.MALFORMED_ROWS: (sum(r.malformed_rows for r in loaded), "rows"),
            RawMetrics.BYTES_LOADED: (sum(r.size_bytes for r in loaded), "bytes"),
            RawMetrics.LOAD_DURATION_SECONDS: (duration, "s"),
            RawMetrics.ROWS_PER_SECOND: (rows / duration if duration else 0.0, "rows/s"),
            RawMetrics.FILES_LOADED: (sum(r.status == "loaded" for r in loaded), "files"),
            RawMetrics.FILES_EMPTY: (sum(r.status == "empty" for r in loaded), "files"),
        }
        _record(warehouse, catalog.RAW_PATIENTS, figures)
        # Header fields outside the contract by position only: their text may be patient data.
        unexpected = [
            f"{r.file_key}: {raw.unknown_columns_text(positions)}"
            for r in loaded
            if (positions := raw.unexpected_positions(r.unexpected_columns))
        ]
        yield dg.MaterializeResult(
            metadata={
                **{name: v for name, (v, _) in figures.items()},
                "file_keys": dg.MetadataValue.text(", ".join(r.file_key for r in loaded)),
                RUN_FILE_IDS: dg.MetadataValue.json(
                    [r.file_id for r in loaded if r.file_id is not None]
                ),
                "unexpected_columns": dg.MetadataValue.text("; ".join(unexpected) or "none"),
            }
        )
    if rejected:
        yield from _contract_evaluations(context, warehouse, cfg, rejected)
        raise dg.Failure(
            description="; ".join(r.message for r in rejected),
            metadata={
                "files_rejected": len(rejected),
                RawMetrics.FILES_LOADED: len(loaded),
                ERROR_CLASS_METADATA: "contract_break",
                TRANSIENT_METADATA: False,
                ERROR_RULE_METADATA: "contract_break",
            },
            allow_retries=False,
        )


@dg.multi_asset(
    specs=[
        dg.AssetSpec(
            STG_PATIENTS,
            deps=[RAW_PATIENTS],
            group_name=catalog.GROUP,
            kinds={"sql"},
            description=catalog.STG_PATIENTS.description,
        ),
        dg.AssetSpec(
            STG_PATIENTS_REJECTED,
            deps=[RAW_PATIENTS],
            group_name=catalog.GROUP,
            kinds={"sql"},
            description=catalog.STG_PATIENTS_REJECTED.description,
        ),
    ]
)
def stg_patients(
    context: dg.AssetExecutionContext,
    warehouse: WarehouseResource,
    healthmon_config: HealthmonConfigResource,
) -> Iterator[dg.MaterializeResult[Any]]:
    """Stages every loaded file not staged yet, in load order, with SQL validation rules
    (``staging:`` of healthmon.yaml says which rules reject a row and which flag it)."""
    retry: LandingRetryConfiguration | None = None
    try:
        cfg = healthmon_config.load()
        retry = cfg.landing.retry
        results = staging.stage_pending(warehouse.engine(), context.run.run_id, config=cfg.staging)
    except Exception as exc:
        raise _step_failed(context, warehouse, exc, retry)  # noqa: B904 (driver text withheld)
    flagged = sum(r.rows_flagged for r in results)
    flags: dict[str, int] = {}
    for r in results:
        for code, n in r.flags.items():
            flags[code] = flags.get(code, 0) + n
    rows_in = sum(r.rows_in for r in results)
    rejected = sum(r.rows_rejected for r in results)
    duration = sum(r.duration_s for r in results)
    reasons: dict[str, int] = {}
    for r in results:
        for code, n in r.reasons.items():
            reasons[code] = reasons.get(code, 0) + n
    rate = rejected / rows_in if rows_in else 0.0
    figures = {
        StagingMetrics.ROWS_IN: (rows_in, "rows"),
        StagingMetrics.ROWS_STAGED: (rows_in - rejected, "rows"),
        StagingMetrics.ROWS_REJECTED: (rejected, "rows"),
        StagingMetrics.REJECTION_RATE: (rate, "ratio"),
        StagingMetrics.ROWS_FLAGGED: (flagged, "rows"),
        StagingMetrics.STAGE_DURATION_SECONDS: (duration, "s"),
        StagingMetrics.ROWS_PER_SECOND: (rows_in / duration if duration else 0.0, "rows/s"),
        StagingMetrics.FILES_STAGED: (len(results), "files"),
    }
    if results:  # a run that staged nothing has no figures: zeros would drag averages down
        _record(warehouse, catalog.STG_PATIENTS, figures)
        # The rejections' own volume, under their own key: what a volume check on
        # stg/patients_rejected learns from (catalog.STG_PATIENTS_REJECTED.volume_metric).
        _record(
            warehouse,
            catalog.STG_PATIENTS_REJECTED,
            {StagingMetrics.ROWS_REJECTED: (rejected, "rows")},
        )
    if rejected:
        context.log.warning(
            f"{rejected} of {rows_in} rows rejected ({rate:.2%}): "
            + ", ".join(f"{code}={n}" for code, n in reasons.items())
        )
    if flagged:
        context.log.warning(
            f"{flagged} of {rows_in} rows staged with flags: "
            + ", ".join(f"{code}={n}" for code, n in flags.items())
        )
    yield dg.MaterializeResult(
        asset_key=STG_PATIENTS,
        metadata={
            **{name: v for name, (v, _) in figures.items() if name != StagingMetrics.ROWS_REJECTED},
            **{f"flag__{code}": n for code, n in flags.items()},
            RUN_FILE_IDS: dg.MetadataValue.json([r.file_id for r in results]),
        },
    )
    yield dg.MaterializeResult(
        asset_key=STG_PATIENTS_REJECTED,
        metadata={
            StagingMetrics.ROWS_REJECTED: rejected,
            StagingMetrics.REJECTION_RATE: rate,
            **{f"reason__{code}": n for code, n in reasons.items()},
            RUN_FILE_IDS: dg.MetadataValue.json([r.file_id for r in results]),
        },
    )


@dg.asset(
    key=CORE_DIM_PATIENT,
    deps=[STG_PATIENTS],
    group_name=catalog.GROUP,
    kinds={"sql"},
    description=catalog.CORE_DIM_PATIENT.description,
)
def core_dim_patient(
    context: dg.AssetExecutionContext,
    warehouse: WarehouseResource,
    healthmon_config: HealthmonConfigResource,
) -> dg.MaterializeResult[Any]:
    """Merges every staged file not merged yet into the SCD2 dimension, in load order."""
    retry: LandingRetryConfiguration | None = None
    try:
        retry = healthmon_config.load().landing.retry
        engine = warehouse.engine()
        results = core.merge_pending(engine, context.run.run_id)
        with engine.connect() as conn:
            current, versions = conn.execute(
                sa.select(sa.func.count().filter(dim_patient.c.is_current), sa.func.count())
            ).one()
    except Exception as exc:
        raise _step_failed(context, warehouse, exc, retry)  # noqa: B904 (driver text withheld)
    duration = sum(r.duration_s for r in results)
    rows_in = sum(r.rows_in for r in results)
    figures = {
        CoreMetrics.ROWS_IN: (rows_in, "rows"),
        CoreMetrics.PATIENTS_NEW: (sum(r.inserted_new for r in results), "rows"),
        CoreMetrics.VERSIONS_CHANGED: (sum(r.versions_changed for r in results), "rows"),
        CoreMetrics.ROWS_UNCHANGED: (sum(r.unchanged for r in results), "rows"),
        CoreMetrics.MERGE_DURATION_SECONDS: (duration, "s"),
        CoreMetrics.ROWS_PER_SECOND: (rows_in / duration if duration else 0.0, "rows/s"),
        CoreMetrics.CURRENT_PATIENTS: (current, "rows"),
        CoreMetrics.TOTAL_VERSIONS: (versions, "rows"),
        CoreMetrics.FILES_MERGED: (len(results), "files"),
    }
    if results:
        _record(warehouse, catalog.CORE_DIM_PATIENT, figures)
    return dg.MaterializeResult(
        metadata={
            **{name: v for name, (v, _) in figures.items()},
            RUN_FILE_IDS: dg.MetadataValue.json([r.file_id for r in results]),
        }
    )


ASSETS = [raw_patients, stg_patients, core_dim_patient]
