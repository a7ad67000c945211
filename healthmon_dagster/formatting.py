"""Numbers and durations for people and JSON: parse ``"15m"``/``"24h"``, show ``3.5h``, make results
JSON-ready, round metadata figures to meaningful digits.

Used by the health status and asset rollup, and by the CLI.
"""

import math
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


# Figures that are fractions, rates or scores (or may be: observed values and thresholds) stay floats
# even when whole, so a plotted series keeps one type.
_FLOAT_WORDS = (
    "fraction",
    "rate",
    "ratio",
    "pct",
    "score",
    "sensitivity",
    "threshold",
    "observed",
    "expected",
    "lower",
    "upper",
    "minutes",
)


def metadata_number(name: str, value: float) -> float | int:
    """``value`` rounded to meaningful digits: milliseconds (``*_ms``) to 0.1 ms, other floats to 4
    significant digits (to 0.1 from 1000 on, so large counts keep their units); whole counts become
    ints; fractions, rates, scores, observed values and thresholds stay floats."""
    if isinstance(value, int) or not math.isfinite(value):
        return value
    if name.endswith("_ms"):
        return round(value, 1)
    if value.is_integer() and not any(word in name for word in _FLOAT_WORDS):
        return int(value)
    if value == 0 or abs(value) >= 1000:
        return round(value, 1)
    return round(value, 3 - math.floor(math.log10(abs(value))))
