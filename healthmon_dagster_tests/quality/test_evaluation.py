"""evaluate() and evaluate_last_load() on SQLite and Postgres: each sample defect fails the right
check and only it, clean data passes, the full sweep reads whole tables, a check that cannot be
evaluated is an error and never a pass."""

import importlib
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
import sqlalchemy as sa
from sqlalchemy.engine import Engine

from healthmon_dagster.config.models import AssetQualityConfig
from healthmon_dagster.enums import QualityStatus
from healthmon_dagster.etl import raw, staging
from healthmon_dagster.etl.landing import LocalLandingSource
from healthmon_dagster.etl.sample import COLUMNS, COUNTRIES, DEFECTS, generate_sample
from healthmon_dagster.quality import (
    FULL,
    INCREMENTAL,
    evaluate,
    evaluate_last_load,
)
from healthmon_dagster.store.tables import dim_patient, stg_patients
from healthmon_dagster_tests.quality.fixtures import (
    EXPECTED,
    FAILED_BY_THE_JOB,
    FAILED_THROUGH_THE_JOB,
    FLAGGED,
    GENDER,
    IDS,
    INVARIANT_CHECKS,
    LOADER_REJECTS,
    REJECTION,
    ROWS,
    SCD2,
    SCHEMA,
    TODAY,
    evaluate_all,
    load,
    project_config,
    record_current_load,
    seed_volume_history,
    statuses,
)


@pytest.mark.parametrize("defect", [None, *DEFECTS])
def test_each_defect_fails_the_right_check_and_only_it(
    engine: Engine, tmp_path: Path, defect: str | None
) -> None:
    seed_volume_history(engine)
    load(engine, tmp_path, defect=defect)
    record_current_load(engine)

    results = evaluate_all(engine, project_config())

    assert statuses(results) == (EXPECTED[defect] if defect else {}), {
        n: r.message for n, r in results.items() if r.status != QualityStatus.PASSED
    }
    for result in results.values():
        assert (
            result.severity
            == {
                QualityStatus.PASSED: None,
                QualityStatus.WARN: "WARN",
                QualityStatus.FAILED: "ERROR",
            }[result.status]
        )
    if defect == "extra_column":
        assert results[SCHEMA].details["unexpected_columns"] == 1
        assert "#26" in results[SCHEMA].message and "LOYALTY_TIER" not in results[SCHEMA].message
    if defect in LOADER_REJECTS:
        with engine.connect() as conn:
            last = sa.text("SELECT status FROM etl.files ORDER BY file_id DESC LIMIT 1")
            assert conn.execute(last).scalar() == "rejected"


def test_full_sweep_evaluates_whole_tables(engine: Engine, tmp_path: Path) -> None:
    load(engine, tmp_path, files=3, defect="unknown_gender")

    incremental = evaluate_all(engine, project_config(), INCREMENTAL)
    full = evaluate_all(engine, project_config(), FULL)

    assert incremental[REJECTION].total_rows == ROWS
    assert incremental[REJECTION].status == QualityStatus.WARN  # 6 of 200
    assert full[REJECTION].total_rows == 3 * ROWS
    assert full[REJECTION].status == QualityStatus.PASSED  # 6 of 600 = 1.0%, not above 1%
    assert full[FLAGGED].total_rows == 3 * ROWS - 6  # staged rows of every file
    assert incremental[GENDER].total_rows == ROWS and full[GENDER].total_rows == 3 * ROWS
    assert incremental[GENDER].failing_rows == full[GENDER].failing_rows == 6
    assert full[SCD2].status == QualityStatus.PASSED
    d, s = dim_patient, stg_patients
    latest_ids = sa.select(s.c.id).where(
        s.c._file_id == sa.select(sa.func.max(s.c._file_id)).scalar_subquery()
    )
    with engine.connect() as conn:
        versions = conn.execute(sa.select(sa.func.count()).select_from(d)).scalar_one()
        latest_versions = conn.execute(
            sa.select(sa.func.count()).where(d.c.patient_id.in_(latest_ids))
        ).scalar_one()
    # SCD2 integrity: the sweep judges the whole table, a load every version of the patients of
    # its file (194 staged rows, some of them re-sent from the files before).
    assert full[SCD2].total_rows == versions
    assert incremental[SCD2].total_rows == latest_versions < versions
    assert incremental[SCD2].details["keys_checked"] == ROWS - 6
    assert f"{ROWS - 6} patients of the latest batch" in incremental[SCD2].message
    assert f"the {versions} rows of the table" in full[SCD2].message


