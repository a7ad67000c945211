"""Outage drill: a real dagster-daemon with the sensors and schedules at their default intervals,
files landing while the warehouse is unreachable, run workers killed mid-load; then a thousand
rejected files and one good one.

    python benchmarks/outage_drill.py                      # 20 files over 2 min, 5 min outage, 2 kills
    python benchmarks/outage_drill.py --json drill.json
    python benchmarks/outage_drill.py --files 6 --landing-seconds 30 --outage-seconds 60  # quick

Setup: a scratch Postgres database (created and dropped through ``HEALTHMON_BENCH_POSTGRES_URL``,
default the local server) reached through a TCP proxy on loopback, the project's ``dagster.yaml``
and ``healthmon.yaml`` unchanged (landing sensor every 30 s, health checks on their schedules,
``landing.retry`` defaults), and the health store in its own SQLite file (``--health-store
warehouse`` keeps it in the warehouse), so health checks keep recording while the warehouse is down.

Drill 1 (outage): ``--files`` files land evenly over ``--landing-seconds``. ``--outage-start``
seconds after the sensor requested the first run (so the runs of the first tick meet the outage),
the proxy stops (connections refused, open ones cut) for ``--outage-seconds``. After it is back,
two run workers are killed with SIGKILL while loading (a COPY into raw.patients in progress): the
first run seen loading, then Dagster's run_retries re-execution of that run (so the file's next
attempt has to come from the sensor); ``--kill-any`` kills the first two runs seen loading
instead. Reported: every file loaded exactly once (etl.files rows and raw rows per file against
the rows written), the time from the database's return to the last file loaded, the retries used at
each level (step retries inside runs, run_retries re-executions, the sensor's attempts after the
first, and how many of them the sensor requested as soon as it saw the warehouse answer again),
health-check runs and how many failed (for locks, or at all).

Drill 2 (starvation): ``--rejected`` files the loader rejects (a semicolon header) land and are
loaded (rejected) by the raw loader directly, then one good file lands: the time until it is loaded
through the daemon.
"""

import argparse
import json
import signal
import statistics
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, field
from functools import partial
from pathlib import Path

import dagster as dg
import sqlalchemy as sa

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from drill import ETL_JOB, Site, etl_runs, proxy_for, scratch_database, sensor_ticks  # noqa: E402

from healthmon_dagster.etl import raw  # noqa: E402
from healthmon_dagster.etl.sample import generate_sample  # noqa: E402
from healthmon_dagster.run_tags import FILE_KEY_TAG  # noqa: E402
from healthmon_dagster.store.db import get_engine  # noqa: E402
from healthmon_dagster.store.tables import (  # noqa: E402
    SOURCE_COLUMNS,
    file_attempts,
    files,
    raw_patients,
)
from healthmon_dagster_tests.defs.pipeline.fixtures import (  # noqa: E402
    PROJECT_ROOT,
    kill_worker,
    step_events,
    wait_for,
    worker_pid,
)

LANDING_SENSOR = "landing_files_sensor"
RAW_STEP = "raw__patients"


@dataclass
class FileResult:
    key: str
    rows_written: int
    landed_at: float  # seconds since the drill started
    files_rows: int = 0  # etl.files rows of the key
    loaded_rows: int = 0  # of them, status loaded
    raw_rows: int = 0
    loaded_at: float | None = None
    attempts: int = 0
    attempt_classes: list[str] = field(default_factory=list)
    attempt_reasons: list[str] = field(default_factory=list)  # why each attempt was requested


@dataclass
class DrillReport:
    files: list[FileResult]
    outage_from: float
    outage_to: float
    kills: list[str]
    every_file_loaded_once: bool
    seconds_from_return_to_last_load: float | None
    step_retries: int
    run_retries: int
    sensor_attempts_after_the_first: int
    attempts_when_the_warehouse_answered_again: int
    etl_runs: int
    etl_runs_failed: int
    health_runs: int
    health_runs_failed: int
    health_runs_failed_for_locks: int
    rejected_files: int = 0
    seconds_to_reject_them: float | None = None
    good_file_seconds_to_loaded: float | None = None
    notes: list[str] = field(default_factory=list)


def copying(engine: sa.Engine) -> bool:
    with engine.connect() as conn:
        return bool(
            conn.execute(
                sa.text(
                    "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() "
                    "AND state = 'active' AND query LIKE 'COPY raw.patients%'"
                )
            ).scalar()
        )


def per_file(engine: sa.Engine, key: str) -> tuple[int, int, int, float | None]:
    with engine.connect() as conn:
        rows = conn.execute(
            sa.select(files.c.status, files.c.loaded_at).where(files.c.file_key == key)
        ).all()
        raw_count = conn.execute(
            sa.select(sa.func.count()).where(raw_patients.c._file == key)
        ).scalar_one()
    loaded = [r for r in rows if r.status == "loaded"]
    at = max(r.loaded_at for r in loaded).timestamp() if loaded else None
    return len(rows), len(loaded), raw_count, at


