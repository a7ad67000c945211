"""Data-quality check library: specs from config -> SQL in the warehouse -> :class:`CheckResult`.

No Dagster import: the Dagster checks (``defs/checks.py``), the CLI and the API use it directly.
"""

from healthmon_dagster.quality.engine import (
    FULL,
    INCREMENTAL,
    LAST_LOAD_IS_FRESH,
    Batch,
    CheckError,
    evaluate,
    evaluate_last_load,
    resolve_batch,
    resolve_table,
)
from healthmon_dagster.quality.record import record_results
from healthmon_dagster.quality.results import (
    ERROR,
    FAILED,
    INSUFFICIENT_HISTORY,
    PASSED,
    WARN,
    CheckResult,
)

__all__ = [
    "ERROR",
    "FAILED",
    "FULL",
    "INCREMENTAL",
    "INSUFFICIENT_HISTORY",
    "LAST_LOAD_IS_FRESH",
    "PASSED",
    "WARN",
    "Batch",
    "CheckError",
    "CheckResult",
    "evaluate",
    "evaluate_last_load",
    "record_results",
    "resolve_batch",
    "resolve_table",
]
