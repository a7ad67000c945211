"""Exceptions as one line of text that carries no data value: the one place errors are rendered
for logs, run failures, check results and CLI output.

Database drivers quote the offending value in their messages (``invalid input syntax for type uuid:
"..."``, ``Key (id)=(...) already exists``), and SQLAlchemy appends the statement's parameters. Patient
data must not leave the warehouse that way, so every quoted token that is not a known table, column
or schema name becomes ``"?"``, ``=(...)`` key values are dropped, and only the first line is kept.
"""

import re
from collections.abc import Iterable

from healthmon_dagster.store.tables import metadata

# A quoted token, or an unbalanced quote running to the end of the line.
_QUOTED = re.compile(r"\"([^\"]*)(\"|$)|'([^']*)('|$)")
_KEY_VALUE = re.compile(r"=\((.*?)\)(?=\s|$|,|\.)")
_TRAILER = re.compile(r"\s*\[(SQL|parameters|Background on this error).*$")


def _schema_names() -> set[str]:
    names = {"raw", "stg", "core", "etl"}
    for table in metadata.tables.values():
        names.add(table.name)
        names.update(c.name for c in table.columns)
    return names


def error_text(exc: BaseException, known_names: Iterable[str] = ()) -> str:
    """``Type: first line`` of ``exc`` (its driver error when wrapped) with values redacted."""
    inner = getattr(exc, "orig", None) or exc
    lines = str(inner).strip().splitlines()
    first = _TRAILER.sub("", lines[0]).strip() if lines else ""
    known = {n.lower() for n in (*known_names, *_schema_names())}

    def keep(m: re.Match[str]) -> str:
        token = m.group(1) if m.group(1) is not None else m.group(3)
        return m.group(0) if token.lower() in known and m.group(0)[-1] in "'\"" else '"?"'

    first = _KEY_VALUE.sub("=(?)", _QUOTED.sub(keep, first))
    name = type(inner).__name__
    return f"{name}: {first}" if first else name
