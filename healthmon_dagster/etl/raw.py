"""The raw loader: one landing file -> ``raw.patients`` as text, exactly once.

A file is streamed in chunks (memory does not grow with file size) inside one transaction that first
claims the file's content hash in ``etl.files``. The unique index on that hash is what makes a second,
concurrent load of the same bytes wait and then skip, or fail cleanly, instead of loading twice. Bad
files are detected before anything is written and recorded as ``rejected`` with a reason; records that
cannot be split into the header's fields are kept in raw with ``_error`` set, so nothing is lost.
"""

import codecs
import csv
import io
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

import sqlalchemy as sa
from sqlalchemy import exc as sa_exc
from sqlalchemy.engine import Connection, Engine

from healthmon_dagster.etl.attempts import pending_files
from healthmon_dagster.etl.landing import LandingFile, LandingSource, sha256_file
from healthmon_dagster.store.connection import is_sqlite, write_transaction
from healthmon_dagster.store.db import analyze
from healthmon_dagster.store.errors import error_text
from healthmon_dagster.store.metrics import utcnow
from healthmon_dagster.store.tables import (
    OPTIONAL_COLUMNS,
    REQUIRED_COLUMNS,
    SOURCE_COLUMNS,
    db_column,
    files,
    load_runs,
    raw_patients,
)

CHUNK_ROWS = 50_000
DELIMITER_CANDIDATES = (",", ";", "\t", "|")
csv.field_size_limit(10 * 1024 * 1024)


@dataclass(frozen=True)
class ContractBreak:
    """What the loader found wrong with a rejected file, as facts a check can report: never a
    header text outside the contract, never a field value."""

    reason: str  # not_utf8 | no_delimiter | delimiter | duplicate_columns | missing_columns | ...
    columns: tuple[str, ...] = ()  # contract columns involved (missing, repeated)
    other_columns: int = 0  # header names outside the contract involved (repeated): counted only
    delimiter: str | None = None  # the delimiter found in the header
    line: int | None = None  # 1-based physical line of the file (1 = the header)
    header_columns: int | None = None  # fields in the header line


class FileRejected(Exception):
    """The file breaks the input contract; nothing of it was loaded. ``reason`` is a short code,
    ``found`` the facts behind it."""

    def __init__(
        self,
        reason: str,
        message: str,
        *,
        columns: Iterable[str] = (),
        other_columns: int = 0,
        delimiter: str | None = None,
        line: int | None = None,
        header_columns: int | None = None,
    ) -> None:
        super().__init__(message)
        self.reason = reason
        self.found = ContractBreak(
            reason, tuple(columns), other_columns, delimiter, line, header_columns
        )


@dataclass
class FileShape:
    """What the header told us about a file."""

    delimiter: str
    had_bom: bool
    crlf: bool
    header: list[str]
    unexpected_columns: list[str] = field(default_factory=list)  # positions: "#26"
    missing_optional: list[str] = field(default_factory=list)
    # Normalisations the loader applies to the header (counts, never the header's text):
    header_whitespace: int = 0  # names with leading or trailing spaces (trimmed)
    header_case: int = 0  # contract names spelt in another case (matched ignoring case)
    columns_reordered: bool = False  # contract columns in another order than Synthea's (mapped)


@dataclass
class RawLoadResult:
    file_key: str
    sha256: str
    status: str  # loaded | empty | rejected | already_loaded
    file_id: int | None = None
    rows: int = 0
    malformed_rows: int = 0
    size_bytes: int = 0
    duration_s: float = 0.0
    message: str = ""
    unexpected_columns: list[str] = field(default_factory=list)
    missing_columns: list[str] = field(default_factory=list)
    contract_break: ContractBreak | None = None  # why a rejected file was rejected

    @property
    def rows_per_second(self) -> float:
        return self.rows / self.duration_s if self.duration_s > 0 else 0.0


