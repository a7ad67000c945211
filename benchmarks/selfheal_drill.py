"""Self-healing drill with a real ``dagster-daemon`` at the default sensor intervals: time to recover
after a transient outage of the warehouse (Postgres) and of the landing bucket (S3), against the
backoff step in effect, and zero re-runs for data errors.

    python benchmarks/selfheal_drill.py                           # both faults, then data errors
    python benchmarks/selfheal_drill.py --faults s3 --outage-seconds 150 --json out.json

Setup: a scratch Postgres database (``HEALTHMON_BENCH_POSTGRES_URL``, default the local server)
that the warehouse reaches through a TCP proxy on loopback, the health store (incidents, self-heal
rows) in the same database directly, so it stays up; the landing area is an S3 bucket on a moto
server on loopback, reached through dagster-aws (``HEALTHMON_S3_BUCKET``, ``AWS_ENDPOINT_URL``);
the project's ``dagster.yaml``; the project's ``healthmon.yaml`` with ``feature_flags.
self_healing`` on, ``self_healing.quiet_period_minutes: 0`` (a healed incident resolves at the
next tick), ``max_attempts_per_window: 10`` (both outages re-run the same assets within the hour;
the project's 3 would leave the second outage's re-run waiting for the window) and no health
checks (their runs only add load); every other setting is the project's (self-healing backoff 60 s
doubling to 900 s, breaker after 3; step retries ``landing.retry``). A real daemon runs every
sensor at its default interval (self-healing 30 s, run-failure 30 s, alert evaluation 30 s,
dispatch 15 s); the landing sensor is stopped (``dagster sensor stop``) so that the self-healing
sensor is the only one to re-run a file's load (the landing sensor's own retries are measured by
``outage_drill.py``).

Per fault (``--faults``, default both): a file lands in the bucket; the fault starts (the proxy
stops: connections refused; or the moto server stops: S3 unreachable); an operator's run of
``patients_etl_job`` for the file (in this process, on the daemon's instance) fails after its step
retries; the self-healing sensor decides about it and requests re-runs, which the daemon launches and
which fail while the fault lasts (``--outage-seconds`` from the fault), each followed by its
backoff; the service comes back. Reported: from the return to the first re-run requested after
it, to that re-run succeeding and to the incident in ``monitoring`` (and ``resolved``), against the
backoff step in effect at the return; re-runs used; the incident's timeline.

Data errors: ``--bad-files`` files that break the contract land and an operator's run of each
fails; after ``--bad-ticks`` further ticks of the self-healing sensor: re-runs requested (expected
0) and the decisions recorded with their rule.
"""

import argparse
import json
import os
import signal
import sys
import tempfile
import time
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

import boto3
import dagster as dg
import sqlalchemy as sa

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from drill import Site, project_config, proxy_for, scratch_database, sensor_ticks  # noqa: E402

from healthmon_dagster.defs.pipeline.jobs import raw_file_run_config  # noqa: E402
from healthmon_dagster.etl.landing import S3LandingSource  # noqa: E402
from healthmon_dagster.etl.sample import SampleFile, generate_sample, write_to  # noqa: E402
from healthmon_dagster.run_tags import SELF_HEAL_TAG  # noqa: E402
from healthmon_dagster.store.db import get_engine  # noqa: E402
from healthmon_dagster.store.metrics import as_utc  # noqa: E402
from healthmon_dagster.store.tables import (  # noqa: E402
    incident_events,
    incidents,
    self_heal_attempts,
)
from healthmon_dagster_tests.defs.pipeline.fixtures import TcpProxy, wait_for  # noqa: E402
from healthmon_dagster_tests.fixtures import free_port  # noqa: E402

SELF_HEAL_SENSOR = "self_healing_sensor"
LANDING_SENSOR = "landing_files_sensor"
BUCKET = "landing-selfheal-drill"
AWS = {
    "AWS_ACCESS_KEY_ID": "drill",
    "AWS_SECRET_ACCESS_KEY": "drill",
    "AWS_DEFAULT_REGION": "us-east-1",
}


class MotoS3:
    """A moto S3 server on a fixed loopback port that can stop (the outage) and start again;
    moto keeps the buckets in this process, so they are there again after the restart."""

    def __init__(self) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.server: Any = None

    def start(self) -> None:
        from moto.server import ThreadedMotoServer

        self.server = ThreadedMotoServer(ip_address="127.0.0.1", port=self.port, verbose=False)
        self.server.start()

    def stop(self) -> None:
        if self.server is not None:
            self.server.stop()
            self.server = None

    def landing(self) -> S3LandingSource:
        return S3LandingSource(
            boto3.client("s3", endpoint_url=self.url, region_name="us-east-1"), BUCKET
        )


@dataclass
class Fault:
    name: str  # postgres | s3
    stop: Any
    start: Any


