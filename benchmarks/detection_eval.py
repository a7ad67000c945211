"""Evaluation: which check detects each defect through the real ETL job, and that clean files raise none.

    python benchmarks/detection_eval.py                          # SQLite, 5,000 rows per file
    python benchmarks/detection_eval.py --database postgres --json out.json
    python benchmarks/detection_eval.py --only null_ids,bom_crlf --rows 10000

Every scenario is a fresh embedded deployment (a new SQLite database, or a scratch Postgres database
created and dropped through ``HEALTHMON_BENCH_POSTGRES_URL``; a new landing folder and Dagster
instance) with the project's ``healthmon.yaml``. ``etl.metrics`` is seeded with 10 days of
raw/patients row counts around ``--rows`` (as the quality tests' ``seed_volume_history`` does), so
the volume anomaly check has history to judge. Then two files land one after the other, each picked
up by the landing sensor and run through ``patients_etl_job`` in process, as ``healthmon demo`` does:
file 1 is a clean generated file, file 2 carries the defect (or is clean, for the clean scenarios).

Row-level defects hit 1 row in 5,000 and 10% of the rows of file 2 (rows at evenly spaced
positions); file-level defects change the whole of file 2. Defects ``etl/sample.py`` generates at a
fixed rate or not at all are built here by editing the generated rows or bytes.

Detected means: a check evaluation of run 2 did not pass (WARN or ERROR severity in Dagster; warn /
failed / error in ``etl.check_results``), which includes a file the loader rejected whole (it fails
the blocking contract check). Rows staging rejected without any check warning are not detections;
they are shown in the ``rejected`` column.

Clean scenarios (generator seeds, and valid-but-tricky files built here) report every check that did
not pass in either run, and the rows staging rejected: all must be zero.
"""

import argparse
import csv
import functools
import io
import json
import logging
import os
import shutil
import statistics
import sys
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from datetime import date, timedelta
from pathlib import Path

import dagster as dg
import sqlalchemy as sa

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from healthmon_dagster.cli.demo_cmd import INSTANCE_YAML  # noqa: E402
from healthmon_dagster.definitions import build_defs  # noqa: E402
from healthmon_dagster.defs.pipeline.sensors import landing_files_sensor  # noqa: E402
from healthmon_dagster.etl import catalog  # noqa: E402
from healthmon_dagster.etl.landing import LocalLandingSource  # noqa: E402
from healthmon_dagster.etl.sample import COLUMNS, generate_sample, write_volume_history  # noqa: E402
from healthmon_dagster.etl.staging import rejection_reasons  # noqa: E402
from healthmon_dagster.store.db import dispose_engines, get_engine  # noqa: E402
from healthmon_dagster.store.tables import check_results, files  # noqa: E402

ADMIN_URL = os.environ.get(
    "HEALTHMON_BENCH_POSTGRES_URL", "postgresql+psycopg2://postgres@127.0.0.1:5432/postgres"
)
PROJECT_CONFIG = Path(__file__).resolve().parents[1] / "healthmon.yaml"
SILENT_LOGS = {"loggers": {"console": {"config": {"log_level": "CRITICAL"}}}}
RATES = (("1/5000", 1 / 5000), ("10%", 0.10))
HISTORY_DAYS = 10

COL = {name: i for i, name in enumerate(COLUMNS)}
NON_ASCII_FIRST = ("Zoë", "Łukasz", "Søren", "Ångström", "Chloé", "Dvořák", "Nguyễn", "李")
NON_ASCII_LAST = ("Müller", "Ødegaard", "García-Peña", "O'Brien", "Šimůnek", "Žižek", "王")


# --- building files ------------------------------------------------------------------------------


def parse(data: bytes) -> tuple[list[str], list[list[str]]]:
    rows = list(csv.reader(io.StringIO(data.decode("utf-8"), newline="")))
    return rows[0], rows[1:]


