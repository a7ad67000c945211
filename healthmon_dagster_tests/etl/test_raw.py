"""Raw loader: exactly-once loads, file-level defects without half writes, DB and S3 outages, headers
that are data, record splitting that no quoting can stall, and a trace for every way a load ends."""

import csv
import io
import os
import signal
import threading
import time
import weakref
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import boto3
import pytest
import sqlalchemy as sa
from sqlalchemy import exc as sa_exc
from sqlalchemy.engine import Engine

from healthmon_dagster.etl import raw
from healthmon_dagster.etl.failures import Classification, classify
from healthmon_dagster.etl.landing import (
    LandingError,
    LandingFileMissing,
    LocalLandingSource,
    S3LandingSource,
)
from healthmon_dagster.etl.raw import RawLoadResult
from healthmon_dagster.etl.sample import generate_sample, write_to
from healthmon_dagster.store.db import create_db_engine, describe_unavailable
from healthmon_dagster.store.tables import SOURCE_COLUMNS, db_column, files, load_runs, raw_patients
from healthmon_dagster_tests.fixtures import free_port

ROWS = 20
VALUE_COLUMNS = [raw_patients.c[db_column(c)] for c in SOURCE_COLUMNS]


def _raw_count(engine: Engine, file_id: int | None = None) -> int:
    query = sa.select(sa.func.count()).select_from(raw_patients)
    if file_id is not None:
        query = query.where(raw_patients.c._file_id == file_id)
    with engine.connect() as conn:
        return conn.execute(query).scalar_one()


def _file_rows(engine: Engine, key: str) -> list[sa.Row]:
    with engine.connect() as conn:
        return list(conn.execute(sa.select(files).where(files.c.file_key == key)))


def _load(
    engine: Engine, tmp_path: Path, defect: str | None = None, key: str = "patients_0001.csv"
) -> RawLoadResult:
    source = LocalLandingSource(tmp_path / "landing")
    [sample] = generate_sample(ROWS, defect=defect)
    source.put(key, sample.data)
    return raw.load_file(engine, source, key)


def test_clean_file_loads_every_row_with_lineage(engine: Engine, tmp_path: Path) -> None:
    result = _load(engine, tmp_path)
    assert (result.status, result.rows, result.malformed_rows) == ("loaded", ROWS, 0)
    with engine.connect() as conn:
        rows = list(
            conn.execute(
                sa.select(raw_patients.c._row_number, raw_patients.c._file, raw_patients.c._error)
                .where(raw_patients.c._file_id == result.file_id)
                .order_by(raw_patients.c._row_number)
            )
        )
        run = conn.execute(sa.select(load_runs).where(load_runs.c.file_id == result.file_id)).one()
    assert [r._row_number for r in rows] == list(range(1, ROWS + 1))
    assert {r._file for r in rows} == {"patients_0001.csv"}
    assert {r._error for r in rows} == {None}
    [file_row] = _file_rows(engine, "patients_0001.csv")
    assert (file_row.status, file_row.rows_raw, file_row.delimiter) == ("loaded", ROWS, ",")
    assert (run.layer, run.status, run.rows_out) == ("raw", "success", ROWS)


def test_loading_the_same_file_again_loads_nothing(engine: Engine, tmp_path: Path) -> None:
    source = LocalLandingSource(tmp_path)
    [sample] = generate_sample(ROWS)
    write_to(source, [sample])
    first = raw.load_file(engine, source, sample.key)
    again = raw.load_file(engine, source, sample.key)
    source.put("renamed/copy.csv", sample.data)
    copy = raw.load_file(engine, source, "renamed/copy.csv")
    assert first.status == "loaded"
    assert (again.status, again.file_id) == ("already_loaded", first.file_id)
    assert (copy.status, copy.file_id) == ("already_loaded", first.file_id)
    assert _raw_count(engine) == ROWS
    with engine.connect() as conn:
        statuses = conn.execute(sa.select(load_runs.c.status).order_by(load_runs.c.load_run_id))
        assert list(statuses.scalars()) == ["success", "skipped", "skipped"]


