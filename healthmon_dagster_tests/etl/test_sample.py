"""Synthea sample generator: determinism, valid data, re-sends, every defect, CLI to disk and S3."""

import csv
import io
import re
import socket
import uuid
from collections.abc import Iterator
from datetime import date
from pathlib import Path

import boto3
import pytest
from click.testing import CliRunner
from moto.server import ThreadedMotoServer

from healthmon_dagster.cli.sample_cmd import generate_sample as generate_sample_cmd
from healthmon_dagster.etl.countries import COUNTRIES as COUNTRY_TABLES
from healthmon_dagster.etl.countries import fold
from healthmon_dagster.etl.landing import LocalLandingSource
from healthmon_dagster.etl.sample import (
    COLUMNS,
    DEFECTS,
    REFERENCE_DATE,
    SampleFile,
    defect_rows,
    generate_sample,
    next_start_index,
    write_patients_csv,
    write_to,
)
from healthmon_dagster.store.tables import SYNTHEA_COLUMN_ORDER

HEADER = ",".join(COLUMNS)
COL = {name: i for i, name in enumerate(COLUMNS)}


def parse(data: bytes, delimiter: str = ",") -> tuple[list[str], list[list[str]]]:
    rows = list(csv.reader(io.StringIO(data.decode("utf-8"), newline=""), delimiter=delimiter))
    return rows[0], rows[1:]


def column(rows: list[list[str]], name: str) -> list[str]:
    return [r[COL[name]] for r in rows]


def test_same_args_same_bytes_other_seed_other_bytes() -> None:
    a = generate_sample(200, files=3, seed=7, defect="null_ids")
    b = generate_sample(200, files=3, seed=7, defect="null_ids")
    c = generate_sample(200, files=3, seed=8, defect="null_ids")
    assert [f.data for f in a] == [f.data for f in b]
    assert all(x.data != y.data for x, y in zip(a, c, strict=True))


def test_keys_rows_and_start_index_continues_a_batch() -> None:
    files = generate_sample(50, files=4, seed=3)
    assert [f.key for f in files] == [f"patients_{i:04d}.csv" for i in range(1, 5)]
    assert [f.rows for f in files] == [50] * 4
    later = generate_sample(50, files=1, seed=3, start_index=3, prefix="patients")
    assert later[0] == files[3]
    assert generate_sample(5, prefix="in/pat")[0].key == "in/pat_0001.csv"


def test_defect_only_changes_the_last_file() -> None:
    clean = generate_sample(100, files=3, seed=1)
    for defect in DEFECTS:
        dirty = generate_sample(100, files=3, seed=1, defect=defect)
        assert [f.data for f in dirty[:2]] == [f.data for f in clean[:2]], defect
        assert [f.defect for f in dirty] == [None, None, defect]
        assert dirty[2].data != clean[2].data, defect


def test_clean_data_is_valid_synthea() -> None:
    files = generate_sample(2000, files=2, seed=11)
    for f in files:
        assert f.data.startswith(HEADER.encode() + b"\n")
        assert b"\r" not in f.data and f.data.endswith(b"\n")
        header, rows = parse(f.data)
        assert header == list(COLUMNS) and len(header) == 25
        assert len(rows) == f.rows == 2000
        assert all(len(r) == 25 for r in rows)
        ids = column(rows, "Id")
        assert len(set(ids)) == len(ids)
        assert all(uuid.UUID(i).version == 4 and str(uuid.UUID(i)) == i for i in ids)
        deaths = 0
        for r in rows:
            birth = date.fromisoformat(r[COL["BIRTHDATE"]])
            assert date(1900, 1, 1) <= birth <= REFERENCE_DATE <= date.today()
            if r[COL["DEATHDATE"]]:
                deaths += 1
                assert birth <= date.fromisoformat(r[COL["DEATHDATE"]]) <= REFERENCE_DATE
            assert r[COL["GENDER"]] in ("M", "F")
            assert 41 <= float(r[COL["LAT"]]) <= 43 and -73.5 <= float(r[COL["LON"]]) <= -70
            assert float(r[COL["HEALTHCARE_EXPENSES"]]) >= 0
            assert float(r[COL["HEALTHCARE_COVERAGE"]]) >= 0
            assert len(r[COL["HEALTHCARE_EXPENSES"]].split(".")[1]) == 2
            zip_code = r[COL["ZIP"]]
            assert zip_code == "" or (len(zip_code) == 5 and zip_code.isdigit())
            ssn = r[COL["SSN"]]
            assert ssn[:4] == "999-" and ssn[6] == "-" and ssn.replace("-", "").isdigit()
            assert r[COL["DRIVERS"]] == "" or (r[COL["DRIVERS"]].startswith("S999"))
            assert r[COL["PASSPORT"]] == "" or len(r[COL["PASSPORT"]]) == 10
            assert r[COL["PREFIX"]] in ("", "Mr.", "Mrs.", "Ms.")
            assert r[COL["MARITAL"]] in ("", "M", "S")
            assert r[COL["RACE"]] in ("white", "black", "asian", "native", "other")
            assert r[COL["ETHNICITY"]] in ("hispanic", "nonhispanic")
            assert r[COL["STATE"]] == "Massachusetts"
            assert r[COL["BIRTHPLACE"]].endswith("  Massachusetts  US")
            for name in (r[COL["FIRST"]], r[COL["LAST"]]):
                digits = len(name) - len(name.rstrip("0123456789"))
                assert digits in (2, 3), name
        assert 0.05 < deaths / len(rows) < 0.15  # DEATHDATE empty for ~90%
        zips = [z for z in column(rows, "ZIP") if z]
        assert zips and all(z.startswith("0") for z in zips)  # MA leading zero kept


