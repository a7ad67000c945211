"""Capacity: days until the disk, the database or a table reaches its limit, from the health store's
history, with a trend test so that noise never produces a forecast (``health/capacity.py``).

Parameters: ``warn_days`` (30) / ``fail_days`` (7), ``history_days`` (30);
``disk_metric`` (``system_resources.disk_percent`` of component ``system_resources``: written by the
system_resources check) — set it to ``""`` to skip the disk;
``database_size_metric`` (``database_connectivity.database_size_bytes`` of component ``database``:
written by the database check) with ``database_max_gb`` (none: growth only, no days-until-full);
``tables``: a list of ``{table, component, metric, asset, cumulative, max_rows}``; default: the rows
each load adds to ``raw.patients`` (``raw_loader/rows_loaded`` tagged ``asset: raw/patients``, summed).
A resource without enough history is UNKNOWN in the details (a new deployment is not an alert); the
check is UNKNOWN when no resource has enough history.
"""

from datetime import timedelta
from typing import Any

from healthmon_dagster.enums import HealthStatus
from healthmon_dagster.etl.catalog import RAW_PATIENTS
from healthmon_dagster.health.capacity import CapacityForecast, metric_forecast
from healthmon_dagster.health.context import CheckContext
from healthmon_dagster.health.kind import builtin
from healthmon_dagster.health.result import CheckFailed, HealthCheck, Observation
from healthmon_dagster.store.db import get_engine

DEFAULT_TABLES = [
    {
        "table": f"{RAW_PATIENTS.table.schema}.{RAW_PATIENTS.table.name}",
        "component": RAW_PATIENTS.component.value,
        "metric": RAW_PATIENTS.volume_metric,
        "asset": RAW_PATIENTS.key,
        "cumulative": True,
    },
]
GB = 1024**3


def _record(obs: Observation, name: str, forecast: CapacityForecast) -> None:
    obs.metric(f"{name}.days_until_full", forecast.days_until_full)
    obs.metric(f"{name}.growth_per_day", forecast.growth_per_day)
    obs.metric(
        f"{name}.utilization_percent",
        None if forecast.utilization is None else forecast.utilization * 100,
    )
    trend = forecast.trend.trend_direction.value if forecast.trend else None
    obs.details[name] = {
        "status": forecast.status.value,
        "points": forecast.n_points,
        "trend": trend,
    }
    if forecast.status == HealthStatus.CRITICAL:
        obs.error(forecast.message)
    elif forecast.status == HealthStatus.WARNING:
        obs.warn(forecast.message)
    else:  # healthy, or unknown for lack of history: said in the details, not alerted on
        obs.details[name]["message"] = forecast.message


@builtin(
    "capacity",
    params=(
        "database_max_gb",
        "database_size_metric",
        "disk_metric",
        "fail_days",
        "history_days",
        "tables",
        "warn_days",
    ),
)
def capacity_check(check: HealthCheck, ctx: CheckContext) -> Observation:
    """Forecast disk, database size and table growth against their limits."""
    url = ctx.environment.health_database_url or ctx.environment.database_url
    if not url:
        raise CheckFailed("no health store configured: set HEALTHMON_HEALTH_DATABASE_URL")
    engine = get_engine(url)
    f = check.float_param
    options: dict[str, Any] = {"warn_days": f("warn_days", 30), "fail_days": f("fail_days", 7)}
    history = timedelta(days=f("history_days", 30) or 30)
    obs = Observation()
    disk_metric = check.param("disk_metric", "system_resources.disk_percent")
    if disk_metric:
        _record(
            obs,
            "disk",
            metric_forecast(
                engine,
                "system_resources",
                str(disk_metric),
                100.0,
                history=history,
                resource=f"disk ({disk_metric})",
                **options,
            ),
        )
    size_metric = check.param("database_size_metric", "database_connectivity.database_size_bytes")
    if size_metric:
        max_gb = f("database_max_gb", None)
        _record(
            obs,
            "database_size",
            metric_forecast(
                engine,
                "database",
                str(size_metric),
                max_gb * GB if max_gb else None,
                history=history,
                resource=f"database size ({size_metric})",
                **options,
            ),
        )
    for spec in check.param("tables", DEFAULT_TABLES) or []:
        tags = {"asset": spec["asset"]} if spec.get("asset") else None
        _record(
            obs,
            f"table.{spec['table']}",
            metric_forecast(
                engine,
                spec["component"],
                spec["metric"],
                spec.get("max_rows"),
                history=history,
                tags=tags,
                cumulative=bool(spec.get("cumulative")),
                resource=f"table {spec['table']} rows",
                **options,
            ),
        )
    if obs.details and all(d["status"] == HealthStatus.UNKNOWN.value for d in obs.details.values()):
        obs.status = HealthStatus.UNKNOWN
        # Learning, not failing: it cannot judge yet, and says so without a severity.
        obs.details["learning"] = "not enough history for a forecast yet"
        obs.warn("not enough history for a forecast yet (see details per resource)")
    return obs
