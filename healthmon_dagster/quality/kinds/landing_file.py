"""File-level checks of landing files, from the raw loader's audit (``etl.files``).

- ``file_anomalies``: what the loader tolerated and normalised in a file it loaded (a byte-order
  mark, CRLF or CR-only line endings, columns outside the contract, a delimiter other than the expected one,
  absent optional columns, records kept with ``_error``, header names trimmed of spaces or matched
  ignoring case, columns in another order than Synthea's, blank lines skipped); each anomaly the
  spec sets to ``warn`` makes the check WARN. It never fails. Incremental runs judge the newest
  file; the full sweep judges every file loaded in the spec's ``window_hours`` (default 24 h, the
  daily sweep's period), so an old anomaly does not warn forever. Cost: one read of
  ``etl.files`` (by primary key in a run; the sweep reads the files of its window, one row per
  file).
- :func:`contract_break_results`: a file the loader rejects whole never reaches a table, so no
  planner can see it; the raw asset reports it as a failed, blocking ERROR evaluation of each
  ``schema`` check of the asset, built here.
- :func:`stuck_files_result`: ``landing_files_are_not_stuck``, a check of the bundled pipeline
  (defined in ``defs/pipeline/checks.py``, not configured): it fails with ERROR while any landing
  file is stuck (its loads failed until the retry bound of ``landing.retry``, or with an error
  that running again cannot fix), naming each file (up to 10) with its last error class. It does
  not block: a stuck file must not stop the others. Cost: one indexed read of
  ``etl.file_attempts`` (stuck rows only).

Header text outside the contract is never shown (a header may be a data row): such columns are
counted and located by position; contract column names, delimiters, file names and line numbers
are shown.
"""

import time
from collections.abc import Mapping, Sequence
from datetime import timedelta
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Engine

from healthmon_dagster.config.models import FileAnomaliesCheck, LandingConfiguration, SchemaCheck
from healthmon_dagster.enums import QualityStatus
from healthmon_dagster.etl import catalog
from healthmon_dagster.etl.attempts import stuck_files
from healthmon_dagster.etl.raw import ContractBreak, positions_text, unknown_columns_text
from healthmon_dagster.quality.context import INCREMENTAL, CheckError, EvalContext
from healthmon_dagster.quality.grading import make_result
from healthmon_dagster.quality.plan import Plan, planner
from healthmon_dagster.quality.result import CheckResult
from healthmon_dagster.store.metrics import as_utc
from healthmon_dagster.store.tables import OPTIONAL_COLUMNS, files


def _shown(delimiter: str | None) -> str:
    return "tab" if delimiter == "\t" else repr(delimiter)


def _names(text: str | None) -> list[str]:
    return [c for c in (text or "").split(",") if c]


