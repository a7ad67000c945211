"""Per-asset health rollup: from plain facts, and on a real Dagster instance through the
adapter (materialization, freshness and checks)."""

from datetime import UTC, datetime, timedelta

import dagster as dg
import pytest

from healthmon_dagster.defs.health.instance_facts import get_asset_health
from healthmon_dagster.enums import CheckSeverity
from healthmon_dagster.health.asset_health import (
    AssetFacts,
    AssetHealthStatus,
    CheckExecution,
    CheckExecutionFacts,
    CheckState,
    FreshnessFacts,
    MaterializationFacts,
    Part,
    RunState,
)
from healthmon_dagster.health.asset_health import get_asset_health as get_rollup


class FlakyConfig(dg.Config):
    fail: bool = False


@dg.asset
def good() -> int:
    return 1


@dg.asset_check(asset=good)
def good_has_rows() -> dg.AssetCheckResult:
    return dg.AssetCheckResult(passed=True)


@dg.asset
def warned() -> int:
    return 1


@dg.asset_check(asset=warned)
def warned_volume_normal() -> dg.AssetCheckResult:
    return dg.AssetCheckResult(
        passed=False, severity=dg.AssetCheckSeverity.WARN, description="volume 40% below baseline"
    )


@dg.asset
def bad() -> int:
    return 1


@dg.asset_check(asset=bad)
def bad_ids_unique() -> dg.AssetCheckResult:
    return dg.AssetCheckResult(passed=False, description="3 duplicate ids")


@dg.asset_check(asset=bad)
def bad_not_null() -> dg.AssetCheckResult:
    return dg.AssetCheckResult(passed=True)


@dg.asset
def raising() -> int:
    return 1


@dg.asset_check(asset=raising)
def raising_check_crashes() -> dg.AssetCheckResult:
    raise RuntimeError("connection lost while checking")


@dg.asset(
    freshness_policy=dg.FreshnessPolicy.time_window(
        fail_window=timedelta(hours=1), warn_window=timedelta(minutes=30)
    )
)
def hourly() -> int:
    return 1


@dg.asset
def flaky(config: FlakyConfig) -> int:
    if config.fail:
        raise RuntimeError("source unavailable")
    return 1


@dg.asset
def never() -> int:
    return 1


@dg.asset_check(asset=never)
def never_checked() -> dg.AssetCheckResult:
    return dg.AssetCheckResult(passed=True)


DEFS = dg.Definitions(
    assets=[good, warned, bad, raising, hourly, flaky, never],
    asset_checks=[
        good_has_rows,
        warned_volume_normal,
        bad_ids_unique,
        bad_not_null,
        raising_check_crashes,
        never_checked,
    ],
)


@pytest.fixture(scope="module")
def instance_after_runs() -> dg.DagsterInstance:
    with dg.instance_for_test() as instance:
        for selection in (
            [good, good_has_rows],
            [warned, warned_volume_normal],
            [bad, bad_ids_unique, bad_not_null],
            [hourly],
        ):
            assert dg.materialize(selection, instance=instance).success
        crashed = dg.materialize(
            [raising, raising_check_crashes], instance=instance, raise_on_error=False
        )
        assert not crashed.success
        assert dg.materialize([flaky], instance=instance).success
        failed = dg.materialize(
            [flaky],
            instance=instance,
            raise_on_error=False,
            run_config=dg.RunConfig({"flaky": FlakyConfig(fail=True)}),
        )
        assert not failed.success
        yield instance


def _by_key(instance: dg.DagsterInstance, now: datetime | None = None) -> dict:
    return {h.asset_key: h for h in get_asset_health(instance, DEFS, now=now)}


def test_passing_checks_and_fresh_materialization_are_healthy(instance_after_runs) -> None:
    h = _by_key(instance_after_runs)["good"]
    assert h.status == AssetHealthStatus.HEALTHY
    assert "1 check(s) passed" in h.reason and "materialized" in h.reason
    assert h.freshness is None  # no policy


def test_warn_check_warns_and_error_check_degrades(instance_after_runs) -> None:
    health = _by_key(instance_after_runs)
    w = health["warned"]
    assert w.status == AssetHealthStatus.WARNING
    assert w.reason == "check warned_volume_normal failed (WARN): volume 40% below baseline"
    b = health["bad"]
    assert b.status == AssetHealthStatus.DEGRADED
    assert "check bad_ids_unique failed (ERROR): 3 duplicate ids" in b.reason
    states = {c.name: c.state for c in b.check_results}
    assert states == {"bad_ids_unique": CheckState.FAILED, "bad_not_null": CheckState.PASSED}


