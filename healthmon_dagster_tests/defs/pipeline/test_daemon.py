"""A real ``dagster-daemon`` on a temporary DAGSTER_HOME, SQLite and Postgres, failing the way
production fails: the warehouse goes away (a TCP proxy in front of Postgres stopped; the SQLite
file unopenable) for longer than the step retries while one file's run starts, and another file's
run worker is killed with SIGKILL mid-load, then its run_retries re-execution too. Each file is
loaded exactly once afterwards, by its second attempt."""

import sqlite3
import time
from collections.abc import Callable
from functools import partial
from pathlib import Path

import dagster as dg
import sqlalchemy as sa
import yaml
from sqlalchemy.engine import make_url

from healthmon_dagster.defs.pipeline.sensors import ATTEMPT_TAG
from healthmon_dagster.etl.attempts import run_key
from healthmon_dagster.etl.landing import LocalLandingSource
from healthmon_dagster.etl.sample import generate_sample, write_to
from healthmon_dagster.store.db import get_engine
from healthmon_dagster.store.tables import file_attempts, files, raw_patients
from healthmon_dagster_tests.defs.fixtures import PROJECT_CONFIG
from healthmon_dagster_tests.defs.pipeline.fixtures import (
    QUICK_DAEMON_ENV,
    QUICK_INSTANCE,
    SqliteOutage,
    TcpProxy,
    kill_worker,
    running_daemon,
    runs_with_tag,
    step_events,
    wait_for,
    worker_pid,
    write_instance,
)

RAW_STEP = "raw__patients"
ROWS_OUTAGE = 300
ROWS_KILLED = 50_000  # a load that takes long enough to be killed in the middle
TIMEOUT = 240  # seconds for any one stage; the sensors tick every 5 s (write_config)


def write_config(folder: Path) -> Path:
    """healthmon.yaml with short retries (step retries of 0.5 s, 1.5 s; attempts 1 s apart), the
    landing and run-failure sensors every 5 s (the daemon's loop) instead of 30 s, and no health
    checks (their runs would only slow the test down)."""
    data = yaml.safe_load(PROJECT_CONFIG.read_text())
    data["landing"]["retry"] = {
        "step_retries": 2,
        "step_retry_delay_seconds": 0.5,
        "initial_delay_seconds": 1,
        "max_delay_seconds": 1,
        "max_attempts": 5,
    }
    data["sensor_intervals"] = {"landing_files_sensor": 5, "incident_run_failure_sensor": 5}
    data["health_checks"] = []
    path = folder / "healthmon.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


def loading(db_url: str) -> Callable[[], bool]:
    """True while a raw load is writing: Postgres runs its COPY into raw.patients; on SQLite a
    writer holds the raw database's write lock (only the raw loader writes there)."""
    if db_url.startswith("sqlite"):
        main = Path(str(make_url(db_url).database))
        raw_db = main.with_name(f"{main.stem}.raw{main.suffix}")

        def locked() -> bool:
            probe = sqlite3.connect(raw_db, timeout=0, isolation_level=None)
            try:
                probe.execute("BEGIN IMMEDIATE")
                probe.execute("ROLLBACK")
                return False
            except sqlite3.OperationalError as exc:
                return "locked" in str(exc)
            finally:
                probe.close()

        def sqlite_writing() -> bool:
            # Held across two looks 0.1 s apart: a load, not one of the short audit writes.
            if not locked():
                return False
            time.sleep(0.1)
            return locked()

        return sqlite_writing
    engine = get_engine(db_url)

    def copying() -> bool:
        with engine.connect() as conn:
            return bool(
                conn.execute(
                    sa.text(
                        "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() "
                        "AND state = 'active' AND query LIKE 'COPY raw.patients%'"
                    )
                ).scalar()
            )

    return copying


def loaded(db_url: str, key: str) -> tuple[int, int, int]:
    """(etl.files rows of ``key``, loaded ones, raw rows) in the warehouse."""
    with get_engine(db_url).connect() as conn:
        rows = conn.execute(sa.select(files.c.status).where(files.c.file_key == key)).all()
        raw = conn.execute(
            sa.select(sa.func.count()).where(raw_patients.c._file == key)
        ).scalar_one()
    return len(rows), sum(r.status == "loaded" for r in rows), raw


