"""`healthmon config validate` and `healthmon config show`: exit codes, messages, effective YAML."""

from pathlib import Path

import pytest
import sqlalchemy as sa
import yaml
from click.testing import CliRunner

from healthmon_dagster.cli.config_cmd import config
from healthmon_dagster.config import load_config_text
from healthmon_dagster.store.db import get_engine

PROJECT_CONFIG = Path(__file__).resolve().parents[2] / "healthmon.yaml"

BROKEN = """\
alert_rules:
  - rule_id: r1
    component: staging_transformer
    channels: [log, slakc]
    condition:
      metric_name: rejection_rate
      operator: gt
      threshold: 0.05
retention:
  metrics_dayz: 30
"""


@pytest.fixture
def runner() -> CliRunner:
    return CliRunner()


def test_validate_good_file_exits_0_with_summary(runner: CliRunner) -> None:
    result = runner.invoke(config, ["validate", str(PROJECT_CONFIG)])

    assert result.exit_code == 0, result.output
    raw = yaml.safe_load(PROJECT_CONFIG.read_text())
    n_checks, n_rules = len(raw["health_checks"]), len(raw["alert_rules"])
    assert result.stdout.startswith(
        f"OK: {PROJECT_CONFIG}: {n_checks} health checks, {n_rules} alert rules, "
    )
    assert "5 channels" in result.stdout
    assert result.stderr == ""


