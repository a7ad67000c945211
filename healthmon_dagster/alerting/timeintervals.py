"""Alertmanager's time intervals (mute windows for maintenance and backfills): an instant is in an
interval when every field that is set matches, in the interval's time zone.

``weekdays``: ``monday``..``sunday`` or ranges ``monday:friday``; ``days_of_month``: ``1``..``31``,
negative from the end (``-1`` is the last day), ranges ``1:7``; ``months``: ``1``..``12`` or names,
ranges; ``years``: ``2026`` or ``2026:2027``; ``times``: ``HH:MM`` ranges, end exclusive.
"""

import calendar
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

if TYPE_CHECKING:
    from healthmon_dagster.config.models import TimeInterval

_WEEKDAYS = {name.lower(): i for i, name in enumerate(calendar.day_name)}
_MONTHS = {name.lower(): i for i, name in enumerate(calendar.month_name) if name}


class TimeIntervalError(ValueError):
    def __init__(self, loc: tuple[str | int, ...], message: str) -> None:
        super().__init__(message)
        self.loc = loc


def _ranges(
    field: str, items: Sequence[str], parse: Callable[[str], int], lo: int, hi: int
) -> list[tuple[int, int]]:
    out = []
    for i, item in enumerate(items):
        parts = str(item).strip().lower().split(":")
        if len(parts) > 2:
            raise TimeIntervalError((field, i), f"{item!r} is not a value or a range 'a:b'")
        try:
            a, b = parse(parts[0]), parse(parts[-1])
        except (KeyError, ValueError):
            raise TimeIntervalError(
                (field, i), f"{item!r} is not a valid {field.rstrip('s').replace('_', ' ')}"
            ) from None
        for v in (a, b):
            if not (lo <= abs(v) <= hi) or (v < 0 and field != "days_of_month"):
                raise TimeIntervalError((field, i), f"{item!r} is outside {lo}..{hi}")
        out.append((a, b))
    return out


def _minutes(hhmm: str) -> int:
    h, m = hhmm.split(":")
    return int(h) * 60 + int(m)


@dataclass(frozen=True)
class CompiledInterval:
    times: tuple[tuple[int, int], ...]
    weekdays: tuple[tuple[int, int], ...]
    days_of_month: tuple[tuple[int, int], ...]
    months: tuple[tuple[int, int], ...]
    years: tuple[tuple[int, int], ...]
    zone: ZoneInfo

    def contains(self, instant: datetime) -> bool:
        local = instant.astimezone(self.zone)
        minute = local.hour * 60 + local.minute
        if self.times and not any(a <= minute < b for a, b in self.times):
            return False
        if self.weekdays and not any(a <= local.weekday() <= b for a, b in self.weekdays):
            return False
        if self.days_of_month:
            last = calendar.monthrange(local.year, local.month)[1]

            def day(v: int) -> int:
                return v if v > 0 else last + 1 + v

            if not any(day(a) <= local.day <= day(b) for a, b in self.days_of_month):
                return False
        if self.months and not any(a <= local.month <= b for a, b in self.months):
            return False
        return not self.years or any(a <= local.year <= b for a, b in self.years)


def compile_interval(spec: "TimeInterval") -> CompiledInterval:
    try:
        zone = ZoneInfo(spec.location)
    except (ZoneInfoNotFoundError, ValueError):
        raise TimeIntervalError(
            ("location",), f"{spec.location!r} is not an IANA time zone like 'Europe/Berlin'"
        ) from None
    return CompiledInterval(
        times=tuple((_minutes(t.start_time), _minutes(t.end_time)) for t in spec.times),
        weekdays=tuple(_ranges("weekdays", spec.weekdays, lambda v: _WEEKDAYS[v], 0, 6)),
        days_of_month=tuple(_ranges("days_of_month", spec.days_of_month, int, 1, 31)),
        months=tuple(
            _ranges("months", spec.months, lambda v: _MONTHS[v] if v in _MONTHS else int(v), 1, 12)
        ),
        years=tuple(_ranges("years", spec.years, int, 1970, 9999)),
        zone=zone,
    )


def active_intervals(
    names: Sequence[str], intervals: dict[str, list["TimeInterval"]], now: datetime
) -> list[str]:
    """The names among ``names`` whose time interval contains ``now``."""
    return [
        n for n in names if any(compile_interval(t).contains(now) for t in intervals.get(n, []))
    ]