@pytest.mark.parametrize(
    ("defect", "reason", "named"),
    [
        ("missing_column", "missing_columns", "HEALTHCARE_COVERAGE"),
        ("semicolon_delimiter", "delimiter", "';'"),
        ("non_utf8", "not_utf8", "UTF-8"),
    ],
)
def test_broken_file_is_rejected_with_reason_and_nothing_written(
    engine: Engine, tmp_path: Path, defect: str, reason: str, named: str
) -> None:
    _load(engine, tmp_path, key="clean.csv")  # other data already in raw must stay as it is
    before = _raw_count(engine)
    result = _load(engine, tmp_path, defect)
    assert result.status == "rejected"
    assert named in result.message
    assert _raw_count(engine) == before == ROWS
    [file_row] = _file_rows(engine, "patients_0001.csv")
    assert file_row.status == "rejected"
    assert file_row.error.startswith(f"{reason}: ")
    assert named in file_row.error
    assert file_row.rows_raw == 0
    with engine.connect() as conn:
        run = conn.execute(sa.select(load_runs).order_by(load_runs.c.load_run_id.desc())).first()
    assert run is not None and (run.status, run.rows_out) == ("rejected", 0)


def test_rejected_file_is_rejected_again_when_resent(engine: Engine, tmp_path: Path) -> None:
    first = _load(engine, tmp_path, "missing_column")
    second = _load(engine, tmp_path, "missing_column")
    assert (first.status, second.status) == ("rejected", "rejected")
    assert [r.status for r in _file_rows(engine, "patients_0001.csv")] == ["rejected", "rejected"]


def test_zero_byte_file_is_empty(engine: Engine, tmp_path: Path) -> None:
    result = _load(engine, tmp_path, "empty_file")
    assert (result.status, result.rows) == ("empty", 0)
    assert "empty" in result.message
    [file_row] = _file_rows(engine, "patients_0001.csv")
    assert (file_row.status, file_row.rows_raw) == ("empty", 0)
    assert _raw_count(engine) == 0


def test_header_only_file_is_empty(engine: Engine, tmp_path: Path) -> None:
    source = LocalLandingSource(tmp_path)
    [sample] = generate_sample(ROWS)
    source.put("header_only.csv", sample.data.split(b"\n", 1)[0] + b"\n")
    result = raw.load_file(engine, source, "header_only.csv")
    assert (result.status, result.rows) == ("empty", 0)
    assert "no data records" in result.message
    [file_row] = _file_rows(engine, "header_only.csv")
    assert file_row.status == "empty"
    assert _raw_count(engine) == 0


def test_extra_column_loads_and_is_reported(engine: Engine, tmp_path: Path) -> None:
    result = _load(engine, tmp_path, "extra_column")
    assert (result.status, result.rows) == ("loaded", ROWS)
    # By position, never the header text (which may be patient data in a headerless file).
    assert result.unexpected_columns == ["#26"]
    [file_row] = _file_rows(engine, "patients_0001.csv")
    assert file_row.unexpected_columns == "#26"
    assert file_row.missing_columns == "MIDDLE,FIPS,INCOME"  # optional, newer Synthea only


def test_truncated_last_line_is_kept_and_marked(engine: Engine, tmp_path: Path) -> None:
    result = _load(engine, tmp_path, "truncated_last_line")
    assert (result.status, result.rows, result.malformed_rows) == ("loaded", ROWS, 1)
    with engine.connect() as conn:
        errors = {
            n: e
            for n, e in conn.execute(
                sa.select(raw_patients.c._row_number, raw_patients.c._error).where(
                    raw_patients.c._error.is_not(None)
                )
            )
        }
    assert list(errors) == [ROWS]
    assert errors[ROWS].startswith("field_count")
    assert _file_rows(engine, "patients_0001.csv")[0].malformed_rows == 1


def _values(engine: Engine, file_id: int | None) -> list[tuple[object, ...]]:
    with engine.connect() as conn:
        return list(
            conn.execute(
                sa.select(raw_patients.c._row_number, *VALUE_COLUMNS)
                .where(raw_patients.c._file_id == file_id)
                .order_by(raw_patients.c._row_number)
            )
        )


def test_bom_and_crlf_load_the_same_values_as_a_clean_file(engine: Engine, tmp_path: Path) -> None:
    clean = _load(engine, tmp_path, key="clean.csv")
    bom = _load(engine, tmp_path, "bom_crlf")
    assert (bom.status, bom.rows, bom.malformed_rows) == ("loaded", ROWS, 0)
    [file_row] = _file_rows(engine, "patients_0001.csv")
    assert file_row.had_bom and file_row.crlf
    clean_values = _values(engine, clean.file_id)
    assert len(clean_values) == ROWS
    assert _values(engine, bom.file_id) == clean_values


