"""Benchmark: the core SCD2 merge of a file into a table of the same size, rows/s as both grow.

    python benchmarks/sqlite_merge.py                            # 10k, 100k, 1M rows; SQLite, Postgres
    python benchmarks/sqlite_merge.py --sizes 10000,100000 --databases sqlite

For each size N, in a new database (a temporary SQLite file, or a scratch Postgres database on
``HEALTHMON_BENCH_POSTGRES_URL``, default ``postgresql+psycopg2://postgres@127.0.0.1:5432/postgres``,
dropped afterwards): a first file of N new patients is landed, loaded, staged and merged into the
empty ``core.dim_patient``; then a second file of N rows: 10% re-send patients of the first file
(half of them unchanged, half with a new address: a new SCD2 version) and 90% are new patients. Each
merge (``etl.core.merge_pending``) is timed on its own; rows/s = N / seconds. A merge that is linear
in the file and independent of the table's size shows flat rows/s across sizes. Raw and staging
times are shown for reference only.
"""

import argparse
import json
import os
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import sqlalchemy as sa

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from healthmon_dagster.etl import core, raw, staging  # noqa: E402
from healthmon_dagster.etl.landing import LocalLandingSource  # noqa: E402
from healthmon_dagster.etl.sample import COLUMNS, write_patients_csv  # noqa: E402
from healthmon_dagster.store.db import create_db_engine  # noqa: E402
from healthmon_dagster.store.migrate import upgrade  # noqa: E402

ADMIN_URL = os.environ.get(
    "HEALTHMON_BENCH_POSTGRES_URL", "postgresql+psycopg2://postgres@127.0.0.1:5432/postgres"
)
ADDRESS = COLUMNS.index("ADDRESS")


def write_second_file(first: Path, new: Path, out: Path) -> None:
    """Row i of the second file: every 10th row re-sends row i of the first file (every 20th
    unchanged, the others with a new address); the rest are the new file's patients. Generated
    lines never need quoting, so splitting on commas is exact."""
    with (
        open(first, encoding="utf-8") as fa,
        open(new, encoding="utf-8") as fb,
        open(out, "w", encoding="utf-8", newline="") as fo,
    ):
        fo.write(fa.readline())
        fb.readline()
        for i, (a, b) in enumerate(zip(fa, fb, strict=True)):
            if i % 20 == 0:
                fo.write(a)
            elif i % 10 == 0:
                fields = a.rstrip("\n").split(",")
                fields[ADDRESS] = f"{i} Moved Street"
                fo.write(",".join(fields) + "\n")
            else:
                fo.write(b)


@contextmanager
def database(kind: str, tmp: Path) -> Iterator[sa.Engine]:
    if kind == "sqlite":
        engine = create_db_engine(f"sqlite:///{tmp / 'bench.db'}")
        try:
            upgrade(engine)
            yield engine
        finally:
            engine.dispose()
        return
    admin = sa.create_engine(ADMIN_URL, isolation_level="AUTOCOMMIT")
    name = f"healthmon_merge_{uuid.uuid4().hex[:8]}"
    with admin.connect() as conn:
        conn.execute(sa.text(f'CREATE DATABASE "{name}"'))
    url = sa.engine.make_url(ADMIN_URL).set(database=name).render_as_string(hide_password=False)
    engine = create_db_engine(url)
    try:
        upgrade(engine)
        yield engine
    finally:
        engine.dispose()
        with admin.connect() as conn:
            conn.execute(sa.text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()


def run_one(kind: str, rows: int) -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix="healthmon-merge-") as tmp_name:
        tmp = Path(tmp_name)
        landing = tmp / "landing"
        landing.mkdir()
        write_patients_csv(landing / "patients_0001.csv", rows, seed=7)
        write_patients_csv(tmp / "new.csv", rows, seed=8)
        write_second_file(
            landing / "patients_0001.csv", tmp / "new.csv", landing / "patients_0002.csv"
        )
        source = LocalLandingSource(landing)
        out: dict[str, Any] = {"database": kind, "rows": rows}
        with database(kind, tmp) as engine:
            for label, key in (("first", "patients_0001.csv"), ("second", "patients_0002.csv")):
                t = time.perf_counter()
                loaded = raw.load_file(engine, source, key)
                t_raw = time.perf_counter() - t
                t = time.perf_counter()
                (staged,) = staging.stage_pending(engine)
                t_stg = time.perf_counter() - t
                t = time.perf_counter()
                (merged,) = core.merge_pending(engine)
                t_merge = time.perf_counter() - t
                if loaded.status != "loaded" or staged.rows_rejected or merged.rows_in != rows:
                    raise SystemExit(f"{kind} {rows:,} {key}: the file did not load cleanly")
                out[label] = {
                    "raw_s": t_raw,
                    "stg_s": t_stg,
                    "merge_s": t_merge,
                    "merge_rows_per_s": rows / t_merge,
                    "new": merged.inserted_new,
                    "changed": merged.versions_changed,
                    "unchanged": merged.unchanged,
                }
            with engine.connect() as conn:
                out["core_rows"] = conn.execute(
                    sa.text("SELECT count(*) FROM core.dim_patient")
                ).scalar_one()
        return out


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--sizes", default="10000,100000,1000000", help="comma-separated rows")
    parser.add_argument("--databases", default="sqlite,postgres", help="sqlite, postgres or both")
    parser.add_argument("--json", metavar="PATH", help="also write the figures as JSON here")
    args = parser.parse_args()
    sizes = [int(s) for s in args.sizes.split(",")]
    kinds = [k.strip() for k in args.databases.split(",")]
    if set(kinds) - {"sqlite", "postgres"}:
        raise SystemExit(f"--databases takes sqlite and/or postgres, not {args.databases}")
    results = []
    for kind in kinds:
        for rows in sizes:
            res = run_one(kind, rows)
            results.append(res)
            s = res["second"]
            print(
                f"  {kind} {rows:,}: second merge {s['merge_s']:.2f} s "
                f"({s['merge_rows_per_s']:,.0f} rows/s)",
                file=sys.stderr,
                flush=True,
            )
    print(
        "\nCore SCD2 merge (etl.core.merge_pending) of a file of N rows: into an empty table "
        "(first), then into the table of N rows it made (second: 10% re-sent, half of them "
        "changed; 90% new)."
    )
    head = (
        f"{'database':<9} {'rows':>10} {'1st merge s':>11} {'rows/s':>9} {'2nd merge s':>11} "
        f"{'rows/s':>9} {'new/changed/unchanged':>22} {'core rows':>10} {'2nd raw s':>9} "
        f"{'2nd stg s':>9}"
    )
    print(head)
    print("-" * len(head))
    for r in results:
        a, b = r["first"], r["second"]
        mix = f"{b['new']}/{b['changed']}/{b['unchanged']}"
        print(
            f"{r['database']:<9} {r['rows']:>10,} {a['merge_s']:>11.2f} "
            f"{a['merge_rows_per_s']:>9,.0f} {b['merge_s']:>11.2f} {b['merge_rows_per_s']:>9,.0f} "
            f"{mix:>22} {r['core_rows']:>10,} {b['raw_s']:>9.2f} {b['stg_s']:>9.2f}"
        )
    for kind in kinds:
        rates = [r["second"]["merge_rows_per_s"] for r in results if r["database"] == kind]
        if len(rates) > 1:
            print(
                f"{kind}: second-merge rows/s, largest size / smallest: {rates[-1] / rates[0]:.2f}"
                " (1.0 = linear; a quadratic merge falls by the size ratio)"
            )
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
