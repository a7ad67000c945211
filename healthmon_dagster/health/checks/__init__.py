"""Built-in health check implementations, one module per family; importing this registers them.

Each implementation reads its thresholds from ``custom_parameters`` (defaults in the module) and
reports what is wrong, where, and what to do, never a stack trace or a secret.
"""

from healthmon_dagster.health.checks import (  # noqa: F401  (imported to register)
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