# defect -> what etl.files records for it (every other normalisation column stays 0 / false)
NORMALISED = {
    "cr_line_endings": {"cr_line_endings": True},
    "header_whitespace": {"header_whitespace": 2},
    "header_case": {"header_case": 2},
    "columns_reordered": {"columns_reordered": True},
    "blank_lines": {"blank_lines": 2},  # after records 50 and 100
}


@pytest.mark.parametrize("defect", list(NORMALISED))
def test_each_normalisation_loads_the_clean_values_and_is_recorded(
    engine: Engine, tmp_path: Path, defect: str
) -> None:
    source = LocalLandingSource(tmp_path / "landing")
    [clean_sample] = generate_sample(100)
    [sample] = generate_sample(100, defect=defect)
    source.put("clean.csv", clean_sample.data)
    source.put("patients_0001.csv", sample.data)
    clean = raw.load_file(engine, source, "clean.csv")
    normalised = raw.load_file(engine, source, "patients_0001.csv")

    assert (normalised.status, normalised.rows, normalised.malformed_rows) == ("loaded", 100, 0)
    assert _values(engine, normalised.file_id) == _values(engine, clean.file_id)
    expected = {
        "cr_line_endings": False,
        "header_whitespace": 0,
        "header_case": 0,
        "columns_reordered": False,
        "blank_lines": 0,
        **NORMALISED[defect],
    }
    [row] = _file_rows(engine, "patients_0001.csv")
    assert {k: getattr(row, k) for k in expected} == expected
    [clean_row] = _file_rows(engine, "clean.csv")
    assert (
        clean_row.cr_line_endings,
        clean_row.header_whitespace,
        clean_row.header_case,
        clean_row.columns_reordered,
        clean_row.blank_lines,
    ) == (False, 0, 0, False, 0)


def test_file_gone_between_listing_and_reading(engine: Engine, tmp_path: Path) -> None:
    source = LocalLandingSource(tmp_path)
    write_to(source, generate_sample(ROWS))
    [listed] = source.list_files()
    (tmp_path / listed.key).unlink()
    with pytest.raises(LandingFileMissing, match="disappeared"):
        raw.load_file(engine, source, listed.key)
    with engine.connect() as conn:
        run = conn.execute(sa.select(load_runs)).one()
        assert conn.execute(sa.select(sa.func.count()).select_from(files)).scalar_one() == 0
    assert (run.status, run.file_key) == ("failed", listed.key)
    assert "LandingFileMissing" in run.error and "disappeared" in run.error
    assert _raw_count(engine) == 0


def test_two_concurrent_loads_of_one_file_load_it_once(
    engine: Engine, db_url: str, tmp_path: Path
) -> None:
    source = LocalLandingSource(tmp_path)
    [sample] = generate_sample(ROWS)
    write_to(source, [sample])
    engines = [create_db_engine(db_url) for _ in range(2)]
    barrier = threading.Barrier(2)
    results: list[RawLoadResult] = []
    errors: list[BaseException] = []

    def run(e: Engine) -> None:
        try:
            barrier.wait()
            results.append(raw.load_file(e, source, sample.key))
        except BaseException as exc:  # asserted below
            errors.append(exc)

    threads = [threading.Thread(target=run, args=(e,)) for e in engines]
    try:
        for t in threads:
            t.start()
        for t in threads:
            t.join(60)
    finally:
        for e in engines:
            e.dispose()
    assert errors == []
    assert sorted(r.status for r in results) == ["already_loaded", "loaded"]
    assert results[0].file_id == results[1].file_id
    assert _raw_count(engine) == ROWS
    assert [r.status for r in _file_rows(engine, sample.key)] == ["loaded"]


def test_database_down_then_back(engine: Engine, tmp_path: Path) -> None:
    source = LocalLandingSource(tmp_path)
    [sample] = generate_sample(ROWS)
    write_to(source, [sample])
    port = free_port()
    down = create_db_engine(f"postgresql+psycopg2://postgres:s3cret@127.0.0.1:{port}/x")
    try:
        with pytest.raises(sa_exc.OperationalError) as excinfo:
            raw.load_file(down, source, sample.key)
        message = str(describe_unavailable(down, excinfo.value))
    finally:
        down.dispose()
    assert f"127.0.0.1:{port}" in message
    assert "s3cret" not in message
    assert "Nothing was written" in message
    result = raw.load_file(engine, source, sample.key)
    assert (result.status, result.rows) == ("loaded", ROWS)
    assert _raw_count(engine) == ROWS