def test_missing_column_and_missing_table_are_errors_never_passes(
    engine: Engine, tmp_path: Path
) -> None:
    load(engine, tmp_path, files=1)
    qc = AssetQualityConfig.model_validate(
        {
            "checks": [
                {"kind": "not_null", "columns": ["id"]},
                {"kind": "not_null", "name": "ghost_is_not_null", "columns": ["ghost"]},
                {"kind": "range", "column": "lat", "min": -90, "max": 90},
            ]
        }
    )

    ok, ghost, lat = evaluate(engine, "stg/patients", qc.checks)
    (missing,) = evaluate(engine, "stg/not_there", qc.checks[:1])

    assert (ok.status, lat.status) == (QualityStatus.PASSED, QualityStatus.PASSED)
    assert ghost.status == QualityStatus.ERROR and ghost.severity == "ERROR"
    assert "column ghost does not exist in stg.patients" in ghost.message
    assert missing.status == QualityStatus.ERROR
    assert "stg.not_there" in missing.message and "does not exist" in missing.message


def test_checks_on_a_users_own_table(engine: Engine) -> None:
    """Any warehouse table named as schema/table works with the same YAML."""
    with engine.begin() as conn:
        conn.execute(
            sa.text(
                "CREATE TABLE core.visits (visit_id INTEGER, code TEXT, amount REAL, "
                "batch INTEGER, _loaded_at TIMESTAMP)"
            )
        )
        now = datetime.now(UTC).replace(tzinfo=None)
        rows: list[dict[str, object]] = [
            {
                "v": i,
                "c": "A" if i % 10 else "Z",
                "a": float(i),
                "b": 1 + i // 50,
                "t": now - timedelta(minutes=5),
            }
            for i in range(100)
        ]
        rows.append({"v": 99, "c": None, "a": -5.0, "b": 3, "t": now})  # a duplicate, in batch 3
        conn.execute(sa.text("INSERT INTO core.visits VALUES (:v, :c, :a, :b, :t)"), rows)
    qc = AssetQualityConfig.model_validate(
        {
            "batch_column": "batch",
            "checks": [
                {"kind": "not_null", "columns": ["code"], "mostly": 0.95},
                {"kind": "unique", "columns": ["visit_id"]},
                {"kind": "accepted_values", "column": "code", "values": ["A", "B"], "warn": 0},
                {"kind": "range", "column": "amount", "min": 0},
                {"kind": "regex", "column": "code", "pattern": "^[A-Z]$"},
                {"kind": "row_count", "min": 10, "max": 1000},
                {"kind": "freshness", "column": "_loaded_at", "fail_after_minutes": 60},
                {
                    "kind": "schema",
                    "required_columns": ["visit_id", "code"],
                    "allow_unexpected": False,
                    "types": {"visit_id": "integer", "amount": "float"},
                },
                {"kind": "custom_sql", "sql": "SELECT * FROM core.visits WHERE amount > 1000"},
                {"kind": "volume_anomaly", "min_history": 3},
            ],
        }
    )

    full = {r.check_name: r for r in evaluate(engine, "core/visits", qc.checks, mode=FULL)}
    batch = {
        r.check_name: r
        for r in evaluate(engine, "core/visits", qc.checks, batch_column=qc.batch_column)
    }

    assert {n: r.status for n, r in full.items() if r.status != QualityStatus.PASSED} == {
        "visit_id_is_unique": QualityStatus.FAILED,
        "code_has_accepted_values": QualityStatus.WARN,
        "amount_is_in_range": QualityStatus.FAILED,
        "schema_matches": QualityStatus.FAILED,  # batch is not declared
        "row_count_volume_is_normal": QualityStatus.INSUFFICIENT_HISTORY,
    }, {n: r.message for n, r in full.items()}
    assert full["visit_id_is_unique"].failing_rows == 1
    assert full["code_has_accepted_values"].failing_rows == 10
    assert "batch" in full["schema_matches"].message
    # Batch 3 (the latest) holds the second row with visit_id 99: found against the table.
    assert batch["visit_id_is_unique"].total_rows == 1
    assert batch["visit_id_is_unique"].failing_rows == 1
    assert batch["row_count_is_in_range"].status == QualityStatus.FAILED  # 1 row in the batch


