"""``healthmon checks``: the latest result of every asset check, per asset, from etl.check_results.

A check that lacks the history to judge (status ``insufficient_history``) passes and is shown as
learning, e.g. ``LEARNING (needs 4 more loads)``; an unknown ``--asset`` is an error naming the known
ones.
"""

import json
import sys
from typing import Any

import click
import sqlalchemy as sa
from sqlalchemy.engine import Engine

from healthmon_dagster.cli.store_access import read_store
from healthmon_dagster.config import ConfigError, load_config
from healthmon_dagster.enums import QualityStatus, RecordSource
from healthmon_dagster.etl import catalog
from healthmon_dagster.quality.result import learning_label, loads_needed
from healthmon_dagster.settings import get_settings
from healthmon_dagster.store.tables import check_results

COLUMNS = ("asset", "check", "status", "severity", "observed", "threshold", "failing_rows", "ts")


def latest_results(engine: Engine, asset: str | None = None) -> list[dict[str, Any]]:
    """Newest row of each (asset, check) recorded by asset checks, ordered by asset and check."""
    r = check_results.c
    newest = (
        sa.select(sa.func.max(r.result_id).label("result_id"))
        .where(r.source == RecordSource.ASSET_CHECK, *([r.target == asset] if asset else []))
        .group_by(r.target, r.check_name)
        .subquery()
    )
    query = (
        sa.select(
            r.target,
            r.check_name,
            r.status,
            r.severity,
            r.observed_value,
            r.threshold,
            r.failing_rows,
            r.ts,
            r.message,
            r.dagster_run_id,
            r.details,
        )
        .join(newest, newest.c.result_id == r.result_id)
        .order_by(r.target, r.check_name)
    )
    with engine.connect() as conn:
        return [
            {
                **_learning(row.status, row.details),
                "asset": row.target,
                "check": row.check_name,
                "status": row.status,
                "severity": row.severity,
                "observed": row.observed_value,
                "threshold": row.threshold,
                "failing_rows": row.failing_rows,
                "ts": row.ts.isoformat() if row.ts is not None else None,
                "message": row.message,
                "dagster_run_id": row.dagster_run_id,
            }
            for row in conn.execute(query)
        ]


def _learning(status: str, details: Any) -> dict[str, Any]:
    """``learning`` and ``loads_needed`` of a result (a check lacking the history to judge)."""
    if status != QualityStatus.INSUFFICIENT_HISTORY:
        return {"learning": False, "loads_needed": None}
    return {
        "learning": True,
        "loads_needed": loads_needed(details if isinstance(details, dict) else {}),
    }


def status_label(row: dict[str, Any]) -> str:
    """The status word of a row: ``LEARNING (needs 4 more loads)`` while a check learns."""
    if row.get("learning"):
        return learning_label(row.get("loads_needed"))
    return str(row["status"])


def known_assets(engine: Engine) -> list[str]:
    """Assets with recorded asset-check results, configured quality checks or freshness, or in the
    bundled pipeline."""
    r = check_results.c
    with engine.connect() as conn:
        recorded = set(
            conn.execute(
                sa.select(r.target).where(r.source == RecordSource.ASSET_CHECK).distinct()
            ).scalars()
        )
    configured: set[str] = set()
    try:
        config = load_config(get_settings().config_path)
        configured = {*config.quality.assets, *config.freshness}
    except ConfigError:  # a broken healthmon.yaml: `healthmon config validate` says why
        pass
    return sorted(recorded | configured | set(catalog.BY_KEY))


def _cell(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value)


@click.command("checks")
@click.option("--json", "as_json", is_flag=True, help="Print JSON (a list of results) for scripts.")
@click.option("--asset", default=None, help="Only this asset key, e.g. stg/patients.")
def checks(as_json: bool, asset: str | None) -> None:
    """Latest result of every data-quality check, per asset, with its status."""
    url = get_settings().health_database_url
    rows = read_store(url, lambda engine: latest_results(engine, asset))
    if asset is not None and not rows:
        known = read_store(url, known_assets)
        if asset not in known:
            click.echo(
                f"unknown asset {asset!r} for --asset; known assets: {', '.join(known)}", err=True
            )
            sys.exit(1)
    if as_json:
        click.echo(json.dumps(rows, indent=2))
        return
    if not rows:
        where = f" for {asset}" if asset is not None else ""
        click.echo(
            f"no check results recorded yet{where} (run the ETL job or quality_full_sweep_job)"
        )
        return
    table = [
        [status_label(row) if c == "status" else _cell(row[c]) for c in COLUMNS] for row in rows
    ]
    widths = [max(len(c), *(len(line[i]) for line in table)) for i, c in enumerate(COLUMNS)]
    click.echo("  ".join(c.upper().ljust(w) for c, w in zip(COLUMNS, widths, strict=True)))
    previous = None
    for row, line in zip(rows, table, strict=True):
        if previous is not None and row["asset"] != previous:
            click.echo("")
        previous = row["asset"]
        click.echo("  ".join(v.ljust(w) for v, w in zip(line, widths, strict=True)).rstrip())
    counts: dict[str, int] = {}
    for row in rows:
        word = "learning" if row["learning"] else row["status"]
        counts[word] = counts.get(word, 0) + 1
    click.echo("\n" + ", ".join(f"{n} {status}" for status, n in sorted(counts.items())))
