"""How the read-only commands reach the health store: clear messages and exit 1, no tracebacks."""

import sys
from collections.abc import Callable
from typing import TypeVar

import click
from sqlalchemy import exc as sa_exc
from sqlalchemy.engine import Engine

from healthmon_dagster.settings import redact_url
from healthmon_dagster.store.db import DatabaseUnavailable, describe_unavailable, open_for_reading

T = TypeVar("T")


def read_store(url: str, read: Callable[[Engine], T]) -> T:
    """``read(engine)`` on the existing store at ``url``; on failure print why and exit 1."""
    try:
        return read(open_for_reading(url))
    except DatabaseUnavailable as exc:
        click.echo(str(exc), err=True)
    except sa_exc.DBAPIError as exc:
        click.echo(str(describe_unavailable(redact_url(url), exc, "")), err=True)
    sys.exit(1)
