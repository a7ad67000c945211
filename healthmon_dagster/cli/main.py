"""The ``healthmon`` command: one group, one module per command group."""

import click

from healthmon_dagster.cli import (
    alerts_cmd,
    checks_cmd,
    config_cmd,
    db_cmd,
    demo_cmd,
    sample_cmd,
    status_cmd,
)


@click.group()
def cli() -> None:
    """Health monitoring for the patients ETL pipeline on Dagster."""


cli.add_command(alerts_cmd.alerts)
cli.add_command(checks_cmd.checks)
cli.add_command(config_cmd.config)
cli.add_command(db_cmd.db)
cli.add_command(demo_cmd.demo)
cli.add_command(sample_cmd.generate_sample)
cli.add_command(status_cmd.status)


if __name__ == "__main__":
    cli()
