"""The raw loader: one landing file -> ``raw.patients`` as text, exactly once.

A file is opened once and streamed in chunks (memory does not grow with file size) inside one
transaction that first claims the file's content hash in ``etl.files``. The unique index on that
hash is what makes a second, concurrent load of the same bytes wait and then skip, or fail cleanly,
instead of loading twice. Bad files are detected before anything is written and recorded as
``rejected`` with a reason; records that cannot be split into the header's fields are kept in raw
with ``_error`` set, so nothing is lost.

Every way out of :func:`load_file` leaves a trace (``etl.load_runs`` always; ``etl.files`` whenever
the file's content could be read):

- ``loaded`` / ``empty`` / ``already_loaded``: the file is in raw (or had nothing to load).
- ``rejected`` (terminal, in ``etl.files`` with a reason code): the file breaks the contract
  (:class:`FileRejected`); the same bytes are rejected again, so retrying is pointless.
- :class:`LandingFileUnreadable` (transient, raised): the file could not be read (permission denied,
  an I/O error) or changed while it was read. Its content, hence its identity, is unknown, so
  ``etl.files`` has no row; ``etl.load_runs`` says why, and a later attempt may succeed.
- :class:`~healthmon_dagster.etl.landing.LandingFileMissing` (raised): the file was gone before it
  could be opened. Once open, a file that is deleted or replaced is still read whole.
- database errors propagate unchanged (nothing was committed).
- an interrupt (Dagster turns a run's cancellation, SIGTERM or SIGINT into an exception in the
  step) stops the load at the record being read; the transaction is rolled back and
  ``etl.load_runs`` records the interruption.

Record splitting is linear in the file's size for any quoting: lines without a quote are split
without the csv module; a line with one is parsed by csv, which pulls the next lines only while a
quoted field is open. A record larger than ``max_record_bytes`` (a stray quote opens a field that
never closes) is kept as malformed with the fields of its first line, and reading resumes with the
physical line after the one that passed the cap: at most that many bytes are swallowed, whatever
the input.

Header names are data until proven otherwise: a file without its header, or whose header runs into
its first record, must not have its values shown as column names. Only the contract's column names
(and ``landing.accepted_extra_columns``) are ever named; any other header field is reported by its
position, and a header holding dates, numbers or ids is rejected as such.
"""

import codecs
import csv
import hashlib
import io
import os
import re
import signal
import threading
import time
from collections import Counter
from collections.abc import Callable, Generator, Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from types import FrameType, TracebackType
from typing import Any

import sqlalchemy as sa
from sqlalchemy import exc as sa_exc
from sqlalchemy.engine import Connection, Engine

from healthmon_dagster.etl.attempts import pending_files
from healthmon_dagster.etl.landing import (
    LandingFile,
    LandingFileMissing,
    LandingFileUnreadable,
    LandingSource,
)
from healthmon_dagster.store.connection import is_sqlite, write_transaction
from healthmon_dagster.store.db import analyze
from healthmon_dagster.store.errors import error_text
from healthmon_dagster.store.metrics import utcnow
from healthmon_dagster.store.tables import (
    OPTIONAL_COLUMNS,
    REQUIRED_COLUMNS,
    SOURCE_COLUMNS,
    SYNTHEA_COLUMN_ORDER,
    db_column,
    files,
    load_runs,
    raw_patients,
)

CHUNK_ROWS = 5_000  # rows per insert on SQLite; an interrupt waits for the batch in flight
PROGRESS_EVERY = 50_000  # records between two calls of load_file's ``progress``
MAX_RECORD_BYTES = 1 << 20  # the default of landing.max_record_bytes
HEADER_BYTES = 64 * 1024  # a first line longer than this is no header
DELIMITER_CANDIDATES = (",", ";", "\t", "|")
# Records are capped by max_record_bytes (at most 256 MiB) before csv sees them: csv's own field
# limit must not cut a field the loader accepts.
csv.field_size_limit(1 << 30)

_UUID = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}", re.IGNORECASE)
_DATE_TIME = re.compile(
    r"\d{1,4}[-/.]\d{1,2}[-/.]\d{1,4}([T ]\d{1,2}:\d{2}(:\d{2}(\.\d+)?)?(Z|[+-]\d{2}:?\d{2})?)?"
)


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
    # 1-based positions of the header fields outside the contract involved (repeated, unknown, or
    # looking like data values): where to look, never what is there
    positions: tuple[int, ...] = ()


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
        positions: Iterable[int] = (),
    ) -> None:
        super().__init__(message)
        self.reason = reason
        self.found = ContractBreak(
            reason,
            tuple(columns),
            other_columns,
            delimiter,
            line,
            header_columns,
            tuple(positions),
        )


