"""Benchmark: the raw load's rows/s on pathological quoting, from 10,000 to 1,000,000 rows.

    python benchmarks/raw_pathological.py                         # SQLite and Postgres, 10k/100k/1M
    python benchmarks/raw_pathological.py --database sqlite --rows 10000 100000

Three files per size, each a generated Synthea export of that many records:

- ``clean``: as generated.
- ``breaks``: record 2's ADDRESS is a quoted field holding 100,000 line breaks (one record).
- ``stray_quote``: record 2's FIRST starts with a quote that never closes; the loader keeps that
  record as malformed once it passes ``landing.max_record_bytes`` (1 MiB) and resumes after it.

Re-scanning an open record after every appended line made the last two quadratic (80,000 line
breaks took 16.7 s; a 12 MB file with a stray quote ran for minutes). Splitting is now linear, so
rows/s should stay flat from the smallest size to the largest: ``split`` is the record splitting
alone (no database), ``load`` the whole ``raw.load_file``. Each load runs into a fresh
database (Postgres: a scratch database on ``HEALTHMON_BENCH_POSTGRES_URL``, default
``postgresql+psycopg2://postgres@127.0.0.1:5432/postgres``, dropped afterwards).
"""

import argparse
import os
import shutil
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import sqlalchemy as sa

from healthmon_dagster.etl import raw
from healthmon_dagster.etl.landing import LocalLandingSource
from healthmon_dagster.etl.sample import write_patients_csv
from healthmon_dagster.store.db import create_db_engine
from healthmon_dagster.store.migrate import upgrade

ADMIN_URL = os.environ.get(
    "HEALTHMON_BENCH_POSTGRES_URL", "postgresql+psycopg2://postgres@127.0.0.1:5432/postgres"
)
LINE_BREAKS = 100_000
ADDRESS, FIRST = 16, 7


def _breaks(fields: list[bytes]) -> None:
    fields[ADDRESS] = b'"' + b"\n".join([b"x"] * (LINE_BREAKS + 1)) + b'"'


def _stray_quote(fields: list[bytes]) -> None:
    fields[FIRST] = b'"' + fields[FIRST]


VARIANTS: dict[str, Callable[[list[bytes]], None] | None] = {
    "clean": None,
    "breaks": _breaks,
    "stray_quote": _stray_quote,
}


def write_variant(clean: Path, target: Path, edit: Callable[[list[bytes]], None] | None) -> None:
    """``clean`` with data record 2 (physical line 3) rewritten by ``edit``; streamed."""
    with open(clean, "rb") as src, open(target, "wb") as out:
        out.write(src.readline())  # header
        out.write(src.readline())  # record 1
        line = src.readline()
        if edit is not None:
            fields = line.rstrip(b"\n").split(b",")
            edit(fields)
            line = b",".join(fields) + b"\n"
        out.write(line)
        shutil.copyfileobj(src, out, 1 << 20)


@contextmanager
def scratch_url(database: str, folder: Path) -> Iterator[str]:
    """A fresh, migrated database for one load."""
    if database == "sqlite":
        url = f"sqlite:///{folder / f'{uuid.uuid4().hex[:8]}.db'}"
        engine = create_db_engine(url)
        upgrade(engine)
        engine.dispose()
        yield url
        return
    admin = sa.create_engine(ADMIN_URL, isolation_level="AUTOCOMMIT")
    name = f"healthmon_bench_{uuid.uuid4().hex[:8]}"
    with admin.connect() as conn:
        conn.execute(sa.text(f'CREATE DATABASE "{name}"'))
    url = sa.engine.make_url(ADMIN_URL).set(database=name).render_as_string(hide_password=False)
    try:
        engine = create_db_engine(url)
        upgrade(engine)
        engine.dispose()
        yield url
    finally:
        with admin.connect() as conn:
            conn.execute(sa.text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()


def split_seconds(path: Path) -> float:
    """Seconds to split the file into records without a database: the part that was quadratic."""
    t = time.perf_counter()
    with open(path, "rb") as f:
        shape = raw.inspect_header(f)
        assert shape is not None
        for _ in raw._records(f, shape, raw._Counts(), raw.MAX_RECORD_BYTES):
            pass
    return time.perf_counter() - t


def load_once(
    database: str, landing: Path, key: str, folder: Path
) -> tuple[float, raw.RawLoadResult]:
    with scratch_url(database, folder) as url:
        engine = create_db_engine(url)
        try:
            t = time.perf_counter()
            result = raw.load_file(engine, LocalLandingSource(landing), key)
            return time.perf_counter() - t, result
        finally:
            engine.dispose()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, nargs="+", default=[10_000, 100_000, 1_000_000])
    parser.add_argument(
        "--database", choices=["postgres", "sqlite"], nargs="+", default=["sqlite", "postgres"]
    )
    args = parser.parse_args()
    folder = Path(tempfile.mkdtemp(prefix="healthmon-bench-raw-"))
    landing = folder / "landing"
    landing.mkdir()
    figures: dict[tuple[str, str], dict[int, float]] = {}
    print(
        f"{'db':>8} {'variant':>11} {'rows':>9} {'MB':>6} | {'split s':>7} {'rows/s':>9} | "
        f"{'load s':>7} {'rows/s':>9} {'MB/s':>6} | {'records':>9} {'malformed':>9}"
    )
    try:
        for rows in args.rows:
            clean = folder / "clean.csv"
            write_patients_csv(clean, rows, seed=7)
            for variant, edit in VARIANTS.items():
                key = f"patients_{variant}_{rows}.csv"
                write_variant(clean, landing / key, edit)
                size = (landing / key).stat().st_size
                split_s = split_seconds(landing / key)
                figures.setdefault(("split", variant), {})[rows] = rows / split_s
                for database in args.database:
                    seconds, result = load_once(database, landing, key, folder)
                    assert result.status == "loaded", result
                    rate = rows / seconds
                    figures.setdefault((database, variant), {})[rows] = rate
                    print(
                        f"{database:>8} {variant:>11} {rows:>9,} {size / 1e6:>6.1f} | "
                        f"{split_s:>7.2f} {rows / split_s:>9,.0f} | "
                        f"{seconds:>7.2f} {rate:>9,.0f} {size / 1e6 / seconds:>6.1f} | "
                        f"{result.rows:>9,} {result.malformed_rows:>9,}",
                        flush=True,
                    )
                (landing / key).unlink()
    finally:
        shutil.rmtree(folder, ignore_errors=True)
    if len(args.rows) > 1:
        small, big = min(args.rows), max(args.rows)
        print(f"\nrows/s at {big:,} rows as a share of rows/s at {small:,} (1.00 = flat):")
        for (where, variant), by_rows in figures.items():
            print(f"  {where:>8} {variant:>11}: {by_rows[big] / by_rows[small]:.2f}")


if __name__ == "__main__":
    main()
