"""Which root cause a failure belongs to: its *root key*, the key of one-incident-per-root-cause.

Root keys have three forms, tried in this order by :func:`root_key_for`:

1. ``resource:<resource>`` (e.g. ``resource:database:warehouse``, ``resource:s3:<bucket>``) when
   the failure blames a shared resource (``Failure.cause_resource``: the database or S3
   unreachable). Every asset that fails because of it, in any run or process, lands in one incident.
2. ``asset:<root>`` for a failure of assets: ``<root>`` is the most upstream asset of the asset
   lineage the failure belongs to (the connected asset graph: every asset reachable up or down
   from the failing one; with several sources, the first by name). ``raw/patients``,
   ``stg/patients`` and ``core/dim_patient`` all fail into ``asset:raw/patients``: the partial
   unique index on open incidents' root keys admits one incident per lineage, so raw and stg
   failing in the same instant, in two processes, open one incident and the loser absorbs.
3. ``component:<name>`` for a failure without assets (a health check, a run that never reached a
   step).

The root key only decides *which* incident; the incident's component and the suggested root cause
name the most upstream *failing* asset (``records.open_or_absorb`` moves the component upstream when
an absorbed failure brings an upstream asset; ``correlation.suggest_root_cause``). Every reporter
(failure hooks in the run, the run-failure, self-healing and alert sensors) uses the bundled
pipeline's lineage (:meth:`Lineage.bundled`, the catalog's), so that all compute one key; a test
keeps it equal to the Dagster asset graph of the code location.
"""

from collections.abc import Iterable

from sqlalchemy.engine import Engine

from healthmon_dagster.alerting.lineage import Lineage
from healthmon_dagster.incidents.records import Failure

ASSET = "asset:"


def most_upstream(assets: set[str], lineage: Lineage) -> list[str]:
    """The assets of ``assets`` that no other of them is upstream of, sorted."""
    return sorted(a for a in assets if not any(lineage.is_downstream(a, b) for b in assets))


def connected(assets: Iterable[str], lineage: Lineage) -> set[str]:
    """``assets`` and every asset linked to them through the graph, upstream or downstream."""
    upstream: dict[str, set[str]] = {}
    for up, downs in lineage.downstream.items():
        for down in downs:
            upstream.setdefault(down, set()).add(up)
    seen: set[str] = set()
    todo = list(assets)
    while todo:
        asset = todo.pop()
        if asset in seen:
            continue
        seen.add(asset)
        todo += [*lineage.downstream.get(asset, ()), *upstream.get(asset, ())]
    return seen


def lineage_root(assets: Iterable[str], lineage: Lineage) -> str:
    """The most upstream asset of the lineage of ``assets`` (the first by name of its sources)."""
    return most_upstream(connected(assets, lineage), lineage)[0]


def root_key_for(engine: Engine, failure: Failure, lineage: Lineage | None = None) -> str:
    """The root key ``failure`` belongs to (see the module docstring). ``engine`` is not read: the
    key is a function of the failure alone, so racing reporters agree without reading the store."""
    del engine
    if failure.cause_resource:
        return f"resource:{failure.cause_resource}"
    if failure.asset_keys:
        lineage = lineage or Lineage.bundled()
        first = most_upstream(set(failure.asset_keys), lineage)[0]
        return ASSET + lineage_root([first], lineage)
    return f"component:{failure.component}"
