"""Built-in health check implementations, one module per family, each declared with
:func:`~healthmon_dagster.health.kind.builtin`; :data:`BUILTINS` holds them by kind.

Each implementation reads its thresholds from ``custom_parameters`` (defaults in the module) and
reports what is wrong, where, and what to do, never a stack trace or a secret.
"""

from healthmon_dagster.health.checks import (  # noqa: F401  (imported to declare their kinds)
    capacity,
    daemon,
    database,
    etl,
    filesystem,
    network,
    s3,
    slack,
    smtp,
    system,
)
from healthmon_dagster.health.kind import CheckKind, declared

BUILTINS: dict[str, CheckKind] = declared()
