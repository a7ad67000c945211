"""check_targets: the asset keys and columns healthmon.yaml names exist (bundled tables without a
connection, other tables in the warehouse), and an unreachable warehouse is reported as unchecked."""

from pathlib import Path
from typing import get_args

import pytest
import sqlalchemy as sa
from sqlalchemy.engine import Engine

from healthmon_dagster.config import load_config_text
from healthmon_dagster.config.loader import located_errors
from healthmon_dagster.config.models import CheckSpec, QualityCheckSpec
from healthmon_dagster.quality.targets import COLUMN_FIELDS, check_targets, column_fields
from healthmon_dagster_tests.quality.fixtures import project_config

UNREACHABLE = "postgresql+psycopg2://nobody@127.0.0.1:9/none"
SPEC_CLASSES: tuple[type[CheckSpec], ...] = get_args(get_args(QualityCheckSpec)[0])

TYPOS = """\
quality:
  assets:
    stg/patient:
      checks:
        - kind: not_null
          columns: [idd]
    stg/patients:
      batch_column: _fil_id
      checks:
        - kind: not_null
          columns: [ID, idd]
        - kind: schema
          required_columns: [not_there]
    core/dim_patient:
      checks:
        - kind: identity_stability
          identity_columns: [birthdate, snn]
    raw/patients/extra:
      checks:
        - kind: row_count
          min: 1
freshness:
  core/dim_patients:
    fail_window_minutes: 60
"""


def test_the_project_config_names_only_what_exists() -> None:
    report = check_targets(project_config(), UNREACHABLE)
    assert report.problems == [] and report.unchecked == []  # no connection was needed


@pytest.mark.parametrize("spec_class", SPEC_CLASSES, ids=lambda c: c.__name__)
def test_column_fields_are_strings_or_lists_of_strings(spec_class: type[CheckSpec]) -> None:
    for name in set(COLUMN_FIELDS) & set(spec_class.model_fields):
        annotation = spec_class.model_fields[name].annotation
        assert annotation in (str, list[str]), f"{spec_class.__name__}.{name}: {annotation}"


def test_typos_are_found_with_their_line_and_a_suggestion(engine: Engine) -> None:
    config = load_config_text(TYPOS, "healthmon.yaml")

    report = check_targets(config, engine.url.render_as_string(hide_password=False))
    errors = located_errors(config, report.problems)

    assert report.unchecked == []
    assert errors == [
        "quality.assets['stg/patient'] (line 3): asset key 'stg/patient' is not an asset of this "
        "code location; did you mean 'stg/patients'?",
        "quality.assets['stg/patients'].batch_column (line 8): column '_fil_id' does not exist in "
        "stg.patients (asset stg/patients); did you mean '_file_id'?",
        "quality.assets['stg/patients'].checks[0].columns[1] (line 11): column 'idd' does not "
        "exist in stg.patients (asset stg/patients); did you mean 'id'?",
        "quality.assets['core/dim_patient'].checks[0].identity_columns[1] (line 17): column 'snn' "
        "does not exist in core.dim_patient (asset core/dim_patient); did you mean 'ssn'?",
        "quality.assets['raw/patients/extra'] (line 18): asset key 'raw/patients/extra' names "
        "neither an asset of this code location nor a warehouse table (schema/table); did you "
        "mean 'raw/patients'?",
        "freshness['core/dim_patients'] (line 23): asset key 'core/dim_patients' is not an "
        "asset of this code location; did you mean 'core/dim_patient'?",
    ]


def test_a_near_miss_of_a_pipeline_asset_is_an_error_even_without_a_warehouse() -> None:
    # A fresh install has no warehouse yet: the typo is still known from the catalog alone.
    config = load_config_text(TYPOS, "healthmon.yaml")

    report = check_targets(config, UNREACHABLE)

    keys = {loc[2] if loc[0] == "quality" else loc[1] for loc, _ in report.problems}
    assert {"stg/patient", "core/dim_patients"} <= keys
    assert not any("stg/patient" in why or "core/dim_patients" in why for why in report.unchecked)


def test_a_users_table_and_its_columns_are_looked_up(engine: Engine) -> None:
    with engine.begin() as conn:
        conn.execute(sa.text("CREATE TABLE core.visits (visit_id INTEGER, loaded TIMESTAMP)"))
    config = load_config_text(
        "quality:\n  assets:\n    core/visits:\n      batch_column: visit_id\n      checks:\n"
        "        - kind: unique\n          columns: [VISIT_ID, visit]\n"
        "freshness:\n  core/visits:\n    fail_window_minutes: 60\n    timestamp_column: loadd\n"
    )

    report = check_targets(config, engine.url.render_as_string(hide_password=False))

    assert [(loc, msg.split(";")[0]) for loc, msg in report.problems] == [
        (
            ("quality", "assets", "core/visits", "checks", 0, "columns", 1),
            "column 'visit' does not exist in core.visits (asset core/visits)",
        ),
        (
            ("freshness", "core/visits", "timestamp_column"),
            "column 'loadd' does not exist in core.visits (asset core/visits)",
        ),
    ]
    assert report.problems[1][1].endswith("did you mean 'loaded'?")


@pytest.mark.parametrize(
    "url",
    [UNREACHABLE, "sqlite:///{tmp}/never-loaded/healthmon.db"],
    ids=["server down", "no sqlite file yet"],
)
def test_an_unreachable_warehouse_is_unchecked_not_wrong(url: str, tmp_path: Path) -> None:
    url = url.format(tmp=tmp_path)
    config = load_config_text(
        "quality:\n  assets:\n    core/visits:\n      checks:\n        - kind: row_count\n"
        "          min: 1\n    stg/patients:\n      checks:\n        - kind: not_null\n"
        "          columns: [idd]\n"
    )

    report = check_targets(config, url)

    (why,) = report.unchecked
    assert why.startswith("could not check that core/visits exists in the warehouse")
    # The bundled table's columns are still checked, without the warehouse.
    assert [loc for loc, _ in report.problems] == [
        ("quality", "assets", "stg/patients", "checks", 0, "columns", 0)
    ]
    assert not (tmp_path / "never-loaded").exists()  # looking created nothing


def test_schema_required_columns_are_left_to_the_schema_check() -> None:
    config = load_config_text(
        "quality:\n  assets:\n    raw/patients:\n      checks:\n        - kind: schema\n"
        "          required_columns: [NOT_THERE]\n"
    )
    (spec,) = config.quality.assets["raw/patients"].checks
    assert column_fields(spec) == []
    assert check_targets(config, None).problems == []