def positions_text(positions: Iterable[int]) -> str:
    """1-based positions with runs collapsed: ``3, 26-28``."""
    runs: list[list[int]] = []
    for p in sorted(set(positions)):
        if runs and p == runs[-1][1] + 1:
            runs[-1][1] = p
        else:
            runs.append([p, p])
    return ", ".join(str(a) if a == b else f"{a}-{b}" for a, b in runs)


def unknown_columns_text(positions: Sequence[int]) -> str:
    """``3 unknown columns at positions 26-28``: header fields outside the contract, by position."""
    n = len(positions)
    return (
        f"{n} unknown column{'' if n == 1 else 's'} at position{'' if n == 1 else 's'} "
        f"{positions_text(positions)}"
    )


def unexpected_positions(unexpected_columns: Iterable[str]) -> list[int]:
    """The positions recorded in ``etl.files.unexpected_columns`` (``#26``); names recorded by
    loaders before positions were used are left out."""
    return [int(c[1:]) for c in unexpected_columns if c[:1] == "#" and c[1:].isdigit()]


@dataclass
class FileShape:
    """What the header told us about a file."""

    delimiter: str
    had_bom: bool
    crlf: bool
    header: list[str]
    cr_line_endings: bool = False  # lines end with a lone CR (an old Mac export)
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


def _looks_like_value(name: str) -> bool:
    """A header field that is a data value rather than a name: an id (UUID), a date or time, or
    digits without a letter (numbers, amounts, coordinates, postal codes, SSNs)."""
    if _UUID.fullmatch(name) or _DATE_TIME.fullmatch(name):
        return True
    return any(c.isdigit() for c in name) and not any(c.isalpha() for c in name)


def _reject_data_in_header(
    header: list[str], named: list[int], valued: list[int], delimiter: str
) -> FileRejected:
    """The rejection of a header line holding fields that look like data values. When line 1 is
    (or runs into) a data record, even which of its fields look like values says something about a
    patient (a death date or not): only the line's structure is reported then."""
    n, what = len(header), "dates, numbers or ids"
    positions: list[int] = []
    if not named:
        reason = "no_header"
        message = (
            f"line 1 is a data record, not a header: none of its {n} fields is a contract column "
            f"name and some look like data values ({what}); the file has no header line and was "
            "not loaded; re-export it with its header"
        )
    elif min(valued) > max(named):
        reason = "header_joined"
        positions = list(range(max(named) + 1, n + 1))
        message = (
            f"the header line runs into the first record: line 1 has {n} fields, {len(named)} "
            f"contract column names followed by {len(positions)} more (positions "
            f"{positions_text(positions)}) of which some look like data values ({what}); the "
            "file was not loaded; re-export it with a line break after the header"
        )
    else:
        reason = "data_in_header"
        positions = valued
        message = (
            f"header has {len(valued)} field(s) that look like data values ({what}), not column "
            f"names, at positions {positions_text(valued)}; the file was not loaded; re-export it "
            "with its header (names of that form a source really sends can be listed in "
            "landing.accepted_extra_columns)"
        )
    return FileRejected(
        reason, message, delimiter=delimiter, line=1, header_columns=n, positions=positions
    )


