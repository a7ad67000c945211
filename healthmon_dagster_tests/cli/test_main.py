"""Every ``healthmon`` command with a database URL that cannot be used: a line that names the
variable, says what is wrong and what to do, a non-zero exit code, never a traceback and never the
password, in stdout, stderr or the logs; also through the installed console script. ``status``
still reports a health store of its own when only the warehouse URL is wrong."""

import logging
import os
import subprocess
from pathlib import Path

import pytest
from click.testing import CliRunner, Result

from healthmon_dagster.cli.main import cli
from healthmon_dagster.store.db import get_engine
from healthmon_dagster_tests.cli.fixtures import healthmon_script

SECRET = "s3cretpw"

COMMANDS = [
    ["status"],
    ["checks"],
    ["config", "history"],
    ["config", "validate"],
    ["db", "upgrade"],
    ["db", "status"],
    ["demo", "--rows", "5", "--files", "1"],
]
# Commands that read only the warehouse (etl.files, etl.file_attempts), not the health store.
WAREHOUSE_COMMANDS = [["files", "list"], ["files", "retry", "--all-stuck", "--by", "someone"]]

# (URL, words of the message). The password sits where a user would have put it.
BAD_URLS = [
    (f"postgresql+psycopg2://etl:{SECRET}@db:54x2/wh", "port is not a number"),
    (f"oracle://etl:{SECRET}@db/wh", "'oracle' databases are not supported"),
    (f"http://etl:{SECRET}@example.org/wh", "'http' databases are not supported"),
    (f"host=db user=etl password={SECRET} dbname=wh", "libpq keyword string"),
    ("sqlite://", "in-memory SQLite database"),
]


@pytest.fixture
def env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("HEALTHMON_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("DAGSTER_HOME", str(tmp_path / "dagster"))
    (tmp_path / "dagster").mkdir()
    for name in ("HEALTHMON_DATABASE_URL", "HEALTHMON_HEALTH_DATABASE_URL", "HEALTHMON_CONFIG"):
        monkeypatch.delenv(name, raising=False)
    return tmp_path


def assert_clean_failure(
    result: Result, message: str, caplog: pytest.LogCaptureFixture, *, lines: int = 1
) -> None:
    """A non-zero exit with ``message`` on stderr and nothing else there, no traceback, no
    password anywhere."""
    stderr, stdout = result.stderr, result.stdout
    assert result.exit_code != 0, stdout + stderr
    assert result.exception is None or isinstance(result.exception, SystemExit), repr(
        result.exception
    )
    err_lines = [line for line in stderr.splitlines() if line.strip()]
    assert len(err_lines) == lines and message in err_lines[0], stderr
    assert "Traceback" not in stdout + stderr
    assert SECRET not in stdout + stderr
    assert not [r for r in caplog.records if SECRET in r.getMessage()]


@pytest.mark.parametrize("command", COMMANDS + WAREHOUSE_COMMANDS, ids=lambda c: " ".join(c[:2]))
@pytest.mark.parametrize(("url", "why"), BAD_URLS, ids=[w for _, w in BAD_URLS])
def test_a_bad_database_url_is_one_clear_line_from_every_command(
    env: Path,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
    command: list[str],
    url: str,
    why: str,
) -> None:
    monkeypatch.setenv("HEALTHMON_DATABASE_URL", url)
    caplog.set_level(logging.DEBUG)

    result = CliRunner().invoke(cli, command)

    # `config validate` lists its errors, then the INVALID summary line.
    lines = 2 if command == ["config", "validate"] else 1
    assert_clean_failure(result, "HEALTHMON_DATABASE_URL (", caplog, lines=lines)
    assert why in result.stderr


@pytest.mark.parametrize("command", COMMANDS, ids=lambda c: " ".join(c[:2]))
def test_a_bad_health_store_url_names_its_own_variable(
    env: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture, command: list[str]
) -> None:
    monkeypatch.setenv("HEALTHMON_HEALTH_DATABASE_URL", f"http://etl:{SECRET}@example.org/h")

    result = CliRunner().invoke(cli, command)

    lines = 2 if command == ["config", "validate"] else 1
    assert_clean_failure(result, "HEALTHMON_HEALTH_DATABASE_URL (http://", caplog, lines=lines)


@pytest.mark.parametrize(
    ("command", "message"),
    [
        (["status"], "no database at"),
        (["checks"], "no database at"),
        (["config", "history"], "no database at"),
        (["db", "upgrade"], "cannot create the folder"),
        (["db", "status"], "cannot create the folder"),
        (["demo", "--rows", "5", "--files", "1"], "cannot create the folder"),
    ],
    ids=lambda v: v[0] if isinstance(v, list) else None,
)
def test_a_sqlite_path_that_cannot_be_created_is_one_clear_line(
    env: Path,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
    command: list[str],
    message: str,
) -> None:
    blocker = env / "a-file"
    blocker.write_text("a file where the database folder should be")
    monkeypatch.setenv("HEALTHMON_DATABASE_URL", f"sqlite:///{blocker / 'db' / 'healthmon.db'}")

    result = CliRunner().invoke(cli, command)

    assert_clean_failure(result, message, caplog)
    assert "HEALTHMON_DATABASE_URL" in result.stderr


def test_the_console_script_prints_one_line_and_no_password(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("HEALTHMON_", "DAGSTER_"))}
    env["HEALTHMON_HOME"] = str(tmp_path / "home")
    env["HEALTHMON_DATABASE_URL"] = f"host=db user=etl password={SECRET} dbname=wh"

    for command in (["status"], ["db", "upgrade"]):
        proc = subprocess.run(
            [healthmon_script(), *command],
            capture_output=True,
            text=True,
            timeout=120,
            env=env,
            cwd=tmp_path,
        )

        assert proc.returncode == 1, proc.stdout + proc.stderr
        assert proc.stdout == ""
        assert proc.stderr.count("\n") == 1 and proc.stderr.startswith("HEALTHMON_DATABASE_URL")
        assert "libpq keyword string" in proc.stderr and SECRET not in proc.stderr


def test_status_still_reads_a_separate_health_store_when_the_warehouse_url_is_bad(
    tmp_path: Path,
) -> None:
    # The store answers; only the per-asset rollup needs the code location, which does not load.
    store = f"sqlite:///{tmp_path / 'health.db'}"
    get_engine(store)
    (tmp_path / "dagster").mkdir()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("HEALTHMON_", "DAGSTER_"))}
    env.update(
        HEALTHMON_HOME=str(tmp_path / "home"),
        HEALTHMON_DATABASE_URL="sqlite://",
        HEALTHMON_HEALTH_DATABASE_URL=store,
        DAGSTER_HOME=str(tmp_path / "dagster"),
    )

    proc = subprocess.run(
        [healthmon_script(), "status"],
        capture_output=True,
        text=True,
        timeout=120,
        env=env,
        cwd=tmp_path,
    )

    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert proc.stdout.startswith("Overall: ")
    assert (
        "Assets: the code location does not load: HEALTHMON_DATABASE_URL (sqlite://) is not "
        "usable: it is an in-memory SQLite database" in proc.stdout
    )
    assert "Traceback" not in proc.stdout + proc.stderr