def test_last_load_freshness_reads_the_load_audit(engine: Engine, tmp_path: Path) -> None:
    never = evaluate_last_load(engine, "stg/patients", 60, 120)
    load(engine, tmp_path, files=1)
    fresh = evaluate_last_load(engine, "stg/patients", 60, 120)
    stale = evaluate_last_load(
        engine, "stg/patients", 60, 120, now=datetime.now(UTC) + timedelta(minutes=90)
    )

    assert never.status == QualityStatus.FAILED
    assert fresh.status == QualityStatus.PASSED
    assert (
        stale.status == QualityStatus.WARN
        and stale.observed_value is not None
        and stale.observed_value > 60
    )


def test_every_configured_check_is_made_to_fail_by_a_landed_defect() -> None:
    """A new check in healthmon.yaml needs a defect that makes it fail through the pipeline
    (EXPECTED, exercised by test_each_defect_fails_the_right_check_and_only_it), unless it guards
    an invariant of the pipeline's own code that no file can break (INVARIANT_CHECKS)."""
    configured = {
        spec.check_name
        for asset in project_config().quality.assets.values()
        for spec in asset.checks
    }
    made_to_fail = set().union(*(set(expected) for expected in EXPECTED.values()))
    made_to_fail |= set(FAILED_BY_THE_JOB)
    assert configured - made_to_fail - set(INVARIANT_CHECKS) == set()
    assert set(INVARIANT_CHECKS) | set(FAILED_BY_THE_JOB) <= configured  # no stale exemption


def test_every_configured_check_fails_through_the_job_in_a_test() -> None:
    """Each configured check has a test that lands a file with a defect and runs the job
    (FAILED_THROUGH_THE_JOB names it, and it exists), unless it guards an invariant."""
    configured = {
        spec.check_name
        for asset in project_config().quality.assets.values()
        for spec in asset.checks
    }
    assert configured - set(FAILED_THROUGH_THE_JOB) - set(INVARIANT_CHECKS) == set()
    assert set(FAILED_THROUGH_THE_JOB) <= configured  # no stale entry
    for where in set(FAILED_THROUGH_THE_JOB.values()):
        path, function = where.split("::")
        module = importlib.import_module(
            "healthmon_dagster_tests.defs." + path.removesuffix(".py").replace("/", ".")
        )
        assert callable(getattr(module, function, None)), where