def render(header: list[str], rows: list[list[str]]) -> bytes:
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(header)
    writer.writerows(rows)
    return buf.getvalue().encode("utf-8")


def positions(n_rows: int, rate: float) -> list[int]:
    """Evenly spaced 0-based row positions: round(n_rows * rate) of them, at least one."""
    count = max(1, round(n_rows * rate))
    step = n_rows // count
    return [i * step + step // 2 for i in range(count)]


def _locale(value: str) -> str:
    return f"{float(value):,.2f}".translate(str.maketrans(",.", ".,")) if value else value


def _set(column: str, value: str) -> Callable[[list[str], int], None]:
    def apply(row: list[str], hit: int) -> None:
        row[COL[column]] = value

    return apply


def _future_birth(row: list[str], hit: int) -> None:
    row[COL["BIRTHDATE"]] = date(2090 + hit % 10, 1 + hit % 12, 1 + hit % 28).isoformat()
    row[COL["DEATHDATE"]] = ""


def _death_before_birth(row: list[str], hit: int) -> None:
    birth = date.fromisoformat(row[COL["BIRTHDATE"]])
    row[COL["DEATHDATE"]] = (birth - timedelta(days=1 + (hit * 97) % 3650)).isoformat()


def _out_of_range(row: list[str], hit: int) -> None:
    row[COL["LAT"]], row[COL["LON"]] = "95.0", "-200.0"


def _unknown_gender(row: list[str], hit: int) -> None:
    row[COL["GENDER"]] = "UX"[hit % 2]


def _zip_stripped(row: list[str], hit: int) -> None:
    row[COL["ZIP"]] = row[COL["ZIP"]].lstrip("0")


def _locale_numbers(row: list[str], hit: int) -> None:
    for column in ("HEALTHCARE_EXPENSES", "HEALTHCARE_COVERAGE"):
        row[COL[column]] = _locale(row[COL[column]])


# Row-level defects: a change to one parsed row (``hit`` numbers the changed rows).
ROW_EDITS: dict[str, Callable[[list[str], int], None]] = {
    "null_ids": _set("Id", ""),
    "missing_birthdate": _set("BIRTHDATE", ""),
    "unknown_gender": _unknown_gender,
    "future_birthdate": _future_birth,
    "death_before_birth": _death_before_birth,
    "out_of_range_coordinates": _out_of_range,
    "zip_leading_zeros_stripped": _zip_stripped,
    "locale_numbers": _locale_numbers,
}


def row_defect(first: bytes, second: bytes, defect: str, rate: float) -> bytes:
    """``second`` with ``defect`` in ``positions(rows, rate)`` of its rows."""
    header, rows = parse(second)
    hits = positions(len(rows), rate)
    if defect in ROW_EDITS:
        for hit, pos in enumerate(hits):
            ROW_EDITS[defect](rows[pos], hit)
    elif defect == "duplicate_ids":  # the Id of the row before
        for pos in hits:
            rows[pos][COL["Id"]] = rows[pos - 1][COL["Id"]]
    elif defect == "identity_change":  # another person under an Id file 1 sent and file 2 does not
        _, earlier = parse(first)
        in_file = {r[COL["Id"]] for r in rows}
        reusable = [r for r in earlier if r[COL["Id"]] not in in_file]
        for pos, old in zip(hits, reusable, strict=False):
            row = rows[pos]
            row[COL["Id"]] = old[COL["Id"]]
            if row[COL["BIRTHDATE"]] == old[COL["BIRTHDATE"]]:
                row[COL["BIRTHDATE"]] = (
                    date.fromisoformat(row[COL["BIRTHDATE"]]) - timedelta(days=1)
                ).isoformat()
            if row[COL["SSN"]] == old[COL["SSN"]]:
                row[COL["SSN"]] = row[COL["SSN"]][:-1] + str((int(row[COL["SSN"]][-1]) + 1) % 10)
    elif defect in ("non_utf8", "nul_byte"):
        return _byte_defect(header, rows, hits, defect)
    else:
        raise ValueError(defect)
    return render(header, rows)


def _byte_defect(header: list[str], rows: list[list[str]], hits: list[int], defect: str) -> bytes:
    """Rows written one by one: a latin-1 accented first name (invalid UTF-8), or a NUL byte."""
    out = [render(header, [])]
    hit_set = set(hits)
    for i, row in enumerate(rows):
        line = render(header, [row]).split(b"\n", 1)[1]
        if i in hit_set:
            if defect == "non_utf8":
                row = list(row)
                row[COL["FIRST"]] = "Renée"
                text = render(header, [row]).decode("utf-8").split("\n", 1)[1]
                line = text.encode("latin-1", errors="replace")
            else:
                line = line[:3] + b"\x00" + line[3:]
        out.append(line)
    return b"".join(out)


def renamed_column(data: bytes) -> bytes:
    header, rest = data.split(b"\n", 1)
    return header.replace(b"HEALTHCARE_COVERAGE", b"COVERAGE_USD") + b"\n" + rest


# --- clean but tricky files ----------------------------------------------------------------------


def tricky_addresses(first: bytes, second: bytes) -> bytes:
    """Every 5th address quoted with a comma, every 7th with an embedded newline."""
    header, rows = parse(second)
    for i, row in enumerate(rows):
        if i % 5 == 0:
            row[COL["ADDRESS"]] += ", Building B"
        if i % 7 == 0:
            row[COL["ADDRESS"]] += "\nc/o Reception"
    return render(header, rows)


def non_ascii_names(first: bytes, second: bytes) -> bytes:
    """Every 3rd row with a non-ASCII first and last name (UTF-8, valid)."""
    header, rows = parse(second)
    for i, row in enumerate(rows):
        if i % 3 == 0:
            row[COL["FIRST"]] = NON_ASCII_FIRST[i % len(NON_ASCII_FIRST)]
            row[COL["LAST"]] = NON_ASCII_LAST[i % len(NON_ASCII_LAST)]
    return render(header, rows)


def scd2_updates(first: bytes, second: bytes) -> bytes:
    """File 2 re-sends 40% of file 1's patients, each with a legitimate change (moved, marital
    status, a death date after the birth date), plus new patients from the generator's file 2."""
    _, earlier = parse(first)
    header, rows = parse(second)
    resent = earlier[: len(earlier) * 2 // 5]
    changed = []
    for i, old in enumerate(resent):
        row = list(old)
        kind = i % 3
        if kind == 0:
            row[COL["ADDRESS"]] = f"{100 + i} Updated Way"
            row[COL["LAT"]] = f"{42.0 + (i % 50) / 100:.6f}"
        elif kind == 1 and row[COL["MARITAL"]]:
            row[COL["MARITAL"]] = "S" if row[COL["MARITAL"]] == "M" else "M"
        elif not row[COL["DEATHDATE"]] and row[COL["BIRTHDATE"]] < "2024-12-01":
            birth = date.fromisoformat(row[COL["BIRTHDATE"]])
            row[COL["DEATHDATE"]] = (birth + (date(2024, 12, 1) - birth) / 2).isoformat()
        else:
            row[COL["ADDRESS"]] = f"{100 + i} Moved Court"
        changed.append(row)
    sent = {r[COL["Id"]] for r in changed}
    fresh = [r for r in rows if r[COL["Id"]] not in sent][: len(rows) - len(changed)]
    return render(header, changed + fresh)


TRICKY: dict[str, Callable[[bytes, bytes], bytes]] = {
    "addresses_quoted_comma_newline": tricky_addresses,
    "non_ascii_names": non_ascii_names,
    "scd2_updates_40pct": scd2_updates,
}

# --- scenarios -----------------------------------------------------------------------------------

# Defect -> class; file-level ones come from the generator (or a byte edit) whole.
ROW_DEFECTS: dict[str, str] = {
    "non_utf8": "encoding",
    "nul_byte": "encoding",
    "null_ids": "completeness",
    "missing_birthdate": "completeness",
    "unknown_gender": "validity",
    "future_birthdate": "validity",
    "death_before_birth": "validity",
    "out_of_range_coordinates": "validity",
    "zip_leading_zeros_stripped": "validity",
    "locale_numbers": "validity",
    "duplicate_ids": "uniqueness",
    "identity_change": "uniqueness",
}
FILE_DEFECTS: dict[str, str] = {
    "missing_column": "contract",
    "renamed_column": "contract",
    "semicolon_delimiter": "contract",
    "truncated_last_line": "structure",
    "bom_crlf": "structure",
    "extra_column": "structure",
    "header_whitespace": "structure",
    "header_case": "structure",
    "columns_reordered": "structure",
    "blank_lines": "structure",
    "volume_drop": "volume",
    "empty_file": "volume",
}


@dataclass
class Scenario:
    name: str
    kind: str  # defect | clean
    klass: str
    rate: str  # "1/5000", "10%", "file", "-"
    seed: int
    build: Callable[[int, int], tuple[bytes, bytes]]  # (rows, seed) -> (file 1, file 2)


def _generated(
    defect: str | None, country: str = "US", newer_columns: bool = False
) -> Callable[[int, int], tuple[bytes, bytes]]:
    def build(rows: int, seed: int) -> tuple[bytes, bytes]:
        first, second = generate_sample(
            rows, files=2, seed=seed, defect=defect, country=country, newer_columns=newer_columns
        )
        return first.data, second.data

    return build


def _edited(edit: Callable[[bytes, bytes], bytes]) -> Callable[[int, int], tuple[bytes, bytes]]:
    def build(rows: int, seed: int) -> tuple[bytes, bytes]:
        first, second = generate_sample(rows, files=2, seed=seed)
        return first.data, edit(first.data, second.data)

    return build


def _row_defect_edit(first: bytes, second: bytes, *, defect: str, rate: float) -> bytes:
    return row_defect(first, second, defect, rate)


def scenarios(seeds: int) -> list[Scenario]:
    out = []
    for defect, klass in ROW_DEFECTS.items():
        for label, rate in RATES:
            out.append(
                Scenario(
                    defect,
                    "defect",
                    klass,
                    label,
                    42,
                    _edited(functools.partial(_row_defect_edit, defect=defect, rate=rate)),
                )
            )
    for defect, klass in FILE_DEFECTS.items():
        build = _generated(defect)
        if defect == "renamed_column":  # not in the generator: its header edited here
            build = _edited(lambda a, b: renamed_column(b))
        out.append(Scenario(defect, "defect", klass, "file", 42, build))
    for seed in range(1, seeds + 1):
        out.append(Scenario("generator", "clean", "clean", "-", seed, _generated(None)))
    for name, fn in TRICKY.items():
        out.append(Scenario(name, "clean", "clean", "-", 42, _edited(fn)))
    # Synthea 3.x's 28 columns in its own order (MIDDLE after FIRST, FIPS after COUNTY, INCOME
    # last), and exports of its international configurations as real ones are spelled (Canadian
    # forward sortation areas alone, German states in another case or without accents).
    synthea_3 = _generated(None, newer_columns=True)
    out.append(Scenario("synthea_3_columns", "clean", "clean", "-", 42, synthea_3))
    for country in ("DE", "BR", "CA"):
        export = _generated(None, country)
        out.append(Scenario(f"export_{country.lower()}", "clean", "clean", "-", 42, export))
    return out


# --- running -------------------------------------------------------------------------------------


@dataclass
class RunOutcome:
    file_key: str
    success: bool
    file_status: str
    rows_raw: int
    rejected_rows: int
    reasons: dict[str, int]
    # check name -> WARN / ERROR, from the Dagster check evaluations that did not pass
    dagster_not_passed: dict[str, str]
    # check name -> warn / failed / error / insufficient_history, from etl.check_results
    stored_not_passed: dict[str, str]
    seconds: float
    closed_versions: int  # core.dim_patient rows no longer current after the run: SCD2 history


@dataclass
class Result:
    scenario: str
    kind: str
    klass: str
    rate: str
    seed: int
    runs: list[RunOutcome] = field(default_factory=list)

    @property
    def last(self) -> RunOutcome:
        return self.runs[-1]


@contextmanager
def deployment(database: str, tmp: Path) -> Iterator[str]:
    """A fresh warehouse URL with HEALTHMON_HOME / DAGSTER_HOME pointing into ``tmp``."""
    os.environ["HEALTHMON_HOME"] = str(tmp / "home")
    os.environ["DAGSTER_HOME"] = str(tmp / "dagster")
    os.environ["HEALTHMON_CONFIG"] = str(PROJECT_CONFIG)
    for var in ("HEALTHMON_HEALTH_DATABASE_URL", "HEALTHMON_S3_BUCKET"):
        os.environ.pop(var, None)
    (tmp / "dagster").mkdir(parents=True)
    # The instance settings `healthmon demo` installs (one ETL run at a time, no telemetry).
    shutil.copyfile(INSTANCE_YAML, tmp / "dagster" / "dagster.yaml")
    if database == "sqlite":
        url = f"sqlite:///{tmp / 'home' / 'healthmon.db'}"
        (tmp / "home").mkdir(parents=True)
        os.environ["HEALTHMON_DATABASE_URL"] = url
        try:
            yield url
        finally:
            dispose_engines()
        return
    admin = sa.create_engine(ADMIN_URL, isolation_level="AUTOCOMMIT")
    name = f"healthmon_detect_{uuid.uuid4().hex[:8]}"
    with admin.connect() as conn:
        conn.execute(sa.text(f'CREATE DATABASE "{name}"'))
    url = sa.engine.make_url(ADMIN_URL).set(database=name).render_as_string(hide_password=False)
    os.environ["HEALTHMON_DATABASE_URL"] = url
    try:
        yield url
    finally:
        dispose_engines()
        with admin.connect() as conn:
            conn.execute(sa.text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()


def seed_volume_history(url: str, rows: int) -> None:
    """Ten daily raw/patients row counts around ``rows``, as the raw asset records them."""
    write_volume_history(get_engine(url), rows, HISTORY_DAYS)


def run_pending(defs: dg.Definitions, instance: dg.DagsterInstance, url: str) -> list[RunOutcome]:
    """One sensor tick, then one in-process run per requested file, as ``healthmon demo`` does."""
    sensor_result = landing_files_sensor(
        dg.build_sensor_context(instance=instance, resources=defs.resources)
    )
    assert isinstance(sensor_result, dg.SensorResult)
    job = defs.resolve_job_def(catalog.ETL_JOB)
    engine = get_engine(url)
    out = []
    for request in sensor_result.run_requests or []:
        t = time.perf_counter()
        result = job.execute_in_process(
            run_config={**request.run_config, **SILENT_LOGS},
            instance=instance,
            tags=request.tags,
            raise_on_error=False,
        )
        seconds = time.perf_counter() - t
        key = request.tags["healthmon/file_key"]
        dagster_not_passed = {}
        for event in result.all_events:
            if event.event_type == dg.DagsterEventType.ASSET_CHECK_EVALUATION:
                evaluation = event.asset_check_evaluation_data
                if not evaluation.passed:
                    dagster_not_passed[evaluation.check_name] = evaluation.severity.value
        with engine.connect() as conn:
            audit = conn.execute(
                sa.select(files.c.file_id, files.c.status, files.c.rows_raw)
                .where(files.c.file_key == key)
                .order_by(files.c.file_id.desc())
            ).first()
            stored = conn.execute(
                sa.select(check_results.c.check_name, check_results.c.status).where(
                    check_results.c.dagster_run_id == result.run_id,
                    check_results.c.source == "asset_check",
                    check_results.c.status != "passed",
                )
            ).all()
        reasons = rejection_reasons(engine, audit.file_id) if audit is not None else {}
        with engine.connect() as conn:
            rejected = (
                conn.execute(
                    sa.text("SELECT count(*) FROM stg.patients_rejected WHERE _file_id = :f"),
                    {"f": audit.file_id},
                ).scalar_one()
                if audit is not None
                else 0
            )
        with engine.connect() as conn:
            closed = conn.execute(
                sa.text("SELECT count(*) FROM core.dim_patient WHERE NOT is_current")
            ).scalar_one()
        out.append(
            RunOutcome(
                file_key=key,
                success=result.success,
                file_status=audit.status if audit is not None else "-",
                rows_raw=int(audit.rows_raw) if audit is not None else 0,
                rejected_rows=int(rejected),
                reasons=reasons,
                dagster_not_passed=dict(sorted(dagster_not_passed.items())),
                stored_not_passed=dict(sorted((r.check_name, r.status) for r in stored)),
                seconds=seconds,
                closed_versions=int(closed),
            )
        )
    return out


def run_scenario(scenario: Scenario, rows: int, database: str) -> Result:
    first, second = scenario.build(rows, scenario.seed)
    result = Result(scenario.name, scenario.kind, scenario.klass, scenario.rate, scenario.seed)
    with tempfile.TemporaryDirectory(prefix="healthmon-detect-") as tmp_dir:
        tmp = Path(tmp_dir)
        with deployment(database, tmp) as url:
            seed_volume_history(url, rows)
            defs = build_defs()
            landing = LocalLandingSource(tmp / "home" / "landing")
            with dg.DagsterInstance.local_temp(str(tmp / "dagster")) as instance:
                for number, data in enumerate((first, second), start=1):
                    landing.put(f"patients_{number:04d}.csv", data)
                    result.runs.extend(run_pending(defs, instance, url))
    return result


# --- output --------------------------------------------------------------------------------------


def _checks(outcome: RunOutcome) -> str:
    names = dict(outcome.stored_not_passed)
    for name, severity in outcome.dagster_not_passed.items():
        names.setdefault(name, severity.lower())
    return ", ".join(f"{n}={s}" for n, s in names.items()) or "-"


def detected(outcome: RunOutcome) -> bool:
    judged = {s for s in outcome.stored_not_passed.values() if s != "insufficient_history"}
    return bool(outcome.dagster_not_passed) or bool(judged) or outcome.file_status == "rejected"


def print_tables(results: list[Result], args: argparse.Namespace) -> None:
    print(
        f"\nDetection: {args.rows} rows per file, database {args.database}; each scenario is a fresh "
        f"deployment with {HISTORY_DAYS} days of seeded raw/patients volume history (etl.metrics) "
        "so volume_anomaly is judged; file 1 clean, file 2 defective; run 2 shown.\n"
    )
    head = (
        f"{'class':<12} {'defect':<27} {'rate':<7} {'hit':>5} {'det':<4} {'file':<9} "
        f"{'rejected':>8}  checks not passed (run 2)"
    )
    print(head)
    print("-" * len(head))
    for r in results:
        if r.kind != "defect":
            continue
        o = r.last
        hit = len(positions(args.rows, dict(RATES)[r.rate])) if r.rate in dict(RATES) else 0
        print(
            f"{r.klass:<12} {r.scenario:<27} {r.rate:<7} {hit if hit else '-':>5} "
            f"{'YES' if detected(o) else 'no':<4} {o.file_status:<9} {o.rejected_rows:>8}  {_checks(o)}"
        )
    print("\nrejection reasons (run 2, rows per reason code):")
    for r in results:
        if r.kind == "defect" and r.last.reasons:
            reasons = ", ".join(f"{k}={v}" for k, v in r.last.reasons.items())
            print(f"  {r.scenario:<27} {r.rate:<7} {reasons}")

    print(
        "\nClean files (both runs): checks failed / warned / other non-pass and rows rejected: all "
        "must be 0; scd2 = closed (historic) versions in core.dim_patient after the run.\n"
    )
    head = (
        f"{'scenario':<32} {'seed':>4} {'file':<18} {'failed':>6} {'warned':>6} {'other':>5} "
        f"{'rejected':>8} {'scd2':>5}  checks not passed"
    )
    print(head)
    print("-" * len(head))
    for r in results:
        if r.kind != "clean":
            continue
        for o in r.runs:
            statuses = list(o.stored_not_passed.values())
            extra = {n: s for n, s in o.dagster_not_passed.items() if n not in o.stored_not_passed}
            failed = (
                statuses.count("failed")
                + statuses.count("error")
                + sum(s == "ERROR" for s in extra.values())
            )
            warned = statuses.count("warn") + sum(s == "WARN" for s in extra.values())
            other = (
                len(statuses)
                - statuses.count("failed")
                - statuses.count("error")
                - statuses.count("warn")
            )
            print(
                f"{r.scenario:<32} {r.seed:>4} {o.file_key:<18} {failed:>6} {warned:>6} "
                f"{other:>5} {o.rejected_rows:>8} {o.closed_versions:>5}  {_checks(o)}"
            )
    disagree = [
        f"{r.scenario}@{r.rate}/seed {r.seed}/{o.file_key}"
        for r in results
        for o in r.runs
        if set(o.dagster_not_passed)
        != {n for n, s in o.stored_not_passed.items() if s != "insufficient_history"}
    ]
    print(
        "\nDagster check evaluations and etl.check_results name the same checks in every run"
        if not disagree
        else f"\nDagster evaluations and etl.check_results differ in: {', '.join(disagree)}"
    )
    runs = [o.seconds for r in results for o in r.runs]
    print(f"{len(runs)} ETL runs, {statistics.median(runs):.1f} s median per run")
    defects = [r for r in results if r.kind == "defect"]
    missed = [f"{r.scenario}@{r.rate}" for r in defects if not detected(r.last)]
    print(
        f"\n{sum(detected(r.last) for r in defects)}/{len(defects)} defect scenarios detected"
        + (f"; missed: {', '.join(missed)}" if missed else "")
    )


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--rows", type=int, default=5000, help="rows per file (>= 5000 for 1/5000)")
    parser.add_argument("--database", choices=("sqlite", "postgres"), default="sqlite")
    parser.add_argument("--seeds", type=int, default=5, help="generator seeds of clean files")
    parser.add_argument("--only", help="comma-separated scenario names to run")
    parser.add_argument("--json", metavar="PATH", help="also write every outcome as JSON here")
    args = parser.parse_args()
    if args.rows < 5000:
        parser.error("--rows must be at least 5000: the 1/5000 rate needs one defective row")

    logging.disable(logging.INFO)  # the sensor's "requesting 1 run(s)"; runs log to the instance
    todo = scenarios(args.seeds)
    if args.only:
        wanted = set(args.only.split(","))
        todo = [s for s in todo if s.name in wanted]
    results = []
    started = time.perf_counter()
    for i, scenario in enumerate(todo, start=1):
        t = time.perf_counter()
        results.append(run_scenario(scenario, args.rows, args.database))
        print(
            f"[{i}/{len(todo)}] {scenario.name} {scenario.rate} seed {scenario.seed}: "
            f"{time.perf_counter() - t:.1f} s",
            file=sys.stderr,
            flush=True,
        )
    print_tables(results, args)
    print(f"\ntotal {time.perf_counter() - started:.0f} s for {len(todo)} scenarios")
    if args.json:
        Path(args.json).write_text(
            json.dumps(
                {
                    "rows": args.rows,
                    "database": args.database,
                    "results": [asdict(r) for r in results],
                },
                indent=2,
            )
        )


if __name__ == "__main__":
    main()
