"""Asset checks generated from ``quality.assets`` and ``freshness`` in healthmon.yaml.

One ``@multi_asset_check`` per configured asset, so the checks of one table share their aggregate
queries (see ``healthmon_dagster.quality.evaluation``). Each spec becomes one check: WARN or ERROR from
its thresholds, ``blocking: true`` stops downstream assets on an ERROR. An asset with a
``freshness:`` entry also gets ``last_load_is_fresh`` (from the load audit, so data loaded outside
Dagster counts). Every evaluation is recorded in ``etl.check_results`` and ``etl.metrics``.

A check that cannot be evaluated (missing table or column, the warehouse down) is recorded with status
``error`` and the check step fails after reporting the others: Dagster shows it as an execution failure,
never a pass. The failure carries its classification (:func:`why_checks_errored`) as an ETL step's
does, so a warehouse outage seen by a check step joins the outage's incident; the rows of the checks
that could not run name the dependency found down (``details["dependency"]``), which the alert
engine takes as evidence of the outage. A warehouse that cannot even be opened fails the step the
same way, with nothing recorded.

Runs evaluate row-level checks on the latest batch (incremental); a run tagged
``healthmon/quality_mode: full`` (``quality_full_sweep_job``) sweeps the whole tables.
"""

from collections.abc import Iterator

import dagster as dg
import sqlalchemy as sa
from sqlalchemy import exc as sa_exc
from sqlalchemy.engine import Engine

from healthmon_dagster.config import HealthConfiguration
from healthmon_dagster.config.models import FreshnessConfig
from healthmon_dagster.defs.quality.assets import asset_key_of
from healthmon_dagster.defs.resources import WarehouseResource
from healthmon_dagster.enums import CheckSeverity, QualityStatus
from healthmon_dagster.etl.failures import Classification, classify, failure_metadata
from healthmon_dagster.formatting import metadata_number
from healthmon_dagster.quality import (
    FULL,
    INCREMENTAL,
    LAST_LOAD_IS_FRESH,
    CheckResult,
    evaluate,
    evaluate_last_load,
    record_results,
)
from healthmon_dagster.run_tags import QUALITY_MODE_TAG
from healthmon_dagster.store.db import DatabaseUnavailable
from healthmon_dagster.store.errors import error_text

RUN_FILE_IDS = "healthmon/file_ids"
"""Materialization metadata of the pipeline's assets: the ids (``etl.files``) of every file the
step loaded, staged or merged. The asset's checks in the same run judge exactly those files."""

LAST_LOAD_DESCRIPTION = (
    "The asset was loaded recently enough (from the load audit or the table's load timestamp, so "
    "loads outside Dagster count too)."
)


def _metadata(result: CheckResult) -> dict[str, float | int | str]:
    """Numbers Dagster can plot (rounded by :func:`metadata_number`), plus the status word; a check
    still learning its history says ``n_history``, ``min_history`` and ``loads_needed``; never a
    data value."""
    # The plain value: Dagster serializes no enum of ours.
    meta: dict[str, float | int | str] = {"status": str(result.status)}
    figures: dict[str, float] = {}
    for name in ("observed_value", "threshold", "failing_rows", "total_rows", "failing_fraction"):
        value = getattr(result, name)
        if value is not None:
            figures[name] = value
    figures["duration_ms"] = result.duration_ms
    for name, value in result.details.items():
        figures.setdefault(name, value)
    for name, value in figures.items():
        meta[name] = metadata_number(name, value)
    return meta


def to_dagster(result: CheckResult, key: dg.AssetKey) -> dg.AssetCheckResult:
    """The Dagster result: a pass or a check still learning its history passes; WARN/ERROR from
    the result's severity otherwise."""
    severity = (
        dg.AssetCheckSeverity.WARN
        if result.severity == CheckSeverity.WARN
        else dg.AssetCheckSeverity.ERROR
    )
    return dg.AssetCheckResult(
        asset_key=key,
        check_name=result.check_name,
        passed=result.passed,
        severity=severity,
        metadata=_metadata(result),
        description=result.message,
    )


def to_evaluation(result: CheckResult, key: dg.AssetKey) -> dg.AssetCheckEvaluation:
    """The evaluation of a check reported by a step that does not own it: the raw asset reports
    the contract (``schema``) check of a file it rejects, whose own step then never runs."""
    reported = to_dagster(result, key)
    return dg.AssetCheckEvaluation(
        asset_key=key,
        check_name=result.check_name,
        passed=reported.passed,
        metadata=reported.metadata,
        severity=reported.severity,
        description=reported.description,
        blocking=result.blocking,
    )


