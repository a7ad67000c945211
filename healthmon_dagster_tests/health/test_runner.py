"""The runner: concurrency, per-check timeouts, retries, dependencies, custom impls, no tracebacks."""

import time

import pytest

from healthmon_dagster.config.models import ThresholdConfiguration
from healthmon_dagster.enums import HealthComponent, HealthStatus
from healthmon_dagster.health.context import CheckContext
from healthmon_dagster.health.registry import register
from healthmon_dagster.health.result import HealthCheck, Observation
from healthmon_dagster.health.runner import HealthCheckRunner

CALLS: dict[str, int] = {}


@register("test_sleep")
def sleep_check(check: HealthCheck, ctx: CheckContext) -> Observation:
    time.sleep(float(check.param("seconds", 0)))
    return Observation()


@register("test_flaky")
def flaky_check(check: HealthCheck, ctx: CheckContext) -> Observation:
    """Fails until its ``fail_times``-th call."""
    CALLS[check.check_id] = CALLS.get(check.check_id, 0) + 1
    if CALLS[check.check_id] <= int(check.param("fail_times", 0)):
        return Observation().error(f"attempt {CALLS[check.check_id]} failed")
    return Observation()


def boom(check: HealthCheck, ctx: CheckContext) -> Observation:
    """A custom check (by import path) that raises deep inside."""

    def inner() -> None:
        raise RuntimeError("disk quota exceeded\nTraceback (most recent call last): ...")

    inner()
    return Observation()


def mk(check_id: str, kind: str, **kw: object) -> HealthCheck:
    # kw holds HealthCheck fields of several types; a wrong one fails the test at once
    return HealthCheck(check_id, HealthComponent.NETWORK, kind, **kw)  # type: ignore[arg-type]


def test_a_check_past_its_timeout_is_critical_while_the_others_finish_on_time() -> None:
    slow = mk("slow", "test_sleep", timeout_seconds=1.0, custom_parameters={"seconds": 10})
    fast = [mk(f"fast{i}", "test_sleep", custom_parameters={"seconds": 0.05}) for i in range(20)]
    finished: dict[str, float] = {}
    start = time.monotonic()

    report = HealthCheckRunner(max_concurrency=8).run(
        [slow, *fast], on_result=lambda r: finished.setdefault(r.check_id, time.monotonic() - start)
    )

    results = report.by_id()
    assert results["slow"].status == HealthStatus.CRITICAL
    assert "timed out after 1s" in results["slow"].errors[0]
    # Reported at its 1 s timeout, long before its 10 s of work (bounds loose: shared machine).
    assert 0.95 <= finished["slow"] < 5
    assert all(results[c.check_id].status == HealthStatus.HEALTHY for c in fast)
    # Not held back: every fast check was done before the slow one timed out.
    assert max(finished[c.check_id] for c in fast) < finished["slow"]
    assert report.wall_time_s < 5


def test_a_check_whose_dependency_failed_is_unknown_and_not_run() -> None:
    CALLS.clear()
    base = mk("base", "test_flaky", custom_parameters={"fail_times": 99})
    child = mk("child", "test_flaky", dependencies=("base",))
    grandchild = mk("grandchild", "test_flaky", dependencies=("child",))
    sibling = mk("sibling", "test_flaky")

    results = HealthCheckRunner().run([grandchild, child, base, sibling]).by_id()

    assert results["base"].status == HealthStatus.CRITICAL
    assert results["child"].status == HealthStatus.UNKNOWN
    assert results["child"].errors[0].startswith("dependency base failed")
    assert results["grandchild"].status == HealthStatus.UNKNOWN
    assert results["grandchild"].errors[0].startswith("dependency child failed")
    assert results["sibling"].status == HealthStatus.HEALTHY
    assert "child" not in CALLS and "grandchild" not in CALLS


def test_a_healthy_dependency_lets_the_check_run_after_it() -> None:
    finished: list[str] = []
    checks = [
        mk("after", "test_sleep", dependencies=("first",)),
        mk("first", "test_sleep", custom_parameters={"seconds": 0.2}),
    ]

    results = HealthCheckRunner().run(checks, on_result=lambda r: finished.append(r.check_id))

    assert finished == ["first", "after"]
    assert all(r.status == HealthStatus.HEALTHY for r in results.results)


def test_retries_turn_a_transient_failure_into_a_healthy_result() -> None:
    CALLS.clear()
    flaky = mk("flaky", "test_flaky", retry_attempts=2, custom_parameters={"fail_times": 2})
    stubborn = mk("stubborn", "test_flaky", retry_attempts=1, custom_parameters={"fail_times": 5})

    results = HealthCheckRunner(retry_delay_seconds=0.01).run([flaky, stubborn]).by_id()

    assert (results["flaky"].status, results["flaky"].attempts) == (HealthStatus.HEALTHY, 3)
    assert (results["stubborn"].status, results["stubborn"].attempts) == (HealthStatus.CRITICAL, 2)
    assert results["stubborn"].errors == ["attempt 2 failed"]


def test_a_custom_check_that_raises_reports_one_line_without_a_traceback() -> None:
    check = mk("custom_boom", "custom", impl=f"{__name__}:boom")

    result = HealthCheckRunner().run_health_check(check)

    assert result.status == HealthStatus.CRITICAL
    assert result.errors == ["custom check 'custom_boom' raised RuntimeError: disk quota exceeded"]
    assert "Traceback" not in str(result.to_dict())


def test_a_custom_impl_that_cannot_be_imported_says_what_to_fix() -> None:
    check = mk("custom_missing", "custom", impl="no_such_module_xyz:check")

    result = HealthCheckRunner().run_health_check(check)

    assert result.status == HealthStatus.CRITICAL
    assert "could not be loaded (ModuleNotFoundError" in result.errors[0]
    assert "fix 'impl' in healthmon.yaml" in result.errors[0]


def test_disabled_checks_do_not_run_and_duplicate_ids_are_refused() -> None:
    results = HealthCheckRunner().run([mk("off", "test_sleep", enabled=False)]).results
    assert results == []
    with pytest.raises(ValueError, match="duplicate check_id"):
        HealthCheckRunner().run([mk("a", "test_sleep"), mk("a", "test_sleep")])


@register("test_latency")
def latency_check(check: HealthCheck, ctx: CheckContext) -> Observation:
    obs = Observation()
    obs.metric("warehouse.query_time_ms", float(check.param("ms", 0)))
    return obs


def test_a_threshold_breach_is_retried_and_makes_dependents_unknown() -> None:

    slow_db = mk("slow_db", "test_latency", custom_parameters={"ms": 900}, retry_attempts=1)
    child = mk("child", "test_sleep", dependencies=("slow_db",))
    limit = ThresholdConfiguration(
        threshold_id="db_latency",
        component="network",
        metric_name="query_time_ms",
        warning_threshold=300,
        critical_threshold=600,
    )

    results = HealthCheckRunner(thresholds=[limit]).run([slow_db, child]).by_id()

    assert results["slow_db"].status == HealthStatus.CRITICAL
    assert results["slow_db"].attempts == 2  # judged critical by the threshold, then retried
    assert results["slow_db"].errors == [
        "warehouse.query_time_ms is 900, above the critical threshold 600 (threshold db_latency)"
    ]
    assert results["child"].status == HealthStatus.UNKNOWN
