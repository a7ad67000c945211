"""Performance benchmarks per component, from stored history.

Current window: the last ``current`` period (default 1 hour); baseline: the ``baseline`` period
(default 7 days) before it. Sources:

- pipeline components (``raw_loader``, ``staging_transformer``, ``core_merger``): ``etl.load_runs``
  of their layer (in the warehouse, which may be another database than the health store):
  response time = mean ``duration_ms``, throughput = rows out per second of load time, error
  rate = failed runs / runs;
- every other component: its health checks in ``etl.metrics`` (``<check_id>.response_time_ms``)
  and ``etl.check_results`` (error rate = critical results / results, throughput = successful
  checks per second of the window);
- resource use: ``system_resources`` metrics (``*.cpu_percent``, ``*.process_rss_mb``) and database
  connections (``*.connections``) in the same windows.

Performance score (0-100), each term 0 when its input is missing::

    score = 100 - latency - throughput - errors - cpu, clamped to [0, 100]
    latency    = 40 * clamp((current_rt / baseline_rt - 1) / 1.0)    # 40 at 2x the baseline
    throughput = 20 * clamp((1 - current_tp / baseline_tp) / 0.5)    # 20 at half the baseline
    errors     = 30 * clamp(current_error_rate / 0.10)               # 30 at 10 % errors
    cpu        = 10 * clamp((current_cpu_percent - 70) / 25)         # 10 at 95 % CPU
    clamp(x) = min(1, max(0, x))

Recommendations are rules on the same figures; each says which number crossed what and why it
matters. Only counts, rates and durations: never a field value (PHI rule).
"""

from contextlib import ExitStack
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Engine

from healthmon_dagster.enums import AlertSeverity, HealthComponent, HealthStatus, RecordSource
from healthmon_dagster.etl.catalog import COMPONENT_LAYERS
from healthmon_dagster.store.tables import check_results, load_runs, metrics


@dataclass
class ResourceUtilization:
    cpu_percent: float | None = None
    memory_mb: float | None = None
    disk_io: float | None = None  # not recorded yet: no source in the health store
    network_io: float | None = None  # idem
    database_connections: float | None = None


@dataclass
class PerformanceMetrics:
    """Baseline or current figures of one component."""

    response_time_ms: float | None = None
    throughput_per_second: float | None = None
    error_rate: float | None = None
    resource_utilization: ResourceUtilization = field(default_factory=ResourceUtilization)
    samples: int = 0


@dataclass
class Recommendation:
    metric: str
    severity: AlertSeverity  # info, warning or critical
    message: str


@dataclass
class PerformanceBenchmark:
    benchmark_id: str
    name: str
    description: str
    component: HealthComponent
    baseline_metrics: PerformanceMetrics
    current_metrics: PerformanceMetrics
    performance_score: float | None
    score_terms: dict[str, float]
    recommendations: list[Recommendation]
    last_run: datetime

    @property
    def status(self) -> HealthStatus:
        """HEALTHY at 80+, WARNING at 50+, CRITICAL below, UNKNOWN without data."""
        if self.performance_score is None:
            return HealthStatus.UNKNOWN
        if self.performance_score >= 80:
            return HealthStatus.HEALTHY
        return HealthStatus.WARNING if self.performance_score >= 50 else HealthStatus.CRITICAL

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out["component"] = self.component.value
        out["last_run"] = self.last_run.isoformat()
        out["status"] = self.status.value
        return out


def _clamp(x: float) -> float:
    return min(1.0, max(0.0, x))


def _ratio(a: float | None, b: float | None) -> float | None:
    return None if a is None or b is None or b <= 0 else a / b


def _avg_metric(
    conn: Any, suffix: str, start: datetime, end: datetime, component: str | None
) -> tuple[float | None, int]:
    conds = [metrics.c.metric_name.like(f"%.{suffix}"), metrics.c.ts >= start, metrics.c.ts < end]
    if component is not None:
        conds.append(metrics.c.component == component)
    row = conn.execute(sa.select(sa.func.avg(metrics.c.value), sa.func.count()).where(*conds)).one()
    return (None if row[0] is None else float(row[0])), int(row[1])


def _window(
    conn: Any, component: HealthComponent, start: datetime, end: datetime, load_runs_conn: Any
) -> PerformanceMetrics:
    m = PerformanceMetrics()
    layer = COMPONENT_LAYERS.get(component)
    if layer is not None:
        row = load_runs_conn.execute(
            sa.select(
                sa.func.count(),
                sa.func.avg(load_runs.c.duration_ms),
                sa.func.sum(load_runs.c.rows_out),
                sa.func.sum(load_runs.c.duration_ms),
                sa.func.sum(sa.case((load_runs.c.status == "failed", 1), else_=0)),
            ).where(
                load_runs.c.layer == layer,
                load_runs.c.status != "skipped",
                load_runs.c.started_at >= start,
                load_runs.c.started_at < end,
            )
        ).one()
        n = int(row[0])
        m.samples = n
        if n:
            m.response_time_ms = float(row[1])
            total_ms = float(row[3] or 0)
            m.throughput_per_second = float(row[2] or 0) / (total_ms / 1000) if total_ms else None
            m.error_rate = int(row[4] or 0) / n
    else:
        m.response_time_ms, n = _avg_metric(conn, "response_time_ms", start, end, component.value)
        row = conn.execute(
            sa.select(
                sa.func.count(),
                sa.func.sum(
                    sa.case((check_results.c.status == HealthStatus.CRITICAL.value, 1), else_=0)
                ),
            ).where(
                check_results.c.source == RecordSource.HEALTH_CHECK.value,
                check_results.c.target == component.value,
                check_results.c.ts >= start,
                check_results.c.ts < end,
            )
        ).one()
        total, critical = int(row[0]), int(row[1] or 0)
        m.samples = max(n, total)
        if total:
            m.error_rate = critical / total
            m.throughput_per_second = (total - critical) / (end - start).total_seconds()
    ru = m.resource_utilization
    ru.cpu_percent, _ = _avg_metric(conn, "cpu_percent", start, end, "system_resources")
    ru.memory_mb, _ = _avg_metric(conn, "process_rss_mb", start, end, "system_resources")
    ru.database_connections, _ = _avg_metric(conn, "connections", start, end, "database")
    return m


