"""Durations: parsing what people type, and showing durations to them."""

import pytest

from healthmon_dagster.formatting import InvalidWindow, human_duration, parse_duration


@pytest.mark.parametrize(
    ("text", "seconds"),
    [("90s", 90), ("15m", 900), ("24h", 86400), ("7d", 604800), ("2w", 1209600)],
)
def test_parse_duration(text: str, seconds: int) -> None:
    assert parse_duration(text).total_seconds() == seconds


@pytest.mark.parametrize("text", ["", "24", "h", "1.5h", "-1h", "0h", "3 fortnights"])
def test_parse_duration_rejects(text: str) -> None:
    with pytest.raises(InvalidWindow, match="e.g. 30m, 24h|longer than zero"):
        parse_duration(text)


@pytest.mark.parametrize(
    ("seconds", "shown"),
    [(None, "-"), (45, "45s"), (720, "12m"), (12600, "3.5h"), (172800, "2.0d")],
)
def test_human_duration(seconds: float | None, shown: str) -> None:
    assert human_duration(seconds) == shown
