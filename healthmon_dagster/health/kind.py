"""Declaring a built-in check kind: ``@builtin("s3", params=(...))`` on its implementation.

The declarations are collected here; :mod:`healthmon_dagster.health.registry` reads them after
importing :mod:`healthmon_dagster.health.checks`, so check modules never import the registry.
"""

from collections.abc import Callable, Iterable
from dataclasses import dataclass

from healthmon_dagster.health.context import CheckImpl


@dataclass(frozen=True)
class CheckKind:
    """An implementation and the ``custom_parameters`` it reads (None: any)."""

    kind: str
    impl: CheckImpl
    params: frozenset[str] | None = None


_DECLARED: dict[str, CheckKind] = {}


def builtin(kind: str, params: Iterable[str] | None = None) -> Callable[[CheckImpl], CheckImpl]:
    """Decorator: declare ``impl`` as the built-in implementation of ``kind``.

    ``params`` names the ``custom_parameters`` it reads; when given, any other key in a check of
    this kind is a configuration error (a typo must not silently fall back to a default).
    """

    def wrap(impl: CheckImpl) -> CheckImpl:
        _DECLARED[kind] = CheckKind(kind, impl, frozenset(params) if params is not None else None)
        return impl

    return wrap


def declared() -> dict[str, CheckKind]:
    """Every kind declared with :func:`builtin` so far."""
    return dict(_DECLARED)
