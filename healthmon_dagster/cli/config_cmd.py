"""``healthmon config``: validate and show ``healthmon.yaml``."""

from pathlib import Path

import click
import yaml

from healthmon_dagster.cli.store_access import read_store
from healthmon_dagster.config import ConfigError, HealthConfiguration, load_config
from healthmon_dagster.config.loader import located_errors
from healthmon_dagster.quality.targets import check_targets
from healthmon_dagster.settings import get_settings
from healthmon_dagster.store.config_versions import config_history
from healthmon_dagster.store.db import database_url_problems

_PATH = click.Path(path_type=Path, dir_okay=False)


def _resolve(path: Path | None) -> Path | None:
    return path if path is not None else get_settings().config_path


def _summary(config: HealthConfiguration) -> str:
    quality_checks = sum(len(a.checks) for a in config.quality.assets.values())
    parts = [
        f"{len(config.health_checks)} health checks",
        f"{len(config.alert_rules)} alert rules",
        f"{len(config.channels)} channels",
        f"{len(config.escalation_policies)} escalation policies",
        f"{len(config.thresholds)} thresholds",
        f"{quality_checks} quality checks on {len(config.quality.assets)} assets",
        f"{len(config.freshness)} freshness policies",
    ]
    return ", ".join(parts)


def _load_or_exit(path: Path | None) -> HealthConfiguration:
    try:
        return load_config(path)
    except ConfigError as exc:
        for error in exc.errors:
            click.echo(error, err=True)
        n = len(exc.errors)
        click.echo(f"INVALID: {exc.source}: {n} error{'s' if n != 1 else ''}", err=True)
        raise click.exceptions.Exit(1) from None


@click.group()
def config() -> None:
    """Validate and inspect the monitoring configuration (healthmon.yaml)."""


@config.command()
@click.argument("path", required=False, type=_PATH)
def validate(path: Path | None) -> None:
    """Validate PATH (default: $HEALTHMON_CONFIG or healthmon.yaml); exit 1 listing every error.

    Asset keys and the columns their checks name must exist: the bundled pipeline's are known, other
    tables are looked up in the warehouse ($HEALTHMON_DATABASE_URL); when it cannot be reached,
    a WARNING line says what was not checked (not an error). A database URL that can never work
    (HEALTHMON_DATABASE_URL, HEALTHMON_HEALTH_DATABASE_URL) is an error: the code location would
    not load with it."""

    path = _resolve(path)
    cfg = _load_or_exit(path)
    # Imported here: the registry imports every health-check implementation (scipy, slack_sdk,
    # psutil: ~0.8 s), which every other `healthmon` command would pay for at start-up.
    from healthmon_dagster.health.registry import parameter_problems

    problems = parameter_problems(cfg)  # the health checks' parameters, known per kind
    settings = get_settings()
    # The code location refuses to load with a database URL that can never work: so does this.
    problems += database_url_problems(settings)
    targets = check_targets(cfg, settings.database_url)
    problems += located_errors(cfg, targets.problems)
    for why in targets.unchecked:
        click.echo(f"WARNING: {why}", err=True)
    if problems:
        for problem in problems:
            click.echo(problem, err=True)
        n = len(problems)
        click.echo(f"INVALID: {path}: {n} error{'s' if n != 1 else ''}", err=True)
        raise click.exceptions.Exit(1)
    click.echo(f"OK: {path if path is not None else '<built-in defaults>'}: {_summary(cfg)}")


@config.command()
@click.argument("path", required=False, type=_PATH)
def show(path: Path | None) -> None:
    """Print the effective configuration of PATH as YAML, defaults filled in."""
    cfg = _load_or_exit(_resolve(path))
    click.echo(yaml.safe_dump(cfg.model_dump(mode="json"), sort_keys=False), nl=False)


@config.command()
def history() -> None:
    """List the configuration versions recorded in the health store (one per distinct content)."""
    rows = read_store(get_settings().health_database_url, config_history)
    if not rows:
        click.echo("no configuration recorded yet (a pipeline run records the one it uses)")
    for row in rows:
        click.echo(
            f"{row.version_id:>4}  {row.recorded_at:%Y-%m-%d %H:%M:%S}  version {row.version:<8} "
            f"{row.config_hash[:12]}  {row.updated_by or '-'}  {row.source or '-'}"
        )
