"""Durations for people and JSON: parse ``"15m"``/``"24h"``, show ``3.5h``, make results JSON-ready.

Used by the health status and asset rollup, and by the CLI.
"""

import re
from datetime import datetime, timedelta
from enum import Enum
from typing import Any

_DURATION = re.compile(r"^\s*(\d+)\s*(s|m|min|h|d|w)\s*$", re.IGNORECASE)
_UNIT_SECONDS = {"s": 1, "m": 60, "min": 60, "h": 3600, "d": 86400, "w": 604800}


class InvalidWindow(ValueError):
    """A time window or duration the user gave cannot be used; the message says why and what works."""


def parse_duration(text: str, what: str = "window") -> timedelta:
    """``"90s"``, ``"15m"``, ``"24h"``, ``"7d"``, ``"2w"`` as a timedelta.

    Raises:
        InvalidWindow: not of that form, or zero.
    """
    match = _DURATION.match(text or "")
    if not match:
        raise InvalidWindow(
            f"{what} {text!r} is not a duration: use a whole number and a unit, "
            "e.g. 30m, 24h, 7d or 2w (units: s, m, h, d, w)"
        )
    seconds = int(match.group(1)) * _UNIT_SECONDS[match.group(2).lower()]
    if seconds <= 0:
        raise InvalidWindow(f"{what} {text!r} must be longer than zero")
    return timedelta(seconds=seconds)


def jsonable(value: Any) -> Any:
    """``value`` with datetimes as ISO strings and enums as their values, for ``json.dumps``."""
    if isinstance(value, dict):
        return {k: jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [jsonable(v) for v in value]
    if isinstance(value, datetime):
        return value.isoformat()
    if isinstance(value, Enum):
        return value.value
    return value


def human_duration(seconds: float | None) -> str:
    """``45s``, ``12m``, ``3.5h``, ``2.0d`` (``-`` for None) for tables and messages."""
    if seconds is None:
        return "-"
    s = max(0.0, seconds)
    if s < 120:
        return f"{s:.0f}s"
    if s < 7200:
        return f"{s // 60:.0f}m"
    if s < 172800:
        return f"{s / 3600:.1f}h"
    return f"{s / 86400:.1f}d"