def test_later_files_resend_earlier_patients_some_changed() -> None:
    files = generate_sample(1000, files=3, seed=5)
    seen: dict[str, list[str]] = {}
    for number, f in enumerate(files, start=1):
        _, rows = parse(f.data)
        ids = column(rows, "Id")
        assert len(set(ids)) == len(ids)
        resent = [r for r in rows if r[0] in seen]
        if number == 1:
            assert resent == []
        else:
            assert 80 <= len(resent) <= 120  # ~10%
            changed = [r for r in resent if r != seen[r[0]]]
            assert 0.3 < len(changed) / len(resent) < 0.7  # about half
            assert len(rows) - len(resent) >= 880  # and new ids
            for r in changed:
                diff = {
                    COLUMNS[i] for i, (a, b) in enumerate(zip(r, seen[r[0]], strict=True)) if a != b
                }
                assert diff <= {"ADDRESS", "CITY", "COUNTY", "ZIP", "LAT", "LON"} | {
                    "MARITAL",
                    "DEATHDATE",
                }
        for r in rows:
            seen[r[0]] = r


def test_row_defects_hit_fixed_rows_in_the_last_file() -> None:
    n = 300
    positions = defect_rows(n)
    assert positions == defect_rows(n) and len(positions) == 9  # 3%
    assert defect_rows(10) == [5]  # at least one row

    def last_rows(defect: str) -> list[list[str]]:
        files = generate_sample(n, files=2, seed=9, defect=defect)
        _, first_rows = parse(files[0].data)
        assert all(r[0] for r in first_rows)
        header, rows = parse(files[1].data)
        assert header == list(COLUMNS) and len(rows) == n
        return rows

    rows = last_rows("null_ids")
    assert [i for i, r in enumerate(rows) if r[0] == ""] == positions

    rows = last_rows("duplicate_ids")
    ids = column(rows, "Id")
    assert len(ids) - len(set(ids)) == len(positions)
    assert all(ids[p] == ids[p - 1] for p in positions)

    rows = last_rows("unknown_gender")
    bad = [i for i, g in enumerate(column(rows, "GENDER")) if g not in ("M", "F")]
    assert bad == positions and {rows[i][COL["GENDER"]] for i in bad} == {"U", "X"}

    rows = last_rows("future_birthdate")
    future = [
        i for i, b in enumerate(column(rows, "BIRTHDATE")) if date.fromisoformat(b) > date.today()
    ]
    assert future == positions

    rows = last_rows("death_before_birth")
    bad = [
        i
        for i, r in enumerate(rows)
        if r[COL["DEATHDATE"]] and r[COL["DEATHDATE"]] < r[COL["BIRTHDATE"]]
    ]
    assert bad == positions

    rows = last_rows("out_of_range_coordinates")
    bad = [i for i, r in enumerate(rows) if not -90 <= float(r[COL["LAT"]]) <= 90]
    assert bad == positions
    assert {(rows[i][COL["LAT"]], rows[i][COL["LON"]]) for i in bad} == {("95.0", "-200.0")}


