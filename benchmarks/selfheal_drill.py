"""Self-healing drill: time to recover after a transient warehouse outage, and zero re-runs for data
errors.

    python benchmarks/selfheal_drill.py                        # Postgres behind a TCP proxy
    python benchmarks/selfheal_drill.py --backoff-seconds 20 --outage-seconds 45 --json out.json

Setup: a scratch Postgres database (``HEALTHMON_BENCH_POSTGRES_URL``, default the local server) that
the warehouse reaches through a TCP proxy on loopback; the health store (incidents, self-heal rows)
in the same database directly, so it stays up; a Dagster instance on a temporary DAGSTER_HOME.
The self-healing sensor is evaluated every ``--tick-seconds`` (its production interval is 30 s) and
each run it requests is executed in process at once, as a daemon with a free run slot would.

Drill 1 (transient): the proxy stops; a manual ETL run of a landed file fails (the step retries
inside the run first); the sensor opens/joins the incident and re-runs; the re-runs fail while the
outage lasts (``--outage-seconds``), each followed by the backoff (``--backoff-seconds``, doubling
up to 4x); the proxy starts again. Reported: the time from the warehouse's return to the re-run
being requested, to the re-run having succeeded, and to the incident in monitoring, against the
backoff step in effect at the return; re-runs used; the incident's timeline kinds.

Drill 2 (data errors): ``--bad-files`` files that break the contract, each loaded by a manual run
that fails; the sensor ticks ``--bad-ticks`` times: re-runs requested (expected 0) and the
decisions recorded with their rule.
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

import dagster as dg
import sqlalchemy as sa
import yaml

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from healthmon_dagster.defs.pipeline.jobs import raw_file_run_config  # noqa: E402
from healthmon_dagster.etl.landing import LocalLandingSource  # noqa: E402
from healthmon_dagster.etl.sample import generate_sample, write_to  # noqa: E402
from healthmon_dagster.store.db import dispose_engines, get_engine  # noqa: E402
from healthmon_dagster.store.tables import (  # noqa: E402
    incident_events,
    incidents,
    self_heal_attempts,
)
from healthmon_dagster_tests.defs.pipeline.fixtures import TcpProxy  # noqa: E402

ADMIN_URL = os.environ.get(
    "HEALTHMON_BENCH_POSTGRES_URL", "postgresql+psycopg2://postgres@127.0.0.1:5432/postgres"
)
ROOT = Path(__file__).resolve().parents[1]


@contextmanager
def scratch_database() -> Iterator[str]:
    admin = sa.create_engine(ADMIN_URL, isolation_level="AUTOCOMMIT")
    name = f"healthmon_selfheal_{uuid.uuid4().hex[:8]}"
    with admin.connect() as conn:
        conn.execute(sa.text(f'CREATE DATABASE "{name}"'))
    try:
        yield sa.engine.make_url(ADMIN_URL).set(database=name).render_as_string(False)
    finally:
        dispose_engines()
        with admin.connect() as conn:
            conn.execute(sa.text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()


def write_config(folder: Path, backoff: int) -> Path:
    data = yaml.safe_load((ROOT / "healthmon.yaml").read_text())
    data["landing"]["retry"].update(step_retries=1, step_retry_delay_seconds=0.2)
    data["feature_flags"]["self_healing"] = True
    data["self_healing"].update(
        initial_delay_seconds=backoff,
        max_delay_seconds=backoff * 4,
        jitter=0.1,
        quiet_period_minutes=0,
        max_attempts_per_window=20,
        breaker_failures=20,
    )
    path = folder / "healthmon.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


class Driver:
    """The sensor evaluated on a clock, its run requests executed in process."""

    def __init__(self, instance: dg.DagsterInstance) -> None:
        from healthmon_dagster.definitions import build_defs
        from healthmon_dagster.defs.selfheal.sensors import self_healing_sensor

        self.instance = instance
        self.defs = build_defs()
        self.sensor = self_healing_sensor
        self.requested = 0

    def tick(self) -> list[dg.RunRequest]:
        result = self.sensor(
            dg.build_sensor_context(instance=self.instance, resources=self.defs.resources)
        )
        assert isinstance(result, dg.SensorResult)
        requests = list(result.run_requests or [])
        self.requested += len(requests)
        return requests

    def execute(self, request: dg.RunRequest) -> bool:
        return (
            self.job()
            .execute_in_process(
                run_config=request.run_config,
                instance=self.instance,
                tags=request.tags,
                asset_selection=request.asset_selection,
                raise_on_error=False,
            )
            .success
        )

    def job(self) -> dg.JobDefinition:
        return self.defs.resolve_job_def("patients_etl_job")

    def manual_run(self, file_key: str) -> bool:
        return (
            self.job()
            .execute_in_process(
                run_config=raw_file_run_config(file_key),
                instance=self.instance,
                raise_on_error=False,
            )
            .success
        )


def incident_state(url: str) -> tuple[str | None, list[str]]:
    with get_engine(url).connect() as conn:
        status = conn.execute(
            sa.select(incidents.c.status).order_by(incidents.c.incident_id)
        ).scalar()
        kinds = [
            f"{r.kind}: {r.text}" if r.kind.startswith("self_heal") else r.kind
            for r in conn.execute(
                sa.select(incident_events.c.kind, incident_events.c.text).order_by(
                    incident_events.c.event_id
                )
            )
        ]
    return status, kinds


def transient_drill(
    args: argparse.Namespace, url: str, home: Path, proxy: TcpProxy
) -> dict[str, Any]:
    (sample,) = generate_sample(200, files=1)
    write_to(LocalLandingSource(home / "landing"), [sample])
    with dg.instance_for_test(temp_dir=str(home / "dagster")) as instance:
        driver = Driver(instance)
        proxy.stop()
        down_at = time.monotonic()
        assert not driver.manual_run(sample.key)
        out: dict[str, Any] = {"reruns_failed_during_outage": 0}
        back_at: float | None = None
        while True:
            now = time.monotonic()
            if back_at is None and now - down_at >= args.outage_seconds:
                proxy.start()
                back_at = now
            for request in driver.tick():
                if back_at is not None and "requested_after_return_s" not in out:
                    out["requested_after_return_s"] = round(time.monotonic() - back_at, 2)
                    # The backoff step whose end let this re-run go (the last failed re-run's).
                    out["backoff_step_waited_s"] = backoff_in_effect(url)
                if driver.execute(request) and back_at is not None:
                    out["rerun_succeeded_after_return_s"] = round(time.monotonic() - back_at, 2)
                elif back_at is None:
                    out["reruns_failed_during_outage"] += 1
            if back_at is not None and incident_state(url)[0] in ("monitoring", "resolved"):
                # The tick that saw the re-run and its checks pass: the time to recover.
                out["monitoring_after_return_s"] = round(time.monotonic() - back_at, 2)
                break
            if back_at is not None and time.monotonic() - back_at > 10 * args.backoff_seconds + 120:
                out["error"] = "not healed within 10 backoff steps of the return"
                break
            time.sleep(args.tick_seconds)
        driver.tick()  # quiet period 0: resolved
        status, kinds = incident_state(url)
        out |= {"reruns_requested": driver.requested, "incident_status": status, "timeline": kinds}
    return out


def backoff_in_effect(url: str) -> float | None:
    """The wait between the last failed re-run's end and its retry_at (the step in effect)."""
    c = self_heal_attempts.c
    with get_engine(url).connect() as conn:
        row = conn.execute(
            sa.select(c.finished_at, c.retry_at)
            .where(c.status == "failed", c.retry_at.is_not(None))
            .order_by(c.attempt.desc())
            .limit(1)
        ).first()
    return None if row is None else round((row.retry_at - row.finished_at).total_seconds(), 2)


