"""``healthmon checks``: the latest result of every asset check per asset, as JSON or a table."""

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner
from sqlalchemy.engine import Engine

from healthmon_dagster.cli.main import cli
from healthmon_dagster.store.tables import check_results
from healthmon_dagster_tests.fixtures import free_port

T0 = datetime(2026, 1, 5, 12, 0, tzinfo=UTC)


def row(minutes: int, target: str, check: str, status: str, **extra: Any) -> dict[str, Any]:
    return {
        "ts": T0 + timedelta(minutes=minutes),
        "source": "asset_check",
        "check_name": check,
        "target": target,
        "status": status,
        "severity": "ERROR" if status in ("failed", "error") else "WARN",
        "message": f"{check} is {status}",
        "details": {},
        "dagster_run_id": f"run-{minutes}",
        # every row has every key: an executemany insert takes its columns from the first row
        "observed_value": None,
        "failing_rows": None,
        **extra,
    }


@pytest.fixture
def store(healthmon_env: Path, engine: Engine) -> Engine:
    with engine.begin() as conn:
        conn.execute(
            check_results.insert(),
            [
                row(0, "stg/patients", "ghost_is_not_null", "passed"),
                row(5, "stg/patients", "ghost_is_not_null", "error"),  # the newest counts
                row(5, "stg/patients", "rejection_rate_below_threshold", "warn", failing_rows=6),
                row(5, "raw/patients", "row_count_in_range", "passed", observed_value=200.0),
                # A health check's row is not an asset check's: never listed.
                {**row(6, "database", "db_ping", "critical"), "source": "health_check"},
            ],
        )
    return engine


def test_json_lists_the_latest_result_of_each_check_per_asset(store: Engine) -> None:
    result = CliRunner().invoke(cli, ["checks", "--json"])

    assert result.exit_code == 0, result.output
    rows = json.loads(result.output)
    latest = {(r["asset"], r["check"]): r["status"] for r in rows}
    assert latest == {
        ("raw/patients", "row_count_in_range"): "passed",
        ("stg/patients", "ghost_is_not_null"): "error",
        ("stg/patients", "rejection_rate_below_threshold"): "warn",
    }
    assert [r["asset"] for r in rows] == ["raw/patients", "stg/patients", "stg/patients"]
    (warn,) = [r for r in rows if r["status"] == "warn"]
    assert warn["failing_rows"] == 6 and warn["dagster_run_id"] == "run-5"


def test_table_groups_checks_per_asset_with_a_status_count(store: Engine) -> None:
    result = CliRunner().invoke(cli, ["checks"])

    assert result.exit_code == 0, result.output
    lines = result.output.splitlines()
    assert lines[0].split() == [
        "ASSET",
        "CHECK",
        "STATUS",
        "SEVERITY",
        "OBSERVED",
        "THRESHOLD",
        "FAILING_ROWS",
        "TS",
    ]
    assert "ghost_is_not_null" in result.output and "error" in result.output
    assert "" in lines[1:-1]  # a blank line between assets
    assert lines[-1] == "1 error, 1 passed, 1 warn"


def test_asset_option_filters(store: Engine) -> None:
    result = CliRunner().invoke(cli, ["checks", "--json", "--asset", "raw/patients"])

    assert result.exit_code == 0, result.output
    assert [r["check"] for r in json.loads(result.output)] == ["row_count_in_range"]


def test_an_unknown_asset_is_an_error_listing_the_known_ones(store: Engine) -> None:
    result = CliRunner().invoke(cli, ["checks", "--asset", "stg/patient"])

    assert result.exit_code == 1
    assert "unknown asset 'stg/patient' for --asset; known assets:" in result.output
    assert "raw/patients, " in result.output and "stg/patients" in result.output
    # A configured asset without results yet is known: an empty answer, not an error.
    empty = CliRunner().invoke(cli, ["checks", "--asset", "core/dim_patient"])
    assert empty.exit_code == 0 and "no check results recorded yet for core/dim_patient" in (
        empty.output
    )


def test_a_learning_check_shows_how_many_more_loads_it_needs(store: Engine) -> None:
    with store.begin() as conn:
        conn.execute(
            check_results.insert(),
            [
                {
                    **row(7, "raw/patients", "volume_is_normal", "insufficient_history"),
                    "severity": None,
                    "details": {"n_history": 3, "min_history": 7, "loads_needed": 4},
                }
            ],
        )

    table = CliRunner().invoke(cli, ["checks", "--asset", "raw/patients"])
    data = json.loads(CliRunner().invoke(cli, ["checks", "--json"]).output)

    assert table.exit_code == 0, table.output
    (line,) = [line for line in table.output.splitlines() if "volume_is_normal" in line]
    assert "LEARNING (needs 4 more loads)" in line
    assert table.output.splitlines()[-1] == "1 learning, 1 passed"
    (learning,) = [r for r in data if r["check"] == "volume_is_normal"]
    assert learning["learning"] is True and learning["loads_needed"] == 4


@pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)
def test_empty_store_says_how_to_get_results(healthmon_env: Path, engine: Engine) -> None:
    result = CliRunner().invoke(cli, ["checks"])

    assert result.exit_code == 0, result.output
    assert "no check results recorded yet" in result.output


def test_unreachable_store_exits_1_without_traceback(
    healthmon_env: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(
        "HEALTHMON_DATABASE_URL",
        f"postgresql+psycopg2://etl:s3cret@127.0.0.1:{free_port()}/warehouse",
    )

    result = CliRunner().invoke(cli, ["checks"])

    assert result.exit_code == 1
    assert "s3cret" not in result.output and "Traceback" not in result.output
