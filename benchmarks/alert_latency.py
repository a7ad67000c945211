"""Alert latency: from a failed check's evaluation (its timestamp in the Dagster event log) to the
request's arrival at a local Slack server, through a real ``dagster-daemon``.

    python benchmarks/alert_latency.py                        # SQLite and Postgres, 20 defect files
    python benchmarks/alert_latency.py --database postgres --defects 30 --json latency.json

Setup per database: a temporary DAGSTER_HOME with the project's ``dagster.yaml`` (one ETL run at a
time), the project's ``healthmon.yaml`` with a Slack channel pointing at a Slack stand-in on
loopback (the notify tests' server) and no health checks (their runs only compete for the two
cores), every sensor at its default interval (landing 30 s, alert evaluation 30 s, dispatch 15 s).
Postgres is a scratch database created and dropped through ``HEALTHMON_BENCH_POSTGRES_URL``
(default: the local server); SQLite a file in the temporary folder.

A clean file lands first (the checks' history); then ``--defects`` pairs of files land at once: a
file whose rows lack patient ids (``patient_ids_are_joinable`` fails with ERROR) and a clean file
(the alert resolves), in key order, so the ETL runs alternate fail / resolve. Each failed check is
a new episode of the same alert, so the benchmark's configuration takes the two settings that
would otherwise (rightly) keep a flapping alert quiet out of the way: the built-in
``asset_check_error`` rule without its 15 min cooldown, and a 1 s ``group_interval``. The group
wait is the default (0 s for errors).

Reported per database: p50 / p95 / max seconds from the evaluation to the Slack request, how many
of the notifications came from the run itself (the fast path) and how many from the dispatch job
(the sensors' backstop), and the load average.
"""

import argparse
import json
import os
import re
import statistics
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from functools import partial
from pathlib import Path
from typing import Any

import dagster as dg
import sqlalchemy as sa

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from drill import Site, etl_runs, project_config, scratch_database  # noqa: E402

from healthmon_dagster.etl.sample import generate_sample, write_to  # noqa: E402
from healthmon_dagster.store.db import dispose_engines, get_engine  # noqa: E402
from healthmon_dagster.store.tables import alerts, check_results, notifications  # noqa: E402
from healthmon_dagster_tests.defs.pipeline.fixtures import wait_for  # noqa: E402
from healthmon_dagster_tests.notify.fixtures import HttpStub, slack_server  # noqa: E402

CHECK = "patient_ids_are_joinable"
TOKEN = "xoxb-benchmark-token"


@dataclass
class Latency:
    run_id: str
    result_id: int
    evaluated_at: float
    arrived_at: float
    seconds: float
    by: str  # "run" (the fast path) or "dispatch job" (the backstop)


@dataclass
class Report:
    database: str
    defects: int
    measured: int
    p50: float
    p95: float
    max: float
    by_run: int
    by_dispatch_job: int
    load_average: tuple[float, float, float]
    seconds_total: float


@contextmanager
def database(kind: str, folder: Path) -> Iterator[str]:
    if kind == "sqlite":
        yield f"sqlite:///{folder / 'healthmon.db'}"
        dispose_engines()
        return
    with scratch_database("healthmon_latency") as url:
        yield url


def configure(slack_url: str, data: dict[str, Any]) -> None:
    data["health_checks"] = []
    data["channels"] = {
        "slack": {
            "type": "slack",
            "configuration": {
                "channel": "#data-alerts",
                "token_env": "SLACK_BOT_TOKEN",
                "base_url": f"{slack_url}/api/",
            },
        }
    }
    data["escalation_policies"] = []
    data["alerting"]["builtin_channels"] = ["log", "slack"]
    data["alerting"]["grouping"]["group_interval_seconds"] = 1
    data["alert_rules"] = [
        {
            "rule_id": "asset_check_error",
            "name": "Asset check failed",
            "event": {"kind": "check_failed", "severities": ["ERROR"]},
            "severity": "error",
            "channels": ["log", "slack"],
            "cooldown_period_minutes": 0,
        }
    ]


def firing_posts(slack: HttpStub) -> list[Any]:
    return [
        r
        for r in slack.on("/api/chat.postMessage")
        if "thread_ts" not in r.json and CHECK in r.body.decode() and "FIRING" in r.body.decode()
    ]


def finished(records: list[dg.RunRecord]) -> bool:
    return all(r.dagster_run.is_finished for r in records)


def failed_evaluation(instance: dg.DagsterInstance, run_id: str) -> float | None:
    """When run ``run_id`` logged the failed evaluation of :data:`CHECK`."""
    for entry in instance.all_logs(run_id, of_type=dg.DagsterEventType.ASSET_CHECK_EVALUATION):
        event = entry.dagster_event
        data = event.event_specific_data if event is not None else None
        failed = isinstance(data, dg.AssetCheckEvaluation) and not data.passed
        if failed and data.check_name == CHECK:  # type: ignore[union-attr]
            return entry.timestamp
    return None


def sent_by_the_run(instance: dg.DagsterInstance, run_id: str) -> bool:
    """Whether the run's alert fast path logged a Slack message sent."""
    return any(
        "alert fast path" in entry.user_message
        and re.search(r"slack: [1-9]\d* sent", entry.message)
        for entry in instance.all_logs(run_id)
        if entry.user_message
    )