def test_s3_landing_file_loads(engine: Engine, moto_server: str, s3_bucket: str) -> None:
    client = boto3.client("s3", endpoint_url=moto_server, region_name="us-east-1")
    source = S3LandingSource(client, s3_bucket, prefix="incoming/")
    write_to(source, generate_sample(ROWS))
    [listed] = source.list_files()
    assert listed.key == "incoming/patients_0001.csv"
    result = raw.load_file(engine, source, listed.key, fingerprint=listed.fingerprint)
    assert (result.status, result.rows) == ("loaded", ROWS)
    assert _raw_count(engine, result.file_id) == ROWS
    assert raw.unloaded_files(engine, source, "*.csv") == []


def test_a_nul_byte_rejects_the_file_on_both_databases(engine: Engine, tmp_path: Path) -> None:
    [sample] = generate_sample(20)
    lines = sample.data.split(b"\n")
    lines[5] = lines[5].replace(b",", b",\x00", 1)
    source = LocalLandingSource(tmp_path / "landing")
    source.put("patients_nul.csv", b"\n".join(lines))

    result = raw.load_file(engine, source, "patients_nul.csv")

    assert result.status == "rejected" and "NUL byte" in result.message
    assert "data record 5" in result.message
    with engine.connect() as conn:
        assert conn.execute(sa.select(sa.func.count()).select_from(raw_patients)).scalar_one() == 0


@pytest.mark.parametrize(
    ("defect", "found"),
    [
        (
            "missing_column",
            raw.ContractBreak("missing_columns", ("HEALTHCARE_COVERAGE",), 0, ",", 1, 24),
        ),
        ("semicolon_delimiter", raw.ContractBreak("delimiter", delimiter=";", line=1)),
    ],
)
def test_a_rejected_file_exposes_what_the_loader_found(
    engine: Engine, tmp_path: Path, defect: str, found: raw.ContractBreak
) -> None:
    result = _load(engine, tmp_path, defect)

    assert result.status == "rejected"
    assert result.contract_break == found


def test_repeated_header_names_outside_the_contract_are_located_not_shown(
    engine: Engine, tmp_path: Path
) -> None:
    [sample] = generate_sample(ROWS)
    header, rest = sample.data.split(b"\n", 1)
    rows = [line + b",x,y" for line in rest.splitlines()]
    source = LocalLandingSource(tmp_path / "landing")
    source.put("patients_twice.csv", header + b",Quarry_Note,Quarry_Note\n" + b"\n".join(rows))

    result = raw.load_file(engine, source, "patients_twice.csv")

    assert result.status == "rejected" and result.contract_break is not None
    found = result.contract_break
    assert (found.reason, found.columns, found.other_columns, found.positions) == (
        "duplicate_columns",
        (),
        1,
        (26, 27),
    )
    assert "header repeats 1 unknown name(s), at positions 26-27" in result.message
    [file_row] = _file_rows(engine, "patients_twice.csv")
    assert "Quarry" not in result.message + file_row.error


PHI_COLUMNS = (
    "Id",
    "BIRTHDATE",
    "SSN",
    "DRIVERS",
    "PASSPORT",
    "FIRST",
    "LAST",
    "MAIDEN",
    "ADDRESS",
)


def _phi_values(rows: int = ROWS) -> set[str]:
    """The identifying values of the clean sample (same seed, same patients as any defect's)."""
    [sample] = generate_sample(rows)
    reader = csv.DictReader(io.StringIO(sample.data.decode("utf-8")))
    return {row[c] for row in reader for c in PHI_COLUMNS if row[c]}


def _last_load_run(engine: Engine) -> sa.Row:
    with engine.connect() as conn:
        run = conn.execute(sa.select(load_runs).order_by(load_runs.c.load_run_id.desc())).first()
    assert run is not None
    return run


