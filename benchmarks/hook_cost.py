"""Benchmark: what the two hooks on every ETL step cost when the steps succeed.

    python benchmarks/hook_cost.py                       # 10 runs per variant, SQLite and Postgres
    python benchmarks/hook_cost.py --runs 20 --rows 1000 --database sqlite --json hooks.json

The hooks: the alert fast path (``defs/alerting/hooks.py``, a success and a failure hook on
``patients_etl_job``) and the incident hook (``defs/incidents/hooks.py``, a failure hook on every
asset and check). ``patients_etl_job`` runs in process (``execute_in_process``, on a Dagster instance
in a temporary DAGSTER_HOME, SQLite storage as the embedded default) ``--runs`` times in each of four
variants, interleaved so that a change of load on the machine touches every variant alike: both
hooks (the code location as built), none, the alert hooks only, the incident hook only. Every run
loads a new landing file of ``--rows`` rows (a successful run: every check passes). Reported per
database and variant: median and quartiles of the run's wall time, the steps per run, and the median
overhead against no hooks per run and per step, and (measured inside each run, so the load of the
machine weighs less) the time from each step's STEP_SUCCESS event to the last event of its hooks.
Then the success path of the alert fast path is
timed piece by piece, in this process, against the last run: loading healthmon.yaml, adding the
incident rules, ``evaluate_run``.

Postgres: ``HEALTHMON_BENCH_POSTGRES_URL`` (default ``postgresql+psycopg2://postgres@127.0.0.1:5432/postgres``)
is the admin connection; a scratch database is created and dropped.
"""

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import dagster as dg
import sqlalchemy as sa
import yaml
from sqlalchemy.engine import make_url

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from healthmon_dagster.alerting.fastpath import evaluate_run  # noqa: E402
from healthmon_dagster.config import HealthConfiguration, load_config  # noqa: E402
from healthmon_dagster.definitions import domain_definitions  # noqa: E402
from healthmon_dagster.defs.alerting.hooks import ALERT_HOOKS  # noqa: E402
from healthmon_dagster.defs.incidents.hooks import with_incident_hooks  # noqa: E402
from healthmon_dagster.defs.pipeline.jobs import patients_etl_job, raw_file_run_config  # noqa: E402
from healthmon_dagster.defs.quality.assets import with_freshness_policies  # noqa: E402
from healthmon_dagster.defs.resources import HealthmonConfigResource  # noqa: E402
from healthmon_dagster.etl.landing import LocalLandingSource  # noqa: E402
from healthmon_dagster.etl.sample import generate_sample, write_to  # noqa: E402
from healthmon_dagster.incidents.announce import with_incident_rules  # noqa: E402
from healthmon_dagster.store.db import dispose_engines, get_engine  # noqa: E402

PROJECT_CONFIG = Path(__file__).resolve().parents[1] / "healthmon.yaml"
ADMIN_URL = os.environ.get(
    "HEALTHMON_BENCH_POSTGRES_URL", "postgresql+psycopg2://postgres@127.0.0.1:5432/postgres"
)
VARIANTS = ("both", "none", "alert_only", "incident_only")
QUIET = {"loggers": {"console": {"config": {"log_level": "WARNING"}}}}
HOOK_EVENTS = {
    dg.DagsterEventType.HOOK_COMPLETED,
    dg.DagsterEventType.HOOK_SKIPPED,
    dg.DagsterEventType.HOOK_ERRORED,
}


def etl_job(alert_hooks: bool) -> Any:
    """``patients_etl_job`` as defined, with or without the alert hooks."""
    return dg.define_asset_job(
        patients_etl_job.name,
        selection=patients_etl_job.selection,
        executor_def=patients_etl_job.executor_def,
        tags=patients_etl_job.tags,
        hooks=set(ALERT_HOOKS) if alert_hooks else None,
    )


