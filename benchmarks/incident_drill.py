"""Incident drill: time to detect and time to notify a transient fault, with a real dagster-daemon
and the sensors at their default intervals (landing 30 s, alert evaluation 30 s, dispatch 15 s,
run-failure 30 s).

    python benchmarks/incident_drill.py                 # three drills, p50 and max
    python benchmarks/incident_drill.py --repeat 5 --json drill.json --group-wait 30

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
The failure hook that opens the incident sends that request from the run (the incident fast path,
``defs/incidents/hooks.py``); the sensors are the backstop. Each of ``--repeat`` drills has its own
database, site and daemon; reported: every drill's figures and p50 / max of each.
"""

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from functools import partial
from pathlib import Path
from typing import Any

import dagster as dg
import sqlalchemy as sa

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from drill import Site, etl_runs, project_config, proxy_for, scratch_database  # noqa: E402

from healthmon_dagster.etl.sample import generate_sample, write_to  # noqa: E402
from healthmon_dagster.store.db import get_engine  # noqa: E402
from healthmon_dagster.store.metrics import as_utc  # noqa: E402
from healthmon_dagster.store.tables import incidents  # noqa: E402
from healthmon_dagster_tests.defs.pipeline.fixtures import wait_for  # noqa: E402
from healthmon_dagster_tests.notify.fixtures import HttpStub, webhook_server  # noqa: E402

RAW_STEP = "raw__patients"
TIMEOUT = 300.0


@dataclass
class DrillReport:
    fault_to_step_failure_s: float
    time_to_detect_s: float  # step failure -> incident row
    time_to_notify_s: float  # step failure -> first webhook request announcing the incident
    fault_to_incident_s: float
    fault_to_notify_s: float
    notified_by: str  # "run" (the incident fast path) or "sensors"
    incident_root_key: str
    incident_error_classes: list[str]
    webhook_requests: int
    group_wait_seconds: int
    load_average: tuple[float, float, float]


def first_incident(hook: HttpStub) -> float | None:
    """When the first webhook request announcing an incident arrived."""
    for request in hook.on("/itsm"):
        if any(a["labels"].get("alertname") == "incident" for a in request.json["alerts"]):
            return request.at
    return None


def configure(group_wait: int, data: dict[str, Any]) -> None:
    data["channels"]["webhook"]["enabled"] = True
    data["alerting"]["builtin_channels"] = ["log", "webhook"]
    data["alerting"]["grouping"]["group_wait_seconds"] = group_wait
    data["health_checks"] = []


def step_failed_at(instance: dg.DagsterInstance) -> tuple[str, float] | None:
    """The run whose raw step failed, and when."""
    for record in etl_runs(instance):
        run_id = record.dagster_run.run_id
        for entry in instance.all_logs(run_id, of_type=dg.DagsterEventType.STEP_FAILURE):
            if entry.step_key == RAW_STEP:
                return run_id, float(entry.timestamp)
    return None


def sent_by_the_run(instance: dg.DagsterInstance, run_id: str, incident_id: int) -> bool:
    """Whether the run's incident fast path logged the webhook message sent."""
    return any(
        f"incident {incident_id} fast path" in entry.user_message
        and "webhook: 1 sent" in entry.user_message
        for entry in instance.all_logs(run_id)
    )


def incident_row(health_url: str) -> Any:
    with get_engine(health_url).connect() as conn:
        return conn.execute(sa.select(incidents).order_by(incidents.c.incident_id)).first()


def drill(args: argparse.Namespace, workdir: Path, url: str) -> DrillReport:
    site = Site(workdir)
    proxy = proxy_for(url)
    health_url = f"sqlite:///{site.home / 'health.db'}"
    site.home.mkdir(parents=True)
    get_engine(url)  # migrated before the daemon starts
    get_engine(health_url)
    with webhook_server() as hook:
        env = site.env(
            proxy.url_for(url),
            project_config(workdir, partial(configure, args.group_wait)),
            health_url,
            HEALTHMON_WEBHOOK_URL=f"{hook.url}/itsm",
            HEALTHMON_WEBHOOK_SECRET="drill-secret",
        )
        try:
            with site.daemon(env) as (instance, _):
                # The landing sensor starts no run while the warehouse is down, so the fault
                # begins once it has requested the run (before the run's worker connects).
                write_to(site.landing, generate_sample(100, files=1))
                wait_for(
                    "the ETL run", partial(etl_runs, instance), TIMEOUT, interval=0.05, log=site.log
                )
                proxy.stop()
                fault = time.time()
                run_id, failed = wait_for(
                    "the raw step to fail",
                    partial(step_failed_at, instance),
                    TIMEOUT,
                    log=site.log,
                )
                row = wait_for(
                    "the incident row", partial(incident_row, health_url), TIMEOUT, log=site.log
                )
                notified = wait_for(
                    "the webhook request", partial(first_incident, hook), TIMEOUT, log=site.log
                )
                by_run = sent_by_the_run(instance, run_id, row.incident_id)
        finally:
            proxy.stop()
        requests = len(hook.on("/itsm"))
    created = as_utc(row.created_at).timestamp()
    return DrillReport(
        fault_to_step_failure_s=round(failed - fault, 1),
        time_to_detect_s=round(created - failed, 2),
        time_to_notify_s=round(notified - failed, 2),
        fault_to_incident_s=round(created - fault, 1),
        fault_to_notify_s=round(notified - fault, 1),
        notified_by="run" if by_run else "sensors",
        incident_root_key=row.root_key,
        incident_error_classes=list(row.metadata.get("error_classes", [])),
        webhook_requests=requests,
        group_wait_seconds=args.group_wait,
        load_average=os.getloadavg(),
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--group-wait", type=int, default=30, help="alerting group wait (s)")
    parser.add_argument("--repeat", type=int, default=3, help="drills (each its own daemon)")
    parser.add_argument("--json", type=Path, help="also write the figures here")
    args = parser.parse_args()
    reports = []
    for i in range(args.repeat):
        with (
            tempfile.TemporaryDirectory(prefix="healthmon-incdrill-") as tmp,
            scratch_database("healthmon_incdrill") as url,
        ):
            reports.append(drill(args, Path(tmp), url))
        print(f"drill {i + 1}: {json.dumps(asdict(reports[-1]), default=str)}", flush=True)
    summary: dict[str, Any] = {}
    for name in ("time_to_detect_s", "time_to_notify_s", "fault_to_notify_s"):
        values = [getattr(r, name) for r in reports]
        summary[name] = {"p50": statistics.median(values), "max": max(values)}
    summary["notified_by"] = [r.notified_by for r in reports]
    figures = {"summary": summary, "drills": [asdict(r) for r in reports]}
    print(json.dumps(summary, indent=2, default=str))
    if args.json:
        args.json.write_text(json.dumps(figures, indent=2, default=str))
    print(f"stamp {datetime.now(UTC).isoformat(timespec='seconds')}")


if __name__ == "__main__":
    main()
