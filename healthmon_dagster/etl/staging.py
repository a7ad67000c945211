"""Staging: raw text -> typed ``stg.patients``; rows that break a rule -> ``stg.patients_rejected``.

All validation runs as SQL in the database (two INSERT ... SELECT statements per file): nothing is
pulled into Python. The rules are data (:func:`build_rules`), each a reason code and a SQLAlchemy
predicate that is true when the row breaks it. ``staging.rules`` in ``healthmon.yaml``
(:class:`~healthmon_dagster.config.models.StagingConfiguration`) says per rule whether a breaking
row is rejected (to ``stg.patients_rejected`` with its reason codes) or kept and flagged (loaded,
with its reason codes in ``stg.patients._flags``). Rows carry reason codes, never values.

Postal codes and SSNs are validated for the country the record's ``STATE`` implies
(:mod:`healthmon_dagster.etl.countries`), else ``staging.default_country``, else generically.
"""

import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import date
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Engine
from sqlalchemy.sql.elements import ColumnElement

from healthmon_dagster.config.models import StagingConfiguration
from healthmon_dagster.etl import countries
from healthmon_dagster.store.connection import is_sqlite, write_transaction
from healthmon_dagster.store.db import analyze
from healthmon_dagster.store.dialect import as_date, is_iso_date, is_uuid
from healthmon_dagster.store.metrics import utcnow
from healthmon_dagster.store.tables import (
    STG_COLUMNS,
    STG_TYPES,
    Timestamp,
    files,
    load_runs,
    raw_patients,
    stg_patients,
    stg_patients_rejected,
)

# At most 15 integer digits: NUMERIC(18,2) holds them even after rounding, and so does a double:
# the cast after the regex never fails on Postgres (a 400-digit number is invalid, not a crash).
DECIMAL_RE = r"^-?[0-9]{1,15}(\.[0-9]{1,20})?$"
SSN_RE = countries.US_SSN_RE
DUPLICATE_ID = "id_duplicate_in_file"
REJECTED_TABLE = "healthmon_stg_rejected"


def _blank(col: ColumnElement[str]) -> ColumnElement[bool]:
    # The raw loader stores empty fields as NULL; '' only comes from a quoted empty field.
    # Whitespace is not blank: ' ' where a date belongs is an invalid date, not a missing one.
    return sa.or_(col.is_(None), col == "")


def _bad_number(
    col: ColumnElement[str], low: float | None, high: float | None, required: bool
) -> ColumnElement[bool]:
    """True when the text is blank (if required), not a plain decimal, or outside [low, high].

    The cast sits behind the regex inside CASE, so it never sees text that would make Postgres fail.
    """
    value = sa.cast(col, sa.Float)
    in_range = sa.and_(
        sa.true() if low is None else value >= low, sa.true() if high is None else value <= high
    )
    return sa.case(
        (_blank(col), sa.true() if required else sa.false()),
        (sa.not_(col.regexp_match(DECIMAL_RE)), sa.true()),
        (in_range, sa.false()),
        else_=sa.true(),
    )


@dataclass(frozen=True)
class Rule:
    code: str
    breaks: ColumnElement[bool]  # true when the row breaks the rule


def _breaks_format(col: ColumnElement[str], fmt: countries.Format) -> ColumnElement[bool]:
    """True when ``col`` (not blank) does not have the format."""
    broken = [sa.not_(col.regexp_match(fmt.regex))]
    if fmt.min_length is not None:
        broken.append(sa.func.length(col) < fmt.min_length)
    if fmt.max_length is not None:
        broken.append(sa.func.length(col) > fmt.max_length)
    return sa.or_(*broken)


def _by_country(
    state: ColumnElement[str],
    format_of: Callable[[str | None], countries.Format],
    default: str | None,
) -> Callable[[ColumnElement[str]], ColumnElement[bool]]:
    """``breaks(col)``: true when ``col`` does not have the format of the country that ``state``
    implies (``default`` when it implies none). One CASE on the state per rule: Postgres hashes
    an IN list of constants, SQLite probes it through an ephemeral index."""

    # The exact spelling first: the folded one costs a function call per row on SQLite.
    folded = sa.func.lower(sa.func.translate(state, countries.ACCENTED, countries.UNACCENTED))

    def breaks(col: ColumnElement[str]) -> ColumnElement[bool]:
        fallback = format_of(default)
        whens = [
            (
                sa.or_(state.in_(c.states), folded.in_(c.folded_states)),
                _breaks_format(col, format_of(c.code)),
            )
            for c in countries.COUNTRIES.values()
            if format_of(c.code) != fallback
        ]
        otherwise = _breaks_format(col, fallback)
        return sa.case(*whens, else_=otherwise) if whens else otherwise

    return breaks


