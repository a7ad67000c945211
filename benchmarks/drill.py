"""What the drills share (``alert_latency.py``, ``incident_drill.py``, ``outage_drill.py``,
``selfheal_drill.py``): a scratch Postgres database, a TCP proxy in front of it (the outage), the
project's ``healthmon.yaml`` with a drill's changes, and a site (HEALTHMON_HOME, DAGSTER_HOME with
the project's ``dagster.yaml``, a daemon log) with a real ``dagster-daemon`` on it.

Not a benchmark itself; the drills import it (``benchmarks/`` is on their ``sys.path``).
"""

import os
import subprocess
import sys
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import dagster as dg
import sqlalchemy as sa
import yaml

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from healthmon_dagster.etl.landing import LocalLandingSource  # noqa: E402
from healthmon_dagster.store.db import dispose_engines  # noqa: E402
from healthmon_dagster_tests.defs.pipeline.fixtures import (  # noqa: E402
    PROJECT_ROOT,
    TcpProxy,
    running_daemon,
    write_instance,
)

ADMIN_URL = os.environ.get(
    "HEALTHMON_BENCH_POSTGRES_URL", "postgresql+psycopg2://postgres@127.0.0.1:5432/postgres"
)
ETL_JOB = "patients_etl_job"


@contextmanager
def scratch_database(prefix: str) -> Iterator[str]:
    """A new Postgres database ``<prefix>_<random>`` on ``HEALTHMON_BENCH_POSTGRES_URL`` (default
    the local server); its URL; dropped (connections forced out) when the block ends."""
    admin = sa.create_engine(ADMIN_URL, isolation_level="AUTOCOMMIT")
    name = f"{prefix}_{uuid.uuid4().hex[:8]}"
    with admin.connect() as conn:
        conn.execute(sa.text(f'CREATE DATABASE "{name}"'))
    url = sa.engine.make_url(ADMIN_URL).set(database=name).render_as_string(hide_password=False)
    try:
        yield url
    finally:
        dispose_engines()
        with admin.connect() as conn:
            conn.execute(sa.text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()


def proxy_for(url: str) -> TcpProxy:
    """A started TCP proxy on loopback in front of the server of ``url`` (``proxy.url_for(url)``
    is the URL through it; ``stop()`` is the outage)."""
    target = sa.engine.make_url(url)
    proxy = TcpProxy((target.host or "127.0.0.1", target.port or 5432))
    proxy.start()
    return proxy


def project_config(folder: Path, edit: Callable[[dict[str, Any]], None]) -> Path:
    """The project's ``healthmon.yaml`` changed by ``edit``, written to ``folder``."""
    data = yaml.safe_load((PROJECT_ROOT / "healthmon.yaml").read_text())
    edit(data)
    path = folder / "healthmon.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


@dataclass(frozen=True)
class Site:
    """A drill's folders under ``root``: HEALTHMON_HOME (``home<suffix>``: the local landing area
    and SQLite files), DAGSTER_HOME (``dagster<suffix>``) and the daemon's log."""

    root: Path
    suffix: str = ""

    @property
    def home(self) -> Path:
        return self.root / f"home{self.suffix}"

    @property
    def dagster_home(self) -> Path:
        return self.root / f"dagster{self.suffix}"

    @property
    def log(self) -> Path:
        return self.root / f"daemon{self.suffix}.log"

    @property
    def landing(self) -> LocalLandingSource:
        return LocalLandingSource(self.home / "landing")

    def env(
        self, database_url: str, config: Path, health_url: str | None = None, **extra: str
    ) -> dict[str, str]:
        """The daemon's environment: this site, the warehouse (and the health store when it is
        elsewhere), the configuration, and ``extra`` variables."""
        env = {
            "DAGSTER_HOME": str(self.dagster_home),
            "HEALTHMON_HOME": str(self.home),
            "HEALTHMON_DATABASE_URL": database_url,
            "HEALTHMON_CONFIG": str(config),
        }
        if health_url is not None:
            env["HEALTHMON_HEALTH_DATABASE_URL"] = health_url
        return env | extra

    def stop_sensor(self, env: dict[str, str], name: str) -> None:
        """``dagster sensor stop NAME`` on this site's instance (before its daemon starts: the
        daemon then never ticks it)."""
        write_instance(self.dagster_home)
        dagster = Path(sys.executable).parent / "dagster"
        done = subprocess.run(
            [str(dagster), "sensor", "stop", name, "-w", str(PROJECT_ROOT / "workspace.yaml")],
            cwd=PROJECT_ROOT,
            env={**os.environ, "PYTHONPATH": str(PROJECT_ROOT), **env},
            capture_output=True,
            text=True,
            timeout=300,
        )
        if done.returncode != 0:
            raise RuntimeError(f"dagster sensor stop {name} failed: {done.stderr[-2000:]}")

    @contextmanager
    def daemon(
        self, env: dict[str, str]
    ) -> Iterator[tuple[dg.DagsterInstance, subprocess.Popen[bytes]]]:
        """DAGSTER_HOME with the project's ``dagster.yaml``, its instance, and ``dagster-daemon
        run`` on the project's workspace with ``env``, stopped (with its runs) when the block
        ends."""
        write_instance(self.dagster_home)
        self.home.mkdir(parents=True, exist_ok=True)
        with (
            dg.DagsterInstance.from_config(str(self.dagster_home)) as instance,
            running_daemon(env, self.log) as process,
        ):
            yield instance, process


def etl_runs(instance: dg.DagsterInstance) -> list[dg.RunRecord]:
    """The runs of the ETL job, newest first."""
    return list(instance.get_run_records(filters=dg.RunsFilter(job_name=ETL_JOB)))


def sensor_ticks(instance: dg.DagsterInstance, sensor_name: str) -> int:
    """How many ticks the sensor ``sensor_name`` has had."""
    for state in instance.all_instigator_state():
        if state.instigator_name == sensor_name:
            return len(instance.get_ticks(state.instigator_origin_id, state.selector_id))
    return 0