def test_check_that_raised_is_execution_failed(instance_after_runs) -> None:
    h = _by_key(instance_after_runs)["raising"]
    assert [c.state for c in h.check_results] == [CheckState.EXECUTION_FAILED]
    assert h.status == AssetHealthStatus.DEGRADED
    assert "check raising_check_crashes execution failed" in h.reason


def test_failed_latest_run_degrades_despite_earlier_success(instance_after_runs) -> None:
    h = _by_key(instance_after_runs)["flaky"]
    assert h.status == AssetHealthStatus.DEGRADED
    assert "failed before materializing it; last success" in h.reason
    assert h.last_materialized_at is not None


def test_never_materialized_is_unknown(instance_after_runs) -> None:
    h = _by_key(instance_after_runs)["never"]
    assert h.status == AssetHealthStatus.UNKNOWN
    assert "never materialized" in h.reason
    assert "not executed: never_checked" in h.reason


def test_freshness_policy_windows(instance_after_runs) -> None:
    fresh = _by_key(instance_after_runs)["hourly"]
    assert fresh.status == AssetHealthStatus.HEALTHY and fresh.freshness is not None
    materialized = fresh.last_materialized_at
    assert materialized is not None
    warn = _by_key(instance_after_runs, materialized + timedelta(minutes=45))["hourly"]
    assert warn.status == AssetHealthStatus.WARNING
    assert warn.reason == "getting stale: last materialized 45m ago, warn window 30m"
    stale = _by_key(instance_after_runs, materialized + timedelta(hours=3))["hourly"]
    assert stale.status == AssetHealthStatus.DEGRADED
    assert stale.reason == "stale: last materialized 3.0h ago, fail window 60m"
    assert stale.to_dict()["status"] == "degraded"


def test_rollup_status_maps_to_component_status() -> None:
    assert AssetHealthStatus.DEGRADED.as_health_status().value == "critical"
    assert AssetHealthStatus.WARNING.as_health_status().value == "warning"


def test_rollup_decides_from_plain_facts_without_an_instance() -> None:
    now = datetime(2026, 3, 2, 12, 0, tzinfo=UTC)
    facts = AssetFacts(
        asset_key="stg/patients",
        materialization=MaterializationFacts(
            last_materialized_at=now - timedelta(hours=3),
            last_materialization_run_id="aaaaaaaa1",
            planned_run_id="bbbbbbbb2",
            planned_run_state=RunState.FAILED,
        ),
        freshness=FreshnessFacts(fail_window=timedelta(hours=2), warn_window=timedelta(hours=1)),
        checks=[
            CheckExecutionFacts(
                "volume", CheckExecution.FAILED, "r1", now, CheckSeverity.WARN, "40% below"
            ),
            CheckExecutionFacts("not_null", CheckExecution.SUCCEEDED, "r1", now),
            CheckExecutionFacts(
                "late", CheckExecution.PLANNED, "r2", now, run_state=RunState.ACTIVE
            ),
        ],
    )
    (health,) = get_rollup([facts], now=now)
    assert health.status == AssetHealthStatus.DEGRADED
    assert health.materialization.reason == (
        "latest run bbbbbbbb failed before materializing it; last success 3.0h ago"
    )
    assert health.freshness is not None
    assert health.freshness.status == AssetHealthStatus.DEGRADED
    assert health.checks is not None and health.checks.status == AssetHealthStatus.WARNING
    assert [c.state for c in health.check_results] == [
        CheckState.IN_PROGRESS,
        CheckState.PASSED,
        CheckState.WARNED,
    ]


def test_a_learning_check_is_healthy_and_named_never_a_warning() -> None:
    now = datetime(2026, 3, 2, 12, 0, tzinfo=UTC)
    materialized = MaterializationFacts(last_materialized_at=now, last_materialization_run_id="r1")
    learning = CheckExecutionFacts(
        "volume", CheckExecution.SUCCEEDED, "r1", now, learning=True, loads_needed=4
    )
    facts = [
        AssetFacts(
            "raw/patients",
            materialized,
            checks=[learning, CheckExecutionFacts("not_null", CheckExecution.SUCCEEDED, "r1", now)],
        ),
        AssetFacts("stg/patients", materialized, checks=[learning]),  # only a learning check
    ]

    raw, stg = get_rollup(facts, now=now)

    assert raw.status == AssetHealthStatus.HEALTHY
    assert raw.checks == Part(
        AssetHealthStatus.HEALTHY, "1 check(s) passed; check volume LEARNING (needs 4 more loads)"
    )
    assert [c.state for c in raw.check_results] == [CheckState.PASSED, CheckState.LEARNING]
    assert stg.status == AssetHealthStatus.HEALTHY
    assert "check volume LEARNING (needs 4 more loads)" in stg.reason