def inspect_header(path: Path, accepted_delimiters: Iterable[str] = (",",)) -> FileShape | None:
    """Read the header line; None for a 0-byte file. Raises FileRejected for a broken contract."""
    with open(path, "rb") as f:
        head = f.read(64 * 1024)
    if not head:
        return None
    had_bom = head.startswith(codecs.BOM_UTF8)
    if had_bom:
        head = head[len(codecs.BOM_UTF8) :]
    line_end = head.find(b"\n")
    raw_header = head if line_end < 0 else head[:line_end]
    crlf = raw_header.endswith(b"\r")
    try:
        header_text = raw_header.rstrip(b"\r").decode("utf-8")
    except UnicodeDecodeError as exc:
        raise FileRejected(
            "not_utf8",
            f"header line is not valid UTF-8 (byte {exc.start}); re-export the file as UTF-8",
            line=1,
        ) from exc
    counts = {d: header_text.count(d) for d in DELIMITER_CANDIDATES}
    delimiter = max(counts, key=lambda d: counts[d])
    if counts[delimiter] == 0:
        raise FileRejected(
            "no_delimiter",
            "header line has no recognised delimiter (',', ';', tab, '|'); "
            "expected a comma separated Synthea patients.csv export",
            line=1,
        )
    accepted = tuple(accepted_delimiters)
    if delimiter not in accepted:
        shown = "tab" if delimiter == "\t" else repr(delimiter)
        raise FileRejected(
            "delimiter",
            f"file is {shown}-delimited but the contract accepts {', '.join(map(repr, accepted))}; "
            "re-export it comma separated, or add the delimiter to landing.accepted_delimiters "
            "in healthmon.yaml",
            delimiter=delimiter,
            line=1,
        )
    untrimmed = next(csv.reader([header_text], delimiter=delimiter))
    header = [h.strip() for h in untrimmed]
    upper = [h.upper() for h in header]
    known = {c.upper() for c in SOURCE_COLUMNS}
    duplicates = sorted({h for h in upper if upper.count(h) > 1})
    if duplicates:
        # A header may be a data row: only contract column names are shown, others are counted.
        named = [c for c in SOURCE_COLUMNS if c.upper() in duplicates]
        others = sum(d not in known for d in duplicates)
        shown = ", ".join(named) + (
            f"{' and ' if named else ''}{others} name(s) outside the contract" if others else ""
        )
        raise FileRejected(
            "duplicate_columns",
            f"header repeats column(s) {shown}; the file was not loaded; re-export it with each "
            "column once",
            columns=named,
            other_columns=others,
            delimiter=delimiter,
            line=1,
            header_columns=len(header),
        )
    missing = [c for c in REQUIRED_COLUMNS if c.upper() not in upper]
    if missing:
        raise FileRejected(
            "missing_columns",
            f"header lacks required column(s) {', '.join(missing)} "
            f"({len(header)} columns found); the file was not loaded",
            columns=missing,
            delimiter=delimiter,
            line=1,
            header_columns=len(header),
        )
    return FileShape(
        delimiter=delimiter,
        had_bom=had_bom,
        crlf=crlf,
        header=header,
        # By position, never by name: a header outside the contract may be a data row (a file
        # without a header, a header joined to its first record), and its text patient data.
        unexpected_columns=[f"#{i}" for i, h in enumerate(header, 1) if h.upper() not in known],
        missing_optional=[c for c in OPTIONAL_COLUMNS if c.upper() not in upper],
        header_whitespace=sum(h != t for h, t in zip(untrimmed, header, strict=True)),
        header_case=sum(h.upper() in known and h not in SOURCE_COLUMNS for h in header),
        columns_reordered=_contract_order(upper) != sorted(_contract_order(upper)),
    )


def _contract_order(upper: list[str]) -> list[int]:
    """Positions in the Synthea column order of the header's contract columns, in header order."""
    order = {c.upper(): i for i, c in enumerate(SOURCE_COLUMNS)}
    return [order[h] for h in upper if h in order]


@dataclass
class _Counts:
    rows: int = 0
    malformed: int = 0
    blank_lines: int = 0  # skipped: not records


@dataclass
class _Record:
    row_number: int
    line: str | None  # the physical line, when it has no quotes and the right field count
    fields: list[str] | None  # otherwise the parsed fields, in header order, padded to its width
    error: str | None


