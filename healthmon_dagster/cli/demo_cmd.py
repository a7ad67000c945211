"""``healthmon demo``: the quick start. Sample files -> landing sensor -> ETL runs -> what was loaded.

Runs on the embedded default (SQLite under ``$HEALTHMON_HOME``, local landing folder, a persistent
Dagster instance in ``$HEALTHMON_HOME/dagster``) so ``dagster dev`` shows the same runs afterwards.
"""

import logging
import os
import shutil
import sys
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import click
import dagster as dg
import sqlalchemy as sa

from healthmon_dagster.cli.checks_cmd import latest_results, status_label
from healthmon_dagster.defs.pipeline.sensors import landing_files_sensor
from healthmon_dagster.enums import HealthStatus, QualityStatus
from healthmon_dagster.etl import catalog
from healthmon_dagster.etl.sample import generate_sample, write_to
from healthmon_dagster.etl.staging import rejection_reasons
from healthmon_dagster.health.status import get_system_status
from healthmon_dagster.settings import get_settings, redact_url
from healthmon_dagster.store.db import using_engine
from healthmon_dagster.store.tables import (
    dim_patient,
    files,
    stg_patients,
    stg_patients_rejected,
)

INSTANCE_YAML = Path(__file__).resolve().parent.parent / "defaults" / "dagster.yaml"

# The runs' event logs stay complete in the instance; only the console echo is reduced.
QUIET_LOGS = {"loggers": {"console": {"config": {"log_level": "WARNING"}}}}
SILENT_LOGS = {"loggers": {"console": {"config": {"log_level": "CRITICAL"}}}}
# The last sample file: rows without a patient id, which the staging layer rejects and the
# patient_ids_are_joinable check fails on, so the demo shows an alert arriving.
DEMO_DEFECT = "null_ids"


class _Lines(logging.Handler):
    """Keeps the messages of one logger."""

    def __init__(self) -> None:
        super().__init__(logging.INFO)
        self.lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(record.getMessage())


@contextmanager
def log_channel_lines() -> Iterator[list[str]]:
    """What the ``log`` notification channel writes while the block runs (its logger is
    ``healthmon.notify``), kept to be printed together instead of interleaved with the runs."""
    from healthmon_dagster.notify.log import LOGGER

    handler = _Lines()
    before = LOGGER.propagate
    LOGGER.addHandler(handler)
    LOGGER.propagate = False
    try:
        yield handler.lines
    finally:
        LOGGER.removeHandler(handler)
        LOGGER.propagate = before


def ensure_dagster_home() -> Path:
    """``$DAGSTER_HOME``, or ``$HEALTHMON_HOME/dagster`` with a default dagster.yaml."""
    home = get_settings().dagster_home
    home.mkdir(parents=True, exist_ok=True)
    if not (home / "dagster.yaml").exists():
        shutil.copyfile(INSTANCE_YAML, home / "dagster.yaml")
    os.environ["DAGSTER_HOME"] = str(home)
    return home


def summary_lines(engine: sa.Engine) -> list[str]:
    """What the warehouse holds, per file and per layer: counts and reason codes only."""
    lines = []
    with engine.connect() as conn:
        for f in conn.execute(sa.select(files).order_by(files.c.file_id)):
            staged = conn.execute(
                sa.select(sa.func.count()).where(stg_patients.c._file_id == f.file_id)
            ).scalar_one()
            rejected = conn.execute(
                sa.select(sa.func.count()).where(stg_patients_rejected.c._file_id == f.file_id)
            ).scalar_one()
            line = f"  {f.file_key:<28} {f.status:<9} raw={f.rows_raw:<7} stg={staged:<7} rejected={rejected}"
            if f.status == "rejected":
                line += f"  ({f.error})"
            lines.append(line)
            reasons = rejection_reasons(engine, f.file_id)
            if reasons:
                lines.append("      reasons: " + ", ".join(f"{k}={v}" for k, v in reasons.items()))
        current, versions = conn.execute(
            sa.select(sa.func.count().filter(dim_patient.c.is_current), sa.func.count())
        ).one()
    lines.append(f"  core.dim_patient: {current} current patients, {versions} versions (SCD2)")
    return lines


def check_lines(engine: sa.Engine) -> list[str]:
    """Counts per status, then every check that did not pass, with its message (numbers only)."""
    rows = latest_results(engine)
    counts: dict[str, int] = {}
    for row in rows:
        word = "learning" if row["learning"] else row["status"]
        counts[word] = counts.get(word, 0) + 1
    lines = ["  " + (", ".join(f"{n} {s}" for s, n in sorted(counts.items())) or "none recorded")]
    lines += [
        f"  {status_label(r) if r['learning'] else r['status'].upper():<8} "
        f"{r['asset']}: {r['check']}: {r['message']}"
        for r in rows
        if r["status"] != QualityStatus.PASSED
    ]
    return lines


def dagster_command() -> str:
    """The ``dagster`` executable beside the running Python (the venv's), relative to the current
    folder when inside it; a bare ``dagster`` only when there is none."""
    beside = Path(sys.executable).parent / "dagster"
    if not beside.is_file():
        return "dagster"
    try:
        return str(beside.relative_to(Path.cwd()))
    except ValueError:
        return str(beside)


def health_lines(
    defs: dg.Definitions, instance: dg.DagsterInstance, engine: sa.Engine
) -> list[str]:
    """Run every health-check job once, in process, then the system status in a few lines."""

    for job in defs.resolve_all_job_defs():
        if job.name.startswith("health_checks_every_"):
            job.execute_in_process(run_config=SILENT_LOGS, instance=instance, raise_on_error=False)
    system = get_system_status(engine)
    lines = [f"  overall {system.overall_health.value.upper()}: {system.description}"]
    lines += [
        f"  {c.status.value.upper():<8} {c.component}: {c.description}"
        for c in system.components
        if c.status not in (HealthStatus.HEALTHY, HealthStatus.UNKNOWN)
    ]
    return lines


