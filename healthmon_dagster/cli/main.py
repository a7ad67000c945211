"""The ``healthmon`` command: one group, one module per command group.

A database that cannot be used (a ``HEALTHMON_*`` URL that can never work, a SQLite folder that
cannot be created, a server that does not answer) ends any command with one line on stderr saying
which database, what is wrong and what to do, and exit code 1: never a traceback, never a password.
"""

from typing import Any

import click

from healthmon_dagster.cli import (
    alerts_cmd,
    checks_cmd,
    config_cmd,
    db_cmd,
    demo_cmd,
    files_cmd,
    incidents_cmd,
    sample_cmd,
    status_cmd,
)
from healthmon_dagster.store.db import DatabaseUnavailable


class HealthmonGroup(click.Group):
    """The command group, turning :class:`DatabaseUnavailable` into a one-line error."""

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except DatabaseUnavailable as exc:
            click.echo(str(exc), err=True)
            ctx.exit(1)


@click.group(cls=HealthmonGroup)
def cli() -> None:
    """Health monitoring for the patients ETL pipeline on Dagster."""


cli.add_command(alerts_cmd.alerts)
cli.add_command(alerts_cmd.silences)
cli.add_command(checks_cmd.checks)
cli.add_command(config_cmd.config)
cli.add_command(db_cmd.db)
cli.add_command(demo_cmd.demo)
cli.add_command(files_cmd.files)
cli.add_command(incidents_cmd.incidents)
cli.add_command(sample_cmd.generate_sample)
cli.add_command(status_cmd.status)


if __name__ == "__main__":
    cli()
