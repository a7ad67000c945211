"""The asset graph, as the alert engine needs it: what is downstream of what.

The Dagster adapter builds it from the code location's asset graph (every asset, external ones
included); without one, the bundled pipeline's is used: ``raw/patients`` -> ``stg/patients``
(and ``stg/patients_rejected``) -> ``core/dim_patient``.
"""

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from healthmon_dagster.etl import catalog


@dataclass(frozen=True)
class Lineage:
    downstream: Mapping[str, frozenset[str]]  # asset -> every asset downstream of it, transitively

    @classmethod
    def from_parents(cls, parents: Mapping[str, Iterable[str]]) -> "Lineage":
        """From each asset's direct upstream assets."""
        children: dict[str, set[str]] = {}
        for child, ups in parents.items():
            for up in ups:
                children.setdefault(up, set()).add(child)
        closure: dict[str, frozenset[str]] = {}

        def below(key: str, seen: frozenset[str]) -> frozenset[str]:
            if key in closure:
                return closure[key]
            out: set[str] = set()
            for child in children.get(key, ()):
                if child not in seen:  # a cycle cannot recurse forever
                    out |= {child} | below(child, seen | {child})
            closure[key] = frozenset(out)
            return closure[key]

        for key in set(children) | set(parents):
            below(key, frozenset({key}))
        return cls(closure)

    @classmethod
    def bundled(cls) -> "Lineage":
        return cls.from_parents(
            {
                catalog.STG_PATIENTS.key: [catalog.RAW_PATIENTS.key],
                catalog.STG_PATIENTS_REJECTED.key: [catalog.RAW_PATIENTS.key],
                catalog.CORE_DIM_PATIENT.key: [catalog.STG_PATIENTS.key],
            }
        )

    @classmethod
    def of_repository(cls, repository: Any) -> "Lineage":
        """From a Dagster ``RepositoryDefinition``'s asset graph (every asset, external ones
        included); the bundled pipeline's without one."""
        if repository is None:
            return cls.bundled()
        graph = repository.asset_graph
        return cls.from_parents(
            {
                key.to_user_string(): [p.to_user_string() for p in graph.get(key).parent_keys]
                for key in graph.get_all_asset_keys()
            }
        )

    def is_downstream(self, asset: str, of: str) -> bool:
        return asset in self.downstream.get(of, frozenset())