def build_rules(today: date, config: StagingConfiguration | None = None) -> list[Rule]:
    """The staging contract, one reason code per broken rule (the duplicate-id rule is a
    per-file aggregate, built in :func:`stage_file`)."""
    config = config or StagingConfiguration()
    r = raw_patients.c
    today_s = sa.literal(today.isoformat())
    birth_ok = is_iso_date(r.birthdate)
    death_ok = is_iso_date(r.deathdate)
    default = config.default_country
    bad_postal = _by_country(r.state, countries.postal_format, default)
    generic_id = countries.GENERIC_ID
    # A US-format SSN is valid anywhere (Synthea writes one in every configuration); elsewhere
    # the country's id pattern (generic by default) applies. The US check goes first: most rows
    # pass it without the CASE on the state.
    bad_national_id = _by_country(r.state, countries.national_id_format, default)

    def present_and(col: ColumnElement[str], bad: ColumnElement[bool]) -> ColumnElement[bool]:
        return sa.and_(sa.not_(_blank(col)), bad)

    return [
        Rule("malformed_record", r._error.is_not(None)),
        Rule("id_missing", _blank(r.id)),
        Rule("id_not_uuid", sa.and_(sa.not_(_blank(r.id)), sa.not_(is_uuid(r.id)))),
        Rule("birthdate_missing", _blank(r.birthdate)),
        Rule("birthdate_invalid", sa.and_(sa.not_(_blank(r.birthdate)), sa.not_(birth_ok))),
        # Cheap comparisons first: AND stops at the first false operand.
        Rule("birthdate_in_future", sa.and_(r.birthdate > today_s, birth_ok)),
        Rule("deathdate_invalid", sa.and_(sa.not_(_blank(r.deathdate)), sa.not_(death_ok))),
        Rule("deathdate_in_future", sa.and_(r.deathdate > today_s, death_ok)),
        # ISO dates compare correctly as text once both are known to be valid.
        Rule(
            "deathdate_before_birthdate",
            sa.and_(r.deathdate.is_not(None), r.deathdate < r.birthdate, birth_ok, death_ok),
        ),
        Rule("gender_invalid", sa.or_(r.gender.is_(None), r.gender.not_in(("M", "F")))),
        Rule("lat_invalid", _bad_number(r.lat, -90, 90, required=True)),
        Rule("lon_invalid", _bad_number(r.lon, -180, 180, required=True)),
        Rule(
            "healthcare_expenses_invalid",
            _bad_number(r.healthcare_expenses, 0, None, required=True),
        ),
        Rule(
            "healthcare_coverage_invalid",
            _bad_number(r.healthcare_coverage, 0, None, required=True),
        ),
        Rule("income_invalid", _bad_number(r.income, 0, None, required=False)),
        Rule("zip_invalid", present_and(r.zip, bad_postal(r.zip))),
        Rule(
            "ssn_invalid",
            present_and(
                r.ssn, sa.and_(sa.not_(r.ssn.regexp_match(SSN_RE)), bad_national_id(r.ssn))
            ),
        ),
        Rule(
            "passport_invalid",
            present_and(r.passport, _breaks_format(r.passport, generic_id)),
        ),
        Rule("drivers_invalid", present_and(r.drivers, _breaks_format(r.drivers, generic_id))),
    ]


def _reasons_expr(rules: list[Rule]) -> ColumnElement[str]:
    parts = [
        sa.case((sa.func.coalesce(rule.breaks, True), rule.code + ";"), else_="") for rule in rules
    ]
    expr: ColumnElement[str] = parts[0]
    for part in parts[1:]:
        expr = expr + part
    return expr


def _flags_expr(rules: list[Rule]) -> ColumnElement[str | None]:
    """The ``;``-separated codes of the flag rules a kept row breaks; NULL when none."""
    if not rules:
        return sa.cast(sa.null(), sa.Text)
    return sa.func.nullif(sa.func.rtrim(_reasons_expr(rules), ";"), "")


