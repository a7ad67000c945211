"""Fixtures of the ``healthmon_dagster.defs`` tests."""

from collections.abc import Iterator

import dagster as dg
import pytest


@pytest.fixture
def instance() -> Iterator[dg.DagsterInstance]:
    """A temporary Dagster instance (runs, event logs, sensor state)."""
    with dg.instance_for_test() as inst:
        yield inst