def test_non_utf8_rows_are_latin1() -> None:
    files = generate_sample(100, files=2, seed=2, defect="non_utf8")
    files[0].data.decode("utf-8")
    with pytest.raises(UnicodeDecodeError):
        files[1].data.decode("utf-8")
    lines = files[1].data.split(b"\n")
    bad = [i - 1 for i, line in enumerate(lines) if _not_utf8(line)]
    assert bad == defect_rows(100)
    rows = list(csv.reader(io.StringIO(files[1].data.decode("latin-1"))))
    assert all(len(r) == 25 for r in rows)


def _not_utf8(line: bytes) -> bool:
    try:
        line.decode("utf-8")
    except UnicodeDecodeError:
        return True
    return False


def test_column_defects() -> None:
    last = generate_sample(50, files=2, seed=4, defect="missing_column")[-1]
    header, rows = parse(last.data)
    assert header == list(COLUMNS[:-1]) and all(len(r) == 24 for r in rows)

    last = generate_sample(50, files=2, seed=4, defect="extra_column")[-1]
    header, rows = parse(last.data)
    assert header == [*COLUMNS, "LOYALTY_TIER"] and all(len(r) == 26 for r in rows)
    assert {r[-1] for r in rows} <= {"bronze", "silver", "gold", "platinum"}

    last = generate_sample(50, files=2, seed=4, defect="semicolon_delimiter")[-1]
    first_line = last.data.split(b"\n")[0].decode()
    assert len(first_line.split(";")) == 25 and "," not in first_line
    header, rows = parse(last.data, delimiter=";")
    assert header == list(COLUMNS) and len(rows) == 50 and all(len(r) == 25 for r in rows)

    clean = generate_sample(50, files=2, seed=4)[-1]
    last = generate_sample(50, files=2, seed=4, defect="zip_leading_zeros_stripped")[-1]
    _, clean_rows = parse(clean.data)
    _, rows = parse(last.data)
    stripped = column(rows, "ZIP")
    assert [z.lstrip("0") for z in column(clean_rows, "ZIP")] == stripped
    assert any(len(z) == 4 for z in stripped) and all(len(z) in (0, 4) for z in stripped)

    last = generate_sample(50, files=2, seed=4, defect="locale_numbers")[-1]
    _, rows = parse(last.data)
    assert b',"' in last.data  # the values contain the delimiter, so they are quoted
    for clean_row, row in zip(clean_rows, rows, strict=True):
        for name in ("HEALTHCARE_EXPENSES", "HEALTHCARE_COVERAGE"):
            value = row[COL[name]]
            assert value[-3] == ","
            assert float(value.replace(".", "").replace(",", ".")) == float(clean_row[COL[name]])
    assert any("." in r[COL["HEALTHCARE_EXPENSES"]] for r in rows)  # thousands separators


def test_file_defects() -> None:
    files = generate_sample(40, files=2, seed=6, defect="empty_file")
    assert files[1].data == b"" and files[1].rows == 0 and files[0].data

    last = generate_sample(40, files=2, seed=6, defect="truncated_last_line")[-1]
    assert not last.data.endswith(b"\n")
    header, rows = parse(last.data)
    assert len(rows) == last.rows == 40
    assert all(len(r) == 25 for r in rows[:-1]) and len(rows[-1]) < 25

    files = generate_sample(400, files=2, seed=6, defect="volume_drop")
    _, rows = parse(files[1].data)
    assert files[1].rows == len(rows) == 40 and files[0].rows == 400

    clean = generate_sample(40, files=2, seed=6)[-1]
    last = generate_sample(40, files=2, seed=6, defect="bom_crlf")[-1]
    assert last.data.startswith(b"\xef\xbb\xbf" + HEADER.encode() + b"\r\n")
    assert last.data.count(b"\r\n") == 41 and last.data.count(b"\n") == 41
    assert last.data[3:].replace(b"\r\n", b"\n") == clean.data

    cr = generate_sample(40, files=2, seed=6, defect="cr_line_endings")[-1]
    assert b"\n" not in cr.data and cr.data.replace(b"\r", b"\n") == clean.data
    headerless = generate_sample(40, files=2, seed=6, defect="headerless")[-1]
    assert headerless.data == clean.data.split(b"\n", 1)[1] and headerless.rows == 40
    joined = generate_sample(40, files=2, seed=6, defect="header_joined")[-1]
    assert joined.data == clean.data.replace(b"\n", b"", 1)