@planner(FileAnomaliesCheck)
def plan_file_anomalies(ctx: EvalContext, spec: FileAnomaliesCheck) -> Plan:
    bundled = catalog.asset(ctx.asset)
    if bundled is None:
        raise CheckError(
            f"a file_anomalies check reads the load audit of landing files (etl.files); {ctx.asset} "
            "is not loaded from landing files: put the check under raw/patients"
        )
    expected = spec.expected_delimiter or LandingConfiguration().accepted_delimiters[0]

    def finish(_v: Mapping[str, Any], _total: int) -> CheckResult:
        f = files.c
        query = sa.select(
            f.file_id,
            f.delimiter,
            f.had_bom,
            f.crlf,
            f.cr_line_endings,
            f.unexpected_columns,
            f.missing_columns,
            f.malformed_rows,
            f.header_whitespace,
            f.header_case,
            f.columns_reordered,
            f.blank_lines,
        ).where(bundled.arrived)
        if ctx.mode == INCREMENTAL:
            if ctx.batch is None:
                return make_result(
                    ctx,
                    spec,
                    QualityStatus.PASSED,
                    "no landing file loaded yet: nothing to judge",
                    details={"files_checked": 0},
                )
            query = query.where(ctx.batch.where(f.file_id))
        else:
            since = as_utc(ctx.now) - timedelta(hours=spec.window_hours)
            query = query.where(bundled.loaded_at >= since)
        with ctx.engine.connect() as conn:
            rows = conn.execute(query.order_by(f.file_id)).all()
        if ctx.mode != INCREMENTAL:
            where = f"{len(rows)} file(s) loaded in the last {spec.window_hours} h"
        else:
            where = "the latest file" if len(rows) <= 1 else f"the {len(rows)} files of this run"
        optional = {c.upper() for c in OPTIONAL_COLUMNS}
        found: dict[str, float] = {
            # files with each flag; columns and records counted
            "bom": sum(bool(r.had_bom) for r in rows),
            "crlf_line_endings": sum(bool(r.crlf) for r in rows),
            "cr_line_endings": sum(bool(r.cr_line_endings) for r in rows),
            "unexpected_columns": sum(len(_names(r.unexpected_columns)) for r in rows),
            "other_delimiter": sum(
                r.delimiter is not None and r.delimiter != expected for r in rows
            ),
            "missing_optional_columns": sum(
                len([c for c in _names(r.missing_columns) if c.upper() in optional]) for r in rows
            ),
            "malformed_records": sum(int(r.malformed_rows or 0) for r in rows),
            "header_whitespace": sum(int(r.header_whitespace or 0) for r in rows),
            "header_case": sum(int(r.header_case or 0) for r in rows),
            "column_order": sum(bool(r.columns_reordered) for r in rows),
            "blank_lines": sum(int(r.blank_lines or 0) for r in rows),
        }
        delimiters = sorted({r.delimiter for r in rows if r.delimiter and r.delimiter != expected})
        missing = sorted(
            {c for r in rows for c in _names(r.missing_columns) if c.upper() in optional}
        )
        words = {
            "bom": "file(s) with a UTF-8 byte-order mark (stripped)",
            "crlf_line_endings": "file(s) with CRLF line endings",
            "cr_line_endings": "file(s) with CR-only line endings (read as lines)",
            "unexpected_columns": "column(s) outside the contract (not loaded; header text "
            "withheld)",
            "other_delimiter": f"file(s) delimited by {', '.join(map(_shown, delimiters))} "
            f"instead of {_shown(expected)}",
            "missing_optional_columns": "optional column(s) absent (loaded as empty"
            + (f": {', '.join(missing)})" if missing else ")"),
            "malformed_records": "record(s) kept with _error (could not be split into the "
            "header's fields)",
            "header_whitespace": "header name(s) with surrounding spaces (trimmed)",
            "header_case": "contract column name(s) in another case (matched ignoring case)",
            "column_order": "file(s) with the contract columns in another order than Synthea's "
            "(mapped by name)",
            "blank_lines": "blank line(s) between records (skipped)",
        }
        warned = [a for a in spec.ANOMALIES if found[a] and spec.action(a) == "warn"]
        if warned:
            message = f"{where}: " + "; ".join(f"{found[a]:g} {words[a]}" for a in warned)
        elif rows:
            message = f"{where}: no anomaly set to warn"
        else:
            message = f"{where}: no file to judge"
        return make_result(
            ctx,
            spec,
            QualityStatus.WARN if warned else QualityStatus.PASSED,
            message,
            observed_value=float(len(warned)),
            threshold=0.0,
            details={"files_checked": len(rows), "anomalies_warned": len(warned), **found},
        )

    return Plan({}, finish)


def _describe(found: ContractBreak, accepted: Sequence[str]) -> str:
    """What the loader found, in words: contract columns, delimiters, positions and line numbers
    only (a header field outside the contract may be a data value)."""
    line = f" at line {found.line}" if found.line is not None else ""
    at = positions_text(found.positions)
    if found.reason == "missing_columns":
        unknown = f"; {unknown_columns_text(found.positions)}" if found.positions else ""
        return (
            f"header lacks required column(s) {', '.join(found.columns)} "
            f"({found.header_columns} columns found{unknown})"
        )
    if found.reason == "duplicate_columns":
        named = ", ".join(found.columns)
        others = (
            f"{found.other_columns} unknown name(s), at positions {at}"
            if found.other_columns
            else ""
        )
        return (
            f"header repeats {'column(s) ' if named else ''}"
            f"{' and '.join(p for p in (named, others) if p)}"
        )
    if found.reason == "no_header":
        return (
            f"no header line: line 1 is a data record ({found.header_columns} fields, none a "
            "contract column name, some dates, numbers or ids)"
        )
    if found.reason == "header_joined":
        return (
            f"the header line runs into the first record (line 1 has {found.header_columns} "
            f"fields; positions {at} hold data values)"
        )
    if found.reason == "data_in_header":
        return f"header fields at positions {at} look like data values, not column names"
    if found.reason == "header_too_long":
        return "line 1 is too long to be a header (no line break in its first 64 KiB)"
    if found.reason == "delimiter":
        return (
            f"file is {_shown(found.delimiter)}-delimited; the contract accepts "
            f"{', '.join(map(_shown, accepted))}"
        )
    if found.reason == "no_delimiter":
        return "header line has no recognised delimiter (',', ';', tab, '|')"
    if found.reason == "not_utf8":
        return f"not valid UTF-8{line}"
    if found.reason == "nul_byte":
        return f"NUL byte{line}: binary or corrupt file"
    if found.reason == "unparsable":
        return f"cannot be parsed as CSV{line}"
    return f"{found.reason}{line}"


