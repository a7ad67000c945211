"""Database checks: SELECT 1 latency; on Postgres connections vs max_connections and database size;
on SQLite the size of the database files.

Parameters: ``target`` (``warehouse``, ``health_store`` or ``both``: default both when they differ),
``url_env`` (an environment variable holding a URL to check instead), ``query_time_warning_ms``
(500), ``query_time_critical_ms`` (2000), ``connections_warning_percent`` (80),
``connections_critical_percent`` (95), ``size_warning_gb`` / ``size_critical_gb`` (none).
"""

import os
import time
from pathlib import Path

import sqlalchemy as sa
from sqlalchemy import exc as sa_exc
from sqlalchemy.engine import make_url
from sqlalchemy.pool import NullPool

from healthmon_dagster.health.context import CheckContext
from healthmon_dagster.health.kind import builtin
from healthmon_dagster.health.result import (
    CheckFailed,
    HealthCheck,
    Observation,
    describe_exception,
)
from healthmon_dagster.settings import redact_url

GB = 1024**3


def _targets(check: HealthCheck, ctx: CheckContext) -> dict[str, str]:
    env_name = check.param("url_env")
    if env_name:
        url = os.environ.get(str(env_name))
        if not url:
            raise CheckFailed(
                f"environment variable {env_name} (custom_parameters.url_env of "
                f"'{check.check_id}') is not set; set it to the database URL to check"
            )
        return {"database": url}
    env = ctx.environment
    target = check.param("target", "both")
    found = {"warehouse": env.database_url, "health_store": env.health_database_url}
    if target in found:
        urls = {target: found[target]}
    elif target == "both":
        urls = {k: v for k, v in found.items() if v}
        if urls.get("health_store") == urls.get("warehouse"):
            urls.pop("health_store", None)
    else:
        raise CheckFailed(
            f"custom_parameters.target of '{check.check_id}' is {target!r}; "
            "use warehouse, health_store or both"
        )
    missing = [name for name, url in urls.items() if not url]
    if missing or not urls:
        what = ", ".join(missing) or "the warehouse"
        raise CheckFailed(f"no database URL configured for {what}; set HEALTHMON_DATABASE_URL")
    return {k: v for k, v in urls.items() if v}


def _sqlite_files(url: str) -> list[Path]:
    database = make_url(url).database or ""
    if database in ("", ":memory:"):
        return []
    main = Path(database)
    attached = sorted(main.parent.glob(f"{main.stem}.*{main.suffix or '.db'}"))
    return [main, *[p for p in attached if p != main]]


def _check_one(
    check: HealthCheck, ctx: CheckContext, name: str, url: str, obs: Observation, prefix: str
) -> None:
    shown = redact_url(url)
    backend = make_url(url).get_backend_name()
    if backend == "sqlite":
        files = _sqlite_files(url)
        if files and not files[0].exists():
            obs.error(
                f"{name} database file {files[0]} does not exist; check HEALTHMON_HOME / "
                "HEALTHMON_DATABASE_URL (run `healthmon db upgrade` to create it)"
            )
            return
    connect_args: dict[str, object] = {}
    if backend == "postgresql":
        connect_args["connect_timeout"] = max(1, int(ctx.remaining()))
    elif backend == "sqlite":
        connect_args["timeout"] = ctx.remaining()
    engine = sa.create_engine(url, poolclass=NullPool, connect_args=connect_args)
    try:
        start = time.perf_counter()
        with engine.connect() as conn:
            conn.execute(sa.text("SELECT 1"))
            query_ms = (time.perf_counter() - start) * 1000
            obs.threshold(
                f"{prefix}query_time_ms",
                query_ms,
                check.float_param("query_time_warning_ms", 500),
                check.float_param("query_time_critical_ms", 2000),
                f"{name} SELECT 1 round trip",
                "ms",
            )
            if backend == "postgresql":
                row = conn.execute(
                    sa.text(
                        "SELECT (SELECT count(*) FROM pg_stat_activity), "
                        "current_setting('max_connections')::int, "
                        "pg_database_size(current_database())"
                    )
                ).one()
                used, max_conn, size = int(row[0]), int(row[1]), int(row[2])
                obs.metric(f"{prefix}connections", used)
                obs.metric(f"{prefix}max_connections", max_conn)
                obs.threshold(
                    f"{prefix}connection_usage_percent",
                    100.0 * used / max_conn if max_conn else None,
                    check.float_param("connections_warning_percent", 80),
                    check.float_param("connections_critical_percent", 95),
                    f"{name} connections in use ({used} of max_connections {max_conn})",
                    "%",
                )
            else:
                size = sum(p.stat().st_size for p in _sqlite_files(url) if p.exists())
        obs.metric(f"{prefix}database_size_bytes", size)
        warn_gb = check.float_param("size_warning_gb", None)
        crit_gb = check.float_param("size_critical_gb", None)
        if warn_gb is not None or crit_gb is not None:
            obs.threshold(
                f"{prefix}database_size_gb", size / GB, warn_gb, crit_gb, f"{name} size", " GB"
            )
        obs.details[name] = {"url": shown, "backend": backend}
    except sa_exc.DBAPIError as exc:
        obs.details[name] = {"url": shown, "backend": backend}
        obs.error(
            f"{name} database {shown} is unavailable: {describe_exception(exc)}. Check that the "
            "server is running and reachable and the credentials are right"
        )
    finally:
        engine.dispose()


@builtin(
    "database",
    params=(
        "connections_critical_percent",
        "connections_warning_percent",
        "query_time_critical_ms",
        "query_time_warning_ms",
        "size_critical_gb",
        "size_warning_gb",
        "target",
        "url_env",
    ),
)
def database_check(check: HealthCheck, ctx: CheckContext) -> Observation:
    """SELECT 1 latency, connection usage and size of the warehouse and/or health store."""
    obs = Observation()
    targets = _targets(check, ctx)
    for name, url in targets.items():
        # Metric names carry the target only when there are two (warehouse and health store).
        _check_one(check, ctx, name, url, obs, f"{name}." if len(targets) > 1 else "")
    return obs
