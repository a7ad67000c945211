"""The registry: built-in kinds and their declared parameters, checks from the configuration."""

from typing import get_args

import pytest

from healthmon_dagster.config import ConfigError, load_config_text
from healthmon_dagster.config.models import HealthCheckKind
from healthmon_dagster.health.checks import BUILTINS
from healthmon_dagster.health.registry import checks_from_config


def test_the_config_accepts_exactly_the_built_in_kinds_and_custom() -> None:
    # A kind added to health/checks/ but not to config.models.HealthCheckKind (or the other way
    # round) would be rejected by config validation, or accepted with nothing to run it.
    assert set(get_args(HealthCheckKind)) == set(BUILTINS) | {"custom"}


def test_every_built_in_kind_can_be_configured() -> None:
    config = load_config_text(
        "health_checks:\n"
        + "".join(
            f"  - {{check_id: c_{kind}, component: network, kind: {kind}}}\n" for kind in BUILTINS
        )
    )
    checks = checks_from_config(config)
    assert {c.check_id for c in checks} == {f"c_{kind}" for kind in BUILTINS}


def test_an_unknown_custom_parameter_is_a_config_error_with_a_suggestion() -> None:

    config = load_config_text(
        "health_checks:\n"
        "  - {check_id: landing, component: filesystem, kind: landing_folder,\n"
        "     custom_parameters: {max_pending_file: 3}}\n"
        "  - {check_id: mine, component: network, kind: custom, impl: 'a.b:c',\n"
        "     custom_parameters: {anything: 1}}\n"
    )
    with pytest.raises(ConfigError) as caught:
        checks_from_config(config)
    assert caught.value.errors == [
        "health_checks[0].custom_parameters.max_pending_file: not a parameter of the "
        "landing_folder check 'landing'; did you mean 'max_pending_files'?"
    ]  # custom checks read whatever they like: no error for 'anything'