def split_rules(
    rules: list[Rule], config: StagingConfiguration | None = None
) -> tuple[list[Rule], list[Rule]]:
    """(rules that reject, rules that flag) as ``staging.rules`` configures them."""
    config = config or StagingConfiguration()
    reject = [rule for rule in rules if config.action(rule.code) == "reject"]
    flag = [rule for rule in rules if config.action(rule.code) == "flag"]
    return reject, flag


def _typed(col_name: str, col: ColumnElement[str]) -> ColumnElement[object]:
    """The stg value of a validated raw column: ids lower case, dates and numbers typed."""
    type_ = STG_TYPES.get(col_name)
    if col_name == "id":
        return sa.cast(sa.func.lower(col), STG_TYPES["id"])
    if isinstance(type_, sa.Date):
        return sa.case((_blank(col), None), else_=as_date(col))
    if type_ is not None:
        return sa.case((_blank(col), None), else_=sa.cast(col, type_))
    return sa.func.nullif(col, "")


@dataclass
class StageResult:
    file_id: int
    rows_in: int = 0
    rows_staged: int = 0
    rows_rejected: int = 0
    rows_flagged: int = 0
    duration_s: float = 0.0
    reasons: dict[str, int] = field(default_factory=dict)
    flags: dict[str, int] = field(default_factory=dict)

    @property
    def rejection_rate(self) -> float:
        return self.rows_rejected / self.rows_in if self.rows_in else 0.0


def pending_files(engine: Engine) -> list[int]:
    """Loaded files whose rows are not staged yet, in load order."""
    with engine.connect() as conn:
        return list(
            conn.execute(
                sa.select(files.c.file_id)
                .where(files.c.status == "loaded", files.c.staged_at.is_(None))
                .order_by(files.c.file_id)
            ).scalars()
        )