def test_identity_change_reuses_earlier_ids_for_other_people() -> None:
    clean = generate_sample(300, files=3, seed=12)
    dirty = generate_sample(300, files=3, seed=12, defect="identity_change")
    earlier: dict[str, list[str]] = {}
    for f in dirty[:2]:
        earlier.update({r[0]: r for r in parse(f.data)[1]})
    _, clean_rows = parse(clean[2].data)
    _, rows = parse(dirty[2].data)
    positions = defect_rows(300)
    assert len(positions) == 9
    ids = column(rows, "Id")
    assert len(set(ids)) == len(ids)  # still one row per Id in the file
    for i, (row, before) in enumerate(zip(rows, clean_rows, strict=True)):
        if i not in positions:
            assert row == before
            continue
        old = earlier[row[0]]  # an Id of an earlier file ...
        assert before[0] != row[0] and row[0] not in column(clean_rows, "Id")  # not re-sent here
        assert row[COL["BIRTHDATE"]] != old[COL["BIRTHDATE"]]  # ... for someone else
        assert row[COL["SSN"]] != old[COL["SSN"]]
        assert row[1:] == before[1:] or row[COL["BIRTHDATE"]] != before[COL["BIRTHDATE"]]
        assert date.fromisoformat(row[COL["BIRTHDATE"]]) <= REFERENCE_DATE
    with pytest.raises(ValueError, match="identity_change defect reuses ids of an earlier file"):
        generate_sample(10, files=1, defect="identity_change")
    assert generate_sample(10, files=1, start_index=1, defect="identity_change")[0].rows == 10
    with pytest.raises(ValueError, match="identity_change"):
        write_patients_csv(io.StringIO(), 10, defect="identity_change")


def test_unknown_defect_and_bad_sizes_are_rejected() -> None:
    with pytest.raises(ValueError, match="unknown defect 'nope'"):
        generate_sample(10, defect="nope")
    with pytest.raises(ValueError, match="rows"):
        generate_sample(0)
    with pytest.raises(ValueError, match="at least 2 rows"):
        generate_sample(1, defect="duplicate_ids")


def test_streaming_writer_matches_first_file_and_writes_n_rows(tmp_path: Path) -> None:
    buf = io.StringIO()
    write_patients_csv(buf, 500, seed=13)
    assert buf.getvalue().encode() == generate_sample(500, files=1, seed=13)[0].data
    buf = io.StringIO()
    write_patients_csv(buf, 500, seed=13, defect="null_ids")
    assert buf.getvalue().encode() == generate_sample(500, seed=13, defect="null_ids")[0].data

    path = tmp_path / "big.csv"
    write_patients_csv(path, 25_001, seed=1, chunk_rows=1000)
    with open(path, encoding="utf-8", newline="") as f:
        rows = list(csv.reader(f))
    assert rows[0] == list(COLUMNS) and len(rows) == 25_002
    assert len({r[0] for r in rows[1:]}) == 25_001
    with pytest.raises(ValueError, match="cannot stream"):
        write_patients_csv(io.StringIO(), 10, defect="empty_file")


def test_write_to_local_landing(tmp_path: Path) -> None:
    source = LocalLandingSource(tmp_path / "landing")
    files = generate_sample(20, files=2)
    write_to(source, files)
    assert [f.key for f in source.list_files()] == [f.key for f in files]
    assert (tmp_path / "landing" / "patients_0002.csv").read_bytes() == files[1].data


def test_cli_writes_to_out_folder(tmp_path: Path) -> None:
    out = tmp_path / "out"
    result = CliRunner().invoke(
        generate_sample_cmd,
        ["--rows", "30", "--files", "2", "--seed", "3", "--defect", "null_ids", "--out", str(out)],
    )
    assert result.exit_code == 0, result.output
    lines = result.output.strip().splitlines()
    assert len(lines) == 2
    assert "patients_0002.csv" in lines[1] and "30 rows" in lines[1] and "null_ids" in lines[1]
    assert str(out) in lines[0]
    expected: list[SampleFile] = generate_sample(30, files=2, seed=3, defect="null_ids")
    for f in expected:
        assert (out / f.key).read_bytes() == f.data
        assert f"{len(f.data)} bytes" in result.output


def test_next_start_index_continues_after_the_highest_number() -> None:
    assert next_start_index([]) == 0
    names = ["patients_0001.csv", "in/patients_0003.csv", "patients_0002.csv", "other_0009.csv"]
    assert next_start_index(names) == 3
    assert next_start_index(["patients_12.csv", "patients_x.csv", "patients_0004.csv.tmp"]) == 12
    assert next_start_index(["patients_a_0002.csv"], prefix="patients_a") == 2