def loaded_keys(engine: sa.Engine) -> set[str]:
    with engine.connect() as conn:
        return set(
            conn.execute(sa.select(files.c.file_key).where(files.c.status == "loaded")).scalars()
        )


def loading_worker(
    instance: dg.DagsterInstance, seen: set[str], parent: str | None
) -> tuple[dg.RunRecord, int] | None:
    """The ETL run in its raw step (one ETL run at a time) and its worker's pid, unless it was
    killed already; with ``parent``, only the re-execution of that run."""
    for record in instance.get_run_records(
        filters=dg.RunsFilter(job_name=ETL_JOB, statuses=[dg.DagsterRunStatus.STARTED])
    ):
        run = record.dagster_run
        if run.run_id in seen or (parent is not None and run.parent_run_id != parent):
            continue
        events = step_events(instance, run.run_id, RAW_STEP)
        pid = worker_pid(instance, run.run_id)
        if "STEP_START" in events and "STEP_SUCCESS" not in events and pid is not None:
            return record, pid
    return None


def failed(instance: dg.DagsterInstance, run_id: str) -> bool:
    run = instance.get_run_by_id(run_id)
    return run is not None and run.status == dg.DagsterRunStatus.FAILURE


def requested(engine: sa.Engine) -> int:
    """Attempts whose outcome the sensor has not recorded yet."""
    with engine.connect() as conn:
        return int(
            conn.execute(
                sa.select(sa.func.count()).where(file_attempts.c.status == "requested")
            ).scalar_one()
        )


def run_counts(instance: dg.DagsterInstance) -> dict[str, int]:
    etl = list(instance.get_run_records(filters=dg.RunsFilter(job_name=ETL_JOB)))
    health = [
        r
        for r in instance.get_run_records()
        if r.dagster_run.job_name.startswith("health_checks_every_")
    ]
    failed_health = [r for r in health if r.dagster_run.status == dg.DagsterRunStatus.FAILURE]
    locked = 0
    for r in failed_health:
        messages = " ".join(
            (e.dagster_event.message or "") if e.dagster_event else e.user_message
            for e in instance.all_logs(r.dagster_run.run_id)
        )
        locked += "locked" in messages.lower()
    step_retries = sum(
        len(instance.all_logs(r.dagster_run.run_id, of_type=dg.DagsterEventType.STEP_UP_FOR_RETRY))
        for r in etl
    )
    return {
        "etl_runs": len(etl),
        "etl_runs_failed": sum(r.dagster_run.status == dg.DagsterRunStatus.FAILURE for r in etl),
        "run_retries": sum("dagster/retry_number" in r.dagster_run.tags for r in etl),
        "step_retries": step_retries,
        "health_runs": len(health),
        "health_runs_failed": len(failed_health),
        "health_runs_failed_for_locks": locked,
    }