def configure(data: dict[str, Any]) -> None:
    data["feature_flags"]["self_healing"] = True
    data["self_healing"]["quiet_period_minutes"] = 0
    # The drill's two outages hit the same assets within the hour: the project's 3 re-runs an
    # hour (the first outage takes 2) would leave the second waiting for the window.
    data["self_healing"]["max_attempts_per_window"] = 10
    data["health_checks"] = []


def operator_run(instance: dg.DagsterInstance, file_key: str) -> dg.ExecuteInProcessResult:
    """A run of the ETL job for one file started by hand (not the landing sensor's)."""
    from healthmon_dagster.definitions import build_defs

    return (
        build_defs()
        .resolve_job_def("patients_etl_job")
        .execute_in_process(
            run_config=raw_file_run_config(file_key), instance=instance, raise_on_error=False
        )
    )


def reruns(instance: dg.DagsterInstance, since: float) -> list[dg.RunRecord]:
    """The self-healing sensor's re-runs created after ``since``, oldest first."""
    mine = [
        r
        for r in instance.get_run_records()
        if SELF_HEAL_TAG in r.dagster_run.tags and r.create_timestamp.timestamp() >= since
    ]
    return sorted(mine, key=lambda r: r.create_timestamp)


def incident_since(url: str, since: float) -> Any:
    with get_engine(url).connect() as conn:
        for row in conn.execute(sa.select(incidents).order_by(incidents.c.incident_id)):
            if as_utc(row.created_at).timestamp() >= since - 1:
                return row
    return None


def timeline_kinds(url: str, incident_id: int) -> list[str]:
    e = incident_events.c
    with get_engine(url).connect() as conn:
        return [
            f"{r.kind} (rule {dict(r.details).get('rule', '-')}): {r.text}"[:200]
            if r.kind.startswith("self_heal")
            else r.kind
            for r in conn.execute(
                sa.select(e.kind, e.text, e.details)
                .where(e.incident_id == incident_id)
                .order_by(e.event_id)
            )
        ]


def backoff_in_effect(url: str, incident_id: int, before: float) -> float | None:
    """The backoff step of the last failed re-run that finished before ``before``: its retry_at
    minus its finished_at."""
    c = self_heal_attempts.c
    with get_engine(url).connect() as conn:
        rows = conn.execute(
            sa.select(c.finished_at, c.retry_at)
            .where(c.incident_id == incident_id, c.status == "failed", c.retry_at.is_not(None))
            .order_by(c.attempt)
        ).all()
    done = [r for r in rows if as_utc(r.finished_at).timestamp() <= before]
    if not done:
        return None
    last = done[-1]
    return round((as_utc(last.retry_at) - as_utc(last.finished_at)).total_seconds(), 1)


def status_of(url: str, incident_id: int) -> str:
    with get_engine(url).connect() as conn:
        return str(
            conn.execute(
                sa.select(incidents.c.status).where(incidents.c.incident_id == incident_id)
            ).scalar_one()
        )


def transient(
    args: argparse.Namespace,
    instance: dg.DagsterInstance,
    url: str,
    fault: Fault,
    sample: SampleFile,
    landing: S3LandingSource,
) -> dict[str, Any]:
    write_to(landing, [sample])
    started = time.time()
    fault.stop()
    result = operator_run(instance, sample.key)
    assert not result.success, f"{fault.name}: the operator's run succeeded during the outage"
    row = wait_for("the incident", partial(incident_since, url, started), 120)
    out: dict[str, Any] = {
        "fault": fault.name,
        "incident_root_key": row.root_key,
        "error_classes": list(row.metadata.get("error_classes", [])),
        "operator_run_failed_after_s": round(time.time() - started, 1),
    }
    back_at: float | None = None
    seen: dict[str, float] = {}
    deadline = started + args.outage_seconds + args.timeout
    while time.time() < deadline:
        now = time.time()
        if back_at is None and now - started >= args.outage_seconds:
            fault.start()
            back_at = now
            out["outage_s"] = round(back_at - started, 1)
        runs = reruns(instance, started)
        if back_at is not None:
            after = [r for r in runs if r.create_timestamp.timestamp() >= back_at]
            if after and "rerun_requested" not in seen:
                seen["rerun_requested"] = after[0].create_timestamp.timestamp()
            ok = [r for r in after if r.dagster_run.status == dg.DagsterRunStatus.SUCCESS]
            if ok and "rerun_succeeded" not in seen and ok[0].end_time is not None:
                seen["rerun_succeeded"] = ok[0].end_time
            status = status_of(url, row.incident_id)
            if status in ("monitoring", "resolved") and "monitoring" not in seen:
                seen["monitoring"] = now
            if status == "resolved":
                seen["resolved"] = now
                break
        time.sleep(1)
    else:
        out["error"] = "not resolved in time"
    assert back_at is not None
    # The step in effect: of the last re-run that failed before the first re-run after the return
    # was requested (it may have ended after the return, still failing on the outage it met).
    cutoff = seen.get("rerun_requested", back_at)
    out["backoff_step_in_effect_s"] = backoff_in_effect(url, row.incident_id, cutoff)
    runs = reruns(instance, started)
    out |= {f"{k}_after_return_s": round(v - back_at, 1) for k, v in seen.items()}
    out |= {
        "reruns": len(runs),
        "reruns_failed_during_outage": sum(
            r.dagster_run.status == dg.DagsterRunStatus.FAILURE
            and r.create_timestamp.timestamp() < back_at
            for r in runs
        ),
        "incident_status": status_of(url, row.incident_id),
        "timeline": timeline_kinds(url, row.incident_id),
    }
    return out


