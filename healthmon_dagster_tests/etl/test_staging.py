"""Staging: typed rows; each row-level defect rejected with its reason code on exactly its rows."""

from datetime import date
from pathlib import Path

import pytest
import sqlalchemy as sa
from sqlalchemy.engine import Engine

from healthmon_dagster.config.models import STAGING_RULES, StagingConfiguration
from healthmon_dagster.etl import raw, staging
from healthmon_dagster.etl.landing import LocalLandingSource
from healthmon_dagster.etl.sample import COLUMNS, COUNTRIES, defect_rows, generate_sample
from healthmon_dagster.store.tables import raw_patients, stg_patients, stg_patients_rejected

ROWS = 100  # row-level defects hit rows 17, 50 and 83 (1-based)
TODAY = date(2026, 1, 1)


def _count(engine: Engine, table: sa.Table, file_id: int) -> int:
    with engine.connect() as conn:
        return conn.execute(
            sa.select(sa.func.count()).select_from(table).where(table.c._file_id == file_id)
        ).scalar_one()


def _load_bytes(engine: Engine, tmp_path: Path, data: bytes, key: str = "patients.csv") -> int:
    source = LocalLandingSource(tmp_path / "landing")
    source.put(key, data)
    result = raw.load_file(engine, source, key)
    assert result.status == "loaded", result.message
    assert result.file_id is not None
    return result.file_id


def _stage(engine: Engine, tmp_path: Path, data: bytes) -> tuple[int, staging.StageResult]:
    file_id = _load_bytes(engine, tmp_path, data)
    [result] = staging.stage_pending(engine, today=TODAY)
    assert result.file_id == file_id
    # nothing is lost: every raw row is either staged or rejected
    raw_rows = _count(engine, raw_patients, file_id)
    assert raw_rows == result.rows_in == result.rows_staged + result.rows_rejected
    assert _count(engine, stg_patients, file_id) == result.rows_staged
    assert _count(engine, stg_patients_rejected, file_id) == result.rows_rejected
    return file_id, result


def _rejected(engine: Engine, file_id: int) -> dict[int, set[str]]:
    with engine.connect() as conn:
        rows = conn.execute(
            sa.select(stg_patients_rejected.c._row_number, stg_patients_rejected.c.reasons).where(
                stg_patients_rejected.c._file_id == file_id
            )
        )
        return {n: set(reasons.split(";")) for n, reasons in rows}


def test_clean_file_is_fully_staged_with_types(engine: Engine, tmp_path: Path) -> None:
    [sample] = generate_sample(ROWS)
    file_id, result = _stage(engine, tmp_path, sample.data)
    assert (result.rows_in, result.rows_staged, result.rows_rejected) == (ROWS, ROWS, 0)
    assert result.reasons == {} and result.rejection_rate == 0.0
    with engine.connect() as conn:
        rows = list(conn.execute(sa.select(stg_patients).order_by(stg_patients.c._row_number)))
    first = sample.data.decode().splitlines()[1].split(",")
    assert isinstance(rows[0].birthdate, date)
    assert rows[0].birthdate == date.fromisoformat(first[COLUMNS.index("BIRTHDATE")])
    assert isinstance(rows[0].lat, float)
    assert rows[0].lat == pytest.approx(float(first[COLUMNS.index("LAT")]))
    assert rows[0].id == first[0]
    assert float(rows[0].healthcare_expenses) == pytest.approx(
        float(first[COLUMNS.index("HEALTHCARE_EXPENSES")])
    )
    assert [r._row_number for r in rows] == list(range(1, ROWS + 1))
    assert all(r._file_id == file_id for r in rows)


@pytest.mark.parametrize(
    ("defect", "codes"),
    [
        ("null_ids", {"id_missing"}),
        ("unknown_gender", {"gender_invalid"}),
        ("future_birthdate", {"birthdate_in_future"}),
        ("death_before_birth", {"deathdate_before_birthdate"}),
        ("out_of_range_coordinates", {"lat_invalid", "lon_invalid"}),
    ],
)
def test_row_defect_is_rejected_on_exactly_its_rows(
    engine: Engine, tmp_path: Path, defect: str, codes: set[str]
) -> None:
    [sample] = generate_sample(ROWS, defect=defect)
    file_id, result = _stage(engine, tmp_path, sample.data)
    expected_rows = {pos + 1 for pos in defect_rows(ROWS)}
    rejected = _rejected(engine, file_id)
    assert set(rejected) == expected_rows
    for reasons in rejected.values():
        assert reasons == codes
    assert result.reasons == {code: len(expected_rows) for code in codes}
    assert result.rows_staged == ROWS - len(expected_rows)


