"""`healthmon demo` (in-process and as the installed console script, on the embedded default with its
health store apart from the warehouse) and `healthmon db upgrade/status`."""

import csv
import io
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import sqlalchemy as sa
from click.testing import CliRunner
from sqlalchemy.engine import Engine

from healthmon_dagster.cli.main import cli
from healthmon_dagster.store.db import get_engine
from healthmon_dagster.store.migrate import head_revision
from healthmon_dagster.store.tables import check_results, config_versions, files, metrics
from healthmon_dagster_tests.cli.fixtures import healthmon_script
from healthmon_dagster_tests.fixtures import free_port

SAMPLE_KEYS = ("patients_0001.csv", "patients_0002.csv", "patients_0003.csv")
DEFECT_KEY = "patients_defect_0001.csv"  # rows without a patient id: its check fails
LOG_CHANNEL = "alerts sent to the log channel"


@pytest.fixture
def runner() -> CliRunner:
    return CliRunner()


def summary_line(output: str, file_key: str) -> str:
    (line,) = [line for line in output.splitlines() if line.strip().startswith(file_key)]
    return line


@pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)
def test_demo_loads_three_sample_files_then_has_nothing_new(
    healthmon_env: Path, runner: CliRunner
) -> None:
    first = runner.invoke(cli, ["demo", "--rows", "100"])

    assert first.exit_code == 0, first.output
    assert "generated 3 sample file(s) of 100 rows and one with a defect" in first.output
    for key in SAMPLE_KEYS:
        assert re.search(rf"^run \w{{8}} {re.escape(key)}: ok$", first.output, re.MULTILINE)
        line = summary_line(first.output, key)
        assert " loaded " in line and "raw=100" in line and "rejected=0" in line
    # The defect file loads (its bad rows rejected) and its failed check alerts.
    assert re.search(rf"^run \w{{8}} {re.escape(DEFECT_KEY)}: ok$", first.output, re.MULTILINE)
    assert "rejected=0" not in summary_line(first.output, DEFECT_KEY)
    # The demo ends with what the log channel sent: the defect's alert among it.
    sent = first.output.split(LOG_CHANNEL, 1)[1].strip().splitlines()[1:]
    assert any(
        line.strip().startswith("[FIRING] ERROR asset_check_error: patient_ids_are_joinable")
        for line in sent
    ), sent
    # The UI hint runs the venv's dagster (beside this Python), never a bare `dagster`.
    venv_dagster = Path(sys.executable).parent / "dagster"
    assert venv_dagster.is_file()
    (hint,) = [x for x in first.output.splitlines() if x.startswith("Dagster UI on the same")]
    assert hint.startswith("Dagster UI on the same data: DAGSTER_HOME=")
    assert hint.endswith(" dev") and hint.split()[-2] in (
        str(venv_dagster),
        os.path.relpath(venv_dagster),
    )
    core = re.search(r"core\.dim_patient: (\d+) current patients, (\d+) versions", first.output)
    assert core is not None
    assert 100 < int(core.group(1)) <= 400  # later files re-send some earlier patients

    second = runner.invoke(cli, ["demo", "--rows", "100"])

    assert second.exit_code == 0, second.output
    assert "nothing to run" in second.output
    assert "generated" not in second.output
    assert "core.dim_patient: " + core.group(1) + " current patients" in second.output

    landing = healthmon_env / "landing"
    values = set()
    for key in (*SAMPLE_KEYS, DEFECT_KEY):
        for row in csv.DictReader(io.StringIO((landing / key).read_text())):
            values.update(row[c] for c in ("Id", "SSN", "FIRST", "LAST", "ADDRESS") if row[c])
    shown = first.output + second.output
    assert not [v for v in values if v in shown], "demo output shows patient field values"


def test_demo_console_script_end_to_end(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("HEALTHMON_", "DAGSTER_"))}
    env["HEALTHMON_HOME"] = str(tmp_path / "home")

    proc = subprocess.run(
        [healthmon_script(), "demo", "--rows", "50"],
        capture_output=True,
        text=True,
        timeout=180,
        env=env,
        cwd=tmp_path,
    )

    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "core.dim_patient: " in proc.stdout
    assert sorted(p.name for p in (tmp_path / "home" / "landing").iterdir()) == sorted(
        (*SAMPLE_KEYS, DEFECT_KEY)
    )
    assert (
        "[FIRING] ERROR asset_check_error: patient_ids_are_joinable"
        in (proc.stdout.split(LOG_CHANNEL, 1)[1])
    )
    assert (tmp_path / "home" / "healthmon.db").is_file()
    assert (tmp_path / "home" / "dagster" / "dagster.yaml").is_file()
    # The embedded default keeps the health store in a database of its own: the loads are in the
    # warehouse, every check result, metric and configuration version in health.db.
    warehouse, store = (
        get_engine(f"sqlite:///{tmp_path / 'home' / name}")
        for name in ("healthmon.db", "health.db")
    )
    assert [count(warehouse, t) for t in (files, check_results, metrics, config_versions)] == [
        4,
        0,
        0,
        0,
    ]
    assert count(store, files) == 0
    assert min(count(store, t) for t in (check_results, metrics, config_versions)) > 0
    assert f"asset checks in the health store sqlite:///{tmp_path / 'home' / 'health.db'}" in (
        proc.stdout
    )


def count(engine: Engine, table: sa.Table) -> int:
    with engine.connect() as conn:
        return int(conn.execute(sa.select(sa.func.count()).select_from(table)).scalar_one())


def test_db_upgrade_then_status_reports_latest_revision(
    healthmon_env: Path, runner: CliRunner
) -> None:
    head = head_revision()

    upgraded = runner.invoke(cli, ["db", "upgrade"])

    assert upgraded.exit_code == 0, upgraded.output
    assert f"at revision {head}" in upgraded.output

    status = runner.invoke(cli, ["db", "status"])

    assert status.exit_code == 0, status.output
    assert f"revision {head} (latest {head})" in status.output


def test_db_status_of_a_new_database_exits_1(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, runner: CliRunner
) -> None:
    monkeypatch.setenv("HEALTHMON_DATABASE_URL", f"sqlite:///{tmp_path / 'new.db'}")
    monkeypatch.delenv("HEALTHMON_HEALTH_DATABASE_URL", raising=False)

    status = runner.invoke(cli, ["db", "status"])

    assert status.exit_code == 1, status.output
    assert f"revision none (latest {head_revision()})" in status.output


def test_db_status_with_database_down_exits_1_with_a_message(
    monkeypatch: pytest.MonkeyPatch, runner: CliRunner
) -> None:
    port = free_port()
    monkeypatch.setenv(
        "HEALTHMON_DATABASE_URL", f"postgresql+psycopg2://etl:s3cret@127.0.0.1:{port}/warehouse"
    )
    monkeypatch.delenv("HEALTHMON_HEALTH_DATABASE_URL", raising=False)

    status = runner.invoke(cli, ["db", "status"])

    assert status.exit_code == 1
    assert isinstance(status.exception, SystemExit)
    assert "unavailable" in status.stderr
    assert f"127.0.0.1:{port}" in status.stderr
    assert "Traceback" not in status.output
    assert "s3cret" not in status.output
