"""Which implementation runs a check: built-in kinds (:mod:`healthmon_dagster.health.checks`),
kinds registered at run time (:func:`register`), and ``custom`` checks that name their callable by
import path (``impl: "pkg.mod:func"``).
"""

import difflib
import importlib
from collections.abc import Callable, Iterable
from typing import Any

from healthmon_dagster.config import ConfigError
from healthmon_dagster.health.checks import BUILTINS
from healthmon_dagster.health.context import CheckImpl
from healthmon_dagster.health.result import CheckFailed, HealthCheck, describe_exception

_REGISTRY: dict[str, CheckImpl] = {kind: k.impl for kind, k in BUILTINS.items()}
_PARAMS: dict[str, frozenset[str]] = {
    kind: k.params for kind, k in BUILTINS.items() if k.params is not None
}
_custom_cache: dict[str, CheckImpl] = {}


def register(kind: str, params: Iterable[str] | None = None) -> Callable[[CheckImpl], CheckImpl]:
    """Decorator: make ``impl`` the implementation of ``kind`` (extensions, benchmarks, tests).

    ``params`` names the ``custom_parameters`` it reads; when given, any other key in a check of
    this kind is a configuration error.
    """

    def wrap(impl: CheckImpl) -> CheckImpl:
        _REGISTRY[kind] = impl
        if params is not None:
            _PARAMS[kind] = frozenset(params)
        return impl

    return wrap


def parameter_problems(config: Any) -> list[str]:
    """``health_checks[i].custom_parameters.<key>: ...`` for every key its kind does not read."""
    problems = []
    for i, check in enumerate(config.health_checks):
        known = _PARAMS.get(check.kind)
        if known is None:  # custom checks read what they like
            continue
        for key in sorted(set(check.custom_parameters) - known):
            close = difflib.get_close_matches(key, known, n=1)
            hint = f"did you mean '{close[0]}'?" if close else f"known: {', '.join(sorted(known))}"
            problems.append(
                f"health_checks[{i}].custom_parameters.{key}: not a parameter of the "
                f"{check.kind} check '{check.check_id}'; {hint}"
            )
    return problems


def checks_from_config(config: Any) -> list[HealthCheck]:
    """Every health check of a ``HealthConfiguration`` (disabled ones included; capacity
    forecasts only while the ``forecasting`` feature flag is on). Unknown ``custom_parameters``
    raise :class:`~healthmon_dagster.config.ConfigError`."""
    problems = parameter_problems(config)
    if problems:
        raise ConfigError(problems, "healthmon.yaml")
    return [
        HealthCheck.from_config(c)
        for c in config.health_checks
        if c.kind != "capacity" or config.feature_enabled("forecasting")
    ]


def load_custom(impl_path: str) -> CheckImpl:
    """Import ``"pkg.module:attr"``; raises :class:`CheckFailed` with what to fix."""
    cached = _custom_cache.get(impl_path)
    if cached is not None:
        return cached
    module_name, _, attr = impl_path.partition(":")
    try:
        target: Any = importlib.import_module(module_name)
        for part in attr.split("."):
            target = getattr(target, part)
    except (ImportError, AttributeError) as exc:
        raise CheckFailed(
            f"custom check impl '{impl_path}' could not be loaded ({describe_exception(exc)}); "
            "fix 'impl' in healthmon.yaml or install the module"
        ) from None
    if not callable(target):
        raise CheckFailed(f"custom check impl '{impl_path}' is not callable; fix 'impl'")
    impl: CheckImpl = target
    _custom_cache[impl_path] = impl
    return impl


def resolve(check: HealthCheck) -> CheckImpl:
    """The implementation of ``check``: its ``impl`` for kind 'custom', else the registry's."""
    if check.kind == "custom":
        if not check.impl:
            raise CheckFailed(f"custom check '{check.check_id}' has no impl; set impl in config")
        return load_custom(check.impl)
    impl = _REGISTRY.get(check.kind)
    if impl is None:
        known = ", ".join(sorted(_REGISTRY))
        raise CheckFailed(f"no implementation for kind '{check.kind}' (known: {known})")
    return impl
