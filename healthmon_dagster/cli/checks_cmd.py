"""``healthmon checks``: the latest result of every asset check, per asset, from etl.check_results."""

import json
from typing import Any

import click
import sqlalchemy as sa
from sqlalchemy.engine import Engine

from healthmon_dagster.cli.store_access import read_store
from healthmon_dagster.enums import RecordSource
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
        )
        .join(newest, newest.c.result_id == r.result_id)
        .order_by(r.target, r.check_name)
    )
    with engine.connect() as conn:
        return [
            {
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
    if as_json:
        click.echo(json.dumps(rows, indent=2))
        return
    if not rows:
        click.echo("no check results recorded yet (run the ETL job or quality_full_sweep_job)")
        return
    table = [[_cell(row[c]) for c in COLUMNS] for row in rows]
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
        counts[row["status"]] = counts.get(row["status"], 0) + 1
    click.echo("\n" + ", ".join(f"{n} {status}" for status, n in sorted(counts.items())))
