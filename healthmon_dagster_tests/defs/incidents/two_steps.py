"""A code location of two independent assets for the run-failure sensor's tests: ``a_breaks`` fails
at once, ``b_waits`` waits (until the test kills the run's worker). In-process: ``a_breaks`` runs
first (steps of one level run in key order)."""

import time

import dagster as dg

WAIT_SECONDS = 120


@dg.asset
def a_breaks() -> None:
    raise RuntimeError("broken on purpose")


@dg.asset
def b_waits() -> None:
    time.sleep(WAIT_SECONDS)


defs = dg.Definitions(
    assets=[a_breaks, b_waits],
    jobs=[dg.define_asset_job("two_steps_job")],
    executor=dg.in_process_executor,
)


def two_steps_job() -> dg.JobDefinition:
    """The job, for ``dg.reconstructable`` (a worker process rebuilds it from this module)."""
    return defs.resolve_job_def("two_steps_job")