def drill(args: argparse.Namespace, workdir: Path, url: str) -> DrillReport:
    site = Site(workdir)
    landing, log = site.landing, site.log
    engine = get_engine(url)  # migrated before the daemon starts
    proxy = proxy_for(url)
    health_url = f"sqlite:///{site.home / 'health.db'}" if args.health_store == "sqlite" else None
    env = site.env(proxy.url_for(url), PROJECT_ROOT / "healthmon.yaml", health_url)
    samples = generate_sample(args.rows, files=args.files, seed=11)
    results = [FileResult(s.key, s.rows, 0.0) for s in samples]
    print(f"daemon log: {log}", flush=True)
    with site.daemon(env) as (instance, daemon):
        # The daemon is up once the landing sensor has ticked (a skip: nothing has landed yet).
        wait_for(
            "the landing sensor's first tick",
            lambda: sensor_ticks(instance, LANDING_SENSOR),
            300,
            1,
            log,
        )
        started = time.time()
        gap = args.landing_seconds / max(args.files - 1, 1)
        outage_from: float | None = None
        landed, returned = 0, None
        while returned is None or landed < len(samples):
            now = time.time()
            if landed < len(samples) and now >= started + landed * gap:
                landing.put(samples[landed].key, samples[landed].data)
                results[landed].landed_at = now - started
                print(f"{now - started:6.1f}s landed {samples[landed].key}", flush=True)
                landed += 1
            if outage_from is None and etl_runs(instance):
                outage_from = now + args.outage_start
                print(f"{now - started:6.1f}s the sensor requested the first run(s)", flush=True)
            if proxy.running and returned is None and outage_from and now >= outage_from:
                proxy.stop()
                print(f"{now - started:6.1f}s warehouse unreachable", flush=True)
            if outage_from and not proxy.running and now >= outage_from + args.outage_seconds:
                proxy.start()
                returned = now
                print(f"{now - started:6.1f}s warehouse back", flush=True)
            time.sleep(0.2)
        assert returned is not None and outage_from is not None
        kills: list[str] = []
        killed: list[str] = []
        keys = {s.key for s in samples}
        deadline = returned + args.timeout
        victim: tuple[dg.RunRecord, int] | None = None
        while time.time() < deadline:
            if len(kills) < args.kills:
                parent = killed[0] if killed and not args.kill_any else None
                victim = victim or loading_worker(instance, set(killed), parent)
                # The pid is known before the COPY is seen, so the kill follows it at once.
                if victim is not None and copying(engine):
                    record, pid = victim
                    kill_worker(daemon, pid)
                    run_id = record.dagster_run.run_id
                    killed.append(run_id)
                    key = record.dagster_run.tags.get(FILE_KEY_TAG, "?")
                    what = "its run_retries re-execution" if parent else "the run"
                    wait_for("the killed run to fail", partial(failed, instance, run_id), 60)
                    mid = key not in loaded_keys(engine)
                    kills.append(
                        f"{key}: {what} ({run_id[:8]}, pid {pid}), "
                        + ("mid-load: nothing committed" if mid else "too late: already committed")
                    )
                    print(f"{time.time() - started:6.1f}s killed {what} loading {key}", flush=True)
                    victim = None
                elif victim is not None and victim[0].dagster_run.run_id not in {
                    r.dagster_run.run_id
                    for r in instance.get_run_records(
                        filters=dg.RunsFilter(
                            job_name=ETL_JOB, statuses=[dg.DagsterRunStatus.STARTED]
                        )
                    )
                }:
                    victim = None  # it finished before a COPY was seen
            if keys <= loaded_keys(engine):
                break
            time.sleep(0.02)
        last_loaded = time.time() if keys <= loaded_keys(engine) else None
        # The sensor records the outcome of the last attempts at its next tick.
        wait_for("the last outcomes", lambda: not requested(engine), 120, 1, log)
        counts = run_counts(instance)
    proxy.stop()

    with engine.connect() as conn:
        tried = conn.execute(
            sa.select(
                file_attempts.c.file_key,
                file_attempts.c.attempt,
                file_attempts.c.error_class,
                file_attempts.c.reason,
            )
        ).all()
    for r in results:
        r.files_rows, r.loaded_rows, r.raw_rows, at = per_file(engine, r.key)
        r.loaded_at = at - started if at is not None else None
        mine = [t for t in tried if t.file_key == r.key]
        r.attempts = max((t.attempt for t in mine), default=0)
        r.attempt_classes = [t.error_class or "-" for t in sorted(mine, key=lambda t: t.attempt)]
        r.attempt_reasons = [t.reason or "-" for t in sorted(mine, key=lambda t: t.attempt)]
    loads = [r.loaded_at for r in results if r.loaded_at is not None]
    return DrillReport(
        files=results,
        outage_from=outage_from - started,
        outage_to=returned - started,
        kills=kills,
        every_file_loaded_once=all(
            (r.files_rows, r.loaded_rows, r.raw_rows) == (1, 1, r.rows_written) for r in results
        ),
        seconds_from_return_to_last_load=(
            max(loads) - (returned - started) if last_loaded is not None and loads else None
        ),
        step_retries=counts["step_retries"],
        run_retries=counts["run_retries"],
        sensor_attempts_after_the_first=sum(max(r.attempts - 1, 0) for r in results),
        attempts_when_the_warehouse_answered_again=sum(
            reason == "warehouse answers again" for r in results for reason in r.attempt_reasons
        ),
        etl_runs=counts["etl_runs"],
        etl_runs_failed=counts["etl_runs_failed"],
        health_runs=counts["health_runs"],
        health_runs_failed=counts["health_runs_failed"],
        health_runs_failed_for_locks=counts["health_runs_failed_for_locks"],
    )