def inspect_header(
    f: io.BufferedReader,
    accepted_delimiters: Iterable[str] = (",",),
    accepted_extra_columns: Iterable[str] = (),
) -> FileShape | None:
    """Read the header line of the open file; None for a 0-byte file. Raises FileRejected for a
    broken contract."""
    f.seek(0)
    head = f.read(HEADER_BYTES + 1)
    if not head:
        return None
    had_bom = head.startswith(codecs.BOM_UTF8)
    if had_bom:
        head = head[len(codecs.BOM_UTF8) :]
    ends = [i for i in (head.find(b"\n"), head.find(b"\r")) if i >= 0]
    end = min(ends) if ends else len(head)
    if end >= HEADER_BYTES:
        raise FileRejected(
            "header_too_long",
            f"line 1 runs past {HEADER_BYTES} bytes without a line break: it is no patients.csv "
            "header; the file was not loaded; re-export it with its header line",
            line=1,
        )
    raw_header = head[:end]
    crlf = head[end : end + 2] == b"\r\n"
    cr_line_endings = head[end : end + 1] == b"\r" and not crlf
    try:
        header_text = raw_header.decode("utf-8")
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
    try:
        untrimmed = next(csv.reader([header_text], delimiter=delimiter), [])
    except csv.Error as exc:
        raise FileRejected(
            "unparsable", f"header line cannot be parsed as CSV: {exc}", delimiter=delimiter, line=1
        ) from exc
    header = [h.strip() for h in untrimmed]
    upper = [h.upper() for h in header]
    extras = tuple(accepted_extra_columns)
    contract = {c.upper() for c in SOURCE_COLUMNS}
    vocabulary = contract | {c.upper() for c in extras}
    named = [i for i, h in enumerate(upper, 1) if h in vocabulary]
    valued = [
        i for i, h in enumerate(header, 1) if h.upper() not in vocabulary and _looks_like_value(h)
    ]
    if valued:
        raise _reject_data_in_header(header, named, valued, delimiter)
    unknown = [i for i, h in enumerate(upper, 1) if h not in vocabulary]
    occurrences = Counter(upper)
    repeated = {h for h, n in occurrences.items() if n > 1}
    if repeated:
        # Only names of the vocabulary are shown, in their canonical spelling; others by position.
        names = [c for c in (*SOURCE_COLUMNS, *extras) if c.upper() in repeated]
        others = sorted(h for h in repeated if h not in vocabulary)
        at = [i for i in unknown if upper[i - 1] in repeated]
        parts = [", ".join(names)] if names else []
        if others:
            parts.append(f"{len(others)} unknown name(s), at positions {positions_text(at)}")
        raise FileRejected(
            "duplicate_columns",
            f"header repeats {'column(s) ' if names else ''}{' and '.join(parts)}; the file was "
            "not loaded; re-export it with each column once",
            columns=names,
            other_columns=len(others),
            delimiter=delimiter,
            line=1,
            header_columns=len(header),
            positions=at,
        )
    missing = [c for c in REQUIRED_COLUMNS if c.upper() not in occurrences]
    if missing:
        found = f"{len(header)} columns found" + (
            f"; {unknown_columns_text(unknown)}" if unknown else ""
        )
        raise FileRejected(
            "missing_columns",
            f"header lacks required column(s) {', '.join(missing)} ({found}); the file was not "
            "loaded",
            columns=missing,
            delimiter=delimiter,
            line=1,
            header_columns=len(header),
            positions=unknown,
        )
    return FileShape(
        delimiter=delimiter,
        had_bom=had_bom,
        crlf=crlf,
        cr_line_endings=cr_line_endings,
        header=header,
        # By position, never by name: a header outside the contract may be a data row, and its
        # text patient data. Accepted extra columns are expected: neither loaded nor reported.
        unexpected_columns=[f"#{i}" for i in unknown],
        missing_optional=[c for c in OPTIONAL_COLUMNS if c.upper() not in occurrences],
        header_whitespace=sum(h != t for h, t in zip(untrimmed, header, strict=True)),
        header_case=sum(h.upper() in contract and h not in SOURCE_COLUMNS for h in header),
        columns_reordered=_contract_order(upper) != sorted(_contract_order(upper)),
    )


def _contract_order(upper: list[str]) -> list[int]:
    """Positions in Synthea's full column order of the header's contract columns, in header
    order: increasing when the header is a subsequence of that order."""
    order = {c.upper(): i for i, c in enumerate(SYNTHEA_COLUMN_ORDER)}
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


@contextmanager
def _text(f: io.BufferedReader, encoding: str) -> Iterator[io.TextIOWrapper]:
    """The open file from its start as text; universal line splitting (LF, CRLF or a lone CR),
    line ends kept. The binary file stays open for the next pass."""
    f.seek(0)
    text = io.TextIOWrapper(f, encoding=encoding, newline="")
    try:
        yield text
    finally:
        text.detach()


def _utf8_len(text: str) -> int:
    return len(text) if text.isascii() else len(text.encode("utf-8"))