def test_the_daemon_heals_an_outage_and_killed_workers_and_loads_each_file_once(
    db_url: str, tmp_path: Path
) -> None:
    home, dagster_home, log = tmp_path / "home", tmp_path / "dagster", tmp_path / "daemon.log"
    write_instance(dagster_home, extra=QUICK_INSTANCE)
    landing = LocalLandingSource(home / "landing")
    (outage_file,) = generate_sample(ROWS_OUTAGE, files=1, prefix="patients_outage")
    (killed_file,) = generate_sample(ROWS_KILLED, files=1, prefix="patients_killed", seed=7)
    write_to(landing, [outage_file])
    write_to(landing, [killed_file])
    version = {f.key: f.fingerprint for f in landing.list_files()}
    attempt_of = {f.key: run_key(f.key, version[f.key], 1) for f in (outage_file, killed_file)}
    get_engine(db_url)  # the warehouse exists and is migrated before the daemon starts

    outage: TcpProxy | SqliteOutage
    warehouse_url = db_url
    if db_url.startswith("postgresql"):
        target = make_url(db_url)
        proxy = TcpProxy((target.host or "127.0.0.1", target.port or 5432))
        proxy.start()
        outage, warehouse_url = proxy, proxy.url_for(db_url)
    else:
        outage = SqliteOutage(db_url)
    env = {
        **QUICK_DAEMON_ENV,
        "DAGSTER_HOME": str(dagster_home),
        "HEALTHMON_HOME": str(home),
        "HEALTHMON_DATABASE_URL": warehouse_url,
        "HEALTHMON_CONFIG": str(write_config(tmp_path)),
    }
    try:
        with (
            # The instance's storage is created here, before the daemon's processes open it.
            dg.DagsterInstance.from_config(str(dagster_home)) as instance,
            running_daemon(env, log, stop_grace_seconds=0) as daemon,
        ):

            def runs(key: str) -> list[dg.RunRecord]:
                return runs_with_tag(instance, ATTEMPT_TAG, attempt_of[key])

            # 1. The sensor requested attempt 1 of both files; the warehouse goes away before the
            #    first run starts, and stays away until that run has failed.
            wait_for("the first tick's runs", lambda: runs(outage_file.key), TIMEOUT, log=log)
            outage.stop()
            (failed,) = wait_for(
                "attempt 1 of the outage file to fail",
                lambda: [
                    r
                    for r in runs(outage_file.key)
                    if r.dagster_run.status == dg.DagsterRunStatus.FAILURE
                ],
                TIMEOUT,
                log=log,
            )
            outage.start()
            retried_inside = [
                e
                for e in instance.all_logs(
                    failed.dagster_run.run_id, of_type=dg.DagsterEventType.STEP_UP_FOR_RETRY
                )
            ]
            assert len(retried_inside) == 2  # the outage outlasted both step retries

            # 2. The other file's run worker is killed mid-load; run_retries re-executes it once,
            #    and that worker is killed mid-load too.
            writing = loading(db_url)

            def in_raw_step(n: int) -> tuple[str, int] | None:
                """Run ``n`` of the killed file's attempt 1 and its worker's pid, once the run is
                in its raw step."""
                attempt_runs = runs(killed_file.key)
                if len(attempt_runs) < n:
                    return None
                run_id = attempt_runs[n - 1].dagster_run.run_id
                pid = worker_pid(instance, run_id)
                started = "STEP_START" in step_events(instance, run_id, RAW_STEP)
                return (run_id, pid) if started and pid is not None else None

            def has_failed(run_id: str) -> bool:
                run = instance.get_run_by_id(run_id)
                return run is not None and run.status == dg.DagsterRunStatus.FAILURE

            for n in (1, 2):
                run_id, pid = wait_for(
                    f"run {n} of the killed file's attempt 1 in its raw step",
                    partial(in_raw_step, n),
                    TIMEOUT,
                    interval=0.05,
                    log=log,
                )
                # The pid is known before the write is seen, so the kill follows it at once.
                wait_for(f"run {n} writing raw rows", writing, 60, interval=0.01, log=log)
                kill_worker(daemon, pid)
                wait_for(f"run {n} marked failed", partial(has_failed, run_id), TIMEOUT, log=log)
                assert "STEP_SUCCESS" not in step_events(instance, run_id, RAW_STEP)
                assert loaded(db_url, killed_file.key) == (0, 0, 0)  # nothing half-loaded

            # 3. The sensor requests attempt 2 of each file, with backoff; both load.
            wait_for(
                "both files loaded",
                lambda: loaded(db_url, outage_file.key)[1] and loaded(db_url, killed_file.key)[1],
                TIMEOUT,
                log=log,
            )
            first_runs = runs(killed_file.key)
    finally:
        if not outage.running:
            outage.start()
        if isinstance(outage, TcpProxy):
            outage.stop()

    assert loaded(db_url, outage_file.key) == (1, 1, ROWS_OUTAGE)
    assert loaded(db_url, killed_file.key) == (1, 1, ROWS_KILLED)
    with get_engine(db_url).connect() as conn:
        distinct = conn.execute(
            sa.select(sa.func.count(sa.distinct(raw_patients.c._row_number))).where(
                raw_patients.c._file == killed_file.key
            )
        ).scalar_one()
        tried = {
            (r.file_key, r.attempt): r
            for r in conn.execute(sa.select(file_attempts).order_by(file_attempts.c.attempt))
        }
    assert distinct == ROWS_KILLED
    # Attempt 1 of each failed, with its class; attempt 2 was requested by the sensor.
    first = tried[(outage_file.key, 1)]
    assert (first.status, first.transient) == ("failed", True)
    assert first.error_class in ("connection_refused", "database_unavailable")
    killed = tried[(killed_file.key, 1)]
    assert (killed.status, killed.error_class, killed.runs) == ("failed", "run_worker_lost", 2)
    assert (outage_file.key, 2) in tried and (killed_file.key, 2) in tried
    # The second run of the killed attempt was Dagster's run_retries re-execution of the first.
    assert first_runs[1].dagster_run.parent_run_id == first_runs[0].dagster_run.run_id
    assert first_runs[1].dagster_run.tags.get("dagster/retry_number") == "1"