def test_cli_never_overwrites_a_landing_file_unless_forced(tmp_path: Path) -> None:
    out = tmp_path / "out"
    runner = CliRunner()
    first = runner.invoke(generate_sample_cmd, ["--rows", "10", "--files", "3", "--out", str(out)])
    (out / "patients_0002.csv").write_bytes(b"a file someone else put there")

    again = runner.invoke(generate_sample_cmd, ["--rows", "10", "--files", "2", "--out", str(out)])

    assert first.exit_code == 0 and again.exit_code == 0, again.output
    assert sorted(p.name for p in out.iterdir()) == [f"patients_{n:04d}.csv" for n in range(1, 6)]
    assert (out / "patients_0002.csv").read_bytes() == b"a file someone else put there"
    # The numbering continues the same batch: file 4 is what a 5-file run makes as its 4th.
    batch = generate_sample(10, files=5)
    assert (out / "patients_0004.csv").read_bytes() == batch[3].data
    assert "wrote patients_0004.csv" in again.output and "patients_0001" not in again.output

    forced = runner.invoke(
        generate_sample_cmd, ["--rows", "10", "--files", "2", "--force", "--out", str(out)]
    )

    assert forced.exit_code == 0, forced.output
    assert (out / "patients_0002.csv").read_bytes() == batch[1].data
    assert len(list(out.iterdir())) == 5


def test_cli_rejects_bad_options(tmp_path: Path) -> None:
    runner = CliRunner()
    result = runner.invoke(generate_sample_cmd, ["--defect", "typo", "--out", str(tmp_path)])
    assert result.exit_code == 2 and "Invalid value for '--defect'" in result.output
    result = runner.invoke(generate_sample_cmd, ["--rows", "0", "--out", str(tmp_path)])
    assert result.exit_code == 2 and "--rows" in result.output
    result = runner.invoke(
        generate_sample_cmd, ["--rows", "1", "--defect", "duplicate_ids", "--out", str(tmp_path)]
    )
    assert result.exit_code == 2 and "at least 2 rows" in result.output
    assert list(tmp_path.iterdir()) == []


