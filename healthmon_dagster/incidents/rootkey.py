"""Which root cause a failure belongs to: its *root key*, the key of one-incident-per-root-cause.

Root keys have three forms, tried in this order by :func:`root_key_for`:

1. ``resource:<resource>`` (e.g. ``resource:database:warehouse``, ``resource:s3:landing``) when the
   failure blames a shared resource (``Failure.cause_resource``: the database or S3 unreachable).
   Every asset that fails because of it, in any run or process, lands in one incident.
2. ``asset:<key>`` of an open incident for an asset upstream of (or equal to) an asset of the
   failure: a downstream failure while its upstream is broken belongs to the upstream's incident.
3. ``asset:<key>`` of the most upstream of the failure's own assets, or ``component:<name>`` for a
   failure without assets (a health check, a run that never reached a step).

Step 2 reads the open incidents (few) and is not atomic with the insert that follows: two failures
of one lineage reported in the same instant with no incident open yet may open one incident each
(the database still guarantees one per root key), and correlation then links them. Failures with a
shared cause take step 1 and always meet in one incident.
"""

import sqlalchemy as sa
from sqlalchemy.engine import Engine

from healthmon_dagster.alerting.lineage import Lineage
from healthmon_dagster.incidents.records import OPEN, Failure
from healthmon_dagster.store.tables import incidents

ASSET = "asset:"


def most_upstream(assets: set[str], lineage: Lineage) -> list[str]:
    """The assets of ``assets`` that no other of them is upstream of, sorted."""
    return sorted(a for a in assets if not any(lineage.is_downstream(a, b) for b in assets))


def root_key_for(engine: Engine, failure: Failure, lineage: Lineage | None = None) -> str:
    """The root key ``failure`` belongs to (see the module docstring)."""
    if failure.cause_resource:
        return f"resource:{failure.cause_resource}"
    lineage = lineage or Lineage.bundled()
    assets = set(failure.asset_keys)
    if assets:
        c = incidents.c
        with engine.connect() as conn:
            open_keys = conn.execute(
                sa.select(c.root_key)
                .where(OPEN, c.root_key.startswith(ASSET, autoescape=True))
                .order_by(c.started_at, c.incident_id)
            ).scalars()
            for key in open_keys:
                upstream = key.removeprefix(ASSET)
                if upstream in assets or any(lineage.is_downstream(a, upstream) for a in assets):
                    return str(key)
        return ASSET + most_upstream(assets, lineage)[0]
    return f"component:{failure.component}"
