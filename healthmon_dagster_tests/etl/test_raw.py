"""Raw loader: exactly-once loads, file-level defects without half writes, DB and S3 outages."""

import threading
from pathlib import Path

import boto3
import pytest
import sqlalchemy as sa
from sqlalchemy import exc as sa_exc
from sqlalchemy.engine import Engine

from healthmon_dagster.etl import raw
from healthmon_dagster.etl.landing import LandingFileMissing, LocalLandingSource, S3LandingSource
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
        clean_row.header_whitespace,
        clean_row.header_case,
        clean_row.columns_reordered,
        clean_row.blank_lines,
    ) == (0, 0, False, 0)


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


def test_repeated_header_names_outside_the_contract_are_counted_not_shown(
    engine: Engine, tmp_path: Path
) -> None:
    # A file without its header: the first record is read as the header; its values are no names.
    [sample] = generate_sample(ROWS)
    _, first, rest = sample.data.split(b"\n", 2)
    fields = first.split(b",")
    fields[9] = fields[10] = b"Quarry-Ypsilanti"
    source = LocalLandingSource(tmp_path / "landing")
    source.put("patients_headless.csv", b",".join(fields) + b"\n" + rest)

    result = raw.load_file(engine, source, "patients_headless.csv")

    assert result.status == "rejected" and result.contract_break is not None
    assert result.contract_break.reason == "duplicate_columns"
    assert (result.contract_break.columns, result.contract_break.other_columns) == ((), 2)
    assert "header repeats column(s) 2 name(s) outside the contract" in result.message
    [file_row] = _file_rows(engine, "patients_headless.csv")
    assert "Quarry-Ypsilanti" not in result.message + file_row.error
