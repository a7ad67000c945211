"""file_anomalies (its config, the delimiter it expects, where it applies) and the contract-break
result of a rejected file; the checks through the pipeline are in ``tests/defs``."""

from pathlib import Path

import pytest
from pydantic import ValidationError
from sqlalchemy.engine import Engine

from healthmon_dagster.config.models import (
    FileAnomaliesCheck,
    HealthConfiguration,
    SchemaCheck,
)
from healthmon_dagster.enums import QualityStatus
from healthmon_dagster.etl import raw
from healthmon_dagster.etl.landing import LocalLandingSource
from healthmon_dagster.etl.raw import ContractBreak
from healthmon_dagster.etl.sample import generate_sample
from healthmon_dagster.quality import evaluate
from healthmon_dagster.quality.kinds.landing_file import contract_break_results


def _config(check: dict[str, object], delimiters: list[str]) -> HealthConfiguration:
    return HealthConfiguration.model_validate(
        {
            "landing": {"accepted_delimiters": delimiters},
            "quality": {"assets": {"raw/patients": {"checks": [check]}}},
        }
    )


def test_the_expected_delimiter_is_the_first_accepted_one_unless_set() -> None:
    default = _config({"kind": "file_anomalies"}, [";", ","])
    explicit = _config({"kind": "file_anomalies", "expected_delimiter": ","}, [";", ","])

    (spec,) = default.quality.assets["raw/patients"].checks
    assert isinstance(spec, FileAnomaliesCheck)
    assert spec.expected_delimiter == ";" and spec.check_name == "landing_file_is_clean"
    (spec,) = explicit.quality.assets["raw/patients"].checks
    assert isinstance(spec, FileAnomaliesCheck) and spec.expected_delimiter == ","


@pytest.mark.parametrize(
    ("setting", "message"),
    [
        ({"blocking": True}, "only warns, so it never blocks"),
        ({"warn": 0}, "warn has no effect on a file_anomalies check"),
        ({"bom": "fail"}, "Input should be 'warn' or 'ignore'"),
    ],
)
def test_settings_that_would_do_nothing_are_errors(
    setting: dict[str, object], message: str
) -> None:
    with pytest.raises(ValidationError, match=message):
        FileAnomaliesCheck.model_validate({"kind": "file_anomalies", **setting})


def test_a_table_not_loaded_from_landing_files_is_an_error_not_a_pass(
    engine: Engine, tmp_path: Path
) -> None:
    landing = LocalLandingSource(tmp_path / "landing")
    (sample,) = generate_sample(50, defect="bom_crlf")
    landing.put(sample.key, sample.data)
    raw.load_file(engine, landing, sample.key)
    spec = FileAnomaliesCheck(kind="file_anomalies", expected_delimiter=",")

    (on_raw,) = evaluate(engine, "raw/patients", [spec])
    (elsewhere,) = evaluate(engine, "etl/files", [spec])

    assert on_raw.status == QualityStatus.WARN and on_raw.details["bom"] == 1
    assert elsewhere.status == QualityStatus.ERROR
    assert "put the check under raw/patients" in elsewhere.message


def test_a_contract_break_fails_every_schema_check_and_names_only_contract_columns() -> None:
    specs = [
        SchemaCheck(kind="schema", name="contract_a", blocking=False, warn=3, fail=5),
        SchemaCheck(kind="schema", name="contract_b"),
    ]
    rejected = [
        ("a.csv", ContractBreak("duplicate_columns", ("LAST",), 2, ",", 1, 27, (26, 27))),
        ("b.csv", ContractBreak("delimiter", delimiter="\t", line=1)),
    ]

    results = contract_break_results("raw/patients", specs, rejected, [",", ";"])

    assert [r.check_name for r in results] == ["contract_a", "contract_b"]
    for r in results:
        # A rejected file blocks whatever the spec's blocking flag and levels say.
        assert (r.status, r.blocking, r.observed_value) == (QualityStatus.FAILED, True, 2.0)
        assert "a.csv: header repeats column(s) LAST and 2 unknown name(s), at positions 26-27" in (
            r.message
        )
        assert "b.csv: file is tab-delimited; the contract accepts ',', ';'" in r.message
        assert r.details["files_rejected"] == 2 and r.details["repeated_columns"] == 3
        assert "line" not in r.details  # a line number only for a single file
    assert contract_break_results("raw/patients", specs, [], [","]) == []


@pytest.mark.parametrize(
    ("found", "says"),
    [
        (
            ContractBreak("no_header", (), 0, ",", 1, 25),
            "no header line: line 1 is a data record (25 fields, none a contract column name, "
            "some dates, numbers or ids)",
        ),
        (
            ContractBreak("header_joined", (), 0, ",", 1, 49, tuple(range(25, 50))),
            "the header line runs into the first record (line 1 has 49 fields; positions 25-49 "
            "hold data values)",
        ),
        (
            ContractBreak("data_in_header", (), 0, ",", 1, 26, (2,)),
            "header fields at positions 2 look like data values, not column names",
        ),
        (
            ContractBreak("missing_columns", ("HEALTHCARE_COVERAGE",), 0, ",", 1, 25, (25,)),
            "header lacks required column(s) HEALTHCARE_COVERAGE (25 columns found; 1 unknown "
            "column at position 25)",
        ),
        (
            ContractBreak("header_too_long", line=1),
            "line 1 is too long to be a header (no line break in its first 64 KiB)",
        ),
    ],
)
def test_a_header_outside_the_contract_is_described_by_positions(
    found: ContractBreak, says: str
) -> None:
    spec = SchemaCheck(kind="schema", name="contract")

    (result,) = contract_break_results("raw/patients", [spec], [("a.csv", found)], [","])

    assert f"a.csv: {says}." in result.message
    assert result.details[f"reason__{found.reason}"] == 1
