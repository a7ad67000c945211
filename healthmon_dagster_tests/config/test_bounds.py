"""Numbers in healthmon.yaml: values past their bounds (past a C int, a timedelta, a day of cron, a
64-bit integer) and non-finite floats are rejected with their path and line, and a configuration
with every bound at its extreme works where those values are used: the code location's load with its
freshness policies, the retention job, an ETL run with its quality checks, a health-check job."""

import textwrap
from pathlib import Path

import dagster as dg
import pytest
import yaml
from pydantic import ValidationError

from healthmon_dagster.config import ConfigError, load_config_text
from healthmon_dagster.config.models import (
    INT64_MAX,
    MAX_ESCALATION_LEVELS,
    MAX_GROWTH_PCT,
    MAX_HISTORY_LOADS,
    MAX_INTERVAL_SECONDS,
    MAX_RATE_PER_MINUTE,
    MAX_RETENTION_DAYS,
    MAX_RETRIES,
    MAX_ROWS,
    MAX_SENSITIVITY,
    MAX_TIMEOUT_SECONDS,
    MAX_WINDOW_HOURS,
    MAX_WINDOW_MINUTES,
    MIN_SENSOR_INTERVAL_SECONDS,
    FreshnessConfig,
    RetentionConfiguration,
    ThresholdConfiguration,
    VolumeAnomalyCheck,
)
from healthmon_dagster.definitions import build_defs
from healthmon_dagster.defs.pipeline.jobs import raw_file_run_config
from healthmon_dagster.etl.catalog import ETL_JOB
from healthmon_dagster.etl.landing import LocalLandingSource
from healthmon_dagster.etl.sample import generate_sample, write_to
from healthmon_dagster.store.db import get_engine
from healthmon_dagster.store.retention import prune

C_INT_PAST = 2**31


def error_of(text: str) -> str:
    with pytest.raises(ConfigError) as info:
        load_config_text(textwrap.dedent(text), "bounds.yaml")
    (error,) = info.value.errors
    return error


@pytest.mark.parametrize(
    ("text", "error"),
    [
        (
            f"freshness:\n  raw/patients: {{fail_window_minutes: {C_INT_PAST}}}\n",
            f"freshness['raw/patients'].fail_window_minutes (line 2): {C_INT_PAST}: input should "
            f"be less than or equal to {MAX_WINDOW_MINUTES}",
        ),
        (
            f"retention: {{metrics_days: {C_INT_PAST}}}\n",
            f"retention.metrics_days (line 1): {C_INT_PAST}: input should be less than or equal "
            f"to {MAX_RETENTION_DAYS}",
        ),
        (
            "quality:\n  assets:\n    raw/patients:\n      checks:\n"
            "        - {kind: volume_anomaly, sensitivity: 1.0e999}\n",
            "quality.assets['raw/patients'].checks[0].sensitivity (line 5): '1.0e999': input "
            "should be a finite number",
        ),
        (
            "quality:\n  assets:\n    raw/patients:\n      checks:\n"
            "        - {kind: volume_anomaly, sensitivity: 1000}\n",
            "quality.assets['raw/patients'].checks[0].sensitivity (line 5): 1000: input should be "
            f"less than or equal to {MAX_SENSITIVITY:g}",
        ),
        (
            "quality:\n  assets:\n    raw/patients:\n      checks:\n"
            f"        - {{kind: row_count, min: 1, max: {MAX_ROWS + 1}}}\n",
            f"quality.assets['raw/patients'].checks[0].max (line 5): {MAX_ROWS + 1}: input should "
            f"be less than or equal to {MAX_ROWS}",
        ),
        (
            "quality:\n  assets:\n    raw/patients:\n      checks:\n"
            f"        - {{kind: accepted_values, column: gender, values: [M, {2**64}]}}\n",
            f"quality.assets['raw/patients'].checks[0].values[1] (line 5): {2**64} is beyond the "
            "64-bit integer range of a database",
        ),
        (
            "health_checks:\n  - {check_id: c, component: database, kind: database,\n"
            f"     interval_seconds: {MAX_INTERVAL_SECONDS + 1}}}\n",
            f"health_checks[0].interval_seconds (line 3): {MAX_INTERVAL_SECONDS + 1}: input "
            f"should be less than or equal to {MAX_INTERVAL_SECONDS}",
        ),
        (
            "health_checks:\n  - {check_id: c, component: database, kind: database,\n"
            "     interval_seconds: 86400, timeout_seconds: 1.0e10}\n",
            "health_checks[0].timeout_seconds (line 3): '1.0e10': input should be less than or "
            f"equal to {MAX_TIMEOUT_SECONDS}",
        ),
        (
            f"alerting:\n  dispatch:\n    rate_per_minute: {{slack: {C_INT_PAST}}}\n",
            f"alerting.dispatch.rate_per_minute.slack (line 3): {C_INT_PAST}: input should be less "
            f"than or equal to {MAX_RATE_PER_MINUTE}",
        ),
        (
            "escalation_policies:\n  - {policy_id: p, max_escalations: 1000000}\n",
            "escalation_policies[0].max_escalations (line 2): 1000000: input should be less than "
            f"or equal to {MAX_ESCALATION_LEVELS}",
        ),
        (
            "sensor_intervals:\n  landing_files_sensor: 1\n",
            "sensor_intervals.landing_files_sensor (line 2): 1: input should be greater than or "
            f"equal to {MIN_SENSOR_INTERVAL_SECONDS}",
        ),
    ],
    ids=[
        "freshness_past_c_int",
        "retention_past_c_int",
        "sensitivity_inf",
        "sensitivity",
        "row_count",
        "accepted_value_past_int64",
        "interval",
        "timeout",
        "notification_rate",
        "escalations",
        "sensor_interval_below_the_daemon_loop",
    ],
)
def test_a_number_past_its_bound_is_an_error_at_its_line(text: str, error: str) -> None:
    assert error_of(text) == error