def variant_job(config: HealthConfiguration, variant: str) -> dg.JobDefinition:
    """The resolved ETL job of a variant: the code location's assets, checks and resources (with
    its freshness policies), with the incident hooks and the alert hooks as the variant says."""
    merged = with_freshness_policies(dg.Definitions.merge(*domain_definitions(config)), config)
    if variant in ("both", "incident_only"):
        merged = with_incident_hooks(merged)
    defs = dg.Definitions(
        assets=merged.assets,
        asset_checks=merged.asset_checks,
        resources=merged.resources,
        jobs=[etl_job(alert_hooks=variant in ("both", "alert_only"))],
    )
    return defs.resolve_job_def(patients_etl_job.name)


@contextmanager
def database(kind: str, folder: Path) -> Iterator[str]:
    """A warehouse URL: a new SQLite file, or a scratch Postgres database dropped afterwards."""
    if kind == "sqlite":
        yield f"sqlite:///{folder / 'healthmon.db'}"
        return
    admin = sa.create_engine(ADMIN_URL, isolation_level="AUTOCOMMIT")
    name = f"healthmon_bench_{uuid.uuid4().hex[:8]}"
    with admin.connect() as conn:
        conn.execute(sa.text(f'CREATE DATABASE "{name}"'))
    try:
        yield make_url(ADMIN_URL).set(database=name).render_as_string(hide_password=False)
    finally:
        dispose_engines()
        with admin.connect() as conn:
            conn.execute(sa.text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()


def hook_spans(instance: dg.DagsterInstance, run_id: str) -> list[float]:
    """Per step of the run: seconds from its STEP_SUCCESS to the last event of its hooks (the
    hooks' own time plus Dagster's bookkeeping of them, events written to the event log)."""
    done: dict[str, float] = {}
    last_hook: dict[str, float] = {}
    for entry in instance.all_logs(run_id):
        event = entry.dagster_event
        if event is None or event.step_key is None:
            continue
        if event.event_type == dg.DagsterEventType.STEP_SUCCESS:
            done[event.step_key] = entry.timestamp
        elif event.event_type in HOOK_EVENTS:
            last_hook[event.step_key] = max(last_hook.get(event.step_key, 0.0), entry.timestamp)
    return [last_hook[k] - t for k, t in done.items() if k in last_hook]


def median_seconds(fn: Callable[[], object], repeat: int) -> float:
    times = []
    for _ in range(repeat):
        started = time.perf_counter()
        fn()
        times.append(time.perf_counter() - started)
    return statistics.median(times)


def bench_database(kind: str, runs: int, rows: int) -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix="hook_cost_") as tmp:
        folder = Path(tmp)
        with database(kind, folder) as url:
            home, dagster_home = folder / "home", folder / "dagster"
            dagster_home.mkdir()
            (dagster_home / "dagster.yaml").write_text("telemetry:\n  enabled: false\n")
            data = yaml.safe_load(PROJECT_CONFIG.read_text())
            data["health_checks"] = []  # not in patients_etl_job; fewer to parse
            config_path = folder / "healthmon.yaml"
            config_path.write_text(yaml.safe_dump(data))
            os.environ.update(
                HEALTHMON_HOME=str(home),
                HEALTHMON_DATABASE_URL=url,
                HEALTHMON_CONFIG=str(config_path),
                DAGSTER_HOME=str(dagster_home),
            )
            os.environ.pop("HEALTHMON_HEALTH_DATABASE_URL", None)
            config = load_config(config_path)
            jobs = {v: variant_job(config, v) for v in VARIANTS}
            landing = LocalLandingSource(home / "landing")
            # One file per run (and one warm-up per variant), each a new key: every run loads.
            sample = generate_sample(rows, files=(runs + 1) * len(VARIANTS), seed=11)
            write_to(landing, sample)
            keys = iter(f.key for f in sample)
            times: dict[str, list[float]] = {v: [] for v in VARIANTS}
            steps: dict[str, int] = {}
            spans: dict[str, list[float]] = {v: [] for v in VARIANTS}
            last_run_id = ""
            with dg.DagsterInstance.get() as instance:
                for i in range(runs + 1):
                    for variant in VARIANTS if i % 2 else reversed(VARIANTS):
                        started = time.perf_counter()
                        result = jobs[variant].execute_in_process(
                            run_config={**raw_file_run_config(next(keys)), **QUIET},
                            instance=instance,
                        )
                        elapsed = time.perf_counter() - started
                        if not result.success:
                            raise SystemExit(f"{kind} {variant}: the ETL run failed")
                        if i == 0:
                            continue  # warm-up: imports, engines, migrations
                        times[variant].append(elapsed)
                        steps[variant] = len(
                            [
                                e
                                for e in result.all_events
                                if e.event_type == dg.DagsterEventType.STEP_START
                            ]
                        )
                        spans[variant].extend(hook_spans(instance, result.run_id))
                        last_run_id = result.run_id
            # The alert fast path's success path, piece by piece (what the hook does per step).
            engine = get_engine(url)
            resource = HealthmonConfigResource()
            loaded = resource.load()
            parts = {
                "load_config": median_seconds(resource.load, 50),
                "with_incident_rules": median_seconds(lambda: with_incident_rules(loaded), 50),
                "evaluate_run": median_seconds(
                    lambda: evaluate_run(engine, with_incident_rules(loaded), last_run_id), 20
                ),
            }
            dispose_engines()
    base = statistics.median(times["none"])
    out: dict[str, Any] = {"database": kind, "rows": rows, "runs": runs, "variants": {}}
    for variant in VARIANTS:
        t = times[variant]
        q = statistics.quantiles(t, n=4) if len(t) > 1 else [t[0]] * 3
        over = statistics.median(t) - base
        out["variants"][variant] = {
            "median_s": round(statistics.median(t), 4),
            "q1_s": round(q[0], 4),
            "q3_s": round(q[2], 4),
            "steps": steps[variant],
            "overhead_per_run_ms": round(over * 1000, 1),
            "overhead_per_step_ms": round(over * 1000 / steps[variant], 1),
            "hook_span_per_step_ms": {
                "median": round(statistics.median(spans[variant]) * 1000, 1)
                if spans[variant]
                else 0,
                "max": round(max(spans[variant]) * 1000, 1) if spans[variant] else 0,
            },
        }
    out["fast_path_success_parts_ms"] = {k: round(v * 1000, 2) for k, v in parts.items()}
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=10, help="timed runs per variant")
    parser.add_argument("--rows", type=int, default=100, help="rows of each landing file")
    parser.add_argument("--database", choices=["sqlite", "postgres", "both"], default="both")
    parser.add_argument("--json", type=Path, help="also write the results here")
    args = parser.parse_args()
    kinds = ["sqlite", "postgres"] if args.database == "both" else [args.database]
    results = []
    for kind in kinds:
        r = bench_database(kind, args.runs, args.rows)
        results.append(r)
        print(f"{kind}: {args.runs} runs per variant of {args.rows} rows")
        for variant, v in r["variants"].items():
            print(
                f"  {variant:<14} median {v['median_s'] * 1000:8.1f} ms "
                f"(q1 {v['q1_s'] * 1000:.1f}, q3 {v['q3_s'] * 1000:.1f}), {v['steps']} steps, "
                f"overhead {v['overhead_per_run_ms']:+.1f} ms/run, "
                f"{v['overhead_per_step_ms']:+.1f} ms/step; STEP_SUCCESS to its last hook "
                f"event: median {v['hook_span_per_step_ms']['median']:.1f} ms, "
                f"max {v['hook_span_per_step_ms']['max']:.1f} ms"
            )
        parts = ", ".join(f"{k} {v:.2f} ms" for k, v in r["fast_path_success_parts_ms"].items())
        print(f"  alert fast path success path, per call: {parts}")
    if args.json:
        args.json.write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