@pytest.mark.parametrize(
    ("defect", "check", "status"),
    [
        ("null_ids", IDS, QualityStatus.FAILED),
        ("unknown_gender", GENDER, QualityStatus.WARN),
        ("zip_leading_zeros_stripped", FLAGGED, QualityStatus.WARN),
    ],
)
def test_a_one_row_defect_in_a_large_file_is_reported_with_its_row_number(
    engine: Engine, tmp_path: Path, defect: str, check: str, status: QualityStatus
) -> None:
    rows = 20_000
    [sample] = generate_sample(rows, files=1)
    lines = sample.data.decode().split("\n")
    target = 12_345  # 1-based data row
    fields = lines[target].split(",")
    column = {"null_ids": "Id", "unknown_gender": "GENDER", "zip_leading_zeros_stripped": "ZIP"}
    fields[COLUMNS.index(column[defect])] = {"Id": "", "GENDER": "U", "ZIP": "2101"}[column[defect]]
    lines[target] = ",".join(fields)
    landing = LocalLandingSource(tmp_path / "landing")
    landing.put("patients_0001.csv", "\n".join(lines).encode())
    raw.load_file(engine, landing, "patients_0001.csv")
    staging.stage_pending(engine, today=TODAY, config=project_config().staging)

    results = evaluate_all(engine, project_config())

    assert statuses(results).get(check) == status
    result = results[check]
    assert result.failing_rows == 1
    assert result.message.endswith(f"row numbers: {target} in patients_0001.csv")
    # 1 of 20,000 is far below the 1% rate: the rate check alone would not see it
    assert results[REJECTION].status == QualityStatus.PASSED


@pytest.mark.parametrize("country", COUNTRIES)
def test_valid_exports_of_every_country_pass_every_check(
    engine: Engine, tmp_path: Path, country: str
) -> None:
    seed_volume_history(engine)
    load(engine, tmp_path, country=country)
    record_current_load(engine)

    results = evaluate_all(engine, project_config())

    assert statuses(results) == {}, {n: r.message for n, r in results.items()}
    with engine.connect() as conn:
        assert conn.execute(sa.text("SELECT count(*) FROM stg.patients_rejected")).scalar() == 0
        assert (
            conn.execute(
                sa.text("SELECT count(*) FROM stg.patients WHERE _flags IS NOT NULL")
            ).scalar()
            == 0
        )


@pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)
def test_the_checks_of_a_load_never_read_a_whole_warehouse_table(
    engine: Engine, tmp_path: Path
) -> None:
    """Every statement of the configured checks of an ETL run reaches the warehouse tables through
    an index (SQLite plans by the indexes alone, so its plan shows what a check can do): the cost
    of a load's checks follows the file, not the tables (benchmarks/check_cost.py measures it)."""
    load(engine, tmp_path, files=2)  # the second file re-sends patients, changed and unchanged
    statements: list[tuple[str, object]] = []

    def record(_conn: object, _cur: object, sql: str, params: object, *_: object) -> None:
        if sql.lstrip().upper().startswith(("SELECT", "WITH")):
            statements.append((sql, params))

    sa.event.listen(engine, "before_cursor_execute", record)
    try:
        results = evaluate_all(engine, project_config(), INCREMENTAL)
    finally:
        sa.event.remove(engine, "before_cursor_execute", record)

    learning = QualityStatus.INSUFFICIENT_HISTORY  # the volume check, without history
    assert {r.status for r in results.values()} <= {QualityStatus.PASSED, learning}
    scans, equal_ends = [], []
    with engine.connect() as conn:
        for sql, params in statements:
            plan = [row[3] for row in conn.exec_driver_sql("EXPLAIN QUERY PLAN " + sql, params)]
            # Scans of a CTE or subquery the statement built are fine; of anything else, not.
            built = {
                line.split(" ", 1)[1]
                for line in plan
                if line.startswith(("MATERIALIZE", "CO-ROUTINE"))
            }
            scans += [
                line
                for line in plan
                if line.startswith("SCAN ")
                and line[5:] not in built
                and not line[5:].startswith(("CONSTANT ROW", "(subquery-"))
            ]
            # Every version a merge closed ends at the same instant: a probe of valid_to by
            # equality would return all of them, once per row of the file.
            equal_ends += [line for line in plan if "(valid_to=?)" in line]
    assert len(statements) > 20
    assert scans == [] and equal_ends == []
