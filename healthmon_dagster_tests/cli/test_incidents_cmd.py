"""``healthmon incidents`` against a real store (SQLite and Postgres): list, show, update, assign,
note, resolve, close, report (Markdown and JSON), and one-line errors without tracebacks."""

import json
import subprocess
from pathlib import Path

import pytest
from click.testing import CliRunner
from sqlalchemy.engine import Engine

from healthmon_dagster.cli.main import cli
from healthmon_dagster.enums import HealthComponent
from healthmon_dagster.incidents.records import get_incident, open_or_absorb, timeline
from healthmon_dagster_tests.cli.fixtures import healthmon_script
from healthmon_dagster_tests.incidents.fixtures import HOOK, T0, failure, minutes


def run(*args: str) -> tuple[int, str, str]:
    result = CliRunner().invoke(cli, list(args))
    return result.exit_code, result.stdout, result.stderr


@pytest.fixture
def incident(healthmon_env: Path, engine: Engine) -> int:
    open_or_absorb(
        engine,
        "asset:stg/patients",
        failure(T0, component=HealthComponent.STAGING_TRANSFORMER, assets=("stg/patients",)),
        HOOK,
        T0,
    )
    return open_or_absorb(engine, "asset:raw/patients", failure(T0), HOOK, T0).incident_id


def test_list_show_and_the_whole_lifecycle(incident: int) -> None:
    code, out, _ = run("incidents", "list")
    assert code == 0 and "raw/patients failed" in out and "stg/patients failed" in out

    assert run("incidents", "assign", str(incident), "bob", "--by", "ana")[:2] == (
        0,
        f"incident {incident} assigned to bob\n",
    )
    code, out, _ = run(
        "incidents",
        "update",
        str(incident),
        "--status",
        "investigating",
        "--severity",
        "high",
        "--impact",
        "major",
        "--note",
        "looking at S3",
        "--by",
        "ana",
    )
    assert code == 0
    assert out == (
        f"incident {incident}: severity medium -> high, impact minor -> major, "
        "status investigating\n"
    )
    assert run("incidents", "note", str(incident), "3 files waiting", "--by", "ana")[0] == 0
    code, out, _ = run(
        "incidents",
        "resolve",
        str(incident),
        "--resolution",
        "S3 endpoint restored",
        "--root-cause",
        "S3 outage",
        "--by",
        "ana",
    )
    assert (code, out) == (0, f"incident {incident} resolved\n")
    assert run("incidents", "close", str(incident), "--by", "ana")[0] == 0

    code, out, _ = run("incidents", "show", str(incident))
    assert code == 0
    assert "status closed, severity high, impact major" in out
    assert "root cause: S3 outage" in out and "resolution: S3 endpoint restored" in out
    for text in (
        "assigned to bob",
        "status open -> investigating; looking at S3",
        "3 files waiting",
        "status closed",
    ):
        assert text in out
    assert "ana (cli)" in out
    assert "suggested root cause: asset raw/patients" in out

    code, out, _ = run("incidents", "show", str(incident), "--json")
    data = json.loads(out)
    assert data["status"] == "closed" and data["timeline"][-1]["kind"] == "closed"
    assert data["correlation"]["root_cause_key"] == "asset:raw/patients"

    assert "raw/patients failed" not in run("incidents", "list")[1]
    listed = json.loads(run("incidents", "list", "--all", "--json")[1])
    assert {i["status"] for i in listed} == {"open", "closed"}
    assert run("incidents", "list", "--severity", "critical")[1] == "no open incidents\n"


def test_report_markdown_json_and_file(incident: int, tmp_path: Path) -> None:
    code, out, _ = run("incidents", "report", str(incident))
    assert code == 0 and out.startswith(f"# Incident {incident}: raw/patients failed")
    assert "## Response times" in out and "Time to acknowledge: not yet" in out
    code, out, _ = run("incidents", "report", str(incident), "--json")
    data = json.loads(out)
    assert data["impact"]["assets"] == ["raw/patients"] and data["time_to_recover_seconds"] is None
    target = tmp_path / "report.md"
    code, out, _ = run("incidents", "report", str(incident), "--output", str(target))
    assert code == 0 and target.read_text().startswith(f"# Incident {incident}")


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["show", "999"], "no incident 999; `healthmon incidents list --all` shows every incident"),
        (["resolve", "{id}", "--resolution", " "], "needs a resolution: say how it was fixed"),
        (
            ["close", "{id}"],
            "it cannot move to closed; allowed from open: investigating, "
            "identified, monitoring, resolved",
        ),
        (["update", "{id}", "--status", "resolved"], "use `healthmon incidents resolve"),
        (["update", "{id}"], "nothing to update"),
        (["update", "{id}", "--severity", "urgent"], "'urgent' is not one of"),
    ],
)
def test_what_cannot_be_done_is_one_line(incident: int, args: list[str], message: str) -> None:
    result = CliRunner().invoke(cli, ["incidents", *(a.format(id=incident) for a in args)])
    assert result.exit_code in (1, 2)
    assert message in result.stderr
    assert "Traceback" not in result.output


def test_the_installed_command_without_a_store_says_what_to_do(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("HEALTHMON_HOME", str(tmp_path / "nothing-here"))
    for name in ("HEALTHMON_DATABASE_URL", "HEALTHMON_HEALTH_DATABASE_URL", "HEALTHMON_CONFIG"):
        monkeypatch.delenv(name, raising=False)
    done = subprocess.run(
        [healthmon_script(), "incidents", "list"], capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 1
    assert "no database at" in done.stderr and "Traceback" not in done.stderr
    assert len(done.stderr.strip().splitlines()) == 1


def test_a_relapse_shows_in_the_timeline(incident: int, engine: Engine) -> None:
    assert run("incidents", "update", str(incident), "--status", "monitoring")[0] == 0
    open_or_absorb(engine, "asset:raw/patients", failure(T0 + minutes(5)), HOOK, T0 + minutes(5))
    out = run("incidents", "show", str(incident))[1]
    assert "relapse: a new failure while monitoring" in out and "status investigating" in out


def test_update_with_a_note_and_no_status_keeps_the_note(incident: int, engine: Engine) -> None:
    code, out, _ = run(
        "incidents", "update", str(incident), "--note", "S3 team paged", "--by", "ana"
    )
    assert (code, out) == (0, f"incident {incident}: note added\n")
    code, out, _ = run(
        "incidents", "update", str(incident), "--severity", "high", "--note", "many files wait"
    )
    assert (code, out) == (0, f"incident {incident}: severity medium -> high, note added\n")
    notes = [(e.actor, e.text) for e in timeline(engine, incident) if e.kind == "note"]
    assert notes[0] == ("ana", "S3 team paged") and notes[1][1] == "many files wait"
    assert get_incident(engine, incident).acknowledged_at is not None
