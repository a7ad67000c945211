"""Helpers of the tests that drive a real ``dagster-daemon`` (and of ``benchmarks/outage_drill.py``):
warehouse outages (a TCP proxy in front of Postgres that is stopped and started; a SQLite database
file that cannot be opened), the daemon on a temporary DAGSTER_HOME, and what its runs did."""

import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager, suppress
from pathlib import Path
from typing import TypeVar

import dagster as dg
import psutil
import yaml
from sqlalchemy.engine import make_url

from healthmon_dagster_tests.fixtures import free_port

PROJECT_ROOT = Path(__file__).resolve().parents[3]
T = TypeVar("T")

QUICK_INSTANCE: dict[str, object] = {"run_queue": {"dequeue_interval_seconds": 1}}
"""dagster.yaml additions for tests: queued runs launched within a second instead of 5 s."""
QUICK_DAEMON_ENV = {"DAGSTER_EVENT_LOG_CONSUMER_DAEMON_INTERVAL_SECONDS": "1"}
"""dagster-daemon environment for tests: run_retries re-executes a dead run within a second
instead of 5 s (Dagster reads this variable; it has no instance setting)."""


class TcpProxy:
    """A TCP proxy on a loopback port in front of ``target``. :meth:`stop` is an outage: the port
    refuses connections and every open connection is cut; :meth:`start` serves the same port again."""

    def __init__(self, target: tuple[str, int]) -> None:
        self.target = target
        self.port = free_port()
        self._server: socket.socket | None = None
        self._open: set[socket.socket] = set()
        self._lock = threading.Lock()

    def url_for(self, url: str) -> str:
        """``url`` with its host and port replaced by the proxy's."""
        return make_url(url).set(host="127.0.0.1", port=self.port).render_as_string(False)

    @property
    def running(self) -> bool:
        return self._server is not None

    def start(self) -> None:
        server = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        server.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        server.bind(("127.0.0.1", self.port))
        server.listen(128)
        server.settimeout(0.2)
        self._server = server
        threading.Thread(target=self._accept, args=(server,), daemon=True).start()

    def stop(self) -> None:
        server, self._server = self._server, None
        if server is not None:
            server.close()
        with self._lock:
            conns, self._open = self._open, set()
        for conn in conns:
            _close(conn)

    def _accept(self, server: socket.socket) -> None:
        while self._server is server:
            try:
                client, _ = server.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            try:
                upstream = socket.create_connection(self.target, timeout=5)
            except OSError:
                _close(client)
                continue
            for s in (client, upstream):
                s.settimeout(None)
            with self._lock:
                if self._server is not server:  # stopped meanwhile
                    _close(client)
                    _close(upstream)
                    return
                self._open |= {client, upstream}
            for a, b in ((client, upstream), (upstream, client)):
                threading.Thread(target=_pump, args=(a, b), daemon=True).start()


def _close(s: socket.socket) -> None:
    with suppress(OSError):
        s.shutdown(socket.SHUT_RDWR)
    s.close()


def _pump(source: socket.socket, target: socket.socket) -> None:
    try:
        while data := source.recv(1 << 16):
            target.sendall(data)
    except OSError:
        pass
    finally:
        for s in (source, target):
            with suppress(OSError):
                s.shutdown(socket.SHUT_RDWR)


class SqliteOutage:
    """The SQLite warehouse at ``url`` made impossible to open, as when its volume is gone: the
    main database file (and its WAL files) moved aside and a folder put in its place. Connections
    already open keep working; every new one fails with "unable to open database file"."""

    def __init__(self, url: str) -> None:
        self.main = Path(str(make_url(url).database))
        self.aside = self.main.with_name(self.main.name + ".aside")
        self.running = True

    def _files(self) -> list[Path]:
        return [self.main.with_name(self.main.name + s) for s in ("", "-wal", "-shm")]

    def stop(self) -> None:
        self.aside.mkdir()
        for here in self._files():
            if here.exists():
                here.rename(self.aside / here.name)
        self.main.mkdir()
        self.running = False

    def start(self) -> None:
        self.main.rmdir()
        for here in self._files():
            moved = self.aside / here.name
            if moved.exists():
                moved.rename(here)
        self.aside.rmdir()
        self.running = True