def _records(path: Path, shape: FileShape, counts: _Counts) -> Iterator[_Record]:
    """Every data record of the file, in order; blank lines are not records.

    Most lines hold no quote character: they are split (or passed on whole) without the csv module,
    which is what keeps the loader fast. A line with quotes is parsed with csv, joined with the next
    lines while a quoted field is open (a field may contain line breaks).
    """
    d, width = shape.delimiter, len(shape.header)
    row_number = 0
    line_number = 1  # physical line of the file, the header being 1
    with open(path, encoding="utf-8-sig" if shape.had_bom else "utf-8", newline="") as f:
        lines = iter(f)
        try:
            next(lines)  # the header
            for physical in lines:
                line_number += 1
                if "\x00" in physical:
                    raise FileRejected(
                        "nul_byte",
                        f"data record {row_number + 1} (line {line_number}) contains a NUL byte: "
                        "the file is binary or corrupt; nothing was loaded; re-export it",
                        delimiter=d,
                        line=line_number,
                        header_columns=width,
                    )
                line = physical.rstrip("\r\n")
                if not line:
                    counts.blank_lines += 1
                    continue
                row_number += 1
                if '"' not in line:
                    if line.count(d) == width - 1:
                        yield _Record(row_number, line, None, None)
                        continue
                    fields = line.split(d)
                else:
                    text, unterminated = physical, False
                    while text.count('"') % 2:
                        more = next(lines, None)
                        if more is None:
                            unterminated = True
                            break
                        line_number += 1
                        text += more
                    fields = next(csv.reader([text.rstrip("\r\n")], delimiter=d), [])
                    if unterminated:
                        yield _Record(
                            row_number,
                            None,
                            (fields + [""] * width)[:width],
                            "unterminated_quote: the record ends inside a quoted field",
                        )
                        continue
                error = None
                if len(fields) != width:
                    error = f"field_count: expected {width}, got {len(fields)}"
                    fields = (fields + [""] * width)[:width]
                yield _Record(row_number, None, fields, error)
        except UnicodeDecodeError as exc:
            bad_line = _first_non_utf8_line(path)
            raise FileRejected(
                "not_utf8",
                f"file is not valid UTF-8 at line {bad_line}; nothing was "
                "loaded; re-export it as UTF-8",
                delimiter=d,
                line=bad_line,
                header_columns=width,
            ) from exc
        except csv.Error as exc:
            raise FileRejected(
                "unparsable",
                f"data record {row_number} cannot be parsed as CSV: {exc}",
                delimiter=d,
                line=line_number,
                header_columns=width,
            ) from exc


def _first_non_utf8_line(path: Path) -> int:
    """1-based physical line of the first byte sequence that is not UTF-8 (decoding reads ahead,
    so the error itself does not say where)."""
    with open(path, "rb") as f:
        for number, line in enumerate(f, start=1):
            try:
                line.decode("utf-8")
            except UnicodeDecodeError:
                return number
    return 0


class _TextStream:
    """A read()-able file over an iterator of strings, so COPY streams while Python produces."""

    def __init__(self, pieces: Iterator[str]) -> None:
        self._pieces = pieces
        self._buf = ""

    def read(self, size: int = -1) -> str:
        chunks, have = [self._buf], len(self._buf)
        while size < 0 or have < size:
            piece = next(self._pieces, None)
            if piece is None:
                break
            chunks.append(piece)
            have += len(piece)
        data = "".join(chunks)
        if size < 0:
            self._buf = ""
            return data
        self._buf = data[size:]
        return data[:size]

    def readline(self) -> str:  # part of the file protocol psycopg2 accepts; COPY uses read()
        return self.read(8192)


def _column_plan(shape: FileShape) -> tuple[list[str], list[int], bool]:
    """Raw columns to fill, the header positions feeding them, and whether lines can pass whole."""
    known = {c.upper(): db_column(c) for c in SOURCE_COLUMNS}
    positions = [i for i, h in enumerate(shape.header) if h.upper() in known]
    columns = [known[shape.header[i].upper()] for i in positions]
    return columns, positions, len(positions) == len(shape.header)