def _nul_byte(row_number: int, line_number: int, delimiter: str, width: int) -> FileRejected:
    return FileRejected(
        "nul_byte",
        f"data record {row_number} (line {line_number}) contains a NUL byte: "
        "the file is binary or corrupt; nothing was loaded; re-export it",
        delimiter=delimiter,
        line=line_number,
        header_columns=width,
    )


class _QuotedRecord:
    """The physical lines of one record that holds a quote, as ``csv.reader`` pulls them: its
    first line, then the file's next lines while a quoted field is open, until the record passes
    ``max_record_bytes`` (``too_large``) or the file ends (``ran_out``). Each line is read once."""

    def __init__(
        self,
        first: str,
        lines: Iterator[str],
        max_record_bytes: int,
        row_number: int,
        line_number: int,
        delimiter: str,
        width: int,
    ) -> None:
        self._first: str | None = first
        self._lines = lines
        self._left = max_record_bytes - _utf8_len(first)
        self._where = (row_number, line_number, delimiter, width)
        self.more = 0  # physical lines read after the first
        self.too_large = False
        self.ran_out = False

    def __iter__(self) -> "_QuotedRecord":
        return self

    def __next__(self) -> str:
        if self._first is not None:
            first, self._first = self._first, None
            return first
        if self.too_large or self.ran_out:
            raise StopIteration
        line = next(self._lines, None)
        if line is None:
            self.ran_out = True
            raise StopIteration
        self.more += 1
        row_number, line_number, delimiter, width = self._where
        if "\x00" in line:
            raise _nul_byte(row_number, line_number + self.more, delimiter, width)
        self._left -= _utf8_len(line)
        if self._left < 0:
            self.too_large = True  # this line belongs to the malformed record
            raise StopIteration
        return line


def _fit(fields: list[str], width: int) -> list[str]:
    return (fields + [""] * width)[:width]


def _records(
    f: io.BufferedReader, shape: FileShape, counts: _Counts, max_record_bytes: int
) -> Iterator[_Record]:
    """Every data record of the file, in order; blank lines are not records.

    Most lines hold no quote character: they are split (or passed on whole) without the csv module,
    which is what keeps the loader fast. A line with a quote is parsed with csv, which reads the
    next lines while a quoted field is open (a field may contain line breaks); every line is read
    once, so the time is linear in the file's size whatever its quoting. A record larger than
    ``max_record_bytes`` is malformed: it keeps the fields of its first line, and reading resumes
    with the line after the one that passed the cap.
    """
    d, width, cap = shape.delimiter, len(shape.header), max_record_bytes
    row_number = 0
    line_number = 1  # physical line of the file, the header being 1
    with _text(f, "utf-8-sig" if shape.had_bom else "utf-8") as text:
        lines = iter(text)
        try:
            next(lines, None)  # the header
            for physical in lines:
                line_number += 1
                if "\x00" in physical:
                    raise _nul_byte(row_number + 1, line_number, d, width)
                line = physical.rstrip("\r\n")
                if not line:
                    counts.blank_lines += 1
                    continue
                row_number += 1
                if len(physical) * 4 > cap and _utf8_len(physical) > cap:
                    yield _Record(
                        row_number,
                        None,
                        [""] * width,
                        f"record_too_large: line {line_number} is longer than "
                        f"landing.max_record_bytes ({cap} bytes); kept without its fields",
                    )
                    continue
                if '"' not in line:
                    if line.count(d) == width - 1:
                        yield _Record(row_number, line, None, None)
                        continue
                    fields = line.split(d)
                else:
                    record = _QuotedRecord(physical, lines, cap, row_number, line_number, d, width)
                    fields = next(csv.reader(record, delimiter=d), [])
                    first, line_number = line_number, line_number + record.more
                    if record.too_large:
                        yield _Record(
                            row_number,
                            None,
                            _fit(next(csv.reader([physical], delimiter=d), []), width),
                            f"record_too_large: a quoted field opened on line {first} was still "
                            f"open at line {line_number}, past landing.max_record_bytes ({cap} "
                            f"bytes); kept with the fields of line {first}; reading resumed at "
                            f"line {line_number + 1}",
                        )
                        continue
                    if record.ran_out:
                        yield _Record(
                            row_number,
                            None,
                            _fit(fields, width),
                            "unterminated_quote: the record ends inside a quoted field",
                        )
                        continue
                error = None
                if len(fields) != width:
                    error = f"field_count: expected {width}, got {len(fields)}"
                    fields = _fit(fields, width)
                yield _Record(row_number, None, fields, error)
        except UnicodeDecodeError as exc:
            bad_line = _first_non_utf8_line(f)
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