@pytest.mark.parametrize("value", [float("inf"), float("-inf"), float("nan")])
def test_models_built_in_code_refuse_non_finite_floats(value: float) -> None:
    with pytest.raises(ValidationError, match="finite number"):
        VolumeAnomalyCheck(kind="volume_anomaly", sensitivity=value)
    with pytest.raises(ValidationError, match="finite number"):
        ThresholdConfiguration(
            threshold_id="t",
            component="database",
            metric_name="m",
            warning_threshold=value,
            critical_threshold=1,
        )
    with pytest.raises(ValidationError):
        RetentionConfiguration(metrics_days=value)  # type: ignore[arg-type]
    with pytest.raises(ValidationError):
        FreshnessConfig(fail_window_minutes=value)  # type: ignore[arg-type]


def extreme_config() -> dict[str, object]:
    """healthmon.yaml's structure with every bounded number at its bound (upper, or lower where
    the upper has no meaning)."""
    windows = {
        "warn_window_minutes": MAX_WINDOW_MINUTES - 1,
        "fail_window_minutes": MAX_WINDOW_MINUTES,
    }
    return {
        "freshness": {key: windows for key in ("raw/patients", "stg/patients", "core/dim_patient")},
        "retention": {
            name: MAX_RETENTION_DAYS
            for name in (
                "metrics_days",
                "check_results_days",
                "alerts_days",
                "incidents_days",
                "load_runs_days",
            )
        },
        "quality": {
            "rejection_rate": {"warn": 1, "fail": 1},
            "assets": {
                "raw/patients": {
                    "checks": [
                        {"kind": "row_count", "min": 0, "max": MAX_ROWS},
                        {
                            "kind": "row_count_change",
                            "max_drop_pct": 100,
                            "max_growth_pct": MAX_GROWTH_PCT,
                        },
                        {
                            "kind": "volume_anomaly",
                            "sensitivity": MAX_SENSITIVITY,
                            "min_history": MAX_HISTORY_LOADS,
                            "fail": MAX_ROWS,
                        },
                        {"kind": "file_anomalies", "window_hours": MAX_WINDOW_HOURS},
                        {
                            "kind": "freshness",
                            "column": "_loaded_at",
                            "warn_after_minutes": MAX_WINDOW_MINUTES - 1,
                            "fail_after_minutes": MAX_WINDOW_MINUTES,
                        },
                        {"kind": "not_null", "columns": ["Id"], "fail": MAX_ROWS},
                        {
                            "kind": "accepted_values",
                            "column": "gender",
                            "values": ["M", "F", str(INT64_MAX)],
                            "warn": MAX_ROWS,
                            "fail": MAX_ROWS,
                        },
                    ]
                },
                "stg/patients": {"checks": [{"kind": "rejection_rate"}]},
            },
        },
        "health_checks": [
            {
                "check_id": "database_connectivity",
                "component": "database",
                "kind": "database",
                "interval_seconds": MAX_INTERVAL_SECONDS,
                "timeout_seconds": MAX_TIMEOUT_SECONDS,
                "retry_attempts": MAX_RETRIES,
            }
        ],
        "alert_rules": [
            {
                "rule_id": "r",
                "component": "database",
                "condition": {
                    "metric_name": "m",
                    "threshold": 1.0e300,
                    "duration_minutes": MAX_WINDOW_MINUTES,
                },
                "cooldown_period_minutes": MAX_WINDOW_MINUTES,
            }
        ],
        "escalation_policies": [
            {
                "policy_id": "p",
                "repeat_interval_minutes": MAX_WINDOW_MINUTES,
                "max_escalations": MAX_ESCALATION_LEVELS,
                "escalation_levels": [
                    {"level": MAX_ESCALATION_LEVELS, "delay_minutes": MAX_WINDOW_MINUTES}
                ],
            }
        ],
    }


