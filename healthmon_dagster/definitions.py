"""The code location: reads healthmon.yaml once and merges the ``definitions(config)`` of every
module and domain package in ``healthmon_dagster.defs`` (``resources``, ``pipeline``, ``quality``,
``health``, ``maintenance``, ``incidents``).

Adding assets, checks, jobs, schedules or sensors means adding them to a domain's ``definitions()``
(or a new domain package with one); this file does not list them. A module or package of
``healthmon_dagster.defs`` without a ``definitions(config)`` function is an error at load.

Configuration errors stop the load with one message that says what to fix, shown by the webserver
as the code location's load error: a broken ``healthmon.yaml`` (``ConfigError``, every problem with
its path and line) and a database URL that can never work (``InvalidDatabaseUrl``, naming the
``HEALTHMON_*`` variable, never its password). A database that is merely unreachable does not stop
the load: the landing sensor skips with the reason and the health checks report it.
"""

import importlib
import pkgutil
from collections.abc import Callable
from types import ModuleType

import dagster as dg

import healthmon_dagster.defs as defs_package
from healthmon_dagster.config import HealthConfiguration
from healthmon_dagster.defs.incidents.hooks import with_incident_hooks
from healthmon_dagster.defs.quality.assets import with_freshness_policies
from healthmon_dagster.defs.resources import HealthmonConfigResource
from healthmon_dagster.settings import get_settings
from healthmon_dagster.store.db import check_database_urls


class MissingDefinitions(Exception):
    """A module of ``healthmon_dagster.defs`` has no ``definitions(config)``."""


def domain_modules() -> list[ModuleType]:
    """The modules and packages directly in ``healthmon_dagster.defs``, in name order."""
    return [
        importlib.import_module(f"{defs_package.__name__}.{info.name}")
        for info in sorted(pkgutil.iter_modules(defs_package.__path__), key=lambda m: m.name)
    ]


def domain_definitions(config: HealthConfiguration) -> list[dg.Definitions]:
    """``definitions(config)`` of each domain, in name order."""
    found = []
    for module in domain_modules():
        build: Callable[[HealthConfiguration], dg.Definitions] | None = getattr(
            module, "definitions", None
        )
        if not callable(build):
            raise MissingDefinitions(
                f"{module.__name__} has no definitions(config) function: every module and package "
                f"of {defs_package.__name__} contributes its definitions through one (move helpers "
                "into a domain package)"
            )
        found.append(build(config))
    return found


def build_defs(config: HealthConfiguration | None = None) -> dg.Definitions:
    """The code location for ``config`` (default: healthmon.yaml as the config resource reads it)."""
    check_database_urls(get_settings())
    config = config if config is not None else HealthmonConfigResource().load()
    # Cross-cutting policy: each asset's freshness window from healthmon.yaml, and the failure
    # hook that opens incidents on every asset and check.
    merged = dg.Definitions.merge(*domain_definitions(config))
    return with_incident_hooks(with_freshness_policies(merged, config))


defs = build_defs()