def contract_break_results(
    asset: str,
    specs: Sequence[SchemaCheck],
    rejected: Sequence[tuple[str, ContractBreak]],
    accepted_delimiters: Sequence[str],
) -> list[CheckResult]:
    """A failed, blocking ERROR result of each ``schema`` spec for the files (``(file_key,
    ContractBreak)``) the loader rejected whole. A contract break blocks whatever the spec's
    ``blocking`` and levels say: the loader has refused the file, nothing of it reaches staging."""
    if not rejected:
        return []
    reasons: dict[str, int] = {}
    for _, found in rejected:
        reasons[found.reason] = reasons.get(found.reason, 0) + 1
    first = rejected[0][1]
    details: dict[str, float] = {
        "files_rejected": len(rejected),
        "missing_columns": sum(
            len(b.columns) for _, b in rejected if b.reason == "missing_columns"
        ),
        "repeated_columns": sum(
            len(b.columns) + b.other_columns for _, b in rejected if b.reason == "duplicate_columns"
        ),
        **{f"reason__{code}": n for code, n in sorted(reasons.items())},
    }
    if len(rejected) == 1:
        if first.line is not None:
            details["line"] = first.line
        if first.header_columns is not None:
            details["header_columns"] = first.header_columns
    message = (
        f"{len(rejected)} landing file(s) break the contract and were rejected whole (nothing "
        "loaded, staging and core not run): "
        + "; ".join(f"{key}: {_describe(b, accepted_delimiters)}" for key, b in rejected)
        + ". Re-export the file(s) to the contract and land them again; see etl.files"
    )
    return [
        CheckResult(
            check_name=spec.check_name,
            asset=asset,
            kind=spec.kind,
            status=QualityStatus.FAILED,
            observed_value=float(len(rejected)),
            threshold=0.0,
            message=message,
            details=details,
            blocking=True,
        )
        for spec in specs
    ]


LANDING_FILES_ARE_NOT_STUCK = "landing_files_are_not_stuck"
STUCK_FILES_KIND = "stuck_files"
STUCK_FILES_DESCRIPTION = (
    "No landing file is stuck: every file whose load failed was tried again until it loaded. A "
    "stuck file is named with its last error class and is not tried again until it lands with "
    "other content."
)
_SHOWN = 10


def stuck_files_result(engine: Engine, asset: str = catalog.RAW_PATIENTS.key) -> CheckResult:
    """``landing_files_are_not_stuck`` from ``etl.file_attempts`` of the warehouse at ``engine``:
    FAILED (ERROR, not blocking) while any landing file is stuck, PASSED otherwise."""
    started = time.perf_counter()
    stuck = stuck_files(engine)
    classes: dict[str, int] = {}
    for s in stuck:
        classes[s.error_class or "unclassified"] = (
            classes.get(s.error_class or "unclassified", 0) + 1
        )
    if stuck:
        shown = "; ".join(
            f"{s.file_key} ({s.error_class or 'unclassified'} after {s.attempts} attempt(s))"
            for s in stuck[:_SHOWN]
        )
        more = f"; and {len(stuck) - _SHOWN} more" if len(stuck) > _SHOWN else ""
        message = (
            f"{len(stuck)} landing file(s) stuck, not tried again until they land with other "
            f"content: {shown}{more}. Fix the cause, then land the file again (or delete its rows "
            "in etl.file_attempts to retry it as it is); `healthmon status` lists them"
        )
    else:
        message = "no landing file is stuck"
    return CheckResult(
        check_name=LANDING_FILES_ARE_NOT_STUCK,
        asset=asset,
        kind=STUCK_FILES_KIND,
        status=QualityStatus.FAILED if stuck else QualityStatus.PASSED,
        observed_value=float(len(stuck)),
        threshold=0.0,
        message=message,
        details={
            "files_stuck": len(stuck),
            **{f"error_class__{name}": n for name, n in sorted(classes.items())},
        },
        blocking=False,
        duration_ms=(time.perf_counter() - started) * 1000,
    )