@pytest.fixture
def extreme(healthmon_env: Path, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Path:
    """The extreme configuration as HEALTHMON_CONFIG (validated as `config validate` would)."""
    path = tmp_path / "extreme.yaml"
    path.write_text(yaml.safe_dump(extreme_config(), sort_keys=False))
    load_config_text(path.read_text(), str(path))
    monkeypatch.setenv("HEALTHMON_CONFIG", str(path))
    return path


def test_extremes_load_as_a_code_location_with_freshness_policies(extreme: Path) -> None:
    defs = build_defs()

    dg.Definitions.validate_loadable(defs)
    policies = {
        spec.key: spec.freshness_policy
        for spec in defs.resolve_all_asset_specs()
        if spec.freshness_policy is not None
    }
    assert len(policies) == 3


def test_extremes_work_in_the_retention_job(extreme: Path, db_url: str) -> None:
    engine = get_engine(db_url)
    config = load_config_text(extreme.read_text())

    assert prune(engine, config.retention) == {
        "etl.metrics": 0,
        "etl.check_results": 0,
        "etl.load_runs": 0,
        "etl.incidents": 0,
    }
    with dg.instance_for_test() as instance:
        result = build_defs().resolve_job_def("retention_job").execute_in_process(instance=instance)
    assert result.success


@pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)
def test_extremes_work_in_an_etl_run_and_a_health_check_job(
    extreme: Path, healthmon_env: Path
) -> None:
    (sample,) = generate_sample(50, files=1)
    write_to(LocalLandingSource(healthmon_env / "landing"), [sample])
    defs = build_defs()

    with dg.instance_for_test() as instance:
        etl = defs.resolve_job_def(ETL_JOB).execute_in_process(
            run_config=raw_file_run_config(sample.key), instance=instance, raise_on_error=False
        )
        health = defs.resolve_job_def(
            f"health_checks_every_{MAX_INTERVAL_SECONDS}s_job"
        ).execute_in_process(instance=instance, raise_on_error=False)

    assert etl.success and health.success
    evaluations = etl.get_asset_check_evaluations()
    # Every configured check ran (7 on raw, 1 on stg, 3 last-load freshness checks, and the
    # built-in landing_files_are_not_stuck), and none of them broke on its numbers: a check that
    # could not be evaluated has status "error".
    statuses = {
        (e.asset_key.to_user_string(), e.check_name): e.metadata["status"].value
        for e in evaluations
    }
    assert len(statuses) == 12, statuses
    assert ("raw/patients", "landing_files_are_not_stuck") in statuses
    assert "error" not in statuses.values(), [
        (e.check_name, e.description) for e in evaluations if e.metadata["status"].value == "error"
    ]
