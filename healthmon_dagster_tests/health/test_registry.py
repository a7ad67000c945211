"""The registry: built-in kinds and their declared parameters, checks from the configuration."""

import pytest

from healthmon_dagster.config import ConfigError, load_config_text
from healthmon_dagster.health.checks import BUILTINS
from healthmon_dagster.health.registry import checks_from_config, registry


def test_every_built_in_kind_is_registered() -> None:
    assert {"database", "s3", "etl_component", "daemon", "landing_folder"} <= set(registry())
    assert all(registry()[kind] is k.impl for kind, k in BUILTINS.items())


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