def stage_file(
    engine: Engine,
    file_id: int,
    dagster_run_id: str | None = None,
    today: date | None = None,
    config: StagingConfiguration | None = None,
) -> StageResult | None:
    """Stage one loaded file. None when another run staged it first (the claim is a row update)."""
    started, t0 = utcnow(), time.perf_counter()
    today = today or started.date()
    result = StageResult(file_id=file_id)
    r = raw_patients.c
    rules, flag_rules = split_rules(build_rules(today, config), config)
    in_file = r._file_id == file_id
    duplicated_ids = (
        sa.select(sa.func.lower(r.id))
        .where(in_file, r.id.is_not(None))
        .group_by(sa.func.lower(r.id))
        .having(sa.func.count() > 1)
    )
    is_duplicate = sa.func.lower(r.id).in_(duplicated_ids)
    broken = sa.or_(*(sa.func.coalesce(rule.breaks, sa.true()) for rule in rules), is_duplicate)
    flagged = (
        sa.or_(*(sa.func.coalesce(rule.breaks, sa.true()) for rule in flag_rules))
        if flag_rules
        else sa.false()
    )
    dup_code = sa.case((is_duplicate, DUPLICATE_ID + ";"), else_="")
    # One pass over the file keeps only the rows that break a rule (few): the rejected ones with
    # their reason codes, the kept ones with their flags (NULL reasons); the code strings are only
    # built for them. Kept rows are then copied: the clean ones with an anti-join, the flagged
    # ones from the temp table.
    create_rejected = (
        sa.select(
            r._row_number,
            sa.case(
                # A record that did not split into the header's fields has no meaningful fields:
                # it carries that reason alone, not the rules its shifted fields happen to break.
                (r._error.is_not(None), "malformed_record"),
                (broken, sa.func.rtrim(_reasons_expr(rules) + dup_code, ";")),
                else_=sa.cast(sa.null(), sa.Text),
            ).label("reasons"),
            _flags_expr(flag_rules).label("flags"),
        )
        .where(in_file, sa.or_(broken, flagged))
        .into(REJECTED_TABLE, temporary=True)
    )
    bad = create_rejected.table.c
    with write_transaction(engine) as conn:
        claimed = conn.execute(
            files.update()
            .where(files.c.file_id == file_id, files.c.staged_at.is_(None))
            .values(staged_at=started)
        ).rowcount
        if claimed != 1:
            return None
        if not is_sqlite(engine):
            # The duplicate-id aggregate holds every id of the file: let it hash in memory.
            conn.execute(sa.text("SET LOCAL work_mem = '256MB'"))
        conn.execute(sa.text(f"DROP TABLE IF EXISTS {REJECTED_TABLE}"))
        conn.execute(create_rejected)
        columns = ["_file_id", "_row_number", *STG_COLUMNS, "_flags", "_staged_at"]

        def kept(flags: ColumnElement[str | None]) -> sa.Select[Any]:
            return sa.select(
                r._file_id,
                r._row_number,
                *(_typed(c, r[c]) for c in STG_COLUMNS),
                flags,
                sa.literal(started, Timestamp),
            )

        # Rows that break no rule (nearly all): an anti-join on the few rows of the temp table.
        clean = kept(sa.cast(sa.null(), sa.Text)).where(
            in_file, ~sa.exists().where(bad._row_number == r._row_number)
        )
        # Kept rows with flags: from the temp table into raw through its primary key.
        flagged_rows = (
            kept(bad.flags)
            .select_from(
                create_rejected.table.join(
                    raw_patients, sa.and_(in_file, r._row_number == bad._row_number)
                )
            )
            .where(bad.reasons.is_(None))
        )
        conn.execute(stg_patients.insert().from_select(columns, clean))
        conn.execute(stg_patients.insert().from_select(columns, flagged_rows))
        conn.execute(
            stg_patients_rejected.insert().from_select(
                ["_file_id", "_row_number", "reasons", "_staged_at"],
                sa.select(
                    sa.literal(file_id, sa.BigInteger),
                    bad._row_number,
                    bad.reasons,
                    sa.literal(started, Timestamp),
                ).where(bad.reasons.is_not(None)),
            )
        )
        flag_rows = [
            (str(codes), int(n))
            for codes, n in conn.execute(
                sa.select(bad.flags, sa.func.count())
                .where(bad.reasons.is_(None), bad.flags.is_not(None))
                .group_by(bad.flags)
            )
        ]
        result.rows_flagged = sum(n for _, n in flag_rows)
        result.flags = _split_counts(flag_rows)
        conn.execute(sa.text(f"DROP TABLE {REJECTED_TABLE}"))
        # Counted, not taken from rowcount: DB-API drivers disagree on INSERT ... SELECT.
        for table, attr in (
            (stg_patients, "rows_staged"),
            (stg_patients_rejected, "rows_rejected"),
        ):
            setattr(
                result,
                attr,
                conn.execute(
                    sa.select(sa.func.count()).where(table.c._file_id == file_id)
                ).scalar_one(),
            )
        result.rows_in = result.rows_staged + result.rows_rejected
        result.duration_s = time.perf_counter() - t0
        conn.execute(
            load_runs.insert().values(
                dagster_run_id=dagster_run_id,
                layer="stg",
                file_id=file_id,
                status="success",
                rows_in=result.rows_in,
                rows_out=result.rows_staged,
                rows_rejected=result.rows_rejected,
                started_at=started,
                finished_at=utcnow(),
                duration_ms=result.duration_s * 1000,
            )
        )
    analyze(engine, stg_patients)
    result.reasons = rejection_reasons(engine, file_id)
    return result


def rejection_reasons(engine: Engine, file_id: int) -> dict[str, int]:
    """Count of rejected rows per reason code for one file (a row may carry several codes)."""
    with engine.connect() as conn:
        rows = conn.execute(
            sa.select(stg_patients_rejected.c.reasons, sa.func.count())
            .where(stg_patients_rejected.c._file_id == file_id)
            .group_by(stg_patients_rejected.c.reasons)
        )
        return _split_counts((codes, n) for codes, n in rows)


def _split_counts(rows: Iterable[tuple[str, int]]) -> dict[str, int]:
    counts: dict[str, int] = {}
    for codes, n in rows:
        for code in codes.split(";"):
            counts[code] = counts.get(code, 0) + n
    return dict(sorted(counts.items(), key=lambda kv: (-kv[1], kv[0])))


def stage_pending(
    engine: Engine,
    dagster_run_id: str | None = None,
    today: date | None = None,
    config: StagingConfiguration | None = None,
) -> list[StageResult]:
    """Stage every loaded file not staged yet, oldest first, with ``config``'s rules (the
    built-in defaults when None)."""
    results = []
    for file_id in pending_files(engine):
        res = stage_file(engine, file_id, dagster_run_id, today, config)
        if res is not None:
            results.append(res)
    return results
