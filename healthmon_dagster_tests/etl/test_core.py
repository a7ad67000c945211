"""Core SCD2 merge: one current row per patient, chained versions, no-op for unchanged re-sends."""

from datetime import date
from pathlib import Path

import pytest
import sqlalchemy as sa
from sqlalchemy.engine import Engine

from healthmon_dagster.etl import core, raw, staging
from healthmon_dagster.etl.landing import LocalLandingSource
from healthmon_dagster.etl.sample import COLUMNS, generate_sample
from healthmon_dagster.store.tables import dim_patient

ROWS = 40  # files 2 and 3 re-send 4 earlier patients each, 2 of them changed
TODAY = date(2026, 1, 1)


def _ingest(engine: Engine, source: LocalLandingSource, key: str, data: bytes) -> core.MergeResult:
    source.put(key, data)
    loaded = raw.load_file(engine, source, key)
    assert loaded.status == "loaded", loaded.message
    [staged] = staging.stage_pending(engine, today=TODAY)
    assert staged.rows_rejected == 0
    [merged] = core.merge_pending(engine)
    assert merged.file_id == loaded.file_id
    return merged


def _versions(engine: Engine) -> dict[str, list[sa.Row]]:
    with engine.connect() as conn:
        rows = conn.execute(sa.select(dim_patient).order_by(dim_patient.c.valid_from))
        out: dict[str, list[sa.Row]] = {}
        for row in rows:
            out.setdefault(row.patient_id, []).append(row)
        return out


def _rows_by_id(data: bytes) -> dict[str, list[str]]:
    return {line.split(",")[0]: line.split(",") for line in data.decode().splitlines()[1:]}


def _assert_scd2_integrity(versions: dict[str, list[sa.Row]]) -> None:
    for chain in versions.values():
        assert [v.is_current for v in chain] == [False] * (len(chain) - 1) + [True]
        assert chain[-1].valid_to is None
        for old, new in zip(chain, chain[1:], strict=False):
            assert old.valid_to == new.valid_from  # no gap, no overlap
            assert old.valid_from < old.valid_to
            assert old.hash_diff != new.hash_diff


def test_scd2_over_three_files(engine: Engine, tmp_path: Path) -> None:
    source = LocalLandingSource(tmp_path)
    samples = generate_sample(ROWS, files=3)
    latest: dict[str, list[str]] = {}  # what the warehouse should now say about each patient
    expected_versions: dict[str, int] = {}
    total_changed = 0
    for number, sample in enumerate(samples, 1):
        rows = _rows_by_id(sample.data)
        new = {i for i in rows if i not in latest}
        changed = {i for i in rows if i in latest and rows[i] != latest[i]}
        unchanged = set(rows) - new - changed
        if number > 1:
            assert (
                len(changed) == len(unchanged) == 2
            )  # the sample's contract, which this test uses
        result = _ingest(engine, source, sample.key, sample.data)
        assert (result.rows_in, result.inserted_new, result.versions_changed, result.unchanged) == (
            ROWS,
            len(new),
            len(changed),
            len(unchanged),
        )
        assert result.rows_written == len(new) + len(changed)
        latest.update(rows)
        for i in new:
            expected_versions[i] = 1
        for i in changed:
            expected_versions[i] += 1
        total_changed += len(changed)

        versions = _versions(engine)
        assert {i: len(v) for i, v in versions.items()} == expected_versions
        assert sum(len(v) for v in versions.values()) == len(latest) + total_changed
        _assert_scd2_integrity(versions)
        marital = COLUMNS.index("MARITAL")
        for i, chain in versions.items():
            current = chain[-1]
            assert (current.marital or "") == latest[i][marital]
            assert current.birthdate == date.fromisoformat(latest[i][COLUMNS.index("BIRTHDATE")])
        for i in changed:
            assert versions[i][-1]._file_id == result.file_id
        for i in unchanged:
            assert versions[i][-1]._file_id != result.file_id

    before = _versions(engine)
    assert core.merge_pending(engine) == []
    assert core.merge_file(engine, result.file_id) is None
    assert _versions(engine) == before


def test_change_back_to_an_earlier_value_opens_a_new_version(
    engine: Engine, tmp_path: Path
) -> None:
    source = LocalLandingSource(tmp_path)
    [sample] = generate_sample(2)
    header, p_line, q_line = sample.data.decode().splitlines()
    fields = p_line.split(",")
    address = COLUMNS.index("ADDRESS")
    moved = ",".join([*fields[:address], "1 Elsewhere Road", *fields[address + 1 :]])
    _ingest(engine, source, "a.csv", f"{header}\n{p_line}\n{q_line}\n".encode())
    away = _ingest(engine, source, "b.csv", f"{header}\n{moved}\n".encode())
    back = _ingest(engine, source, "c.csv", f"{header}\n{p_line}\n".encode())
    assert (away.versions_changed, back.versions_changed) == (1, 1)
    chain = _versions(engine)[fields[0]]
    assert [v.address for v in chain] == [fields[address], "1 Elsewhere Road", fields[address]]
    assert chain[0].hash_diff == chain[2].hash_diff
    _assert_scd2_integrity({fields[0]: chain})


def test_unchanged_resend_in_a_new_file_creates_no_version(engine: Engine, tmp_path: Path) -> None:
    source = LocalLandingSource(tmp_path)
    [sample] = generate_sample(3)
    header, *lines = sample.data.decode().splitlines()
    _ingest(engine, source, "a.csv", sample.data)
    again = _ingest(engine, source, "b.csv", f"{header}\n{lines[1]}\n{lines[0]}\n".encode())
    assert (again.inserted_new, again.versions_changed, again.unchanged) == (0, 0, 2)
    assert all(len(chain) == 1 for chain in _versions(engine).values())


def _maintenance(engine: Engine) -> tuple[int, int, int]:
    """(vacuums, analyzes, all-visible pages) of core.dim_patient, as Postgres reports them."""
    with engine.connect() as conn:
        return tuple(
            conn.execute(
                sa.text(
                    "SELECT s.vacuum_count, s.analyze_count, c.relallvisible "
                    "FROM pg_stat_user_tables s JOIN pg_class c ON c.oid = s.relid "
                    "WHERE s.schemaname = 'core' AND s.relname = 'dim_patient'"
                )
            ).one()
        )


@pytest.mark.parametrize(
    "db_url", [pytest.param("postgres", marks=pytest.mark.postgres)], indirect=True
)
def test_postgres_vacuums_and_analyzes_the_dimension_after_each_merge(
    engine: Engine, tmp_path: Path
) -> None:
    source = LocalLandingSource(tmp_path)
    first, second = generate_sample(ROWS, files=2)
    (later,) = generate_sample(ROWS, files=1, seed=99, prefix="later")
    header, row, *_ = later.data.decode().splitlines()
    vacuums, analyzes, _ = _maintenance(engine)

    _ingest(engine, source, first.key, first.data)
    after_first = _maintenance(engine)
    _ingest(engine, source, second.key, second.data)
    _ingest(engine, source, "one_more.csv", f"{header}\n{row}\n".encode())  # 1 row of 78
    after_third = _maintenance(engine)

    assert after_first[:2] == (vacuums + 1, analyzes + 1)
    assert after_first[2] > 0  # the pages the merge wrote are all-visible
    # Also after a change far below autovacuum's 10%: statistics that lack the newest file id
    # estimate its rows at one, whatever the file's size.
    assert after_third[:2] == (vacuums + 3, analyzes + 3)
