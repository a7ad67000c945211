"""The YAML limits of the loader: an alias bomb, an alias inside its own anchor, too many aliases and
deep nesting are rejected in under a second with the line where it happens; anchors and merge keys
within the limits still work; infinite and NaN numbers are errors anywhere in the file."""

import textwrap
import time

import pytest

from healthmon_dagster.config import ConfigError
from healthmon_dagster.config.loader import (
    MAX_ALIASES,
    MAX_DEPTH,
    MAX_EXPANDED_NODES,
    load_config_text,
)


def rejected(text: str) -> tuple[list[str], float]:
    """The errors of ``text`` and the CPU seconds it took to reject it (CPU time: the machine may be
    busy with other work, which says nothing about the loader)."""
    start = time.process_time()
    with pytest.raises(ConfigError) as info:
        load_config_text(text, "bomb.yaml")
    return info.value.errors, time.process_time() - start


def billion_laughs(levels: int = 9) -> str:
    lines = ['l0: &l0 ["lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol"]']
    lines += [f"l{i}: &l{i} [{', '.join([f'*l{i - 1}'] * 9)}]" for i in range(1, levels + 1)]
    return "\n".join(lines) + "\n"


def test_a_billion_laughs_bomb_is_rejected_in_under_a_second_at_its_line() -> None:
    errors, seconds = rejected(billion_laughs())

    assert seconds < 1
    # l5 (line 6) stands for 9**6 = 531,441 strings: the first anchor past the limit.
    assert errors == [
        f"bomb.yaml:6:5: YAML too complex: with its aliases expanded this holds more than "
        f"{MAX_EXPANDED_NODES:,} values (a YAML alias bomb?); write the values out"
    ]


def test_the_bomb_under_a_key_the_models_read_is_rejected_too() -> None:
    text = billion_laughs(4) + "health_checks: &hc [*l4, *l4, *l4, *l4, *l4, *l4, *l4, *l4, *l4]\n"

    errors, seconds = rejected(text)

    assert seconds < 1 and "YAML too complex" in errors[0] and errors[0].startswith("bomb.yaml:6:")


def test_too_many_aliases_are_rejected() -> None:
    text = "x: &x 1\nthresholds: [" + ", ".join(["*x"] * (MAX_ALIASES + 1)) + "]\n"

    errors, _ = rejected(text)

    assert errors == [
        f"bomb.yaml:2:{14 + 4 * MAX_ALIASES}: YAML too complex: more than {MAX_ALIASES} "
        "aliases (a YAML alias bomb?); write the values out"
    ]


def test_an_alias_inside_its_own_anchor_is_rejected() -> None:
    errors, _ = rejected("thresholds: &loop [1, *loop]\n")

    assert errors == [
        "bomb.yaml:1:23: YAML too complex: alias *loop refers to the collection that contains it"
    ]


@pytest.mark.parametrize(
    "text",
    [
        "thresholds: " + "[" * 5000 + "]" * 5000 + "\n",
        "thresholds:\n" + "".join(" " * depth + "-\n" for depth in range(1, 5000)),
        "a:\n" + "".join(" " * depth + f"k{depth}:\n" for depth in range(1, 5000)),
    ],
    ids=["flow", "block_sequences", "block_mappings"],
)
def test_nesting_5000_deep_is_rejected_in_under_a_second(text: str) -> None:
    errors, seconds = rejected(text)

    assert seconds < 1
    assert len(errors) == 1
    assert errors[0].endswith(f"YAML too complex: nested more than {MAX_DEPTH} levels deep")


def test_anchors_and_merge_keys_within_the_limits_still_work() -> None:
    config = load_config_text(
        textwrap.dedent(
            """\
            health_checks:
              - &db
                check_id: warehouse_ping
                component: database
                kind: database
                interval_seconds: 60
              - <<: *db
                check_id: store_ping
                custom_parameters: {target: health_store}
            """
        )
    )

    assert [c.check_id for c in config.health_checks] == ["warehouse_ping", "store_ping"]
    assert config.health_checks[1].interval_seconds == 60


@pytest.mark.parametrize(
    ("text", "where"),
    [
        ("retention: {metrics_days: .nan}\n", "retention.metrics_days (line 1)"),
        (
            "thresholds:\n  - {threshold_id: t, component: database, metric_name: m,\n"
            "     warning_threshold: -.inf, critical_threshold: 1}\n",
            "thresholds[0].warning_threshold (line 3)",
        ),
        (
            "health_checks:\n  - check_id: c\n    component: database\n    kind: database\n"
            "    custom_parameters: {query_time_warning_ms: .inf}\n",
            "health_checks[0].custom_parameters.query_time_warning_ms (line 5)",
        ),
        (
            "channels:\n  hook:\n    type: webhook\n    configuration: {rate_per_minute: .NaN}\n",
            "channels.hook.configuration.rate_per_minute (line 4)",
        ),
    ],
)
def test_infinite_and_nan_numbers_are_errors_anywhere(text: str, where: str) -> None:
    errors, _ = rejected(text)

    assert len(errors) == 1
    assert errors[0].startswith(where) and "is not a finite number" in errors[0]
