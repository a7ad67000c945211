"""Labels identify an alert; matchers select alerts by label (silences, inhibition), with
Alertmanager's syntax: ``name=value``, ``name!=value``, ``name=~regex``, ``name!~regex`` (a regex
matches the whole value). A label that is absent has the value ``""``."""

import hashlib
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

_MATCHER = re.compile(r"^\s*([A-Za-z_][A-Za-z0-9_]*)\s*(=~|!~|!=|=)\s*(.*?)\s*$")


class MatcherError(ValueError):
    """A matcher that cannot be parsed."""


def fingerprint(labels: Mapping[str, str]) -> str:
    """Stable identity of an alert: sha256 of its labels in key order, each name and value
    length-prefixed so no two label sets encode alike (64 hex characters)."""
    text = "".join(f"{len(k)}:{k}{len(v)}:{v}" for k, v in sorted(labels.items()))
    return hashlib.sha256(text.encode()).hexdigest()


@dataclass(frozen=True)
class Matcher:
    name: str
    value: str
    is_regex: bool = False
    is_equal: bool = True

    def matches(self, labels: Mapping[str, str]) -> bool:
        actual = labels.get(self.name, "")
        hit = (
            re.fullmatch(self.value, actual) is not None if self.is_regex else actual == self.value
        )
        return hit == self.is_equal

    def __str__(self) -> str:
        op = {(False, True): "=", (False, False): "!=", (True, True): "=~", (True, False): "!~"}
        return f"{self.name}{op[(self.is_regex, self.is_equal)]}{self.value}"

    def as_json(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "value": self.value,
            "is_regex": self.is_regex,
            "is_equal": self.is_equal,
        }

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> "Matcher":
        return cls(
            str(data["name"]), str(data["value"]), bool(data["is_regex"]), bool(data["is_equal"])
        )


def parse_matcher(text: str) -> Matcher:
    """``'severity=critical'`` -> Matcher; a clear error for anything else."""
    m = _MATCHER.match(text)
    if m is None:
        raise MatcherError(
            f"{text!r} is not a matcher; write label=value, label!=value, label=~regex or "
            "label!~regex"
        )
    name, op, value = m.groups()
    if len(value) >= 2 and value[0] == value[-1] == '"':
        value = value[1:-1]
    matcher = Matcher(name, value, is_regex=op in ("=~", "!~"), is_equal=op in ("=", "=~"))
    if matcher.is_regex:
        try:
            re.compile(value)
        except re.error as exc:
            raise MatcherError(f"{text!r}: the regular expression is invalid ({exc})") from None
    return matcher


def parse_matchers(texts: Sequence[str]) -> list[Matcher]:
    return [parse_matcher(t) for t in texts]


def all_match(matchers: Sequence[Matcher], labels: Mapping[str, str]) -> bool:
    return all(m.matches(labels) for m in matchers)