@pytest.mark.parametrize(
    ("defect", "reason", "says"),
    [
        (
            "headerless",
            "no_header",
            "line 1 is a data record, not a header: none of its 25 fields is a contract column "
            "name and some look like data values (dates, numbers or ids)",
        ),
        (
            "header_joined",
            "header_joined",
            "the header line runs into the first record: line 1 has 49 fields, 24 contract "
            "column names followed by 25 more (positions 25-49) of which some look like data "
            "values (dates, numbers or ids)",
        ),
    ],
)
def test_a_header_line_that_is_data_is_rejected_without_showing_it(
    engine: Engine, tmp_path: Path, defect: str, reason: str, says: str
) -> None:
    result = _load(engine, tmp_path, defect)

    assert result.status == "rejected" and result.contract_break is not None
    assert result.contract_break.reason == reason
    assert says in result.message
    [file_row] = _file_rows(engine, "patients_0001.csv")
    assert file_row.status == "rejected" and file_row.error.startswith(f"{reason}: {says}")
    assert file_row.unexpected_columns is None
    assert _raw_count(engine) == 0
    run = _last_load_run(engine)
    assert run.status == "rejected"
    text = "\n".join([result.message, file_row.error, run.error, repr(result.contract_break)])
    values = _phi_values()
    assert len(values) > 100
    assert not sorted(v for v in values if v in text)


def test_a_header_name_that_looks_like_a_value_is_rejected_unless_it_is_accepted(
    engine: Engine, tmp_path: Path
) -> None:
    [sample] = generate_sample(ROWS)
    # A column named like a number, second in the header, and its values: not a Synthea header.
    data = b"\n".join(
        line.replace(b",", b",2024," if i == 0 else b",7,", 1) if line else line
        for i, line in enumerate(sample.data.split(b"\n"))
    )
    source = LocalLandingSource(tmp_path / "landing")
    source.put("clean.csv", sample.data)
    source.put("patients_numbered.csv", data)
    clean = raw.load_file(engine, source, "clean.csv")

    rejected = raw.load_file(engine, source, "patients_numbered.csv")
    accepted = raw.load_file(
        engine, source, "patients_numbered.csv", accepted_extra_columns=["2024"]
    )

    assert rejected.status == "rejected" and rejected.contract_break is not None
    assert (rejected.contract_break.reason, rejected.contract_break.positions) == (
        "data_in_header",
        (2,),
    )
    assert "header has 1 field(s) that look like data values" in rejected.message
    assert "at positions 2;" in rejected.message and "2024" not in rejected.message
    assert (accepted.status, accepted.rows, accepted.unexpected_columns) == ("loaded", ROWS, [])
    assert _values(engine, accepted.file_id) == _values(engine, clean.file_id)


def test_accepted_extra_columns_are_neither_loaded_nor_unexpected(
    engine: Engine, tmp_path: Path
) -> None:
    source = LocalLandingSource(tmp_path / "landing")
    [sample] = generate_sample(ROWS, defect="extra_column")  # LOYALTY_TIER appended
    source.put("patients_0001.csv", sample.data)

    result = raw.load_file(
        engine, source, "patients_0001.csv", accepted_extra_columns=["loyalty_tier"]
    )

    assert (result.status, result.rows, result.unexpected_columns) == ("loaded", ROWS, [])
    [file_row] = _file_rows(engine, "patients_0001.csv")
    assert file_row.unexpected_columns is None


def test_an_accepted_extra_column_is_named_when_repeated(engine: Engine, tmp_path: Path) -> None:
    [sample] = generate_sample(ROWS)
    header, rest = sample.data.split(b"\n", 1)
    rows = b"\n".join(line + b",a,b" for line in rest.splitlines())
    source = LocalLandingSource(tmp_path / "landing")
    source.put("patients_0001.csv", header + b",Tier,TIER\n" + rows)

    result = raw.load_file(engine, source, "patients_0001.csv", accepted_extra_columns=["Tier"])

    assert result.contract_break is not None
    assert result.contract_break.columns == ("Tier",)
    assert "header repeats column(s) Tier;" in result.message


def test_a_renamed_column_is_missing_and_its_replacement_located_not_named(
    engine: Engine, tmp_path: Path
) -> None:
    [sample] = generate_sample(ROWS)
    header, rest = sample.data.split(b"\n", 1)
    source = LocalLandingSource(tmp_path / "landing")
    source.put(
        "patients_0001.csv",
        header.replace(b"HEALTHCARE_COVERAGE", b"COVERAGE_USD") + b"\n" + rest,
    )

    result = raw.load_file(engine, source, "patients_0001.csv")

    assert result.contract_break is not None
    assert result.contract_break.positions == (25,)
    assert (
        "header lacks required column(s) HEALTHCARE_COVERAGE (25 columns found; 1 unknown column "
        "at position 25)" in result.message
    )
    assert "COVERAGE_USD" not in result.message


