"""The catalog of the bundled pipeline: what each asset is, in one place.

Every module that needs to know the pipeline's assets (the Dagster assets and checks, the quality
engine, component status, benchmarks, the ETL-history health check) reads it here instead of restating
it. Metric names are constants, written by the assets and read back by the volume-anomaly check and
the benchmarks through the same names, so renaming one cannot silently break a reader.

Adding an asset to the bundled pipeline means: an entry here, its ETL module, its table (and migration)
and its checks in ``healthmon.yaml``.
"""

from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa
from sqlalchemy.sql.elements import ColumnElement

from healthmon_dagster.enums import HealthComponent, Layer
from healthmon_dagster.store.tables import (
    dim_patient,
    files,
    raw_patients,
    stg_patients,
    stg_patients_rejected,
)

GROUP = "patients_etl"
"""Dagster asset group of the bundled pipeline."""
ETL_JOB = "patients_etl_job"
"""The job that runs one landing file through every layer."""
DEFAULT_COMPONENT = "data_quality"
"""Component under which the check figures of tables outside the pipeline's layers are recorded."""


class RawMetrics:
    """Figures ``raw/patients`` records per load (``etl.metrics``, component ``raw_loader``)."""

    ROWS_LOADED = "rows_loaded"
    MALFORMED_ROWS = "malformed_rows"
    BYTES_LOADED = "bytes_loaded"
    LOAD_DURATION_SECONDS = "load_duration_seconds"
    ROWS_PER_SECOND = "rows_per_second"
    FILES_LOADED = "files_loaded"
    FILES_EMPTY = "files_empty"


class StagingMetrics:
    """Figures ``stg/patients`` records per run (component ``staging_transformer``)."""

    ROWS_IN = "rows_in"
    ROWS_STAGED = "rows_staged"
    ROWS_REJECTED = "rows_rejected"
    REJECTION_RATE = "rejection_rate"
    ROWS_FLAGGED = "rows_flagged"  # kept in stg with flag codes (staging.rules set to flag)
    STAGE_DURATION_SECONDS = "stage_duration_seconds"
    ROWS_PER_SECOND = "rows_per_second"
    FILES_STAGED = "files_staged"


class CoreMetrics:
    """Figures ``core/dim_patient`` records per run (component ``core_merger``)."""

    ROWS_IN = "rows_in"
    PATIENTS_NEW = "patients_new"
    VERSIONS_CHANGED = "versions_changed"
    ROWS_UNCHANGED = "rows_unchanged"
    MERGE_DURATION_SECONDS = "merge_duration_seconds"
    ROWS_PER_SECOND = "rows_per_second"
    CURRENT_PATIENTS = "current_patients"
    TOTAL_VERSIONS = "total_versions"
    FILES_MERGED = "files_merged"


@dataclass(frozen=True)
class PipelineAsset:
    """One asset of the bundled pipeline.

    Attributes:
        key: the asset key path, ``"stg/patients"``.
        table: its warehouse table.
        layer: raw, stg or core (the table's schema).
        component: the health component whose figures it records.
        volume_metric: the ``etl.metrics`` name (under ``component``, tagged ``asset: <key>``) of the
            rows one load adds: what the volume-anomaly check learns from.
        arrived: when a landing file (a row of ``etl.files``) counts as arrived in this asset.
        loaded_at: the ``etl.files`` column that says when it arrived.
        description: the business meaning, shown in the Dagster UI.
    """

    key: str
    table: sa.Table
    layer: Layer
    component: HealthComponent
    volume_metric: str
    arrived: ColumnElement[bool]
    loaded_at: sa.Column[Any]
    description: str

    @property
    def path(self) -> list[str]:
        """The key as Dagster's path, ``["stg", "patients"]``."""
        return self.key.split("/")


_STAGED = sa.and_(files.c.status == "loaded", files.c.staged_at.is_not(None))

RAW_PATIENTS = PipelineAsset(
    key="raw/patients",
    table=raw_patients,
    layer=Layer.RAW,
    component=HealthComponent.RAW_LOADER,
    volume_metric=RawMetrics.ROWS_LOADED,
    arrived=files.c.status.in_(("loaded", "empty")),
    loaded_at=files.c.loaded_at,
    description="Patient CSV records exactly as they landed: every field as text, plus the file, "
    "the record's row number and load time. A file's content is loaded once; a record that cannot "
    "be split into the header's fields is kept with _error set. Files that break the contract "
    "(missing columns, wrong delimiter, not UTF-8, NUL bytes, repeated columns) are rejected whole: "
    "the contract (schema) check fails with the reason and the run fails.",
)
STG_PATIENTS = PipelineAsset(
    key="stg/patients",
    table=stg_patients,
    layer=Layer.STG,
    component=HealthComponent.STAGING_TRANSFORMER,
    volume_metric=StagingMetrics.ROWS_IN,
    arrived=_STAGED,
    loaded_at=files.c.staged_at,
    description="Typed, validated patients: one row per accepted raw record.",
)
STG_PATIENTS_REJECTED = PipelineAsset(
    key="stg/patients_rejected",
    table=stg_patients_rejected,
    layer=Layer.STG,
    component=HealthComponent.STAGING_TRANSFORMER,
    volume_metric=StagingMetrics.ROWS_REJECTED,
    arrived=_STAGED,
    loaded_at=files.c.staged_at,
    description="Raw records that broke a staging rule, with reason codes.",
)
CORE_DIM_PATIENT = PipelineAsset(
    key="core/dim_patient",
    table=dim_patient,
    layer=Layer.CORE,
    component=HealthComponent.CORE_MERGER,
    volume_metric=CoreMetrics.ROWS_IN,
    arrived=sa.and_(files.c.status == "loaded", files.c.merged_at.is_not(None)),
    loaded_at=files.c.merged_at,
    description="Patient dimension with SCD2 history: a new version when tracked attributes change "
    "(hash_diff), valid_from/valid_to windows and exactly one current row per patient Id.",
)

ASSETS: tuple[PipelineAsset, ...] = (
    RAW_PATIENTS,
    STG_PATIENTS,
    STG_PATIENTS_REJECTED,
    CORE_DIM_PATIENT,
)
BY_KEY: dict[str, PipelineAsset] = {a.key: a for a in ASSETS}
MATERIALIZED_KEYS: tuple[str, ...] = (RAW_PATIENTS.key, STG_PATIENTS.key, CORE_DIM_PATIENT.key)
"""The assets whose materializations the ETL-history check watches (one per layer)."""
LAYER_COMPONENTS: dict[Layer, HealthComponent] = {
    RAW_PATIENTS.layer: RAW_PATIENTS.component,
    STG_PATIENTS.layer: STG_PATIENTS.component,
    CORE_DIM_PATIENT.layer: CORE_DIM_PATIENT.component,
}
COMPONENT_LAYERS: dict[str, Layer] = {c: lay for lay, c in LAYER_COMPONENTS.items()}
"""The layer of ``etl.load_runs`` each pipeline component processes, by component name."""


def asset(key: str) -> PipelineAsset | None:
    """The bundled asset with this key, or None for a table outside the pipeline."""
    return BY_KEY.get(key)


def component_for(key: str) -> str:
    """The component an asset's check figures belong to: by its layer (``raw/...`` ->
    ``raw_loader``), or :data:`DEFAULT_COMPONENT` for a table outside the pipeline's schemas."""
    layer = key.split("/", 1)[0]
    return next((c for lay, c in LAYER_COMPONENTS.items() if lay == layer), DEFAULT_COMPONENT)
