"""Incident drill: time to detect and time to notify a transient fault, with a real dagster-daemon
and the sensors at their default intervals (landing 30 s, alert evaluation 30 s, dispatch 15 s,
run-failure 30 s).

    python benchmarks/incident_drill.py
    python benchmarks/incident_drill.py --json drill.json --group-wait 30

Setup: a scratch Postgres warehouse (created and dropped through ``HEALTHMON_BENCH_POSTGRES_URL``,
default the local server) reached through a TCP proxy on loopback; the health store in its own
SQLite file (so the failure hook can record while the warehouse is down); the project's
``dagster.yaml`` and ``healthmon.yaml`` with the webhook channel enabled and pointed at a local
HTTP stand-in (``alerting.builtin_channels: [log, webhook]``), health checks off (their runs only
add load; the drill measures the failure path), ``--group-wait`` seconds of grouping
(default: the project's 30 s).

The drill: a file lands; once the landing sensor has requested its run the proxy stops
(connections refused; the sensor starts no run while the warehouse is down); the raw step fails
after its step retries (``landing.retry``: about 22 s). Measured from that
step's failure (its STEP_FAILURE event): the incident row (``created_at``: time to detect) and the
first webhook request announcing it (``alertname=incident``: time to notify); also from the fault.
"""

import argparse
import json
import os
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from functools import partial
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import dagster as dg
import sqlalchemy as sa
import yaml

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from healthmon_dagster.etl.landing import LocalLandingSource  # noqa: E402
from healthmon_dagster.etl.sample import generate_sample, write_to  # noqa: E402
from healthmon_dagster.store.db import dispose_engines, get_engine  # noqa: E402
from healthmon_dagster.store.metrics import as_utc  # noqa: E402
from healthmon_dagster.store.tables import incidents  # noqa: E402
from healthmon_dagster_tests.defs.pipeline.fixtures import (  # noqa: E402
    PROJECT_ROOT,
    TcpProxy,
    running_daemon,
    wait_for,
    write_instance,
)

ADMIN_URL = os.environ.get(
    "HEALTHMON_BENCH_POSTGRES_URL", "postgresql+psycopg2://postgres@127.0.0.1:5432/postgres"
)
RAW_STEP = "raw__patients"
TIMEOUT = 300.0


@dataclass
class DrillReport:
    fault_to_step_failure_s: float
    time_to_detect_s: float  # step failure -> incident row
    time_to_notify_s: float  # step failure -> first webhook request announcing the incident
    fault_to_incident_s: float
    fault_to_notify_s: float
    incident_root_key: str
    incident_error_classes: list[str]
    webhook_requests: int
    group_wait_seconds: int
    load_average: tuple[float, float, float]