def test_a_first_line_without_a_line_break_in_64_kib_is_no_header(
    engine: Engine, tmp_path: Path
) -> None:
    source = LocalLandingSource(tmp_path / "landing")
    source.put("patients_0001.csv", b"Id," + b"x" * 70_000 + b"\n1\n")

    result = raw.load_file(engine, source, "patients_0001.csv")

    assert result.contract_break is not None
    assert result.contract_break.reason == "header_too_long"
    assert _file_rows(engine, "patients_0001.csv")[0].status == "rejected"


def _replace_records(data: bytes, replace: dict[int, Callable[[list[bytes]], None]]) -> bytes:
    """The file with data record ``n`` (1-based, one line each in a clean sample) rewritten by
    ``replace[n]``, which edits its list of fields."""
    lines = data.split(b"\n")
    for n, edit in replace.items():
        fields = lines[n].split(b",")
        edit(fields)
        lines[n] = b",".join(fields)
    return b"\n".join(lines)


ADDRESS, FIRST, LAST = 16, 7, 8


def _column(engine: Engine, file_id: int | None, name: str) -> list[object]:
    with engine.connect() as conn:
        return list(
            conn.execute(
                sa.select(raw_patients.c[name])
                .where(raw_patients.c._file_id == file_id)
                .order_by(raw_patients.c._row_number)
            ).scalars()
        )


def test_a_field_with_200000_line_breaks_is_one_record_read_in_linear_time(
    engine: Engine, tmp_path: Path
) -> None:
    [sample] = generate_sample(ROWS)

    def many_lines(fields: list[bytes]) -> None:
        fields[ADDRESS] = b'"' + b"\n".join([b"x"] * 200_001) + b'"'

    source = LocalLandingSource(tmp_path / "landing")
    source.put("patients_0001.csv", _replace_records(sample.data, {3: many_lines}))

    t0 = time.perf_counter()
    result = raw.load_file(engine, source, "patients_0001.csv")
    elapsed = time.perf_counter() - t0

    assert (result.status, result.rows, result.malformed_rows) == ("loaded", ROWS, 0)
    address = _column(engine, result.file_id, "address")[2]
    assert isinstance(address, str) and address.count("\n") == 200_000
    # Re-scanning the open record after every line took 16.7 s for 80,000 line breaks; linear
    # splitting takes well under a second here.
    assert elapsed < 10, elapsed


def test_a_stray_quote_swallows_at_most_max_record_bytes_then_reading_resumes(
    engine: Engine, tmp_path: Path
) -> None:
    rows, cap = 2000, 16 * 1024
    [sample] = generate_sample(rows)

    def stray(fields: list[bytes]) -> None:
        fields[FIRST] = b'"' + fields[FIRST]

    data = _replace_records(sample.data, {3: stray})
    lines = data.split(b"\n")
    # Record 3 is physical line 4; it takes lines until their bytes pass the cap, that line too.
    used, end = 0, 3
    while used <= cap:
        used += len(lines[end]) + 1
        end += 1
    swallowed = end - 3  # physical lines 4 .. end
    source = LocalLandingSource(tmp_path / "landing")
    source.put("clean.csv", sample.data)
    source.put("patients_0001.csv", data)
    clean = raw.load_file(engine, source, "clean.csv")

    result = raw.load_file(engine, source, "patients_0001.csv", max_record_bytes=cap)

    assert result.status == "loaded"
    assert (result.rows, result.malformed_rows) == (rows - swallowed + 1, 1)
    errors = _column(engine, result.file_id, "_error")
    assert errors[2] == (
        f"record_too_large: a quoted field opened on line 4 was still open at line {end}, past "
        f"landing.max_record_bytes ({cap} bytes); kept with the fields of line 4; reading "
        f"resumed at line {end + 1}"
    )
    assert errors[:2] + errors[3:] == [None] * (rows - swallowed)
    loaded_ids, clean_ids = (_column(engine, r.file_id, "id") for r in (result, clean))
    assert loaded_ids[2] == clean_ids[2]  # the first line's fields are kept
    assert loaded_ids[3:] == clean_ids[2 + swallowed :]  # every record after the cap, intact


