"""System resources of this host and process, via psutil.

Parameters (percent unless noted): ``cpu_percent_warning`` (80) / ``cpu_percent_critical`` (95),
``memory_percent_warning`` (85) / ``memory_percent_critical`` (95), ``disk_percent_warning`` (85) /
``disk_percent_critical`` (95) for ``disk_path`` (default ``.``), ``load_per_cpu_warning`` (2.0) /
``load_per_cpu_critical`` (4.0) (1-minute load average divided by CPU count),
``process_rss_mb_warning`` / ``process_rss_mb_critical`` (none), ``cpu_sample_seconds`` (0.2).
"""

import os

import psutil

from healthmon_dagster.health.context import CheckContext
from healthmon_dagster.health.kind import builtin
from healthmon_dagster.health.result import HealthCheck, Observation


@builtin(
    "system_resources",
    params=(
        "cpu_percent_critical",
        "cpu_percent_warning",
        "cpu_sample_seconds",
        "disk_path",
        "disk_percent_critical",
        "disk_percent_warning",
        "load_per_cpu_critical",
        "load_per_cpu_warning",
        "memory_percent_critical",
        "memory_percent_warning",
        "process_rss_mb_critical",
        "process_rss_mb_warning",
    ),
)
def system_resources_check(check: HealthCheck, ctx: CheckContext) -> Observation:
    """CPU, memory, disk, load and this process's memory against their thresholds."""
    f = check.float_param
    disk_path = str(check.param("disk_path", "."))
    obs = Observation(details={"disk_path": disk_path, "cpu_count": psutil.cpu_count()})
    sample = min(f("cpu_sample_seconds", 0.2) or 0.2, max(0.0, ctx.remaining() / 2))
    obs.threshold(
        "cpu_percent",
        psutil.cpu_percent(interval=sample),
        f("cpu_percent_warning", 80),
        f("cpu_percent_critical", 95),
        "CPU usage",
        "%",
    )
    obs.threshold(
        "memory_percent",
        psutil.virtual_memory().percent,
        f("memory_percent_warning", 85),
        f("memory_percent_critical", 95),
        "memory usage",
        "%",
    )
    try:
        disk = psutil.disk_usage(disk_path)
    except OSError as exc:
        obs.error(f"disk usage of {disk_path} unavailable: {exc.strerror}; fix disk_path")
    else:
        obs.metric("disk_free_gb", disk.free / 1024**3)
        obs.threshold(
            "disk_percent",
            disk.percent,
            f("disk_percent_warning", 85),
            f("disk_percent_critical", 95),
            f"disk usage of {disk_path}",
            "%",
        )
    load1, _, _ = os.getloadavg()
    obs.metric("load_1m", load1)
    obs.threshold(
        "load_per_cpu",
        load1 / (psutil.cpu_count() or 1),
        f("load_per_cpu_warning", 2.0),
        f("load_per_cpu_critical", 4.0),
        "1-minute load per CPU",
    )
    obs.threshold(
        "process_rss_mb",
        psutil.Process().memory_info().rss / 1024**2,
        f("process_rss_mb_warning", None),
        f("process_rss_mb_critical", None),
        "this process's resident memory",
        " MB",
    )
    return obs