def data_error_drill(args: argparse.Namespace, url: str, home: Path) -> dict[str, Any]:
    # Distinct content per file (one seed each): the loader skips a file whose content it has seen.
    bad = [
        generate_sample(50, defect="missing_column", prefix=f"patients_bad{i}", seed=100 + i)[0]
        for i in range(args.bad_files)
    ]
    write_to(LocalLandingSource(home / "landing"), bad)
    (home / "dagster-bad").mkdir()
    with dg.instance_for_test(temp_dir=str(home / "dagster-bad")) as instance:
        driver = Driver(instance)
        failed_runs = sum(not driver.manual_run(f.key) for f in bad)
        for _ in range(args.bad_ticks):
            for request in driver.tick():
                driver.execute(request)
    c = self_heal_attempts.c
    with get_engine(url).connect() as conn:
        rules: dict[str, int] = dict(
            conn.execute(
                sa.select(c.rule, sa.func.count())
                .where(c.status == "skipped", c.source_run_id.is_not(None))
                .group_by(c.rule)
            ).all()
        )
    return {
        "bad_files": len(bad),
        "failed_runs": failed_runs,
        "reruns_requested": driver.requested,
        "skipped_by_rule": rules,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--backoff-seconds", type=int, default=10)
    parser.add_argument("--outage-seconds", type=float, default=25)
    parser.add_argument("--tick-seconds", type=float, default=1.0)
    parser.add_argument("--bad-files", type=int, default=3)
    parser.add_argument("--bad-ticks", type=int, default=3)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp, scratch_database() as url:
        home = Path(tmp)
        proxy = TcpProxy(
            (sa.engine.make_url(url).host or "127.0.0.1", sa.engine.make_url(url).port or 5432)
        )
        proxy.start()
        os.environ |= {
            "HEALTHMON_HOME": str(home),
            "HEALTHMON_DATABASE_URL": proxy.url_for(url),
            "HEALTHMON_HEALTH_DATABASE_URL": url,
            "HEALTHMON_CONFIG": str(write_config(home, args.backoff_seconds)),
            "DAGSTER_HOME": str(home / "dagster"),
        }
        (home / "dagster").mkdir()
        started = time.monotonic()
        figures: dict[str, Any] = {
            "load_average": os.getloadavg(),
            "transient": transient_drill(args, url, home, proxy),
        }
        print(json.dumps(figures["transient"], default=str), file=sys.stderr)
        with get_engine(url).begin() as conn:  # drill 2 on a clean self-heal record
            conn.execute(self_heal_attempts.delete())
        figures["data_errors"] = data_error_drill(args, url, home)
        figures["load_average_after"] = os.getloadavg()
        figures["wall_s"] = round(time.monotonic() - started, 1)
        proxy.stop()
    print(json.dumps(figures, indent=2, default=str))
    if args.json:
        args.json.write_text(json.dumps(figures, indent=2, default=str))


if __name__ == "__main__":
    main()
