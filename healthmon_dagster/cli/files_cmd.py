"""``healthmon files``: the landing files the pipeline knows (``list``) and releasing the ones that
will not load by themselves (``retry``), from the warehouse (``etl.files``, ``etl.file_attempts``,
``etl.file_releases``)."""

import json
import sys
from collections.abc import Callable
from typing import Any, TypeVar

import click
from sqlalchemy import exc as sa_exc
from sqlalchemy.engine import Engine

from healthmon_dagster.etl.attempts import stuck_files
from healthmon_dagster.etl.releases import (
    FileVersion,
    Release,
    ReleaseError,
    file_versions,
    release_all_stuck,
    release_file,
)
from healthmon_dagster.settings import get_settings, redact_url
from healthmon_dagster.store.db import describe_unavailable, open_for_reading
from healthmon_dagster.store.metrics import utcnow

T = TypeVar("T")
FINGERPRINT_SHOWN = 12
"""Characters of a fingerprint shown in the table (the JSON has all of it)."""
ERROR_SHOWN = 80


def _on_warehouse(use: Callable[[Engine], T]) -> T:
    """``use(engine)`` on the warehouse; an unusable one ends the command with one line (the
    command group prints :class:`DatabaseUnavailable`), a refused release likewise."""
    url = get_settings().database_url
    engine = open_for_reading(url)
    try:
        return use(engine)
    except sa_exc.DBAPIError as exc:
        click.echo(str(describe_unavailable(redact_url(url), exc, "")), err=True)
    except ReleaseError as exc:
        click.echo(f"error: {exc}", err=True)
    finally:
        engine.dispose()
    sys.exit(1)


def _table(header: list[str], rows: list[list[str]]) -> str:
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header))]
    lines = [
        "  ".join(v.ljust(w) for v, w in zip(r, widths, strict=True)).rstrip()
        for r in [header, *rows]
    ]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)


def _one_line(text: str | None) -> str:
    if not text:
        return "-"
    line = " ".join(text.split())
    return line if len(line) <= ERROR_SHOWN else line[: ERROR_SHOWN - 3] + "..."


def _json(v: FileVersion) -> dict[str, Any]:
    return {
        "file_key": v.file_key,
        "fingerprint": v.fingerprint,
        "status": v.status,
        "attempts": v.attempts,
        "error_class": v.error_class,
        "error": v.error,
        "updated_at": v.updated_at.isoformat() if v.updated_at else None,
    }


def _stuck_versions(engine: Engine) -> list[FileVersion]:
    return [
        FileVersion(
            s.file_key, s.fingerprint, "stuck", s.attempts, s.error_class, s.error, s.stuck_since
        )
        for s in stuck_files(engine)
    ]


@click.group()
def files() -> None:
    """Landing files: what became of each, and releasing the stuck ones."""


@files.command("list")
@click.option("--stuck", is_flag=True, help="Only the files that are stuck.")
@click.option("--json", "as_json", is_flag=True, help="Print JSON instead of a table.")
@click.option(
    "--limit",
    type=click.IntRange(1, 100_000),
    default=100,
    show_default=True,
    help="The files with the most recent activity shown at most.",
)
def list_files(stuck: bool, as_json: bool, limit: int) -> None:
    """The landing files the pipeline knows, newest activity first: key, fingerprint, status
    (loaded, empty, rejected, stuck, released, requested, retrying, failed), attempts, and the last
    error class and error (without data values)."""
    versions = _on_warehouse(
        lambda engine: _stuck_versions(engine)[:limit] if stuck else file_versions(engine, limit)
    )
    if as_json:
        click.echo(json.dumps([_json(v) for v in versions], indent=2))
        return
    if not versions:
        click.echo("no stuck landing file" if stuck else "no landing file recorded yet")
        return
    rows = [
        [
            v.file_key,
            (v.fingerprint or "-")[:FINGERPRINT_SHOWN],
            v.status,
            str(v.attempts),
            v.error_class or "-",
            _one_line(v.error),
        ]
        for v in versions
    ]
    click.echo(_table(["file", "fingerprint", "status", "attempts", "error class", "error"], rows))


def _released(r: Release) -> str:
    return (
        f"released {r.file_key} ({r.released_status} after {r.after_attempt} attempt(s)) "
        f"by {r.released_by}: the landing sensor requests it at its next tick"
    )


@files.command("retry")
@click.argument("key", required=False)
@click.option("--all-stuck", is_flag=True, help="Release every stuck file.")
@click.option(
    "--by",
    envvar="USER",
    help="Who releases it, recorded with the release (default: $USER).",
)
def retry(key: str | None, all_stuck: bool, by: str | None) -> None:
    """Release landing file KEY (stuck, or rejected once its configuration is fixed): the landing
    sensor requests it again with a fresh attempt budget. Its attempts and errors are kept."""
    if (key is None) == (not all_stuck):
        raise click.UsageError("give a file KEY or --all-stuck (not both)")
    if not by or not by.strip():
        raise click.UsageError("say who releases the file with --by NAME ($USER is not set)")
    who = by.strip()[:200]
    now = utcnow()
    if all_stuck:
        done = _on_warehouse(lambda engine: release_all_stuck(engine, who, now))
        for r in done:
            click.echo(_released(r))
        if not done:
            click.echo("no stuck landing file: nothing released")
        return
    assert key is not None
    click.echo(_released(_on_warehouse(lambda engine: release_file(engine, key, who, now))))