def starvation(args: argparse.Namespace, workdir: Path, url: str, report: DrillReport) -> None:
    """``--rejected`` rejected files in the landing area, then one good file through the daemon."""
    site = Site(workdir, "2")
    landing, log = site.landing, site.log
    engine = get_engine(url)
    header = (";".join(SOURCE_COLUMNS) + "\n").encode()
    for i in range(args.rejected):
        landing.put(f"patients_rejected_{i:04}.csv", header)
    t = time.perf_counter()
    for f in landing.list_files():
        raw.load_file(engine, landing, f.key, fingerprint=f.fingerprint)
    report.rejected_files = args.rejected
    report.seconds_to_reject_them = time.perf_counter() - t
    env = site.env(url, PROJECT_ROOT / "healthmon.yaml", f"sqlite:///{site.home / 'health.db'}")
    (good,) = generate_sample(args.rows, files=1, prefix="patients_good", seed=5)
    with site.daemon(env) as (instance, _):
        # The sensor has looked at the rejected files (and requested nothing) before the good
        # file lands.
        wait_for(
            "a tick over the rejected files",
            lambda: sensor_ticks(instance, LANDING_SENSOR),
            300,
            1,
            log,
        )
        landing.put(good.key, good.data)
        landed = time.time()
        wait_for("the good file loaded", lambda: per_file(engine, good.key)[1], 600, 0.5, log)
        report.good_file_seconds_to_loaded = time.time() - landed
        requested = [
            r.dagster_run.tags.get(FILE_KEY_TAG)
            for r in instance.get_run_records(filters=dg.RunsFilter(job_name=ETL_JOB))
        ]
        if requested != [good.key]:
            report.notes.append(f"starvation drill: runs were requested for {requested}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--files", type=int, default=20)
    parser.add_argument("--rows", type=int, default=10_000, help="rows per file")
    parser.add_argument("--landing-seconds", type=float, default=120)
    parser.add_argument(
        "--outage-start",
        type=float,
        default=0,
        help="seconds after the sensor requested the first run",
    )
    parser.add_argument("--outage-seconds", type=float, default=300)
    parser.add_argument("--kills", type=int, default=2)
    parser.add_argument(
        "--kill-any",
        action="store_true",
        help="kill the first runs seen loading, not a run and then its run_retries re-execution",
    )
    parser.add_argument("--rejected", type=int, default=1000)
    parser.add_argument(
        "--timeout", type=float, default=1800, help="seconds to wait after the outage"
    )
    parser.add_argument("--health-store", choices=("sqlite", "warehouse"), default="sqlite")
    parser.add_argument("--json", type=Path, help="also write the report here")
    args = parser.parse_args()
    # Stopped by a signal (also when started in the background, where SIGINT is ignored), the
    # drill still stops its daemon and drops its scratch database on the way out.
    signal.signal(signal.SIGINT, signal.default_int_handler)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit("outage drill: terminated"))

    with (
        tempfile.TemporaryDirectory(prefix="healthmon-drill-") as tmp,
        scratch_database("healthmon_drill") as url,
    ):
        workdir = Path(tmp)
        report = drill(args, workdir, url)
        if args.rejected:
            starvation(args, workdir, url, report)

    print()
    print(
        f"{'file':<22} {'landed':>7} {'loaded':>8} {'attempts':>8}  etl.files/raw rows  attempt classes"
    )
    for r in report.files:
        loaded = f"{r.loaded_at:7.1f}s" if r.loaded_at is not None else "   never"
        print(
            f"{r.key:<22} {r.landed_at:6.1f}s {loaded} {r.attempts:>8}  "
            f"{r.files_rows}/{r.raw_rows} of {r.rows_written:<7} {','.join(r.attempt_classes)}"
        )
    loads = [r.loaded_at for r in report.files if r.loaded_at is not None]
    print(
        f"\noutage {report.outage_from:.0f}s-{report.outage_to:.0f}s; workers killed: "
        f"{', '.join(report.kills) or 'none'}"
    )
    print(f"every file loaded exactly once: {report.every_file_loaded_once}")
    if report.seconds_from_return_to_last_load is not None:
        print(
            f"database return -> last file loaded: {report.seconds_from_return_to_last_load:.0f} s "
            f"(median load {statistics.median(loads):.0f} s after the start)"
        )
    print(
        f"retries: {report.step_retries} step retries inside runs, {report.run_retries} run_retries "
        f"re-executions, {report.sensor_attempts_after_the_first} sensor attempts after the first "
        f"({report.attempts_when_the_warehouse_answered_again} of them requested because the "
        "warehouse answered again); "
        f"{report.etl_runs} ETL runs, {report.etl_runs_failed} failed"
    )
    print(
        f"health-check runs: {report.health_runs}, failed {report.health_runs_failed}, "
        f"failed for locks {report.health_runs_failed_for_locks}"
    )
    if report.rejected_files:
        print(
            f"{report.rejected_files} rejected files (loader: {report.seconds_to_reject_them:.0f} s) "
            f"+ 1 good: the good file loaded {report.good_file_seconds_to_loaded:.0f} s after it landed"
        )
    for note in report.notes:
        print(f"note: {note}")
    if args.json:
        args.json.write_text(json.dumps(asdict(report), indent=2))


if __name__ == "__main__":
    main()