def test_cli_default_is_local_landing_under_home(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("HEALTHMON_HOME", str(tmp_path / "home"))
    monkeypatch.delenv("HEALTHMON_S3_BUCKET", raising=False)
    result = CliRunner().invoke(generate_sample_cmd, ["--rows", "5", "--files", "1"])
    assert result.exit_code == 0, result.output
    assert (tmp_path / "home" / "landing" / "patients_0001.csv").is_file()


@pytest.fixture
def moto_endpoint() -> Iterator[str]:
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    try:
        yield f"http://{host}:{port}"
    finally:
        server.stop()


@pytest.fixture
def aws_env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
    monkeypatch.delenv("AWS_PROFILE", raising=False)


def test_cli_writes_to_s3(
    moto_endpoint: str, aws_env: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    s3 = boto3.client("s3", endpoint_url=moto_endpoint, region_name="us-east-1")
    s3.create_bucket(Bucket="landing-sample")
    monkeypatch.setenv("HEALTHMON_S3_BUCKET", "landing-sample")
    monkeypatch.setenv("HEALTHMON_S3_PREFIX", "incoming/")
    monkeypatch.setenv("AWS_ENDPOINT_URL", moto_endpoint)

    result = CliRunner().invoke(
        generate_sample_cmd, ["--rows", "25", "--files", "3", "--defect", "bom_crlf"]
    )
    assert result.exit_code == 0, result.output
    assert "s3://landing-sample/incoming/" in result.output
    listed = s3.list_objects_v2(Bucket="landing-sample")["Contents"]
    keys = sorted(o["Key"] for o in listed)
    assert keys == [f"incoming/patients_{i:04d}.csv" for i in (1, 2, 3)]
    body = s3.get_object(Bucket="landing-sample", Key="incoming/patients_0003.csv")["Body"].read()
    assert body == generate_sample(25, files=3, defect="bom_crlf")[2].data


def test_cli_s3_endpoint_down_exits_1_without_traceback(
    aws_env: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    with socket.socket() as sock:  # a port that was free a moment ago: nothing listens there
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    monkeypatch.setenv("HEALTHMON_S3_BUCKET", "landing-sample")
    monkeypatch.setenv("AWS_ENDPOINT_URL", f"http://127.0.0.1:{port}")

    result = CliRunner().invoke(generate_sample_cmd, ["--rows", "5", "--files", "1"])
    assert result.exit_code == 1
    # The landing is listed first (to continue its numbering), so that is what fails.
    assert "could not list s3://landing-sample/" in result.output
    assert f"127.0.0.1:{port}" in result.output and "reachable" in result.output
    assert "Traceback" not in result.output
    assert isinstance(result.exception, SystemExit)


@pytest.mark.parametrize(
    ("country", "states", "postal"),
    [
        ("DE", {"Berlin", "Bayern", "Hamburg", "Nordrhein-westfalen", "Thuringen"}, r"[0-9]{5}"),
        ("BR", {"São Paulo", "Rio de Janeiro", "Minas Gerais", "Bahia"}, r"[0-9]{5}-[0-9]{3}"),
        (
            "CA",
            {"Ontario", "Quebec", "British Columbia", "Alberta"},
            r"[A-Z][0-9][A-Z]( [0-9][A-Z][0-9])?",  # some forward sortation areas alone
        ),
    ],
)
def test_international_exports_have_local_addresses_and_no_us_ssns(
    country: str, states: set[str], postal: str
) -> None:
    files = generate_sample(1000, files=2, seed=5, country=country)
    for f in files:
        header, rows = parse(f.data)
        assert header == list(COLUMNS) and len(rows) == 1000
        assert states <= set(column(rows, "STATE"))
        assert {fold(s) for s in column(rows, "STATE")} <= set(
            COUNTRY_TABLES[country].folded_states
        )
        assert {r[COL["BIRTHPLACE"]].rsplit("  ", 1)[1] for r in rows} == {country}
        zips = [z for z in column(rows, "ZIP") if z]
        assert zips and all(re.fullmatch(postal, z) for z in zips)
        if country == "CA":
            assert 0.2 < sum(len(z) == 3 for z in zips) / len(zips) < 0.4
        ssns = column(rows, "SSN")
        assert "" in ssns  # children have no national id
        assert not any(re.fullmatch(r"[0-9]{3}-[0-9]{2}-[0-9]{4}", s) for s in ssns)
        assert all(r[COL["GENDER"]] in ("M", "F") for r in rows)
    # same arguments, same bytes; another country, other bytes; the US default is unchanged
    assert generate_sample(50, country=country) == generate_sample(50, country=country)
    assert generate_sample(50, country=country) != generate_sample(50)
    assert generate_sample(50) == generate_sample(50, country="US")


def test_streaming_writer_writes_the_country_too(tmp_path: Path) -> None:
    out = io.StringIO()
    write_patients_csv(out, 100, seed=3, country="DE")
    assert out.getvalue().encode() == generate_sample(100, seed=3, country="DE")[0].data


def test_unknown_country_is_rejected() -> None:
    with pytest.raises(ValueError, match="unknown country 'XX'; choose one of: US, DE, BR, CA"):
        generate_sample(10, country="XX")
    result = CliRunner().invoke(generate_sample_cmd, ["--country", "XX", "--out", "/tmp/never"])
    assert result.exit_code == 2 and "XX" in result.output


def test_cli_writes_an_international_export(tmp_path: Path) -> None:
    out = tmp_path / "out"
    result = CliRunner().invoke(
        generate_sample_cmd,
        ["--rows", "20", "--files", "1", "--country", "BR", "--out", str(out)],
    )
    assert result.exit_code == 0, result.output
    [expected] = generate_sample(20, files=1, country="BR")
    assert (out / expected.key).read_bytes() == expected.data


def test_newer_columns_are_written_in_synthea_3_order(tmp_path: Path) -> None:
    [older] = generate_sample(50, seed=4)
    [newer] = generate_sample(50, seed=4, newer_columns=True)
    header, rows = parse(newer.data)
    assert header == list(SYNTHEA_COLUMN_ORDER) and len(header) == 28
    _, old_rows = parse(older.data)
    # The 25 older columns carry the same values; the three new ones are filled realistically.
    at = {name: i for i, name in enumerate(header)}
    assert [[r[at[c]] for c in COLUMNS] for r in rows] == old_rows
    assert all(r[at["FIPS"]].startswith("25") and r[at["INCOME"]].isdigit() for r in rows)
    assert any(r[at["MIDDLE"]] for r in rows) and any(not r[at["MIDDLE"]] for r in rows)
    result = CliRunner().invoke(
        generate_sample_cmd,
        ["--rows", "50", "--files", "1", "--seed", "4", "--newer-columns", "--out", str(tmp_path)],
    )
    assert result.exit_code == 0, result.output
    assert (tmp_path / newer.key).read_bytes() == newer.data