def _first_non_utf8_line(f: io.BufferedReader) -> int:
    """1-based physical line of the first byte sequence that is not UTF-8 (decoding reads ahead,
    so the error itself does not say where). Lines are split as the loader splits them."""
    with _text(f, "latin-1") as text:  # every byte is a latin-1 character: it cannot fail
        for number, line in enumerate(text, start=1):
            try:
                line.encode("latin-1").decode("utf-8")
            except UnicodeDecodeError:
                return number
    return 0


class _TextStream:
    """A read()-able file over an iterator of strings, so COPY streams while Python produces.

    psycopg2 replaces whatever read() raises (a rejection, a read error, an interrupt) by
    QueryCanceled: ``raised`` keeps the original for the caller to re-raise. ``read`` is a
    running generator's ``send``, so that an interrupt (a signal handler raising) lands inside
    its ``try`` even when it arrives while psycopg2 holds the thread: a plain method would let it
    be raised on entry, before any ``try`` of its own."""

    def __init__(self, pieces: Iterator[str]) -> None:
        self._pieces = pieces
        self._buf = ""
        self.raised: BaseException | None = None
        reads = self._reads()
        next(reads)
        self.read: Callable[[int], str] = reads.send

    def _reads(self) -> Generator[str, int, None]:
        try:
            size = yield ""
            while True:
                size = yield self._take(size)
        except BaseException as exc:
            self.raised = exc
            raise

    def _take(self, size: int) -> str:
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


_SignalHandler = Callable[[int, FrameType | None], Any]


class _StopSignals:
    """SIGINT and SIGTERM that arrive during a load, remembered so that none is lost.

    A Python signal handler runs at whatever bytecode the main thread is at. When that is a
    weakref callback or a ``__del__`` (SQLAlchemy registers such callbacks), the exception the
    handler raises (Dagster raises one to stop a step when its run is cancelled or its process
    gets SIGTERM) is printed and dropped, and the load would go on to the end. While a load runs,
    the handlers of both signals are wrapped to remember the signal, and :meth:`check` (called
    after each record and before the commit) calls the original handler again, from the loader's
    own frame. Only in the main thread (where Python delivers signals), and only handlers that
    are Python callables: a default or ignored disposition is left as it is."""

    def __init__(self) -> None:
        self._pending: list[int] = []
        self._wrapped: dict[int, _SignalHandler] = {}

    def __enter__(self) -> "_StopSignals":
        if threading.current_thread() is threading.main_thread():
            for signum in (signal.SIGINT, signal.SIGTERM):
                previous = signal.getsignal(signum)
                if callable(previous):
                    self._wrapped[signum] = previous
                    signal.signal(signum, self._remember)
        return self

    def _remember(self, signum: int, frame: FrameType | None) -> None:
        self._pending.append(signum)
        self._wrapped[signum](signum, frame)

    def check(self) -> None:
        """Call the handler of a signal whose exception was dropped (it raises, as it did)."""
        if self._pending:
            signum = self._pending[-1]
            self._pending.clear()
            self._wrapped[signum](signum, None)

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        for signum, previous in self._wrapped.items():
            signal.signal(signum, previous)
        self._wrapped.clear()
        self._pending.clear()


@dataclass
class _Load:
    """One file being written to raw.patients."""

    file: io.BufferedReader
    shape: FileShape
    file_id: int
    key: str
    loaded_at: datetime
    max_record_bytes: int
    progress: Callable[[int], None] | None
    stop: _StopSignals
    counts: _Counts = field(default_factory=_Counts)

    def records(self) -> Iterator[_Record]:
        counts, stop = self.counts, self.stop
        for rec in _records(self.file, self.shape, counts, self.max_record_bytes):
            stop.check()
            counts.rows += 1
            counts.malformed += rec.error is not None
            if self.progress is not None and counts.rows % PROGRESS_EVERY == 0:
                self.progress(counts.rows)
            yield rec


