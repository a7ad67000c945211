"""``healthmon generate-sample``: Synthea-format patient files into the landing source."""

from pathlib import Path

import click

from healthmon_dagster.defs.resources import LandingResource
from healthmon_dagster.etl.landing import LandingError, LandingSource, LocalLandingSource
from healthmon_dagster.etl.sample import COUNTRIES, DEFECTS, next_start_index, write_to
from healthmon_dagster.etl.sample import generate_sample as generate_files


def _configured_landing() -> LandingSource:
    """The landing source of the code location's resource, from the settings: S3 when a bucket is
    set, else the local folder."""
    return LandingResource().source()


@click.command("generate-sample")
@click.option(
    "--rows", type=click.IntRange(min=1), default=1000, show_default=True, help="Rows per file."
)
@click.option(
    "--files", type=click.IntRange(min=1), default=3, show_default=True, help="Number of files."
)
@click.option("--seed", type=int, default=42, show_default=True, help="Random seed.")
@click.option(
    "--defect",
    type=click.Choice(DEFECTS),
    default=None,
    metavar="KIND",
    help=f"Inject one defect into the last file: {', '.join(DEFECTS)}.",
)
@click.option(
    "--country",
    type=click.Choice(COUNTRIES),
    default="US",
    show_default=True,
    help="The Synthea configuration the export imitates: US (Massachusetts) or an international "
    "one (local cities, states, postal codes and national ids).",
)
@click.option(
    "--newer-columns",
    is_flag=True,
    help="Write Synthea 3.x's 28 columns in its order (MIDDLE after FIRST, FIPS after COUNTY, "
    "INCOME last) instead of the older 25.",
)
@click.option(
    "--out",
    type=click.Path(file_okay=False, dir_okay=True, writable=True, path_type=Path),
    default=None,
    help="Write to this folder instead of the configured landing source.",
)
@click.option(
    "--force",
    is_flag=True,
    help="Start at patients_0001.csv and overwrite existing files (default: continue the numbering "
    "after the highest existing patients_<n>.csv, never overwriting).",
)
def generate_sample(
    rows: int,
    files: int,
    seed: int,
    defect: str | None,
    country: str,
    newer_columns: bool,
    out: Path | None,
    force: bool,
) -> None:
    """Generate Synthea patients.csv files (file 2 on re-send ~10% earlier patients, half changed).

    Same options, same bytes. Without --out the files go to the configured landing source:
    S3 when HEALTHMON_S3_BUCKET is set, else $HEALTHMON_HOME/landing. An existing file is never
    overwritten: numbering continues after the highest patients_<n>.csv there (the batch goes on,
    e.g. patients_0004.csv after patients_0001..0003.csv), unless --force starts again at 0001 and
    overwrites.
    """
    try:
        source = LocalLandingSource(out) if out is not None else _configured_landing()
        start = 0 if force else next_start_index(f.key for f in source.list_files("*.csv"))
    except LandingError as exc:
        raise click.ClickException(str(exc)) from exc
    try:
        generated = generate_files(
            rows=rows,
            files=files,
            seed=seed,
            defect=defect,
            start_index=start,
            country=country,
            newer_columns=newer_columns,
        )
    except ValueError as exc:  # option combinations, e.g. duplicate_ids with --rows 1
        raise click.UsageError(str(exc)) from exc
    try:
        for f in generated:
            write_to(source, [f], overwrite=force)
            click.echo(
                f"wrote {f.key}: {f.rows} rows, defect {f.defect or 'none'}, {len(f.data)} bytes "
                f"-> {source.description}"
            )
    except LandingError as exc:
        raise click.ClickException(str(exc)) from exc
