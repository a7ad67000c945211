"""What a check implementation may use: where the monitored things are (:class:`CheckEnvironment`),
its deadline (:class:`CheckContext`), and the plain-data views of Dagster's history and of S3 that
checks read through (:class:`DagsterFacts`, :data:`S3ClientFactory`).

No Dagster or boto3 import: the implementations backed by a Dagster instance and by dagster-aws live
in ``healthmon_dagster.defs.health.instance_facts`` and are handed in through the environment.
"""

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from healthmon_dagster.enums import HealthStatus
from healthmon_dagster.etl.landing import S3ClientFactory
from healthmon_dagster.health.result import CheckFailed, HealthCheck, Observation


@dataclass(frozen=True)
class FinishedRun:
    """A run of a job that ended (succeeded or failed)."""

    run_id: str
    succeeded: bool


@dataclass(frozen=True)
class StepTiming:
    """One step of a run: start and end as Unix timestamps (None while unknown)."""

    step_key: str
    start_time: float | None
    end_time: float | None


@dataclass(frozen=True)
class DaemonHeartbeat:
    """A Dagster daemon's health: ``last_heartbeat`` as a Unix timestamp, None when it never beat."""

    healthy: bool
    last_heartbeat: float | None


class DagsterFacts(Protocol):
    """What checks read from Dagster's own history."""

    def last_materialization_time(self, asset_key: str) -> float | None:
        """Unix time of the asset's (``"raw/patients"``) latest materialization, None if never."""
        ...

    def finished_runs(self, job_name: str, limit: int) -> Sequence[FinishedRun]:
        """The job's latest ``limit`` runs that succeeded or failed, newest first."""
        ...

    def step_timings(self, run_id: str) -> Sequence[StepTiming]:
        """The steps of one run."""
        ...

    def daemon_heartbeats(self, daemon_types: Sequence[str] | None) -> dict[str, DaemonHeartbeat]:
        """Heartbeat state of ``daemon_types`` (None: the instance's required daemons)."""
        ...


@dataclass(frozen=True)
class CheckEnvironment:
    """Where the monitored things are; the Dagster op builds it from resources.

    ``dagster`` reads Dagster's history for the checks that need it; ``s3_client`` builds the client
    of the S3 check.
    """

    database_url: str | None = None
    health_database_url: str | None = None
    s3_bucket: str | None = None
    s3_prefix: str = ""
    aws_endpoint_url: str | None = None
    aws_region: str | None = None
    landing_dir: Path | None = None
    landing_pattern: str = "patients*.csv"
    dagster: DagsterFacts | None = None
    s3_client: S3ClientFactory | None = None


@dataclass(frozen=True)
class CheckContext:
    """Handed to an implementation for one attempt."""

    environment: CheckEnvironment
    deadline: float  # time.monotonic() value
    attempt: int = 1

    def remaining(self, floor: float = 0.1) -> float:
        """Seconds left before the deadline (at least ``floor``): pass it to socket timeouts."""
        return max(floor, self.deadline - time.monotonic())

    def require_dagster(self, check: HealthCheck) -> DagsterFacts:
        """Dagster's history, for checks that read it."""
        if self.environment.dagster is None:
            raise CheckFailed(
                f"{check.kind} check '{check.check_id}' needs a Dagster instance; run it from the "
                "health job or set DAGSTER_HOME"
            )
        return self.environment.dagster


CheckImpl = Callable[[HealthCheck, CheckContext], Observation | HealthStatus | bool | None]