def _copy_file(conn: Connection, load: _Load) -> None:
    """Stream the file into raw.patients with one COPY (Postgres)."""
    d = load.shape.delimiter
    columns, positions, whole_lines = _column_plan(load.shape)
    suffix_buf = io.StringIO()
    csv.writer(suffix_buf, delimiter=d, lineterminator="").writerow(
        [load.key, load.loaded_at.isoformat()]
    )
    suffix = suffix_buf.getvalue()
    file_id, key, loaded_at = load.file_id, load.key, load.loaded_at.isoformat()

    def pieces() -> Iterator[str]:
        out: list[str] = []
        buf = io.StringIO()
        writer = csv.writer(buf, delimiter=d, lineterminator="\n")
        for rec in load.records():
            if rec.line is not None and whole_lines:
                out.append(f"{file_id}{d}{rec.row_number}{d}{rec.line}{d}{suffix}{d}\n")
            else:
                fields = rec.fields if rec.fields is not None else str(rec.line).split(d)
                writer.writerow(
                    [
                        file_id,
                        rec.row_number,
                        *(fields[i] for i in positions),
                        key,
                        loaded_at,
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
    stream = _TextStream(pieces())
    try:
        cursor.copy_expert(sql, stream, size=1 << 16)
    except BaseException as exc:
        if stream.raised is not None:
            raise stream.raised from None
        # The raw cursor bypasses SQLAlchemy: wrap driver errors the way it would, so callers
        # handle an outage during COPY like any other database error.
        dbapi = conn.dialect.loaded_dbapi
        if isinstance(exc, dbapi.Error):
            raise sa_exc.DBAPIError.instance("COPY raw.patients", None, exc, dbapi.Error) from None
        raise
    finally:
        cursor.close()


def _insert_file(conn: Connection, load: _Load) -> None:
    """Insert the file into raw.patients in batches of CHUNK_ROWS (SQLite)."""
    columns, positions, _ = _column_plan(load.shape)
    d = load.shape.delimiter
    batch: list[dict[str, object]] = []
    for rec in load.records():
        fields = rec.fields if rec.fields is not None else str(rec.line).split(d)
        row: dict[str, object] = {
            c: (fields[i] or None) for c, i in zip(columns, positions, strict=True)
        }
        row.update(
            _file_id=load.file_id,
            _row_number=rec.row_number,
            _file=load.key,
            _loaded_at=load.loaded_at,
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


@dataclass(frozen=True)
class _Options:
    accepted_delimiters: tuple[str, ...]
    accepted_extra_columns: tuple[str, ...]
    max_record_bytes: int
    progress: Callable[[int], None] | None
    stop: _StopSignals


def load_file(
    engine: Engine,
    source: LandingSource,
    key: str,
    dagster_run_id: str | None = None,
    accepted_delimiters: Iterable[str] = (",",),
    fingerprint: str | None = None,
    *,
    accepted_extra_columns: Iterable[str] = (),
    max_record_bytes: int = MAX_RECORD_BYTES,
    progress: Callable[[int], None] | None = None,
) -> RawLoadResult:
    """Load ``key`` from ``source`` into raw.patients; idempotent on the file's content.

    ``fingerprint`` is the listing's identity of this version of the file; it is recorded so that
    :func:`unloaded_files` can tell a rewritten file from one already handled.
    ``accepted_extra_columns`` and ``max_record_bytes`` are ``landing:`` settings; ``progress`` is
    called with the number of records read every :data:`PROGRESS_EVERY` records.

    Raises:
        LandingFileUnreadable: transient, the file could not be read or changed while read.
        LandingFileMissing: the file was gone before it could be opened.
        sqlalchemy.exc.DBAPIError: the database failed; nothing was committed.
    """
    started = utcnow()
    t0 = time.perf_counter()
    run_values: dict[str, object] = {
        "dagster_run_id": dagster_run_id,
        "file_key": key,
        "started_at": started,
    }
    options = _Options(
        tuple(accepted_delimiters),
        tuple(accepted_extra_columns),
        max_record_bytes,
        progress,
        _StopSignals(),
    )
    try:
        with options.stop, source.download(key) as path:
            result = _load_local_copy(
                engine, source, key, path, dagster_run_id, fingerprint, options
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
    except BaseException as exc:
        # An interrupt: Dagster raises one in the step when the run is cancelled or its process
        # gets SIGTERM or SIGINT. The load's transaction is already rolled back; say so, then stop.
        try:
            _record_load_run(
                engine,
                **run_values,
                status="failed",
                finished_at=utcnow(),
                duration_ms=(time.perf_counter() - t0) * 1000,
                error=f"interrupted ({type(exc).__name__}): the run was cancelled or its process "
                "told to stop during the load; nothing of the file was committed",
            )
        except Exception as record_exc:
            exc.add_note(
                f"the interruption could not be recorded in etl.load_runs: {error_text(record_exc)}"
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


def _unreadable(key: str, source: LandingSource, exc: OSError) -> LandingFileUnreadable:
    why = exc.strerror or type(exc).__name__
    return LandingFileUnreadable(
        f"landing file {key} in {source.description} could not be read ({why}); nothing was "
        "loaded; a later attempt loads it as it is: if this persists, check the file's "
        "permissions and the storage"
    )


@contextmanager
def _open_landed(path: Path, key: str, source: LandingSource) -> Iterator[io.BufferedReader]:
    """The landed file, opened once for every pass (hash, header, records): deleted or replaced
    after this, it is still read whole and as it was."""
    try:
        f = open(path, "rb")  # noqa: SIM115 - closed by the with below
    except FileNotFoundError as exc:
        raise LandingFileMissing(
            f"landing file {key} is no longer in {source.description}: it disappeared between "
            "listing and reading; nothing was loaded"
        ) from exc
    except OSError as exc:
        raise _unreadable(key, source, exc) from exc
    with f:
        yield f


def _unchanged_since(
    f: io.BufferedReader, before: os.stat_result, key: str, source: LandingSource
) -> None:
    """Raise LandingFileUnreadable when the open file grew, shrank or was rewritten since
    ``before``: what was hashed is then not what was read."""
    now = os.fstat(f.fileno())
    if (now.st_size, now.st_mtime_ns) != (before.st_size, before.st_mtime_ns):
        raise LandingFileUnreadable(
            f"landing file {key} in {source.description} changed while it was read ({before.st_size} "
            f"bytes, then {now.st_size}); nothing was loaded; a later attempt loads it once "
            "its writer has finished"
        )


def _load_local_copy(
    engine: Engine,
    source: LandingSource,
    key: str,
    path: Path,
    dagster_run_id: str | None,
    fingerprint: str | None,
    options: _Options,
) -> RawLoadResult:
    with _open_landed(path, key, source) as f:
        try:
            return _load_open_file(engine, source, key, f, dagster_run_id, fingerprint, options)
        except OSError as exc:
            raise _unreadable(key, source, exc) from exc


def _load_open_file(
    engine: Engine,
    source: LandingSource,
    key: str,
    f: io.BufferedReader,
    dagster_run_id: str | None,
    fingerprint: str | None,
    options: _Options,
) -> RawLoadResult:
    before = os.fstat(f.fileno())
    size = before.st_size
    f.seek(0)
    sha = hashlib.file_digest(f, "sha256").hexdigest()
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
        shape = inspect_header(f, options.accepted_delimiters, options.accepted_extra_columns)
        if shape is None:
            result.status, result.message = "empty", "file is empty (0 bytes): nothing to load"
        else:
            file_row.update(
                delimiter=shape.delimiter,
                had_bom=shape.had_bom,
                crlf=shape.crlf,
                cr_line_endings=shape.cr_line_endings,
                unexpected_columns=",".join(shape.unexpected_columns) or None,
                missing_columns=",".join(shape.missing_optional) or None,
                header_whitespace=shape.header_whitespace,
                header_case=shape.header_case,
                columns_reordered=shape.columns_reordered,
            )
            result.unexpected_columns = shape.unexpected_columns
            result.missing_columns = shape.missing_optional
        return _write_file(engine, f, shape, file_row, result, options, before, source)
    except FileRejected as exc:
        # A file still being written may look broken: reject only what was read whole.
        _unchanged_since(f, before, key, source)
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
    f: io.BufferedReader,
    shape: FileShape | None,
    file_row: dict[str, object],
    result: RawLoadResult,
    options: _Options,
    before: os.stat_result,
    source: LandingSource,
) -> RawLoadResult:
    loaded_at = utcnow()
    key = str(file_row["file_key"])
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
                load = _Load(
                    f,
                    shape,
                    file_id,
                    key,
                    loaded_at,
                    options.max_record_bytes,
                    options.progress,
                    options.stop,
                )
                counts = load.counts
                (_insert_file if is_sqlite(engine) else _copy_file)(conn, load)
            _unchanged_since(f, before, key, source)  # before the commit: else nothing is kept
            options.stop.check()
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
