"""The code location: merges the ``definitions()`` of every module in ``healthmon_dagster.defs``.

Adding assets, checks, jobs, schedules or sensors means adding them to a module's ``definitions()``
(or a new module with one); this file does not list them.
"""

import importlib
import pkgutil

import dagster as dg

import healthmon_dagster.defs as defs_package
from healthmon_dagster.defs.checks import with_freshness_policies


def module_definitions() -> list[dg.Definitions]:
    """``definitions()`` of each module in ``healthmon_dagster.defs``, in module-name order."""
    found = []
    for info in sorted(pkgutil.iter_modules(defs_package.__path__), key=lambda m: m.name):
        module = importlib.import_module(f"{defs_package.__name__}.{info.name}")
        build = getattr(module, "definitions", None)
        if callable(build):
            found.append(build())
    return found


# Cross-cutting policy: each asset's freshness window from healthmon.yaml.
defs = with_freshness_policies(dg.Definitions.merge(*module_definitions()))
