"""The run tags healthmon sets and the Dagster run tags it reads: one place for their names.

healthmon's tags (``healthmon/...``) say which mechanism launched a run, so that the others leave it
alone (the landing sensor retries its file attempts, the self-healing sensor its re-runs) and a run
can be found again by its key. Dagster's tags (``dagster/...``) are read here without importing
Dagster's private module that defines them (``dagster._core.storage.tags``).
"""

# --- healthmon's run tags ------------------------------------------------------------------------

PIPELINE_TAG = "healthmon/pipeline"
"""On every run of ``patients_etl_job``."""
FILE_KEY_TAG = "healthmon/file_key"
"""The landing file a run loads (a file key, never its content)."""
FILE_ATTEMPT_TAG = "healthmon/file_attempt"
"""Every run of a landing file's attempt (its run key): the landing sensor retries it with its own
backoff, or marks the file stuck; run_retries' re-executions inherit it."""
ATTEMPT_NUMBER_TAG = "healthmon/attempt"
"""The number of the landing file's attempt."""
CATCH_UP_TAG = "healthmon/catch_up"
"""The catch-up runs of a backlog (its key, ``files<=<id>``; etl.catchup)."""
SELF_HEAL_TAG = "healthmon/self_heal"
"""Every re-run the self-healing sensor requests (its run key); run_retries' re-executions inherit
it."""
QUALITY_MODE_TAG = "healthmon/quality_mode"
"""``full``: the quality checks sweep the whole tables (``quality_full_sweep_job``)."""

# --- Dagster's run tags ----------------------------------------------------------------------------

WILL_RETRY_TAG = "dagster/will_retry"
"""Set on a failed run when it is stored: ``true`` when Dagster's ``run_retries`` re-executes it."""
FAILURE_REASON_TAG = "dagster/failure_reason"
"""Why a run failed (``STEP_FAILURE``, ``RUN_EXCEPTION``, ``START_TIMEOUT``, ...)."""
STEP_FAILURE_REASON = "STEP_FAILURE"
"""The failure reason of a run that failed because a step failed."""
RETRY_NUMBER_TAG = "dagster/retry_number"
"""On a re-execution that Dagster's ``run_retries`` launched: which retry it is."""
AUTO_RETRY_RUN_ID_TAG = "dagster/auto_retry_run_id"
"""Set on a failed run once ``run_retries`` launched its re-execution: that run's id."""
PARENT_RUN_ID_TAG = "dagster/parent_run_id"
"""On a re-execution: the run it re-executes."""