def test_a_quote_inside_a_field_is_a_character(engine: Engine, tmp_path: Path) -> None:
    [sample] = generate_sample(ROWS)

    def irish(fields: list[bytes]) -> None:
        fields[LAST] = b'O"Brien'

    source = LocalLandingSource(tmp_path / "landing")
    source.put("patients_0001.csv", _replace_records(sample.data, {5: irish}))

    result = raw.load_file(engine, source, "patients_0001.csv")

    assert (result.status, result.rows, result.malformed_rows) == ("loaded", ROWS, 0)
    assert _column(engine, result.file_id, "last")[4] == 'O"Brien'


def test_a_line_longer_than_max_record_bytes_is_kept_without_its_fields(
    engine: Engine, tmp_path: Path
) -> None:
    [sample] = generate_sample(ROWS)

    def long(fields: list[bytes]) -> None:
        fields[ADDRESS] = b"A" * 5000

    source = LocalLandingSource(tmp_path / "landing")
    source.put("patients_0001.csv", _replace_records(sample.data, {2: long}))

    result = raw.load_file(engine, source, "patients_0001.csv", max_record_bytes=4096)

    assert (result.status, result.rows, result.malformed_rows) == ("loaded", ROWS, 1)
    errors = _column(engine, result.file_id, "_error")
    assert errors[1] == (
        "record_too_large: line 3 is longer than landing.max_record_bytes (4096 bytes); kept "
        "without its fields"
    )
    assert _column(engine, result.file_id, "id")[1] is None
    assert _column(engine, result.file_id, "id")[2] is not None


def test_a_quoted_field_open_at_the_end_of_the_file_is_an_unterminated_record(
    engine: Engine, tmp_path: Path
) -> None:
    [sample] = generate_sample(ROWS)

    def opened(fields: list[bytes]) -> None:
        fields[ADDRESS] = b'"' + fields[ADDRESS]

    source = LocalLandingSource(tmp_path / "landing")
    source.put("patients_0001.csv", _replace_records(sample.data, {ROWS: opened}))

    result = raw.load_file(engine, source, "patients_0001.csv")

    assert (result.status, result.rows, result.malformed_rows) == ("loaded", ROWS, 1)
    errors = _column(engine, result.file_id, "_error")
    assert errors[-1] == "unterminated_quote: the record ends inside a quoted field"


def test_a_nul_byte_inside_a_quoted_record_rejects_the_file_at_its_line(
    engine: Engine, tmp_path: Path
) -> None:
    [sample] = generate_sample(ROWS)

    def nul(fields: list[bytes]) -> None:
        fields[ADDRESS] = b'"1 Main St\nUnit\x00 4"'

    source = LocalLandingSource(tmp_path / "landing")
    source.put("patients_0001.csv", _replace_records(sample.data, {3: nul}))

    result = raw.load_file(engine, source, "patients_0001.csv")

    assert result.contract_break is not None
    assert (result.contract_break.reason, result.contract_break.line) == ("nul_byte", 5)
    assert _raw_count(engine) == 0


class _OneFileSource(LocalLandingSource):
    """A landing source whose every key is one given path (a test stand-in for a source whose
    storage fails: the path is real, and so is the error reading it)."""

    def __init__(self, path: Path) -> None:
        super().__init__(path.parent)
        self.path = path

    @contextmanager
    def download(self, key: str) -> Iterator[Path]:
        yield self.path


def test_a_file_that_cannot_be_read_is_a_transient_error_said_in_load_runs(
    engine: Engine,
) -> None:
    # Reading /proc/self/mem from offset 0 fails with EIO: a real I/O error of a real file.
    source = _OneFileSource(Path("/proc/self/mem"))

    with pytest.raises(raw.LandingFileUnreadable, match="Input/output error") as excinfo:
        raw.load_file(engine, source, "patients_0001.csv")

    assert isinstance(excinfo.value, LandingError)  # the raw asset lets a LandingError retry
    run = _last_load_run(engine)
    assert (run.status, run.file_key) == ("failed", "patients_0001.csv")
    assert run.error.startswith("LandingFileUnreadable: ") and "Input/output error" in run.error
    assert _file_rows(engine, "patients_0001.csv") == []


