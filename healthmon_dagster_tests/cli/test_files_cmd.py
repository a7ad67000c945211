"""``healthmon files list`` and ``healthmon files retry``: what became of each landing file, releasing
a stuck or rejected one (who, when, history kept), and one-line errors."""

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
import sqlalchemy as sa
from click.testing import CliRunner
from sqlalchemy.engine import Engine

from healthmon_dagster.cli.main import cli
from healthmon_dagster.etl import raw
from healthmon_dagster.etl.attempts import (
    AttemptPolicy,
    RunOutcome,
    open_attempt,
    pending_files,
    record_outcome,
)
from healthmon_dagster.etl.failures import Classification
from healthmon_dagster.etl.landing import LandingFile, LocalLandingSource
from healthmon_dagster.etl.sample import generate_sample, write_to
from healthmon_dagster.store.tables import SOURCE_COLUMNS, file_attempts, file_releases
from healthmon_dagster_tests.fixtures import free_port

M = timedelta(minutes=1)
BROKEN = Classification("database_error", False, "database_error")


def make_stuck(engine: Engine, key: str, fingerprint: str = "fp0123456789abcdef") -> LandingFile:
    """A landing file whose only attempt failed with an error running again cannot fix."""
    f = LandingFile(key, 10, fingerprint, 1_000_000.0)
    opened = open_attempt(engine, f, 1, datetime.now(UTC) - 5 * M, "new file")
    assert opened is not None
    outcome = RunOutcome("failed", BROKEN, "database error", "run-1", 1, datetime.now(UTC) - 4 * M)
    assert record_outcome(engine, opened, outcome, AttemptPolicy(), datetime.now(UTC)) is not None
    return f


def rejected(engine: Engine, landing: LocalLandingSource, key: str) -> LandingFile:
    """A landing file the loader rejected (a semicolon-delimited header)."""
    landing.put(key, (";".join(SOURCE_COLUMNS) + "\n").encode())
    (f,) = [f for f in landing.list_files() if f.key == key]
    assert raw.load_file(engine, landing, key, fingerprint=f.fingerprint).status == "rejected"
    return f


def invoke(*args: str) -> tuple[int, str]:
    out = CliRunner().invoke(cli, ["files", *args])
    assert "Traceback" not in out.output
    return out.exit_code, out.output


def listed(*args: str) -> dict[str, dict[str, object]]:
    code, output = invoke("list", "--json", *args)
    assert code == 0, output
    return {v["file_key"]: v for v in json.loads(output)}


def test_files_are_listed_with_status_attempts_and_last_error(
    healthmon_env: Path, engine: Engine
) -> None:
    landing = LocalLandingSource(healthmon_env / "landing")
    (good,) = generate_sample(10, files=1)
    write_to(landing, [good])
    (g,) = landing.list_files()
    assert raw.load_file(engine, landing, good.key, fingerprint=g.fingerprint).status == "loaded"
    rejected(engine, landing, "patients_semicolons.csv")
    make_stuck(engine, "patients_stuck.csv")

    code, table = invoke("list")

    assert code == 0, table
    lines = table.splitlines()
    assert lines[0].split() == [
        "file",
        "fingerprint",
        "status",
        "attempts",
        "error",
        "class",
        "error",
    ]
    stuck = next(line for line in lines if line.startswith("patients_stuck.csv"))
    assert "fp0123456789 " in stuck  # the fingerprint, shortened
    assert " stuck " in stuck and " 1 " in stuck and "database_error" in stuck
    assert " rejected " in next(line for line in lines if line.startswith("patients_semicolons"))
    assert " loaded " in next(line for line in lines if line.startswith(good.key))

    everything = listed()
    assert {k: v["status"] for k, v in everything.items()} == {
        good.key: "loaded",
        "patients_semicolons.csv": "rejected",
        "patients_stuck.csv": "stuck",
    }
    assert everything["patients_stuck.csv"]["fingerprint"] == "fp0123456789abcdef"
    assert "delimiter" in str(everything["patients_semicolons.csv"]["error"])
    assert list(listed("--stuck")) == ["patients_stuck.csv"]
    assert invoke("list", "--stuck")[1].splitlines()[2].startswith("patients_stuck.csv")


def test_a_stuck_file_is_released_with_who_and_when_and_its_attempts_are_kept(
    healthmon_env: Path, engine: Engine, monkeypatch: pytest.MonkeyPatch
) -> None:
    f = make_stuck(engine, "patients_0042.csv")
    assert pending_files(engine, [f]) == []
    monkeypatch.setenv("USER", "night-operator")

    code, output = invoke("retry", "patients_0042.csv")

    assert code == 0, output
    assert output.startswith(
        "released patients_0042.csv (stuck after 1 attempt(s)) by night-operator"
    )
    assert pending_files(engine, [f]) == [f]  # the sensor requests it again
    assert listed()["patients_0042.csv"]["status"] == "released"
    assert listed("--stuck") == {}
    with engine.connect() as conn:
        (release,) = conn.execute(sa.select(file_releases)).all()
        history = conn.execute(sa.select(file_attempts.c.attempt, file_attempts.c.status)).all()
    assert (release.released_by, release.released_status, release.after_attempt) == (
        "night-operator",
        "stuck",
        1,
    )
    assert abs(release.released_at.replace(tzinfo=UTC) - datetime.now(UTC)) < M
    assert [tuple(r) for r in history] == [(1, "stuck")]  # nothing deleted

    code, output = invoke("retry", "patients_0042.csv", "--by", "someone-else")
    assert code == 1
    assert output.strip() == (
        "error: landing file patients_0042.csv is already released; the landing sensor requests "
        "it at its next tick"
    )