def measure(instance: dg.DagsterInstance, db_url: str, slack: HttpStub) -> list[Latency]:
    """One latency per failed evaluation: matched with its Slack post by the result id the post
    quotes (the check's etl.check_results row of that run)."""
    c = check_results.c
    with get_engine(db_url).connect() as conn:
        result_of = {
            run_id: int(rid)
            for run_id, rid in conn.execute(
                sa.select(c.dagster_run_id, sa.func.max(c.result_id))
                .where(c.check_name == CHECK, c.status == "failed")
                .group_by(c.dagster_run_id)
            )
        }
    post_of: dict[int, Any] = {}
    for post in firing_posts(slack):
        found = re.search(r"result_id\W+(\d+)", post.body.decode())
        if found:
            post_of.setdefault(int(found.group(1)), post)
    out = []
    for run_id, result_id in sorted(result_of.items(), key=lambda kv: kv[1]):
        evaluated = failed_evaluation(instance, run_id)
        post = post_of.get(result_id)
        if evaluated is None or post is None:
            continue
        by = "run" if sent_by_the_run(instance, run_id) else "dispatch job"
        out.append(Latency(run_id, result_id, evaluated, post.at, post.at - evaluated, by))
    return out


def outbox_summary(db_url: str) -> str:
    """The Slack outbox rows of the check's alerts by kind, status and last error, and the
    alerts' states: where the notifications that did not arrive went."""
    n, a = notifications.c, alerts.c
    with get_engine(db_url).connect() as conn:
        rows = conn.execute(
            sa.select(n.kind, n.status, n.last_error, sa.func.count())
            .join(alerts, a.alert_id == n.alert_id)
            .where(n.channel == "slack", a.labels["check"].as_string() == CHECK)
            .group_by(n.kind, n.status, n.last_error)
        ).all()
        states = conn.execute(
            sa.select(a.state, a.status, sa.func.count())
            .where(a.labels["check"].as_string() == CHECK)
            .group_by(a.state, a.status)
        ).all()
    lines = [f"  {kind} {status} x{count}: {error or ''}" for kind, status, error, count in rows]
    lines += [f"  alerts {state}/{status} x{count}" for state, status, count in states]
    return "outbox (slack) of the check's alerts:\n" + "\n".join(lines)


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(q * (len(ordered) - 1))))]


def run(kind: str, defects: int, rows: int, timeout: float) -> tuple[Report, list[Latency]]:
    started = time.monotonic()
    with (
        tempfile.TemporaryDirectory(prefix="healthmon-latency-") as tmp,
        slack_server() as slack,
        database(kind, Path(tmp)) as db_url,
    ):
        folder = Path(tmp)
        site = Site(folder)
        env = site.env(
            db_url,
            project_config(folder, partial(configure, slack.url)),
            SLACK_BOT_TOKEN=TOKEN,
        )
        get_engine(db_url)  # created and migrated before the daemon starts
        landing = site.landing
        with site.daemon(env) as (instance, _):
            write_to(landing, generate_sample(rows, files=1, seed=1, prefix="patients_000"))
            wait_for(
                "the first clean file's run",
                lambda: (r := etl_runs(instance)) and finished(r) or None,
                timeout,
                interval=1,
            )
            for i in range(1, defects + 1):
                bad = generate_sample(
                    rows, files=1, seed=2 * i, defect="null_ids", prefix=f"patients_{i:03d}a"
                )
                good = generate_sample(rows, files=1, seed=2 * i + 1, prefix=f"patients_{i:03d}b")
                write_to(landing, [*bad, *good])
            expected = 2 * defects + 1
            wait_for(
                f"{expected} finished ETL runs",
                lambda: (r := etl_runs(instance)) and len(r) >= expected and finished(r) or None,
                timeout * defects,
                interval=2,
            )
            try:
                wait_for(
                    f"{defects} firing Slack messages",
                    lambda: len(firing_posts(slack)) >= defects or None,
                    120,
                    interval=1,
                )
            except AssertionError:
                print(outbox_summary(db_url), file=sys.stderr)  # where the others went
                raise
            latencies = measure(instance, db_url, slack)
    seconds = [x.seconds for x in latencies]
    report = Report(
        database=kind,
        defects=defects,
        measured=len(latencies),
        p50=round(statistics.median(seconds), 3) if seconds else float("nan"),
        p95=round(percentile(seconds, 0.95), 3) if seconds else float("nan"),
        max=round(max(seconds), 3) if seconds else float("nan"),
        by_run=sum(x.by == "run" for x in latencies),
        by_dispatch_job=sum(x.by == "dispatch job" for x in latencies),
        load_average=os.getloadavg(),
        seconds_total=round(time.monotonic() - started, 1),
    )
    return report, latencies


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--database", choices=["sqlite", "postgres", "both"], default="both")
    parser.add_argument("--defects", type=int, default=20, help="defect files (at least 20)")
    parser.add_argument("--rows", type=int, default=200, help="rows per file")
    parser.add_argument("--timeout", type=float, default=180, help="seconds per run to wait")
    parser.add_argument("--json", type=Path, help="write every measurement here")
    args = parser.parse_args()
    kinds = ["sqlite", "postgres"] if args.database == "both" else [args.database]
    everything: dict[str, Any] = {}
    for kind in kinds:
        report, latencies = run(kind, args.defects, args.rows, args.timeout)
        everything[kind] = {"report": asdict(report), "latencies": [asdict(x) for x in latencies]}
        load = ", ".join(f"{x:.2f}" for x in report.load_average)
        print(
            f"{kind}: {report.measured}/{report.defects} failed checks measured; evaluation -> "
            f"Slack request p50 {report.p50:.2f} s, p95 {report.p95:.2f} s, max {report.max:.2f} s "
            f"(target p95 < 5 s); sent by the run {report.by_run}, by the dispatch job "
            f"{report.by_dispatch_job}; load average {load}; {report.seconds_total:.0f} s in all",
            flush=True,
        )
    if args.json:
        args.json.write_text(json.dumps(everything, indent=2))


if __name__ == "__main__":
    main()