def test_duplicate_ids_reject_every_occurrence(engine: Engine, tmp_path: Path) -> None:
    [sample] = generate_sample(ROWS, defect="duplicate_ids")
    file_id, result = _stage(engine, tmp_path, sample.data)
    # each defect row carries the Id of the row before it: both rows are rejected
    expected_rows = {n for pos in defect_rows(ROWS) for n in (pos, pos + 1)}
    rejected = _rejected(engine, file_id)
    assert set(rejected) == expected_rows
    assert all(reasons == {"id_duplicate_in_file"} for reasons in rejected.values())
    assert result.reasons == {"id_duplicate_in_file": len(expected_rows)}


def _flags(engine: Engine, file_id: int) -> dict[int, str]:
    with engine.connect() as conn:
        rows = conn.execute(
            sa.select(stg_patients.c._row_number, stg_patients.c._flags).where(
                stg_patients.c._file_id == file_id, stg_patients.c._flags.is_not(None)
            )
        )
        return {int(n): flags for n, flags in rows}


def test_stripped_zip_codes_are_kept_and_flagged(engine: Engine, tmp_path: Path) -> None:
    [sample] = generate_sample(ROWS, defect="zip_leading_zeros_stripped")
    file_id, result = _stage(engine, tmp_path, sample.data)
    lines = sample.data.decode().splitlines()[1:]
    with_zip = {n for n, line in enumerate(lines, 1) if line.split(",")[COLUMNS.index("ZIP")]}
    assert 0 < len(with_zip) < ROWS  # a few generated patients have no ZIP at all
    assert _rejected(engine, file_id) == {}
    assert _flags(engine, file_id) == dict.fromkeys(with_zip, "zip_invalid")
    assert (result.rows_staged, result.rows_flagged) == (ROWS, len(with_zip))
    assert result.flags == {"zip_invalid": len(with_zip)}


def test_a_flag_rule_configured_to_reject_rejects(engine: Engine, tmp_path: Path) -> None:
    [sample] = generate_sample(ROWS, defect="zip_leading_zeros_stripped")
    _load_bytes(engine, tmp_path, sample.data)
    config = StagingConfiguration(rules={"zip_invalid": "reject"})
    [result] = staging.stage_pending(engine, today=TODAY, config=config)
    rejected = _rejected(engine, result.file_id)
    assert len(rejected) == result.rows_rejected > 0
    assert all(reasons == {"zip_invalid"} for reasons in rejected.values())
    assert _flags(engine, result.file_id) == {}