def write_instance(
    dagster_home: Path,
    source: Path = PROJECT_ROOT / "dagster.yaml",
    extra: Mapping[str, object] | None = None,
) -> None:
    """DAGSTER_HOME with the project's instance settings (run_retries, run monitoring, the one
    ETL run at a time) and the top-level sections of ``extra`` (e.g. :data:`QUICK_INSTANCE`)."""
    dagster_home.mkdir(parents=True, exist_ok=True)
    target = dagster_home / "dagster.yaml"
    shutil.copyfile(source, target)
    if extra:
        with target.open("a") as out:
            out.write("\n" + yaml.safe_dump(dict(extra)))


@contextmanager
def running_daemon(
    env: Mapping[str, str], log: Path, stop_grace_seconds: float = 30
) -> Iterator[subprocess.Popen[bytes]]:
    """``dagster-daemon run`` on the project's workspace with ``env`` added to this process's
    environment (DAGSTER_HOME, HEALTHMON_*); its own process group, stopped (SIGTERM, then SIGKILL
    after ``stop_grace_seconds``; 0: SIGKILL at once) with its code server and run workers when
    the block ends."""
    daemon = Path(sys.executable).parent / "dagster-daemon"
    environment = {
        **os.environ,
        # The code location is this checkout, whatever the venv has installed.
        "PYTHONPATH": os.pathsep.join(
            p for p in (str(PROJECT_ROOT), os.environ.get("PYTHONPATH")) if p
        ),
        **env,
    }
    with open(log, "ab") as out:
        proc = subprocess.Popen(
            [str(daemon), "run", "-w", str(PROJECT_ROOT / "workspace.yaml")],
            cwd=PROJECT_ROOT,
            env=environment,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    try:
        yield proc
    finally:
        _stop_group(proc, stop_grace_seconds)


def _stop_group(proc: subprocess.Popen[bytes], grace_seconds: float) -> None:
    """SIGTERM to the daemon's process group (only processes it started), SIGKILL after
    ``grace_seconds`` (at once when 0)."""
    if grace_seconds > 0:
        try:
            os.killpg(proc.pid, signal.SIGTERM)
        except ProcessLookupError:
            return
        with suppress(subprocess.TimeoutExpired):
            proc.wait(timeout=grace_seconds)
    with suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGKILL)
    proc.wait(timeout=10)


def wait_for(
    what: str,
    probe: Callable[[], T | None],
    timeout: float,
    interval: float = 0.2,
    log: Path | None = None,
) -> T:
    """The first truthy value of ``probe()`` within ``timeout`` seconds; on timeout an
    AssertionError naming ``what`` (with the end of the daemon's ``log``)."""
    deadline = time.monotonic() + timeout
    while True:
        value = probe()
        if value:
            return value
        if time.monotonic() > deadline:
            tail = log.read_text(errors="replace")[-4000:] if log and log.exists() else ""
            raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}\n{tail}")
        time.sleep(interval)


def runs_with_tag(instance: dg.DagsterInstance, tag: str, value: str) -> list[dg.RunRecord]:
    """The runs tagged ``tag=value``, oldest first."""
    records = instance.get_run_records(filters=dg.RunsFilter(tags={tag: value}))
    return sorted(records, key=lambda r: r.create_timestamp)


_PID = re.compile(r"Started process for run \(pid: (\d+)\)")


def worker_pid(instance: dg.DagsterInstance, run_id: str) -> int | None:
    """The process id of the run's worker, from its "Started process for run" event."""
    for entry in instance.all_logs(run_id, of_type=dg.DagsterEventType.ENGINE_EVENT):
        event = entry.dagster_event
        m = _PID.search(
            " ".join([entry.user_message or "", (event.message if event else "") or ""])
        )
        if m:
            return int(m.group(1))
    return None


def step_events(instance: dg.DagsterInstance, run_id: str, step_key: str) -> set[str]:
    """The kinds of event (``STEP_START``, ``STEP_SUCCESS``...) the run logged for a step."""
    return {
        e.dagster_event.event_type_value
        for e in instance.all_logs(run_id)
        if e.dagster_event is not None and e.dagster_event.step_key == step_key
    }


def kill_worker(daemon: subprocess.Popen[bytes], pid: int) -> None:
    """SIGKILL a run worker, after checking that it descends from ``daemon`` (a process this
    test started), never anything else."""
    worker = psutil.Process(pid)
    assert any(p.pid == daemon.pid for p in worker.parents()), f"{pid} is not the daemon's"
    worker.send_signal(signal.SIGKILL)
