"""ETL component health from Dagster's own history (read through ``environment.dagster``).

- Age of the last successful materialization of each asset.
- Failure rate of the job's last finished runs.
- Step duration p95 of the recent runs against the p95 of the runs before them: a step that became
  much slower is a warning before it is an outage.

Parameters: ``assets`` (asset keys like ``raw/patients``; default the pipeline's), ``job_name``
(``patients_etl_job``), ``max_age_minutes_warning`` (1440) / ``max_age_minutes_critical`` (2880),
``window_runs`` (20), ``failure_rate_warning`` (0.2) / ``failure_rate_critical`` (0.5),
``recent_runs`` (5), ``min_baseline_runs`` (5), ``duration_ratio_warning`` (1.5) /
``duration_ratio_critical`` (3.0). Needs ``environment.dagster``.
"""

import time
from collections import defaultdict

from healthmon_dagster.etl import catalog
from healthmon_dagster.health.context import CheckContext
from healthmon_dagster.health.kind import builtin
from healthmon_dagster.health.result import HealthCheck, Observation, metric_safe

DEFAULT_ASSETS = catalog.MATERIALIZED_KEYS


def p95(values: list[float]) -> float:
    """The 95th percentile (nearest rank)."""
    ordered = sorted(values)
    return ordered[max(0, int(round(0.95 * len(ordered))) - 1)]


@builtin(
    "etl_component",
    params=(
        "assets",
        "duration_ratio_critical",
        "duration_ratio_warning",
        "failure_rate_critical",
        "failure_rate_warning",
        "job_name",
        "max_age_minutes_critical",
        "max_age_minutes_warning",
        "min_baseline_runs",
        "recent_runs",
        "window_runs",
    ),
)
def etl_component_check(check: HealthCheck, ctx: CheckContext) -> Observation:
    """Assets are fresh, the job does not keep failing, and steps are not getting slower."""
    dagster = ctx.require_dagster(check)
    f = check.float_param
    obs = Observation()
    now = time.time()
    for key in check.param("assets", list(DEFAULT_ASSETS)):
        materialized_at = dagster.last_materialization_time(str(key))
        if materialized_at is None:
            obs.warn(f"asset {key} has never been materialized; run the ETL job")
            continue
        obs.threshold(
            f"{metric_safe(key)}.age_minutes",
            (now - materialized_at) / 60,
            f("max_age_minutes_warning", 1440),
            f("max_age_minutes_critical", 2880),
            f"time since asset {key} was last materialized",
            " min",
        )

    job_name = str(check.param("job_name", catalog.ETL_JOB))
    window = int(f("window_runs", 20) or 20)
    records = dagster.finished_runs(job_name, window)
    obs.details["job_name"] = job_name
    obs.metric("runs_considered", len(records))
    if records:
        failed = sum(not r.succeeded for r in records)
        obs.metric("failed_runs", failed)
        obs.threshold(
            "failure_rate",
            failed / len(records),
            f("failure_rate_warning", 0.2),
            f("failure_rate_critical", 0.5),
            f"failure rate of the last {len(records)} {job_name} runs ({failed} failed)",
        )

    successes = [r for r in records if r.succeeded]
    recent_n = int(f("recent_runs", 5) or 5)
    min_base = int(f("min_baseline_runs", 5) or 5)
    if len(successes) < recent_n + min_base:
        obs.details["duration_baseline"] = (
            f"needs {recent_n + min_base} successful runs, has {len(successes)}"
        )
        return obs
    recent: dict[str, list[float]] = defaultdict(list)
    baseline: dict[str, list[float]] = defaultdict(list)
    for i, record in enumerate(successes):  # newest first
        for stat in dagster.step_timings(record.run_id):
            if stat.start_time is None or stat.end_time is None:
                continue
            target = recent if i < recent_n else baseline
            target[stat.step_key].append(stat.end_time - stat.start_time)
    for step, durations in sorted(recent.items()):
        base = baseline.get(step)
        if not base or len(base) < min_base:
            continue
        current, reference = p95(durations), p95(base)
        obs.metric(f"{metric_safe(step)}.duration_p95_s", current)
        obs.metric(f"{metric_safe(step)}.baseline_p95_s", reference)
        if reference > 0:
            obs.threshold(
                f"{metric_safe(step)}.duration_ratio",
                current / reference,
                f("duration_ratio_warning", 1.5),
                f("duration_ratio_critical", 3.0),
                f"step {step} p95 duration ({current:.2f}s) relative to its baseline "
                f"({reference:.2f}s)",
                "x",
            )
    return obs
