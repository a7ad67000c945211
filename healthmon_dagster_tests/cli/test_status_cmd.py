"""``healthmon status``: table and JSON output, window validation, asset rollup, stuck landing files,
unreachable store."""

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from click.testing import CliRunner
from sqlalchemy.engine import Engine

from healthmon_dagster.cli.main import cli
from healthmon_dagster.enums import IncidentSource
from healthmon_dagster.etl.attempts import AttemptPolicy, RunOutcome, open_attempt, record_outcome
from healthmon_dagster.etl.failures import Classification
from healthmon_dagster.etl.landing import LandingFile
from healthmon_dagster.incidents import selfheal as sh
from healthmon_dagster.incidents.lifecycle import resolve
from healthmon_dagster.incidents.records import Actor, Failure, open_or_absorb
from healthmon_dagster_tests.fixtures import free_port
from healthmon_dagster_tests.health.fixtures import insert_results, result, series

M = timedelta(minutes=1)


@pytest.fixture
def store(healthmon_env: Path, engine: Engine) -> Engine:
    now = datetime.now(UTC)
    rows = series(
        "database",
        "db_ping",
        now - 3 * 60 * M,
        now - M,
        10 * M,
        lambda ts: "critical" if now - 90 * M <= ts < now - 60 * M else "healthy",
        response_time_ms=12.0,
    )
    rows.append(
        result(
            now - 2 * M,
            "filesystem",
            "landing_free_space",
            "critical",
            critical=False,
            message="landing folder 97% full",
        )
    )
    insert_results(engine, rows)
    return engine


def test_table_shows_overall_components_uptime_and_assets(store: Engine) -> None:
    out = CliRunner().invoke(cli, ["status", "--window", "6h"])
    assert out.exit_code == 0, out.output
    lines = out.output.splitlines()
    assert lines[0].startswith("Overall: WARNING")
    assert "Window 6.0h: uptime" in lines[1] and "1 failure(s)" in lines[1]
    db = next(line for line in lines if line.startswith("database "))
    assert "HEALTHY" in db and "12ms" in db and "83.33%" in db and "30m" in db  # 30 of 180 min down
    assert (
        "filesystem: warning: non-critical check landing_free_space is critical: "
        "landing folder 97% full" in out.output
    )
    # DAGSTER_HOME points at an empty instance: the project's assets, never materialized
    assert any(line.startswith("raw/patients") and "UNKNOWN" in line for line in lines)


def test_json_for_scripts_and_exit_code(store: Engine) -> None:
    out = CliRunner().invoke(
        cli, ["status", "--json", "--window", "24h", "--no-assets", "--exit-code"]
    )
    assert out.exit_code == 1  # warning
    data = json.loads(out.output)
    assert data["overall_health"] == "warning"
    assert data["assets"] is None and "--no-assets" in data["assets_note"]
    db = next(c for c in data["components"] if c["component"] == "database")
    assert db["status"] == "healthy" and db["uptime"]["failures"] == 1
    assert db["uptime"]["mean_time_to_recovery_ms"] == pytest.approx(30 * 60_000)
    end = datetime.fromisoformat(data["window_end"])
    assert end - datetime.fromisoformat(data["window_start"]) == timedelta(hours=24)


@pytest.mark.parametrize("window", ["24", "1.5h", "0h", "yesterday"])
def test_bad_window_is_a_usage_error(healthmon_env: Path, window: str) -> None:
    out = CliRunner().invoke(cli, ["status", "--window", window])
    assert out.exit_code == 2
    assert "--window" in out.output
    assert "e.g. 30m, 24h, 7d" in out.output or "longer than zero" in out.output