@pytest.mark.parametrize(
    ("state", "zip_code", "default_country", "flagged"),
    [
        ("Massachusetts", "02101", None, False),
        ("Massachusetts", "02101-1234", None, False),
        ("Massachusetts", "2101", None, True),  # leading zero stripped
        ("Massachusetts", "K1A 0B1", None, True),
        ("Bayern", "80331", None, False),
        ("Bayern", "8033", None, True),
        ("Bayern", "80331-1234", None, True),
        ("São Paulo", "01310-100", None, False),
        ("São Paulo", "01310100", None, False),
        ("São Paulo", "0131", None, True),
        ("Ontario", "K1A 0B1", None, False),
        ("Ontario", "12345", None, True),
        ("Alberta", "T5B", None, False),  # a forward sortation area alone (real CA exports)
        ("Alberta", "t5b", None, False),
        ("Alberta", "T5", None, True),
        ("Alberta", "T5B 0", None, True),
        # State names match ignoring case and accents: the country's pattern applies.
        ("Nordrhein-westfalen", "50667", None, False),
        ("NORDRHEIN-WESTFALEN", "5066", None, True),
        ("Thuringen", "99084", None, False),
        ("THÜRINGEN", "99084", None, False),
        ("baden-wurttemberg", "K1A 0B1", None, True),  # German, so not generic
        ("sao paulo", "01310100", None, False),
        ("ONTARIO", "T5B", None, False),
        ("Noord-Holland", "1012 AB", None, False),  # no country of its own: generic
        ("Noord-Holland", "1", None, True),
        ("Noord-Holland", "12345678901", None, True),
        ("Noord-Holland", "1012 AB", "DE", True),  # the default country's pattern applies
        ("Noord-Holland", "10115", "DE", False),
        ("", "SW1A 1AA", None, False),
    ],
)
def test_postal_codes_are_judged_for_the_country_the_state_implies(
    engine: Engine,
    tmp_path: Path,
    state: str,
    zip_code: str,
    default_country: str | None,
    flagged: bool,
) -> None:
    [sample] = generate_sample(10)
    data = _with_field(_with_field(sample.data, 4, "STATE", state), 4, "ZIP", zip_code)
    _load_bytes(engine, tmp_path, data)
    config = StagingConfiguration(default_country=default_country)
    [result] = staging.stage_pending(engine, today=TODAY, config=config)
    assert result.rows_rejected == 0
    assert _flags(engine, result.file_id) == ({4: "zip_invalid"} if flagged else {})


@pytest.mark.parametrize(
    ("state", "ssn", "flagged"),
    [
        ("Massachusetts", "999-12-3456", False),
        ("Massachusetts", "999123456", True),
        ("Bayern", "12345678901", False),  # Steuer-ID
        ("Bayern", "999-12-3456", False),  # Synthea writes US-style SSNs in every configuration
        ("São Paulo", "123.456.789-09", False),  # CPF
        ("Ontario", "123 456 789", False),  # SIN
        ("Ontario", "#12", True),
    ],
)
def test_ssns_are_judged_for_the_country_the_state_implies(
    engine: Engine, tmp_path: Path, state: str, ssn: str, flagged: bool
) -> None:
    [sample] = generate_sample(10)
    data = _with_field(_with_field(sample.data, 4, "STATE", state), 4, "SSN", ssn)
    file_id, result = _stage(engine, tmp_path, data)
    assert result.rows_rejected == 0
    assert _flags(engine, file_id) == ({4: "ssn_invalid"} if flagged else {})


def test_a_row_breaking_several_flag_rules_carries_every_code(
    engine: Engine, tmp_path: Path
) -> None:
    [sample] = generate_sample(10)
    data = sample.data
    for column in ("ZIP", "SSN", "PASSPORT", "DRIVERS"):
        data = _with_field(data, 6, column, "?")
    file_id, result = _stage(engine, tmp_path, data)
    assert _flags(engine, file_id) == {
        6: "zip_invalid;ssn_invalid;passport_invalid;drivers_invalid"
    }
    assert result.rows_flagged == 1 and result.rows_rejected == 0


@pytest.mark.parametrize("country", COUNTRIES)
def test_valid_exports_of_every_country_stage_without_rejection_or_flag(
    engine: Engine, tmp_path: Path, country: str
) -> None:
    [sample] = generate_sample(2000, country=country)
    file_id, result = _stage(engine, tmp_path, sample.data)
    assert (result.rows_rejected, result.rows_flagged) == (0, 0), (result.reasons, result.flags)


def test_locale_formatted_numbers_are_rejected(engine: Engine, tmp_path: Path) -> None:
    [sample] = generate_sample(ROWS, defect="locale_numbers")
    file_id, result = _stage(engine, tmp_path, sample.data)
    assert result.rows_rejected == ROWS and result.rows_staged == 0
    assert result.reasons == {
        "healthcare_expenses_invalid": ROWS,
        "healthcare_coverage_invalid": ROWS,
    }
    assert result.rejection_rate == 1.0


def test_truncated_last_line_is_a_malformed_record(engine: Engine, tmp_path: Path) -> None:
    [sample] = generate_sample(ROWS, defect="truncated_last_line")
    file_id, _ = _stage(engine, tmp_path, sample.data)
    rejected = _rejected(engine, file_id)
    assert list(rejected) == [ROWS]
    assert "malformed_record" in rejected[ROWS]