def test_validate_defaults_to_the_configured_path(
    runner: CliRunner, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "custom.yaml"
    path.write_text("")
    monkeypatch.setenv("HEALTHMON_CONFIG", str(path))

    result = runner.invoke(config, ["validate"])

    assert result.exit_code == 0, result.output
    assert result.stdout.startswith(f"OK: {path}: 0 health checks, 0 alert rules, 1 channels")


def test_validate_bad_file_lists_every_error_and_exits_1(runner: CliRunner, tmp_path: Path) -> None:
    path = tmp_path / "healthmon.yaml"
    path.write_text(BROKEN)

    result = runner.invoke(config, ["validate", str(path)])

    assert result.exit_code == 1
    assert result.stdout == ""
    lines = result.stderr.splitlines()
    assert lines[0].startswith("alert_rules[0].condition.operator (line 7): 'gt' is not one of ")
    assert lines[1] == (
        "retention.metrics_dayz (line 10): unknown key; did you mean 'metrics_days'?"
    )
    assert lines[-1] == f"INVALID: {path}: 2 errors"


def test_cross_reference_errors_are_listed_once_the_structure_is_valid(
    runner: CliRunner, tmp_path: Path
) -> None:
    path = tmp_path / "healthmon.yaml"
    path.write_text(BROKEN.replace("gt", "greater_than").replace("dayz", "days"))

    result = runner.invoke(config, ["validate", str(path)])

    assert result.exit_code == 1
    assert result.stderr.splitlines()[0] == (
        "alert_rules[0].channels[1] (line 4): unknown channel 'slakc'; defined: 'log'"
    )


def test_validate_missing_named_file_exits_1(runner: CliRunner, tmp_path: Path) -> None:
    missing = tmp_path / "missing.yaml"

    result = runner.invoke(config, ["validate", str(missing)])

    assert result.exit_code == 1
    assert f"{missing}: file not found" in result.stderr.splitlines()


def test_validate_syntax_error_gives_file_line_column(runner: CliRunner, tmp_path: Path) -> None:
    path = tmp_path / "healthmon.yaml"
    path.write_text("retention:\n  metrics_days: 30\n   alerts_days: 10\n")

    result = runner.invoke(config, ["validate", str(path)])

    assert result.exit_code == 1
    assert result.stderr.splitlines()[0].startswith(f"{path}:3:")


def test_show_prints_effective_config_with_defaults(runner: CliRunner, tmp_path: Path) -> None:
    path = tmp_path / "healthmon.yaml"
    path.write_text("retention:\n  metrics_days: 30\n")

    result = runner.invoke(config, ["show", str(path)])

    assert result.exit_code == 0, result.output
    shown = yaml.safe_load(result.stdout)
    assert shown["retention"]["metrics_days"] == 30
    assert shown["retention"]["alerts_days"] == 365
    assert shown["landing"]["file_pattern"] == "patients*.csv"
    assert shown["channels"]["log"]["type"] == "log"
    assert load_config_text(result.stdout).retention.metrics_days == 30


def test_show_bad_file_exits_1(runner: CliRunner, tmp_path: Path) -> None:
    path = tmp_path / "healthmon.yaml"
    path.write_text(BROKEN)

    result = runner.invoke(config, ["show", str(path)])

    assert result.exit_code == 1
    assert result.stdout == ""


def test_validate_reports_a_mistyped_health_check_parameter(tmp_path: Path) -> None:
    path = tmp_path / "healthmon.yaml"
    path.write_text(
        "health_checks:\n  - check_id: host\n    component: system_resources\n"
        "    kind: system_resources\n    custom_parameters:\n      cpu_percent_warn: 80\n"
    )
    result = CliRunner().invoke(config, ["validate", str(path)])
    assert result.exit_code == 1
    assert "custom_parameters.cpu_percent_warn: not a parameter" in result.stderr
    assert "did you mean 'cpu_percent_warning'?" in result.stderr


# --- Asset keys and columns must exist ------------------------------------------------------------

TYPO_KEY = """\
quality:
  assets:
    stg/patient:
      checks:
        - kind: not_null
          columns: [idd]
"""
TYPO_COLUMN = TYPO_KEY.replace("stg/patient:", "stg/patients:")
USERS_TABLE = TYPO_KEY.replace("stg/patient:", "core/visits:").replace("idd", "visit_id")
UNREACHABLE = "postgresql+psycopg2://nobody@127.0.0.1:9/none"


def test_validate_rejects_an_asset_key_that_names_nothing(
    runner: CliRunner, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, db_url: str
) -> None:
    get_engine(db_url)  # a reachable warehouse, without that table
    monkeypatch.setenv("HEALTHMON_DATABASE_URL", db_url)
    path = tmp_path / "healthmon.yaml"
    path.write_text(TYPO_KEY)

    result = runner.invoke(config, ["validate", str(path)])

    assert result.exit_code == 1, result.output
    assert result.stdout == ""
    assert result.stderr.splitlines() == [
        "quality.assets['stg/patient'] (line 3): asset key 'stg/patient' is not an asset of this "
        "code location; did you mean 'stg/patients'?",
        f"INVALID: {path}: 1 error",
    ]


def test_validate_rejects_an_unknown_column_even_without_a_warehouse(
    runner: CliRunner, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("HEALTHMON_DATABASE_URL", UNREACHABLE)  # bundled columns need no connection
    path = tmp_path / "healthmon.yaml"
    path.write_text(TYPO_COLUMN)

    result = runner.invoke(config, ["validate", str(path)])

    assert result.exit_code == 1, result.output
    assert result.stderr.splitlines() == [
        "quality.assets['stg/patients'].checks[0].columns[0] (line 6): column 'idd' does not exist "
        "in stg.patients (asset stg/patients); did you mean 'id'?",
        f"INVALID: {path}: 1 error",
    ]


def test_validate_warns_when_the_warehouse_is_unreachable_and_exits_0(
    runner: CliRunner, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("HEALTHMON_DATABASE_URL", UNREACHABLE)
    path = tmp_path / "healthmon.yaml"
    path.write_text(USERS_TABLE)

    result = runner.invoke(config, ["validate", str(path)])

    assert result.exit_code == 0, result.output
    assert result.stdout.startswith(f"OK: {path}: ")
    (warning,) = result.stderr.splitlines()
    assert warning.startswith(
        "WARNING: could not check that core/visits exists in the warehouse, nor its columns: "
        "warehouse postgresql+psycopg2://nobody@127.0.0.1:9/none: OperationalError"
    )


def test_validate_accepts_a_users_table_that_exists(
    runner: CliRunner, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, db_url: str
) -> None:
    with get_engine(db_url).begin() as conn:
        conn.execute(sa.text("CREATE TABLE core.visits (visit_id INTEGER)"))
    monkeypatch.setenv("HEALTHMON_DATABASE_URL", db_url)
    path = tmp_path / "healthmon.yaml"
    path.write_text(USERS_TABLE)

    result = runner.invoke(config, ["validate", str(path)])

    assert result.exit_code == 0, result.output
    assert result.stderr == ""
