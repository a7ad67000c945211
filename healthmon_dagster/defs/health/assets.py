"""Each monitored component as an asset of its own, so the Dagster UI shows component health.

One external (observable, never materialized) asset ``health/<component>`` in group ``health`` per
:class:`~healthmon_dagster.enums.HealthComponent` that has at least one enabled health check. The
health checks of the component are asset checks on it (``checks.py``); the asset itself holds no
data: it is what the UI's catalog, lineage and asset-check views hang component health on.
"""

from collections.abc import Sequence

import dagster as dg

from healthmon_dagster.enums import HealthComponent
from healthmon_dagster.health.result import HealthCheck

HEALTH_GROUP = "health"

_WHAT = {
    HealthComponent.S3_DISCOVERY: "the S3 landing area new files are discovered in",
    HealthComponent.RAW_LOADER: "loading landing files into raw/patients",
    HealthComponent.STAGING_TRANSFORMER: "typing and validating rows into stg/patients",
    HealthComponent.CORE_MERGER: "the SCD2 merge into core/dim_patient and the ETL runs",
    HealthComponent.AUDIT_MANAGER: "the load audit and the Dagster daemon that schedules the runs",
    HealthComponent.DATABASE: "the warehouse and health-store databases",
    HealthComponent.FILESYSTEM: "the local landing folder and disk",
    HealthComponent.NETWORK: "the network endpoints the pipeline depends on",
    HealthComponent.SYSTEM_RESOURCES: "CPU, memory and disk of the host",
}


def component_asset_key(component: HealthComponent) -> dg.AssetKey:
    """``health/<component>``."""
    return dg.AssetKey([HEALTH_GROUP, component.value])


def build_component_assets(checks: Sequence[HealthCheck]) -> list[dg.AssetSpec]:
    """One asset per component of the enabled ``checks``, in the order of :class:`HealthComponent`."""
    by_component: dict[HealthComponent, list[str]] = {}
    for check in checks:
        if check.enabled:
            by_component.setdefault(check.component, []).append(check.check_id)
    return [
        dg.AssetSpec(
            component_asset_key(component),
            group_name=HEALTH_GROUP,
            description=(
                f"Health of {component.value}: {_WHAT[component]}. Its asset checks are the "
                f"configured health checks ({', '.join(by_component[component])}), evaluated on "
                "every run of their health_checks_every_<N>s_job."
            ),
            kinds={"healthmon"},
        )
        for component in HealthComponent
        if component in by_component
    ]