def test_without_dagster_home_says_so(store: Engine, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("DAGSTER_HOME")
    out = CliRunner().invoke(cli, ["status"])
    assert out.exit_code == 0, out.output
    assert "Assets: no Dagster instance" in out.output
    assert "run `healthmon demo`, or set DAGSTER_HOME" in out.output


def test_without_dagster_home_it_reads_the_demo_instance(
    store: Engine, healthmon_env: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("DAGSTER_HOME")
    (healthmon_env / "dagster").mkdir(parents=True)  # where `healthmon demo` keeps its instance

    out = CliRunner().invoke(cli, ["status"])

    assert out.exit_code == 0, out.output
    assert "no Dagster instance" not in out.output
    assert any(line.startswith("raw/patients") for line in out.output.splitlines())


def test_unreachable_health_store_is_a_clear_error(
    healthmon_env: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    url = f"postgresql+psycopg2://nobody:secret@127.0.0.1:{free_port()}/healthmon"
    monkeypatch.setenv("HEALTHMON_DATABASE_URL", url)
    out = CliRunner().invoke(cli, ["status"])
    assert out.exit_code == 1
    assert "is unavailable" in out.output and "secret" not in out.output
    assert "Traceback" not in out.output


def make_stuck(engine: Engine, key: str) -> None:
    """A landing file whose only attempt failed with an error running again cannot fix."""
    f = LandingFile(key, 10, "fp", 1_000_000.0)
    opened = open_attempt(engine, f, 1, datetime.now(UTC) - 5 * M)
    assert opened is not None
    why = Classification("database_error", False, "database_error")
    outcome = RunOutcome("failed", why, "database error", "run-1", 1, datetime.now(UTC) - 4 * M)
    assert record_outcome(engine, opened, outcome, AttemptPolicy(), datetime.now(UTC)) is not None


def test_stuck_landing_files_are_listed_and_warn_in_the_exit_code(store: Engine) -> None:
    healthy = CliRunner().invoke(cli, ["status", "--no-assets"])
    assert "Landing: no file stuck" in healthy.output

    make_stuck(store, "patients_0042.csv")

    out = CliRunner().invoke(cli, ["status", "--no-assets"])
    assert out.exit_code == 0, out.output
    assert "Landing: 1 file(s) STUCK" in out.output
    row = next(line for line in out.output.splitlines() if line.startswith("patients_0042.csv"))
    assert "database_error" in row and " 1 " in row
    data = json.loads(CliRunner().invoke(cli, ["status", "--json", "--no-assets"]).output)
    (stuck,) = data["stuck_files"]
    assert (stuck["file_key"], stuck["attempts"], stuck["error_class"]) == (
        "patients_0042.csv",
        1,
        "database_error",
    )
    assert data["stuck_files_note"] is None


def test_a_stuck_file_makes_a_healthy_status_exit_with_a_warning(
    healthmon_env: Path, engine: Engine
) -> None:
    insert_results(
        engine, [result(datetime.now(UTC) - M, "database", "db_ping", "healthy", critical=True)]
    )
    assert CliRunner().invoke(cli, ["status", "--no-assets", "--exit-code"]).exit_code == 0
    make_stuck(engine, "patients_0007.csv")
    assert CliRunner().invoke(cli, ["status", "--no-assets", "--exit-code"]).exit_code == 1


def test_open_incidents_and_mttr_mtbf_per_component(store: Engine) -> None:
    now = datetime.now(UTC)
    for start, fix in ((180, 150), (120, 110), (30, None)):  # minutes ago
        at = now - start * M
        opened = open_or_absorb(
            store,
            f"asset:raw/patients:{start}",
            Failure("raw/patients failed", "raw_loader", at, asset_keys=("raw/patients",)),
            Actor("hook:test", IncidentSource.HOOK),
            at,
        )
        if fix is not None:
            resolve(
                store,
                opened.incident_id,
                "fixed",
                Actor("ana", IncidentSource.CLI),
                now=now - fix * M,
            )
    out = CliRunner().invoke(cli, ["status", "--no-assets", "--window", "6h"])
    assert out.exit_code == 0, out.output
    lines = out.output.splitlines()
    at = lines.index("Incidents: 1 open:")
    assert lines[at + 1].split() == ["ID", "STATUS", "SEVERITY", "COMPONENT", "STARTED", "TITLE"]
    assert lines[at + 3].split()[1:4] == ["open", "medium", "raw_loader"]
    raw = next(line for line in lines[at:] if line.startswith("raw_loader "))
    # MTTR (30+10)/2; MTBF: (360 min - 70 min down) / 3 failures = 96.7 min
    assert raw.split() == ["raw_loader", "3", "1", "20m", "96m"]
    data = json.loads(CliRunner().invoke(cli, ["status", "--json", "--no-assets"]).output)
    assert [i["title"] for i in data["incidents"]["open"]] == ["raw/patients failed"]
    (by,) = data["incidents"]["by_component"]
    assert by["mttr_seconds"] == pytest.approx(20 * 60, abs=0.01)
    assert by["mtbf_seconds"] == pytest.approx((1440 - 70) / 3 * 60, abs=5)  # --window 24h


def test_self_healing_re_runs_and_open_circuit_breakers_are_shown_and_warn(
    healthmon_env: Path, engine: Engine
) -> None:
    insert_results(
        engine, [result(datetime.now(UTC) - M, "database", "db_ping", "healthy", critical=True)]
    )
    quiet = CliRunner().invoke(cli, ["status", "--no-assets"])
    assert (
        "Self-healing: 0 re-run(s) in the window (0 failed), 0 in flight; no circuit breaker"
        in (quiet.output)
    )
    now = datetime.now(UTC)
    policy = sh.SelfHealPolicy()
    for n in (1, 2):
        key = sh.claim(
            engine,
            [
                sh.Planned(
                    "raw/patients", n, sh.Status.REQUESTED, "driver_refused", sh.Reason.FAILED_RUN
                )
            ],
            f"run-{n}",
            None,
            now - 10 * M,
        )
        assert key is not None
        assert sh.record_rerun_outcome(engine, key, False, f"rerun-{n}", policy, now - 9 * M)
    escalated = sh.Planned(
        "raw/patients", 3, sh.Status.ESCALATED, "circuit_breaker", sh.Reason.FAILED_RUN
    )
    assert sh.claim(engine, [escalated], "run-3", None, now - 8 * M) is not None

    out = CliRunner().invoke(cli, ["status", "--no-assets", "--exit-code"])
    assert out.exit_code == 1, out.output
    assert (
        "Self-healing: 2 re-run(s) in the window (2 failed), 0 in flight; 1 circuit breaker(s) OPEN"
        in (out.output)
    )
    assert "raw/patients since" in out.output
    data = json.loads(CliRunner().invoke(cli, ["status", "--json", "--no-assets"]).output)
    assert data["self_healing"]["open_breakers"][0]["asset"] == "raw/patients"
    assert data["self_healing"]["reruns_in_window"] == 2