def _copy_file(
    conn: Connection,
    path: Path,
    shape: FileShape,
    file_id: int,
    key: str,
    loaded_at: datetime,
    counts: _Counts,
) -> None:
    """Stream the file into raw.patients with one COPY (Postgres)."""
    d = shape.delimiter
    columns, positions, whole_lines = _column_plan(shape)
    suffix_buf = io.StringIO()
    csv.writer(suffix_buf, delimiter=d, lineterminator="").writerow([key, loaded_at.isoformat()])
    suffix = suffix_buf.getvalue()

    rejected: list[FileRejected] = []

    def pieces() -> Iterator[str]:
        try:
            yield from _pieces()
        except FileRejected as exc:  # psycopg2 replaces it by QueryCanceled: keep it to re-raise
            rejected.append(exc)
            raise

    def _pieces() -> Iterator[str]:
        out: list[str] = []
        buf = io.StringIO()
        writer = csv.writer(buf, delimiter=d, lineterminator="\n")
        for rec in _records(path, shape, counts):
            counts.rows += 1
            if rec.line is not None and whole_lines:
                out.append(f"{file_id}{d}{rec.row_number}{d}{rec.line}{d}{suffix}{d}\n")
            else:
                fields = rec.fields if rec.fields is not None else str(rec.line).split(d)
                counts.malformed += rec.error is not None
                writer.writerow(
                    [
                        file_id,
                        rec.row_number,
                        *(fields[i] for i in positions),
                        key,
                        loaded_at.isoformat(),
                        rec.error or "",
                    ]
                )
                out.append(buf.getvalue())
                buf.seek(0)
                buf.truncate()
            if len(out) >= 2000:
                yield "".join(out)
                out = []
        if out:
            yield "".join(out)

    delimiter_sql = "E'\\t'" if d == "\t" else f"'{d}'"
    sql = (
        f"COPY raw.patients (_file_id, _row_number, {', '.join(columns)}, _file, _loaded_at, "
        f"_error) FROM STDIN WITH (FORMAT csv, DELIMITER {delimiter_sql})"
    )
    cursor = conn.connection.dbapi_connection.cursor()  # type: ignore[union-attr]
    try:
        cursor.copy_expert(sql, _TextStream(pieces()), size=1 << 16)
    except Exception as exc:
        if rejected:
            raise rejected[0] from None
        # The raw cursor bypasses SQLAlchemy: wrap driver errors the way it would, so callers
        # handle an outage during COPY like any other database error.
        dbapi = conn.dialect.loaded_dbapi
        if isinstance(exc, dbapi.Error):
            raise sa_exc.DBAPIError.instance("COPY raw.patients", None, exc, dbapi.Error) from None
        raise
    finally:
        cursor.close()


def _insert_file(
    conn: Connection,
    path: Path,
    shape: FileShape,
    file_id: int,
    key: str,
    loaded_at: datetime,
    counts: _Counts,
) -> None:
    """Insert the file into raw.patients in batches of CHUNK_ROWS (SQLite)."""
    columns, positions, _ = _column_plan(shape)
    batch: list[dict[str, object]] = []
    for rec in _records(path, shape, counts):
        counts.rows += 1
        counts.malformed += rec.error is not None
        fields = rec.fields if rec.fields is not None else rec.line.split(shape.delimiter)  # type: ignore[union-attr]
        row: dict[str, object] = {
            c: (fields[i] or None) for c, i in zip(columns, positions, strict=True)
        }
        row.update(
            _file_id=file_id,
            _row_number=rec.row_number,
            _file=key,
            _loaded_at=loaded_at,
            _error=rec.error,
        )
        batch.append(row)
        if len(batch) >= CHUNK_ROWS:
            conn.execute(raw_patients.insert(), batch)
            batch = []
    if batch:
        conn.execute(raw_patients.insert(), batch)


def _record_load_run(engine: Engine, **values: object) -> None:
    with write_transaction(engine) as conn:
        conn.execute(load_runs.insert().values(layer="raw", **values))


def load_file(
    engine: Engine,
    source: LandingSource,
    key: str,
    dagster_run_id: str | None = None,
    accepted_delimiters: Iterable[str] = (",",),
    fingerprint: str | None = None,
) -> RawLoadResult:
    """Load ``key`` from ``source`` into raw.patients; idempotent on the file's content.

    ``fingerprint`` is the listing's identity of this version of the file; it is recorded so that
    :func:`unloaded_files` can tell a rewritten file from one already handled.
    """
    started = utcnow()
    t0 = time.perf_counter()
    run_values: dict[str, object] = {
        "dagster_run_id": dagster_run_id,
        "file_key": key,
        "started_at": started,
    }
    try:
        with source.download(key) as path:
            result = _load_local_copy(
                engine, source, key, path, dagster_run_id, accepted_delimiters, fingerprint
            )
    except Exception as exc:
        _record_load_run(
            engine,
            **run_values,
            status="failed",
            finished_at=utcnow(),
            duration_ms=(time.perf_counter() - t0) * 1000,
            error=error_text(exc),
        )
        raise
    result.duration_s = time.perf_counter() - t0
    status = {
        "loaded": "success",
        "empty": "success",
        "rejected": "rejected",
        "already_loaded": "skipped",
    }[result.status]
    _record_load_run(
        engine,
        **run_values,
        status=status,
        file_id=result.file_id,
        rows_in=result.rows,
        rows_out=result.rows,
        rows_rejected=result.malformed_rows,
        bytes=result.size_bytes,
        finished_at=utcnow(),
        duration_ms=result.duration_s * 1000,
        error=result.message if result.status == "rejected" else None,
    )
    return result