def test_a_file_that_changes_while_it_is_read_is_not_loaded_until_it_is_stable(
    engine: Engine, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(raw, "PROGRESS_EVERY", 5)
    source = LocalLandingSource(tmp_path / "landing")
    [sample] = generate_sample(ROWS)
    source.put("patients_0001.csv", sample.data)
    path = tmp_path / "landing" / "patients_0001.csv"

    def writer_appends(records: int) -> None:  # the writer had not finished
        if records == 5:
            with open(path, "ab") as f:
                f.write(sample.data.split(b"\n")[1] + b"\n")

    with pytest.raises(raw.LandingFileUnreadable, match="changed while it was read") as changed:
        raw.load_file(engine, source, "patients_0001.csv", progress=writer_appends)
    # Transient for the retry machinery: the file is requested again, not stuck.
    assert classify(changed.value) == Classification(
        "landing_file_unreadable", True, "file_unreadable"
    )

    assert _raw_count(engine) == 0 and _file_rows(engine, "patients_0001.csv") == []
    assert "changed while it was read" in _last_load_run(engine).error
    again = raw.load_file(engine, source, "patients_0001.csv")
    assert (again.status, again.rows) == ("loaded", ROWS + 1)


def test_a_file_deleted_once_opened_is_loaded_whole(
    engine: Engine, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(raw, "PROGRESS_EVERY", 5)
    source = LocalLandingSource(tmp_path / "landing")
    [sample] = generate_sample(ROWS)
    source.put("patients_0001.csv", sample.data)
    seen: list[int] = []

    def moved_away(records: int) -> None:
        seen.append(records)
        (tmp_path / "landing" / "patients_0001.csv").unlink(missing_ok=True)

    result = raw.load_file(engine, source, "patients_0001.csv", progress=moved_away)

    assert (result.status, result.rows) == ("loaded", ROWS)
    assert seen == [5, 10, 15, 20]
    assert _raw_count(engine, result.file_id) == ROWS


def test_an_interrupted_load_commits_nothing_and_says_so(
    engine: Engine, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Dagster turns a run's cancellation or SIGTERM into an exception raised in the step; on
    # Postgres it is raised inside COPY's read, which psycopg2 would turn into QueryCanceled.
    monkeypatch.setattr(raw, "PROGRESS_EVERY", 5)
    source = LocalLandingSource(tmp_path / "landing")
    [sample] = generate_sample(ROWS)
    source.put("patients_0001.csv", sample.data)

    def cancelled(records: int) -> None:
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        raw.load_file(engine, source, "patients_0001.csv", progress=cancelled)

    assert _raw_count(engine) == 0 and _file_rows(engine, "patients_0001.csv") == []
    run = _last_load_run(engine)
    assert run.status == "failed"
    assert run.error.startswith("interrupted (KeyboardInterrupt): the run was cancelled")
    again = raw.load_file(engine, source, "patients_0001.csv")
    assert (again.status, again.rows) == ("loaded", ROWS)


class _Stop(BaseException):
    """What a step's signal handler raises (Dagster raises DagsterExecutionInterruptedError)."""


@pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning")
def test_a_signal_whose_exception_a_weakref_callback_drops_still_stops_the_load(
    engine: Engine, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A signal handler runs wherever the main thread is; inside a weakref callback the exception
    # it raises is printed and dropped (seen with SQLAlchemy's callbacks during a real SIGTERM).
    monkeypatch.setattr(raw, "PROGRESS_EVERY", 5)
    source = LocalLandingSource(tmp_path / "landing")
    [sample] = generate_sample(ROWS)
    source.put("patients_0001.csv", sample.data)

    def stop(signum: int, frame: object) -> None:
        raise _Stop

    class Collected:
        pass

    def signal_inside_a_weakref_callback(records: int) -> None:
        if records != 5:
            return

        def callback(_: object) -> None:
            os.kill(os.getpid(), signal.SIGTERM)
            for _ in range(1000):  # the handler runs in this loop: its _Stop is dropped
                pass

        thing = Collected()
        ref = weakref.ref(thing, callback)
        del thing
        assert ref() is None

    previous = signal.signal(signal.SIGTERM, stop)
    try:
        with pytest.raises(_Stop):
            raw.load_file(
                engine, source, "patients_0001.csv", progress=signal_inside_a_weakref_callback
            )
        assert signal.getsignal(signal.SIGTERM) is stop  # the loader's wrapper is gone
    finally:
        signal.signal(signal.SIGTERM, previous)

    assert _raw_count(engine) == 0 and _file_rows(engine, "patients_0001.csv") == []
    assert _last_load_run(engine).error.startswith("interrupted (_Stop)")