class WebhookStandIn:
    """A loopback HTTP server that records when each POST arrived and its JSON body."""

    def __init__(self) -> None:
        self.received: list[tuple[float, dict[str, Any]]] = []
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802 (http.server's name)
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                outer.received.append((time.time(), json.loads(body or b"{}")))
                self.send_response(200)
                self.end_headers()

            def log_message(self, *args: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}/itsm"

    def first_incident(self) -> float | None:
        for at, body in self.received:
            if any(
                a.get("labels", {}).get("alertname") == "incident" for a in body.get("alerts", [])
            ):
                return at
        return None


@contextmanager
def scratch_database() -> Iterator[str]:
    admin = sa.create_engine(ADMIN_URL, isolation_level="AUTOCOMMIT")
    name = f"healthmon_incdrill_{uuid.uuid4().hex[:8]}"
    with admin.connect() as conn:
        conn.execute(sa.text(f'CREATE DATABASE "{name}"'))
    url = sa.engine.make_url(ADMIN_URL).set(database=name).render_as_string(hide_password=False)
    try:
        yield url
    finally:
        dispose_engines()
        with admin.connect() as conn:
            conn.execute(sa.text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()


def write_config(folder: Path, group_wait: int) -> Path:
    data = yaml.safe_load((PROJECT_ROOT / "healthmon.yaml").read_text())
    data["channels"]["webhook"]["enabled"] = True
    data["alerting"]["builtin_channels"] = ["log", "webhook"]
    data["alerting"]["grouping"]["group_wait_seconds"] = group_wait
    data["health_checks"] = []
    path = folder / "healthmon.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


def etl_run(instance: dg.DagsterInstance) -> bool:
    return bool(instance.get_run_records(filters=dg.RunsFilter(job_name="patients_etl_job")))


def step_failed_at(instance: dg.DagsterInstance) -> float | None:
    for record in instance.get_run_records():
        for entry in instance.all_logs(
            record.dagster_run.run_id, of_type=dg.DagsterEventType.STEP_FAILURE
        ):
            if entry.step_key == RAW_STEP:
                return float(entry.timestamp)
    return None


def incident_row(health_url: str) -> Any:
    with get_engine(health_url).connect() as conn:
        return conn.execute(sa.select(incidents).order_by(incidents.c.incident_id)).first()


def drill(args: argparse.Namespace, workdir: Path, url: str) -> DrillReport:
    home, dagster_home, log = workdir / "home", workdir / "dagster", workdir / "daemon.log"
    write_instance(dagster_home)
    target = sa.engine.make_url(url)
    proxy = TcpProxy((target.host or "127.0.0.1", target.port or 5432))
    proxy.start()
    hook = WebhookStandIn()
    health_url = f"sqlite:///{home / 'health.db'}"
    home.mkdir(parents=True)
    env = {
        "DAGSTER_HOME": str(dagster_home),
        "HEALTHMON_HOME": str(home),
        "HEALTHMON_DATABASE_URL": proxy.url_for(url),
        "HEALTHMON_HEALTH_DATABASE_URL": health_url,
        "HEALTHMON_CONFIG": str(write_config(workdir, args.group_wait)),
        "HEALTHMON_WEBHOOK_URL": hook.url,
        "HEALTHMON_WEBHOOK_SECRET": "drill-secret",
    }
    get_engine(url)  # migrated before the daemon starts
    get_engine(health_url)
    try:
        with (
            dg.DagsterInstance.from_config(str(dagster_home)) as instance,
            running_daemon(env, log),
        ):
            # The landing sensor starts no run while the warehouse is down, so the fault begins
            # once it has requested the run (before the run's worker connects).
            write_to(LocalLandingSource(home / "landing"), generate_sample(100, files=1))
            wait_for("the ETL run", partial(etl_run, instance), TIMEOUT, interval=0.05, log=log)
            proxy.stop()
            fault = time.time()
            failed = wait_for(
                "the raw step to fail", lambda: step_failed_at(instance), TIMEOUT, log=log
            )
            row = wait_for("the incident row", lambda: incident_row(health_url), TIMEOUT, log=log)
            notified = wait_for("the webhook request", hook.first_incident, TIMEOUT, log=log)
    finally:
        proxy.stop()
        hook.server.shutdown()
    created = as_utc(row.created_at).timestamp()
    return DrillReport(
        fault_to_step_failure_s=round(failed - fault, 1),
        time_to_detect_s=round(created - failed, 2),
        time_to_notify_s=round(notified - failed, 1),
        fault_to_incident_s=round(created - fault, 1),
        fault_to_notify_s=round(notified - fault, 1),
        incident_root_key=row.root_key,
        incident_error_classes=list(row.metadata.get("error_classes", [])),
        webhook_requests=len(hook.received),
        group_wait_seconds=args.group_wait,
        load_average=os.getloadavg(),
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--group-wait", type=int, default=30, help="alerting group wait (s)")
    parser.add_argument("--json", type=Path, help="also write the figures here")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp, scratch_database() as url:
        report = drill(args, Path(tmp), url)
    figures = asdict(report)
    print(json.dumps(figures, indent=2, default=str))
    if args.json:
        args.json.write_text(json.dumps(figures, indent=2, default=str))
    print(f"stamp {datetime.now(UTC).isoformat(timespec='seconds')}")


if __name__ == "__main__":
    main()
