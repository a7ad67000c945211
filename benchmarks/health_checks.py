"""Health check runner throughput, per-check overhead and isolation from a slow dependency.

Run: ``python benchmarks/health_checks.py``. Prints:

1. 1,000 cheap checks (each a 2 ms sleep, standing in for I/O) through one runner: wall time and
   checks per minute (target: 1,000 per minute sustained, i.e. under 60 s).
2. p50/p99 overhead per check beyond its own duration: dispatch (thread start) plus collection,
   measured by the runner, with 1,000 no-op checks.
3. One check that hangs past its 5 s timeout, 10 checks that depend on it and 200 independent
   checks: when the independent checks finished, when the slow one was reported.
"""

import statistics
import time

from healthmon_dagster.enums import HealthComponent, HealthStatus
from healthmon_dagster.health.context import CheckContext
from healthmon_dagster.health.registry import register
from healthmon_dagster.health.result import HealthCheck, Observation
from healthmon_dagster.health.runner import HealthCheckRunner


@register("bench_sleep")
def _sleep(check: HealthCheck, ctx: CheckContext) -> Observation:
    time.sleep(float(check.param("seconds", 0.0)))
    return Observation()


@register("bench_noop")
def _noop(check: HealthCheck, ctx: CheckContext) -> Observation:
    return Observation()


def _checks(n: int, kind: str, seconds: float = 0.0, prefix: str = "c") -> list[HealthCheck]:
    return [
        HealthCheck(
            f"{prefix}{i}", HealthComponent.NETWORK, kind, custom_parameters={"seconds": seconds}
        )
        for i in range(n)
    ]


def _pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def main() -> None:
    runner = HealthCheckRunner(max_concurrency=32)
    runner.run(_checks(50, "bench_noop"))  # warm-up: imports, registry

    report = runner.run(_checks(1000, "bench_sleep", 0.002))
    ok = sum(r.status == HealthStatus.HEALTHY for r in report.results)
    print(
        f"throughput: 1000 checks (2 ms I/O each, concurrency 32) in {report.wall_time_s:.3f} s "
        f"= {1000 / report.wall_time_s * 60:,.0f} checks/min ({ok} healthy)"
    )

    for concurrency in (1, 32):
        report = HealthCheckRunner(max_concurrency=concurrency).run(_checks(1000, "bench_noop"))
        over = list(report.overhead_ms.values())
        own = [r.response_time_ms for r in report.results]
        print(
            f"overhead per check (no-op checks, concurrency {concurrency}): "
            f"p50 {statistics.median(over):.3f} ms, p99 {_pct(over, 0.99):.3f} ms, "
            f"max {max(over):.3f} ms; own duration p99 {_pct(own, 0.99):.3f} ms; "
            f"wall {report.wall_time_s:.3f} s"
        )

    slow = HealthCheck(
        "slow_dependency",
        HealthComponent.DATABASE,
        "bench_sleep",
        timeout_seconds=5,
        custom_parameters={"seconds": 30},
    )
    dependents = [
        HealthCheck(
            f"dep{i}", HealthComponent.DATABASE, "bench_noop", dependencies=(slow.check_id,)
        )
        for i in range(10)
    ]
    others = _checks(200, "bench_sleep", 0.005, prefix="other")
    finished: dict[str, float] = {}
    start = time.monotonic()
    report = runner.run(
        [slow, *dependents, *others],
        on_result=lambda r: finished.setdefault(r.check_id, time.monotonic() - start),
    )
    results = report.by_id()
    other_done = max(finished[c.check_id] for c in others)
    print(
        f"slow dependency: 200 independent checks all done after {other_done:.3f} s; "
        f"slow check reported at {finished['slow_dependency']:.3f} s as "
        f"{results['slow_dependency'].status.value} ({results['slow_dependency'].errors[0][:60]}...); "
        f"its 10 dependents: {results['dep0'].status.value}; run wall {report.wall_time_s:.3f} s"
    )


if __name__ == "__main__":
    main()