def test_every_stuck_file_is_released_at_once(healthmon_env: Path, engine: Engine) -> None:
    make_stuck(engine, "patients_a.csv")
    make_stuck(engine, "patients_b.csv")

    code, output = invoke("retry", "--all-stuck", "--by", "alice")

    assert code == 0, output
    assert [line.split()[1] for line in output.splitlines()] == ["patients_a.csv", "patients_b.csv"]
    assert invoke("retry", "--all-stuck", "--by", "alice") == (
        0,
        "no stuck landing file: nothing released\n",
    )


def test_a_rejected_file_can_be_released_once_per_rejection(
    healthmon_env: Path, engine: Engine
) -> None:
    landing = LocalLandingSource(healthmon_env / "landing")
    f = rejected(engine, landing, "patients_semicolons.csv")
    assert pending_files(engine, [f]) == []

    code, output = invoke("retry", "patients_semicolons.csv", "--by", "alice")

    assert code == 0, output
    assert "(rejected after 0 attempt(s)) by alice" in output
    assert pending_files(engine, [f]) == [f]
    assert listed()["patients_semicolons.csv"]["status"] == "released"
    assert invoke("retry", "patients_semicolons.csv", "--by", "alice")[0] == 1
    # The sensor's attempt rejects it again (the configuration still refuses it): it is done
    # again, and can be released again.
    attempt = open_attempt(engine, f, 1, datetime.now(UTC), "released by alice")
    assert attempt is not None
    assert raw.load_file(engine, landing, f.key, fingerprint=f.fingerprint).status == "rejected"
    why = Classification("contract_break", False, "contract_break")
    outcome = RunOutcome("failed", why, "rejected", "run-2", 1, datetime.now(UTC))
    assert record_outcome(engine, attempt, outcome, AttemptPolicy(), datetime.now(UTC))
    assert pending_files(engine, [f]) == []
    assert listed()["patients_semicolons.csv"]["status"] == "rejected"
    code, output = invoke("retry", "patients_semicolons.csv", "--by", "bob")
    assert (code, "(rejected after 1 attempt(s)) by bob" in output) == (0, True), output
    assert pending_files(engine, [f]) == [f]


def test_what_cannot_be_released_is_a_one_line_error(
    healthmon_env: Path, engine: Engine, monkeypatch: pytest.MonkeyPatch
) -> None:
    landing = LocalLandingSource(healthmon_env / "landing")
    (good,) = generate_sample(10, files=1)
    write_to(landing, [good])
    (g,) = landing.list_files()
    raw.load_file(engine, landing, good.key, fingerprint=g.fingerprint)
    waiting = LandingFile("patients_waiting.csv", 10, "fp", 1_000_000.0)
    assert open_attempt(engine, waiting, 1, datetime.now(UTC), "new file") is not None

    cases = {
        (
            "retry",
            "patients_nope.csv",
            "--by",
            "a",
        ): "error: unknown landing file patients_nope.csv",
        (
            "retry",
            good.key,
            "--by",
            "a",
        ): f"error: landing file {good.key} is not stuck or rejected",
        ("retry", "patients_waiting.csv", "--by", "a"): (
            "error: landing file patients_waiting.csv is not stuck"
        ),
        ("retry", "--by", "a"): "Error: give a file KEY or --all-stuck",
        ("retry", "x.csv", "--all-stuck", "--by", "a"): "Error: give a file KEY or --all-stuck",
    }
    for args, start in cases.items():
        code, output = invoke(*args)
        assert code != 0, args
        assert start in output, (args, output)
        assert (
            len([line for line in output.splitlines() if line.startswith(("error", "Error"))]) == 1
        )

    monkeypatch.delenv("USER", raising=False)
    code, output = invoke("retry", "patients_nope.csv")
    assert code == 2 and "--by NAME" in output

    url = f"postgresql+psycopg2://etl:s3cret@127.0.0.1:{free_port()}/warehouse"
    monkeypatch.setenv("HEALTHMON_DATABASE_URL", url)
    for args in (("list",), ("retry", "--all-stuck", "--by", "a")):
        code, output = invoke(*args)
        assert code == 1
        assert "is unavailable" in output and "s3cret" not in output
        assert len(output.strip().splitlines()) == 1
