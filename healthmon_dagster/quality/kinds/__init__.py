"""The planners of every check kind, one module per family of kinds.

Importing this package imports every module in it, so each planner registers itself with
:func:`~healthmon_dagster.quality.plan.planner`: a new kind is a spec model in ``config/models.py``
and a planner here, nothing else.
"""

import importlib
import pkgutil

for _module in pkgutil.iter_modules(__path__):
    importlib.import_module(f"{__name__}.{_module.name}")