def _already_loaded(conn: Connection, sha256: str) -> tuple[int, str, str] | None:
    row = conn.execute(
        sa.select(files.c.file_id, files.c.file_key, files.c.status).where(
            files.c.sha256 == sha256, files.c.status.in_(("loaded", "empty"))
        )
    ).first()
    return None if row is None else (row.file_id, row.file_key, row.status)


def _load_local_copy(
    engine: Engine,
    source: LandingSource,
    key: str,
    path: Path,
    dagster_run_id: str | None,
    accepted_delimiters: Iterable[str],
    fingerprint: str | None,
) -> RawLoadResult:
    size = path.stat().st_size
    sha = sha256_file(path)
    result = RawLoadResult(file_key=key, sha256=sha, status="loaded", size_bytes=size)
    with engine.connect() as conn:
        seen = _already_loaded(conn, sha)
    if seen is not None:
        result.status, result.file_id = "already_loaded", seen[0]
        result.message = f"same content already loaded as file_id {seen[0]} ({seen[1]}); skipped"
        return result

    file_row: dict[str, object] = {
        "source": source.description,
        "file_key": key,
        "sha256": sha,
        "size_bytes": size,
        "dagster_run_id": dagster_run_id,
        "fingerprint": fingerprint,
    }
    try:
        shape = inspect_header(path, accepted_delimiters)
        if shape is None:
            result.status, result.message = "empty", "file is empty (0 bytes): nothing to load"
        else:
            file_row.update(
                delimiter=shape.delimiter,
                had_bom=shape.had_bom,
                crlf=shape.crlf,
                unexpected_columns=",".join(shape.unexpected_columns) or None,
                missing_columns=",".join(shape.missing_optional) or None,
                header_whitespace=shape.header_whitespace,
                header_case=shape.header_case,
                columns_reordered=shape.columns_reordered,
            )
            result.unexpected_columns = shape.unexpected_columns
            result.missing_columns = shape.missing_optional
        return _write_file(engine, path, shape, file_row, result)
    except FileRejected as exc:
        result.status, result.message = "rejected", f"{key}: {exc}"
        result.contract_break = exc.found
        with write_transaction(engine) as conn:
            conn.execute(
                files.insert().values(
                    **file_row,
                    status="rejected",
                    error=f"{exc.reason}: {exc}",
                    loaded_at=utcnow(),
                )
            )
        return result


def _write_file(
    engine: Engine,
    path: Path,
    shape: FileShape | None,
    file_row: dict[str, object],
    result: RawLoadResult,
) -> RawLoadResult:
    loaded_at = utcnow()
    try:
        with write_transaction(engine) as conn:
            # The claim: the unique index on sha256 makes a concurrent load of the same bytes wait
            # here, then fail with IntegrityError once this transaction commits.
            inserted = conn.execute(
                files.insert().values(**file_row, status="loaded", loaded_at=loaded_at)
            ).inserted_primary_key
            assert inserted is not None  # a single-row insert into a table with a primary key
            file_id = inserted[0]
            counts = _Counts()
            if shape is not None:
                write = _insert_file if is_sqlite(engine) else _copy_file
                write(conn, path, shape, file_id, str(file_row["file_key"]), loaded_at, counts)
            rows, malformed = counts.rows, counts.malformed
            status = "loaded" if rows else "empty"
            if shape is not None and not rows:
                result.message = "file has a header but no data records: nothing to load"
            conn.execute(
                files.update()
                .where(files.c.file_id == file_id)
                .values(
                    status=status,
                    rows_raw=rows,
                    malformed_rows=malformed,
                    blank_lines=counts.blank_lines,
                    loaded_at=utcnow(),
                )
            )
    except sa_exc.IntegrityError:
        with engine.connect() as conn:
            seen = _already_loaded(conn, result.sha256)
        if seen is None:
            raise
        result.status, result.file_id = "already_loaded", seen[0]
        result.message = f"loaded concurrently by another run as file_id {seen[0]}; skipped"
        return result
    result.file_id, result.rows, result.malformed_rows = file_id, rows, malformed
    result.status = status
    if rows:
        analyze(engine, raw_patients)
    return result


def unloaded_files(engine: Engine, source: LandingSource, pattern: str) -> list[LandingFile]:
    """Listed files without a terminal record for their key and fingerprint, oldest first: not
    loaded, empty or rejected in etl.files, and not stuck (see :mod:`healthmon_dagster.etl.attempts`).

    A rejected file is not listed again until it is replaced (another fingerprint).
    """
    return pending_files(engine, source.list_files(pattern))