def score(
    baseline: PerformanceMetrics, current: PerformanceMetrics
) -> tuple[float | None, dict[str, float]]:
    """The performance score and its terms (formula in the module docstring)."""
    if current.samples == 0:
        return None, {}
    terms: dict[str, float] = {}
    rt = _ratio(current.response_time_ms, baseline.response_time_ms)
    terms["latency"] = 40 * _clamp((rt - 1) / 1.0) if rt is not None else 0.0
    tp = _ratio(current.throughput_per_second, baseline.throughput_per_second)
    terms["throughput"] = 20 * _clamp((1 - tp) / 0.5) if tp is not None else 0.0
    er = current.error_rate
    terms["errors"] = 30 * _clamp(er / 0.10) if er is not None else 0.0
    cpu = current.resource_utilization.cpu_percent
    terms["cpu"] = 10 * _clamp((cpu - 70) / 25) if cpu is not None else 0.0
    total = 100 - sum(terms.values())
    return round(max(0.0, min(100.0, total)), 1), {k: round(v, 2) for k, v in terms.items()}


def recommend(
    component: HealthComponent,
    baseline: PerformanceMetrics,
    current: PerformanceMetrics,
    baseline_label: str,
) -> list[Recommendation]:
    """Rule-based recommendations; each names the figures that triggered it."""
    out: list[Recommendation] = []
    c = component.value
    if current.samples == 0:
        out.append(
            Recommendation(
                "samples",
                AlertSeverity.INFO,
                f"no {c} data in the current window: "
                "nothing to benchmark; check that its checks or loads run",
            )
        )
        return out
    if baseline.samples == 0:
        out.append(
            Recommendation(
                "samples",
                AlertSeverity.INFO,
                f"no {c} data in the {baseline_label} "
                "baseline window yet; the score ignores baseline comparisons",
            )
        )
    rt = _ratio(current.response_time_ms, baseline.response_time_ms)
    if rt is not None and rt >= 1.5:
        out.append(
            Recommendation(
                "response_time_ms",
                AlertSeverity.CRITICAL if rt >= 2 else AlertSeverity.WARNING,
                f"{c} response time {current.response_time_ms:.0f} ms is {rt:.1f}x the "
                f"{baseline_label} baseline ({baseline.response_time_ms:.0f} ms): look for a larger "
                "input, lock contention or a missing index before it breaches its timeout",
            )
        )
    tp = _ratio(current.throughput_per_second, baseline.throughput_per_second)
    if tp is not None and tp <= 0.7:
        out.append(
            Recommendation(
                "throughput_per_second",
                AlertSeverity.WARNING,
                f"{c} throughput {current.throughput_per_second:.1f}/s is {tp:.0%} of the baseline "
                f"({baseline.throughput_per_second:.1f}/s): the same work now takes longer",
            )
        )
    er = current.error_rate
    if er is not None and er > 0.05:
        base = baseline.error_rate
        was = f" (baseline {base:.1%})" if base is not None else ""
        out.append(
            Recommendation(
                "error_rate",
                AlertSeverity.CRITICAL if er > 0.10 else AlertSeverity.WARNING,
                f"{c} error rate is {er:.1%}{was}, above 5%: read the latest failed results in "
                "etl.check_results / etl.load_runs for the cause",
            )
        )
    cpu = current.resource_utilization.cpu_percent
    if cpu is not None and cpu > 80:
        out.append(
            Recommendation(
                "cpu_percent",
                AlertSeverity.WARNING,
                f"host CPU averaged {cpu:.0f}% in the current window (above 80%): checks and loads "
                "compete for CPU; spread schedules or add capacity",
            )
        )
    return out


def run_benchmark(
    engine: Engine,
    component: HealthComponent,
    now: datetime | None = None,
    current: timedelta = timedelta(hours=1),
    baseline: timedelta = timedelta(days=7),
    warehouse: Engine | None = None,
) -> PerformanceBenchmark:
    """Benchmark one component from the health store's history (``engine``); a pipeline
    component's load runs are read from ``warehouse`` (default: ``engine``, one database)."""
    now = now or datetime.now(UTC)
    cur_start = now - current
    with ExitStack() as stack:
        conn = stack.enter_context(engine.connect())
        runs_conn = conn
        if warehouse is not None and warehouse is not engine and component in COMPONENT_LAYERS:
            runs_conn = stack.enter_context(warehouse.connect())
        base_m = _window(conn, component, cur_start - baseline, cur_start, runs_conn)
        cur_m = _window(conn, component, cur_start, now, runs_conn)
    value, terms = score(base_m, cur_m)
    label = f"{baseline.days}-day" if baseline.days else f"{baseline.total_seconds() / 3600:g}-hour"
    return PerformanceBenchmark(
        benchmark_id=f"{component.value}_performance",
        name=f"{component.value} performance",
        description=f"last {current} against the {label} before it",
        component=component,
        baseline_metrics=base_m,
        current_metrics=cur_m,
        performance_score=value,
        score_terms=terms,
        recommendations=recommend(component, base_m, cur_m, label),
        last_run=now,
    )