def alert_lines(defs: dg.Definitions, instance: dg.DagsterInstance, engine: sa.Engine) -> list[str]:
    """One evaluation of the alert rules, as the alert sensor does, then the open alerts."""
    from healthmon_dagster.alerting.actions import list_alerts
    from healthmon_dagster.alerting.engine import evaluate
    from healthmon_dagster.config import load_config
    from healthmon_dagster.defs.alerting.sensors import lineage_of, run_signals

    config = load_config(get_settings().config_path)
    evaluate(
        engine,
        config,
        extra_signals=run_signals(instance, config),
        lineage=lineage_of(defs.get_repository_def()),
        actor="demo",
    )
    open_alerts = list_alerts(engine)
    if not open_alerts:
        return ["  none: every check passed or is still learning"]
    return [
        f"  {a.severity.upper():<8} {a.title}"
        + (f"  [{a.suppressed_by}]" if a.suppressed_by else "")
        for a in open_alerts
    ]


@click.command()
@click.option("--rows", default=1000, show_default=True, help="Rows per generated sample file.")
@click.option("--files", "n_files", default=3, show_default=True, help="Sample files to generate.")
@click.option("--seed", default=42, show_default=True)
def demo(rows: int, n_files: int, seed: int) -> None:
    """Generate sample data if the landing is empty, run the ETL job for each new file, print results."""
    # Imported here: importing the code location builds it from healthmon.yaml, which must not
    # happen when any other command (e.g. `healthmon config validate` of a broken file) starts.
    from healthmon_dagster.definitions import defs

    settings = get_settings()
    for url in dict.fromkeys([settings.database_url, settings.health_database_url]):
        using_engine(url, lambda _engine: None)  # migrated, or one line saying why not
    ensure_dagster_home()
    resources = defs.resources or {}
    source = resources["landing"].source()
    if not source.list_files():
        write_to(source, generate_sample(rows=rows, files=n_files, seed=seed))
        defect = generate_sample(
            rows=rows, files=1, seed=seed + 1, defect=DEMO_DEFECT, prefix="patients_defect"
        )
        write_to(source, defect)
        click.echo(
            f"generated {n_files} sample file(s) of {rows} rows and one with a defect "
            f"({defect[0].key}: rows without a patient id) in {source.description}"
        )
    with log_channel_lines() as sent:
        instance = dg.DagsterInstance.get()
        failed = run_landed_files(defs, instance, resources)
        report(defs, instance, resources)
        send_due(resources["warehouse"].health_engine())
    click.echo(
        f"\nDagster UI on the same data: DAGSTER_HOME={settings.dagster_home} "
        f"{dagster_command()} dev"
    )
    # Last: what an on-call engineer would have received, through the always-on log channel.
    click.echo("\nalerts sent to the log channel (add Slack, email, ... under channels:):")
    for line in sent or ["none"]:
        click.echo(f"  {line}")
    sys.exit(1 if failed else 0)


def send_due(engine: sa.Engine) -> None:
    """Send what the demo's last evaluation queued and is due (alert_dispatch_job's work when the
    daemon runs); a group still in its wait stays queued for it."""
    from healthmon_dagster.config import load_config
    from healthmon_dagster.notify.dispatch import Dispatcher

    with Dispatcher(engine, load_config(get_settings().config_path)) as dispatcher:
        dispatcher.drain(5)


def run_landed_files(
    defs: dg.Definitions, instance: dg.DagsterInstance, resources: Mapping[str, Any]
) -> int:
    """One landing-sensor evaluation and its runs, in process; the number of failed runs. A
    failed check alerts from its own run (the alert fast path), on the log channel."""
    sensor_result = landing_files_sensor(
        dg.build_sensor_context(instance=instance, resources=resources)
    )
    assert isinstance(sensor_result, dg.SensorResult)  # the sensor always returns one
    requests = sensor_result.run_requests or []
    job = defs.resolve_job_def(catalog.ETL_JOB)
    failed = 0
    for request in requests:
        result = job.execute_in_process(
            run_config={**request.run_config, **QUIET_LOGS},
            instance=instance,
            tags=request.tags,
            raise_on_error=False,
        )
        status = "ok" if result.success else "FAILED"
        failed += not result.success
        click.echo(f"run {result.run_id[:8]} {request.tags.get('healthmon/file_key')}: {status}")
    if not requests:
        skipped = sensor_result.skip_reason.skip_message if sensor_result.skip_reason else None
        click.echo(f"nothing to run: {skipped or 'no new landing files'}")
    return failed


def report(
    defs: dg.Definitions, instance: dg.DagsterInstance, resources: Mapping[str, Any]
) -> None:
    """What was loaded, what the checks found, the system status and the open alerts."""
    settings = get_settings()
    health_engine = resources["warehouse"].health_engine()
    click.echo(f"\nwarehouse {redact_url(settings.database_url)}:")
    for line in summary_lines(resources["warehouse"].engine()):
        click.echo(line)
    click.echo(
        f"\nasset checks in the health store {redact_url(settings.health_database_url)} "
        "(latest result of each; `healthmon checks` for the full table):"
    )
    for line in check_lines(health_engine):
        click.echo(line)
    click.echo("\nhealth checks (one run of each cadence's job; `healthmon status` for more):")
    for line in health_lines(defs, instance, health_engine):
        click.echo(line)
    click.echo(
        "\nopen alerts (`healthmon alerts list`; with the daemon running, alert_evaluation_sensor "
        "keeps them current):"
    )
    for line in alert_lines(defs, instance, health_engine):
        click.echo(line)