def data_errors(
    args: argparse.Namespace, instance: dg.DagsterInstance, url: str, landing: S3LandingSource
) -> dict[str, Any]:
    # Distinct content per file (one seed each): the loader skips a file whose content it has seen.
    bad = [
        generate_sample(50, defect="missing_column", prefix=f"patients_bad{i}", seed=100 + i)[0]
        for i in range(args.bad_files)
    ]
    write_to(landing, bad)
    started = time.time()
    runs = [operator_run(instance, f.key) for f in bad]
    failed = [r.run_id for r in runs if not r.success]
    ticks = sensor_ticks(instance, SELF_HEAL_SENSOR)
    wait_for(
        f"{args.bad_ticks} self-healing ticks",
        lambda: sensor_ticks(instance, SELF_HEAL_SENSOR) >= ticks + args.bad_ticks,
        60 * args.bad_ticks + 120,
        interval=1,
    )
    c = self_heal_attempts.c
    with get_engine(url).connect() as conn:
        rules: dict[str, int] = dict(
            conn.execute(
                sa.select(c.rule, sa.func.count())
                .where(c.source_run_id.in_(failed))
                .group_by(c.rule)
            ).all()
        )
    return {
        "bad_files": len(bad),
        "failed_runs": len(failed),
        "ticks_after": args.bad_ticks,
        "reruns_requested": len(reruns(instance, started)),
        "decisions_by_rule": rules,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument(
        "--faults", nargs="+", choices=("postgres", "s3"), default=["postgres", "s3"]
    )
    parser.add_argument("--outage-seconds", type=float, default=120, help="from the fault")
    parser.add_argument("--timeout", type=float, default=900, help="seconds after the return")
    parser.add_argument("--bad-files", type=int, default=3)
    parser.add_argument("--bad-ticks", type=int, default=3)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    # Stopped by a signal (also in the background, where SIGINT is ignored), the drill still
    # stops its daemon and drops its scratch database on the way out.
    signal.signal(signal.SIGINT, signal.default_int_handler)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit("selfheal drill: terminated"))
    os.environ |= AWS  # moto's credentials, for this process's clients and the daemon's
    s3 = MotoS3()
    s3.start()
    s3.landing().client.create_bucket(Bucket=BUCKET)
    figures: dict[str, Any] = {"load_average": os.getloadavg()}
    wall = time.monotonic()
    with (
        tempfile.TemporaryDirectory(prefix="healthmon-selfheal-") as tmp,
        scratch_database("healthmon_selfheal") as url,
    ):
        site = Site(Path(tmp))
        proxy: TcpProxy = proxy_for(url)
        env = site.env(
            proxy.url_for(url),
            project_config(Path(tmp), configure),
            url,  # the health store directly: it stays up
            HEALTHMON_S3_BUCKET=BUCKET,
            AWS_ENDPOINT_URL=s3.url,
            **AWS,
        )
        os.environ |= env  # the operator's runs in this process see what the daemon sees
        get_engine(url)  # migrated before the daemon starts
        faults = {
            "postgres": Fault("postgres", proxy.stop, proxy.start),
            "s3": Fault("s3", s3.stop, s3.start),
        }
        try:
            site.stop_sensor(env, LANDING_SENSOR)
            with site.daemon(env) as (instance, _):
                wait_for(
                    "the self-healing sensor's first tick",
                    lambda: sensor_ticks(instance, SELF_HEAL_SENSOR),
                    300,
                    1,
                    site.log,
                )
                for i, name in enumerate(args.faults):
                    (sample,) = generate_sample(200, files=1, prefix=f"patients_{name}", seed=i)
                    figures[name] = transient(
                        args, instance, url, faults[name], sample, s3.landing()
                    )
                    print(json.dumps(figures[name], default=str), file=sys.stderr, flush=True)
                figures["data_errors"] = data_errors(args, instance, url, s3.landing())
        finally:
            proxy.stop()
            s3.stop()
    figures["load_average_after"] = os.getloadavg()
    figures["wall_s"] = round(time.monotonic() - wall, 1)
    print(json.dumps(figures, indent=2, default=str))
    if args.json:
        args.json.write_text(json.dumps(figures, indent=2, default=str))


if __name__ == "__main__":
    main()
