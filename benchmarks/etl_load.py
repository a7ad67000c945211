"""Benchmark: landing -> raw -> stg -> core for N generated patient rows; rows/s per layer, peak memory.

    python benchmarks/etl_load.py                     # 1,000,000 rows on Postgres + 100,000 for memory
    python benchmarks/etl_load.py --rows 200000 --database sqlite

Postgres: ``HEALTHMON_BENCH_POSTGRES_URL`` (default ``postgresql+psycopg2://postgres@127.0.0.1:5432/postgres``)
is the admin connection; a scratch database is created and dropped. Each size runs in its own process so
its peak RSS is its own: memory that does not grow with the file size is the point of the comparison.
Targets: >= 100,000 rows/s into raw, the whole chain of 1,000,000 rows under 60 s.
"""

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from pathlib import Path

import psutil
import sqlalchemy as sa

from healthmon_dagster.etl import core, raw, staging
from healthmon_dagster.etl.landing import LocalLandingSource
from healthmon_dagster.etl.sample import write_patients_csv
from healthmon_dagster.store.db import create_db_engine
from healthmon_dagster.store.migrate import upgrade

ADMIN_URL = os.environ.get(
    "HEALTHMON_BENCH_POSTGRES_URL", "postgresql+psycopg2://postgres@127.0.0.1:5432/postgres"
)


class PeakRss:
    """Samples this process's RSS every 20 ms; ``peak`` is the largest seen since ``reset``."""

    def __init__(self) -> None:
        self.proc = psutil.Process()
        self.peak = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.wait(0.02):
            self.peak = max(self.peak, self.proc.memory_info().rss)

    def reset(self) -> None:
        self.peak = self.proc.memory_info().rss

    def stop(self) -> None:
        self._stop.set()


def run_one(rows: int, database: str) -> dict[str, object]:

    tmp = Path(tempfile.mkdtemp(prefix="healthmon-bench-"))
    admin = None
    if database == "postgres":
        admin = sa.create_engine(ADMIN_URL, isolation_level="AUTOCOMMIT")
        name = f"healthmon_bench_{uuid.uuid4().hex[:8]}"
        with admin.connect() as conn:
            conn.execute(sa.text(f'CREATE DATABASE "{name}"'))
        url = sa.engine.make_url(ADMIN_URL).set(database=name).render_as_string(hide_password=False)
    else:
        url = f"sqlite:///{tmp / 'bench.db'}"
    engine = create_db_engine(url)
    upgrade(engine)
    landing = tmp / "landing"
    landing.mkdir()
    t = time.perf_counter()
    write_patients_csv(landing / "patients_bench.csv", rows, seed=7)
    gen_s = time.perf_counter() - t
    size = (landing / "patients_bench.csv").stat().st_size

    rss = PeakRss()
    seconds: dict[str, float] = {}
    out: dict[str, object] = {
        "rows": rows,
        "database": database,
        "file_mb": size / 1e6,
        "generate_s": gen_s,
    }
    try:
        rss.reset()
        t = time.perf_counter()
        loaded = raw.load_file(engine, LocalLandingSource(landing), "patients_bench.csv")
        seconds["raw"], out["raw_peak_rss_mb"] = time.perf_counter() - t, rss.peak / 1e6
        assert loaded.status == "loaded" and loaded.rows == rows, loaded
        rss.reset()
        t = time.perf_counter()
        (staged,) = staging.stage_pending(engine)
        seconds["stg"], out["stg_peak_rss_mb"] = time.perf_counter() - t, rss.peak / 1e6
        out["rejected"] = staged.rows_rejected
        rss.reset()
        t = time.perf_counter()
        (merged,) = core.merge_pending(engine)
        seconds["core"], out["core_peak_rss_mb"] = time.perf_counter() - t, rss.peak / 1e6
        assert merged.inserted_new == rows - staged.rows_rejected, merged
    finally:
        rss.stop()
        engine.dispose()
        if admin is not None:
            with admin.connect() as conn:
                conn.execute(sa.text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
            admin.dispose()
    for layer, s in seconds.items():
        out[f"{layer}_s"], out[f"{layer}_rows_per_s"] = s, rows / s
    out["chain_s"] = sum(seconds.values())
    out["max_rss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1e3
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument(
        "--compare-rows",
        type=int,
        default=100_000,
        help="a smaller run whose peak memory is compared (0 to skip)",
    )
    parser.add_argument("--database", choices=["postgres", "sqlite"], default="postgres")
    parser.add_argument("--one", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.one:
        print(json.dumps(run_one(args.rows, args.database)))
        return
    results = []
    for rows in [r for r in (args.compare_rows, args.rows) if r]:
        proc = subprocess.run(
            [sys.executable, __file__, "--one", "--rows", str(rows), "--database", args.database],
            check=True,
            capture_output=True,
            text=True,
        )
        results.append(json.loads(proc.stdout.strip().splitlines()[-1]))
    print(
        f"{'rows':>9} {'db':>8} {'MB':>6} | {'raw s':>6} {'rows/s':>9} | {'stg s':>6} {'rows/s':>9} |"
        f" {'core s':>6} {'rows/s':>9} | {'chain s':>7} | {'peak RSS MB raw/stg/core':>24}"
    )
    for r in results:
        print(
            f"{r['rows']:>9,} {r['database']:>8} {r['file_mb']:>6.0f} | {r['raw_s']:>6.2f} "
            f"{r['raw_rows_per_s']:>9,.0f} | {r['stg_s']:>6.2f} {r['stg_rows_per_s']:>9,.0f} | "
            f"{r['core_s']:>6.2f} {r['core_rows_per_s']:>9,.0f} | {r['chain_s']:>7.2f} | "
            f"{r['raw_peak_rss_mb']:>7.0f} {r['stg_peak_rss_mb']:>7.0f} {r['core_peak_rss_mb']:>7.0f}"
        )
    big = results[-1]
    print(
        f"\ntargets: raw >= 100,000 rows/s: {big['raw_rows_per_s']:,.0f} "
        f"({'met' if big['raw_rows_per_s'] >= 100_000 else 'MISSED'}); "
        f"chain < 60 s: {big['chain_s']:.1f} s ({'met' if big['chain_s'] < 60 else 'MISSED'})"
    )
    if len(results) == 2:
        small = results[0]
        print(
            f"peak RSS during raw load: {small['raw_peak_rss_mb']:.0f} MB at {small['rows']:,} rows, "
            f"{big['raw_peak_rss_mb']:.0f} MB at {big['rows']:,} rows "
            f"(file {big['file_mb'] / small['file_mb']:.0f}x larger)"
        )


if __name__ == "__main__":
    main()
