"""Data-quality check library: specs from config -> SQL in the warehouse -> :class:`CheckResult`.

No Dagster import: the Dagster checks (``defs/quality/checks.py``), the CLI and the API use it directly.

- :mod:`.evaluation`: :func:`evaluate` (the fused query) and :func:`evaluate_last_load`.
- :mod:`.context`: the asset's table, its latest batch, the modes.
- :mod:`.plan`: the planner registry; :mod:`.kinds`: one planner module per family of kinds.
- :mod:`.grading`: thresholds and verdicts; :mod:`.result`: :class:`CheckResult`.
- :mod:`.record`: results in the health store.
- :mod:`.targets`: the asset keys and columns ``healthmon.yaml`` names exist (config validate, load).
"""

from healthmon_dagster.quality.context import (
    FULL,
    INCREMENTAL,
    Batch,
    CheckError,
    resolve_batch,
    resolve_table,
)
from healthmon_dagster.quality.evaluation import LAST_LOAD_IS_FRESH, evaluate, evaluate_last_load
from healthmon_dagster.quality.record import record_results
from healthmon_dagster.quality.result import CheckResult

__all__ = [
    "FULL",
    "INCREMENTAL",
    "LAST_LOAD_IS_FRESH",
    "Batch",
    "CheckError",
    "CheckResult",
    "evaluate",
    "evaluate_last_load",
    "record_results",
    "resolve_batch",
    "resolve_table",
]