def run_file_ids(context: dg.AssetCheckExecutionContext, key: dg.AssetKey) -> list[int] | None:
    """The files the asset's step of this run loaded, staged or merged (its materialization's
    :data:`RUN_FILE_IDS`); None when the asset was not materialized with them in this run (a
    checks-only run, an asset outside the pipeline): then the latest file is judged."""
    records = context.instance.get_records_for_run(
        context.run.run_id, of_type=dg.DagsterEventType.ASSET_MATERIALIZATION
    ).records
    for record in reversed(records):
        materialization = record.asset_materialization
        if materialization is None or materialization.asset_key != key:
            continue
        value = materialization.metadata.get(RUN_FILE_IDS)
        if value is None or not isinstance(value.value, list):
            return None
        return [int(v) for v in value.value]
    return None


def _checks_for_asset(path: str, config: HealthConfiguration) -> dg.AssetChecksDefinition | None:
    key = asset_key_of(path)
    quality = config.quality.assets.get(path)
    specs = list(quality.checks) if quality is not None else []
    if not config.feature_enabled("anomaly_detection"):  # the flag turns volume checks off
        specs = [s for s in specs if s.kind != "volume_anomaly"]
    batch_column = quality.batch_column if quality is not None else None
    freshness: FreshnessConfig | None = config.freshness.get(path)
    rejection = (config.quality.rejection_rate.warn, config.quality.rejection_rate.fail)
    check_specs = [
        dg.AssetCheckSpec(
            s.check_name,
            asset=key,
            blocking=s.blocking,
            description=s.description or s.kind_description,
        )
        for s in specs
    ]
    if freshness is not None:
        check_specs.append(
            dg.AssetCheckSpec(LAST_LOAD_IS_FRESH, asset=key, description=LAST_LOAD_DESCRIPTION)
        )
    if not check_specs:
        return None

    @dg.multi_asset_check(
        specs=check_specs, name=f"{'__'.join(key.path)}__quality_checks", compute_kind="sql"
    )
    def _quality_checks(
        context: dg.AssetCheckExecutionContext, warehouse: WarehouseResource
    ) -> Iterator[dg.AssetCheckResult]:
        mode = FULL if context.run.tags.get(QUALITY_MODE_TAG) == FULL else INCREMENTAL
        try:
            engine = warehouse.engine()
            results = evaluate(
                engine,
                path,
                specs,
                health_engine=warehouse.health_engine(),
                mode=mode,
                rejection_rate=rejection,
                batch_column=batch_column,
                run_file_ids=run_file_ids(context, key) if mode == INCREMENTAL else None,
            )
            if freshness is not None:
                results.append(
                    evaluate_last_load(
                        engine,
                        path,
                        freshness.warn_window_minutes,
                        freshness.fail_window_minutes,
                        timestamp_column=freshness.timestamp_column,
                    )
                )
        except (sa_exc.DBAPIError, DatabaseUnavailable) as exc:
            # Not even a result to record (the warehouse cannot be opened): the step fails
            # classified, as an ETL step's does.
            raise dg.Failure(
                description=f"the checks of {path} could not run: {error_text(exc)}",
                metadata=failure_metadata(classify(exc)),
                allow_retries=False,
            ) from None
        errored = [r for r in results if r.status == QualityStatus.ERROR]
        why = why_checks_errored(engine) if errored else None
        # A check that could not run because the warehouse is down says so on its row: the
        # alert engine takes it as evidence of the outage (the database's alert, not the check's).
        record_results(
            warehouse.health_engine(),
            results,
            context.run.run_id,
            unreachable=why.dependency if why is not None else None,
        )
        for r in results:
            if r.status != QualityStatus.ERROR:
                yield to_dagster(r, key)
        if why is not None:
            raise dg.Failure(
                description="; ".join(f"{r.check_name}: {r.message}" for r in errored),
                metadata={
                    "checks_errored": len(errored),
                    "checks_evaluated": len(results),
                    **failure_metadata(why),
                },
                allow_retries=False,
            )

    return _quality_checks


CHECK_ERROR = Classification("check_error", False, "check_could_not_evaluate")
"""A check that could not be evaluated while the warehouse answers: its own query or configuration
is wrong (a missing table or column), and running it again gives the same answer."""


def why_checks_errored(engine: Engine) -> Classification:
    """Why checks could not be evaluated: the warehouse's outage when it does not answer now (the
    failure then joins the outage's incident, and the self-healing sensor may re-run the checks
    once it is back), else :data:`CHECK_ERROR`."""
    try:
        with engine.connect() as conn:
            conn.execute(sa.text("SELECT 1"))
    except Exception as exc:  # noqa: BLE001 - any failure to answer is the outage's classification
        return classify(exc)
    return CHECK_ERROR


def build_asset_checks(config: HealthConfiguration) -> list[dg.AssetChecksDefinition]:
    """One multi-asset check per asset named in ``quality.assets`` or ``freshness``."""
    paths = list(dict.fromkeys([*config.quality.assets, *config.freshness]))
    return [c for p in paths if (c := _checks_for_asset(p, config)) is not None]