def _with_birthdate(data: bytes, row: int, value: str) -> bytes:
    lines = data.decode().split("\n")
    fields = lines[row].split(",")
    fields[COLUMNS.index("BIRTHDATE")] = value
    fields[COLUMNS.index("DEATHDATE")] = ""
    lines[row] = ",".join(fields)
    return "\n".join(lines).encode()


@pytest.mark.parametrize("bad", ["2021-02-30", "2021-04-31", "2021-13-01", "2021-2-3", "yesterday"])
def test_impossible_birthdate_is_invalid(engine: Engine, tmp_path: Path, bad: str) -> None:
    [sample] = generate_sample(10)
    data = _with_birthdate(
        _with_birthdate(sample.data, 3, bad), 4, "2020-02-29"
    )  # leap day is real
    file_id, result = _stage(engine, tmp_path, data)
    assert _rejected(engine, file_id) == {3: {"birthdate_invalid"}}
    assert result.rows_staged == 9


def test_staging_twice_does_nothing_the_second_time(engine: Engine, tmp_path: Path) -> None:
    [sample] = generate_sample(ROWS, defect="unknown_gender")
    file_id, first = _stage(engine, tmp_path, sample.data)
    assert staging.stage_pending(engine, today=TODAY) == []
    assert staging.stage_file(engine, file_id, today=TODAY) is None
    assert _count(engine, stg_patients, file_id) == first.rows_staged
    assert _count(engine, stg_patients_rejected, file_id) == first.rows_rejected
    assert staging.rejection_reasons(engine, file_id) == {"gender_invalid": 3}


def test_rejection_reasons_count_every_code(engine: Engine, tmp_path: Path) -> None:
    [sample] = generate_sample(10)
    lines = sample.data.decode().split("\n")
    gender, lat = COLUMNS.index("GENDER"), COLUMNS.index("LAT")
    for row, (g, la) in {2: ("U", None), 5: ("X", "91"), 7: (None, "north")}.items():
        fields = lines[row].split(",")
        if g is not None:
            fields[gender] = g
        if la is not None:
            fields[lat] = la
        lines[row] = ",".join(fields)
    file_id, _ = _stage(engine, tmp_path, "\n".join(lines).encode())
    assert staging.rejection_reasons(engine, file_id) == {"gender_invalid": 2, "lat_invalid": 2}
    assert _rejected(engine, file_id) == {
        2: {"gender_invalid"},
        5: {"gender_invalid", "lat_invalid"},
        7: {"lat_invalid"},
    }


def test_rejected_rows_hold_no_field_values(engine: Engine, tmp_path: Path) -> None:
    columns = {c["name"] for c in sa.inspect(engine).get_columns("patients_rejected", schema="stg")}
    assert columns == {"_file_id", "_row_number", "reasons", "_staged_at"}
    [sample] = generate_sample(ROWS, defect="null_ids")
    file_id, _ = _stage(engine, tmp_path, sample.data)
    with engine.connect() as conn:
        reasons = set(conn.execute(sa.select(stg_patients_rejected.c.reasons)).scalars())
    codes = {r.code for r in staging.build_rules(TODAY)} | {"id_duplicate_in_file"}
    assert codes == set(STAGING_RULES)
    assert all(set(r.split(";")) <= codes for r in reasons)


def _with_field(data: bytes, row: int, column: str, value: str) -> bytes:
    lines = data.decode().split("\n")
    fields = lines[row].split(",")
    fields[COLUMNS.index(column)] = value
    lines[row] = ",".join(fields)
    return "\n".join(lines).encode()


@pytest.mark.parametrize("huge", ["1" + "0" * 400, "12345678901234567", "9999999999999999.999"])
def test_numbers_too_large_for_their_type_are_rejected_not_a_crash(
    engine: Engine, tmp_path: Path, huge: str
) -> None:
    """On Postgres a cast overflow would abort the whole stage; the rule rejects the row first."""
    [sample] = generate_sample(10)
    file_id, result = _stage(
        engine, tmp_path, _with_field(sample.data, 2, "HEALTHCARE_EXPENSES", huge)
    )
    assert _rejected(engine, file_id) == {2: {"healthcare_expenses_invalid"}}
    assert result.rows_staged == 9
