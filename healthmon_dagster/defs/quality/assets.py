"""Assets of the quality domain: the warehouse tables that ``healthmon.yaml`` checks but this code
location does not produce (external assets, so their checks and freshness show in the UI), and the
``freshness:`` window of each configured asset as its Dagster FreshnessPolicy. A key or column that
names nothing stops the load (:func:`validate_targets`), so a typo never becomes an asset."""

import logging
import warnings
from datetime import timedelta

import dagster as dg

from healthmon_dagster.config import HealthConfiguration
from healthmon_dagster.config.loader import located_error
from healthmon_dagster.config.models import FreshnessConfig
from healthmon_dagster.etl import catalog
from healthmon_dagster.quality.targets import check_targets
from healthmon_dagster.settings import get_settings

BUNDLED_ASSET_KEYS = frozenset(dg.AssetKey(a.path) for a in catalog.ASSETS)
EXTERNAL_GROUP = "warehouse_tables"


def asset_key_of(path: str) -> dg.AssetKey:
    return dg.AssetKey(path.split("/"))


_log = logging.getLogger(__name__)


def validate_targets(config: HealthConfiguration) -> None:
    """Stop the load when ``healthmon.yaml`` names an asset or a column that does not exist (the
    ``ConfigError`` says where, as ``healthmon config validate`` does): a typo never becomes an
    external asset whose checks can only error. Tables outside the bundled pipeline are looked up in
    the warehouse; when it is unreachable, a warning says what could not be checked."""
    report = check_targets(config, get_settings().database_url)
    for why in report.unchecked:
        _log.warning("healthmon.yaml: %s", why)
    if report.problems:
        raise located_error(config, report.problems)


def external_asset_specs(config: HealthConfiguration) -> list[dg.AssetSpec]:
    """Warehouse tables named in config that no asset of this code location produces."""
    paths = dict.fromkeys([*config.quality.assets, *config.freshness])
    return [
        dg.AssetSpec(
            asset_key_of(p),
            group_name=EXTERNAL_GROUP,
            description=f"Warehouse table {p.replace('/', '.')}, loaded outside this code "
            "location and checked by healthmon.",
        )
        for p in paths
        if asset_key_of(p) not in BUNDLED_ASSET_KEYS
    ]


def freshness_policy(cfg: FreshnessConfig) -> dg.FreshnessPolicy:
    return dg.FreshnessPolicy.time_window(
        fail_window=timedelta(minutes=cfg.fail_window_minutes),
        warn_window=None
        if cfg.warn_window_minutes is None
        else timedelta(minutes=cfg.warn_window_minutes),
    )


def with_freshness_policies(defs: dg.Definitions, config: HealthConfiguration) -> dg.Definitions:
    """``defs`` with the ``freshness:`` time window of each configured asset as its Dagster
    FreshnessPolicy (evaluated by the freshness daemon, shown in the OSS UI).

    Applied by ``healthmon_dagster.definitions`` to the merged code location: the policies reach
    assets of every domain (the pipeline's and the external ones)."""
    policies = {asset_key_of(p): freshness_policy(c) for p, c in config.freshness.items()}
    if not policies:
        return defs
    with warnings.catch_warnings():
        # map_asset_specs is "preview" in 1.13; it is the documented way to apply a policy to
        # every asset, and test_definitions pins the behaviour.
        warnings.simplefilter("ignore", dg.PreviewWarning)
        return defs.map_asset_specs(
            func=lambda spec: (
                spec.replace_attributes(freshness_policy=policies[spec.key])
                if spec.key in policies
                else spec
            )
        )
