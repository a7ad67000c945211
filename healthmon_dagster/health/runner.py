"""Runs many health checks concurrently, each attempt in a worker thread with its own deadline.

A check that does not answer within ``timeout_seconds`` is reported CRITICAL ("timed out after Xs")
at its deadline and its thread is abandoned (implementations pass ``ctx.remaining()`` to their socket
timeouts, so abandoned threads end soon after). Checks start as soon as their own dependencies have
finished, so a slow check delays only the checks that depend on it; a check whose dependency failed
reports UNKNOWN instead of running. Results never hold a stack trace: an unexpected exception becomes
one line naming the check, the exception type and message.
"""

import itertools
import queue
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from healthmon_dagster.enums import HealthComponent, HealthStatus
from healthmon_dagster.health.context import CheckContext, CheckEnvironment
from healthmon_dagster.health.registry import resolve
from healthmon_dagster.health.result import (
    CheckFailed,
    HealthCheck,
    HealthCheckResult,
    Observation,
    describe_exception,
    short,
)
from healthmon_dagster.health.thresholds import apply_thresholds

# (token, observation, begin, end) of a finished attempt
_Completion = tuple[int, Observation, float, float]


@dataclass
class RunReport:
    """Results in completion order, plus the runner's own overhead per check (benchmarks)."""

    results: list[HealthCheckResult]
    overhead_ms: dict[str, float]
    wall_time_s: float

    def by_id(self) -> dict[str, HealthCheckResult]:
        return {r.check_id: r for r in self.results}


@dataclass
class _Attempt:
    check: HealthCheck
    number: int
    deadline: float
    dispatched: float
    token: int


@dataclass
class _State:
    check: HealthCheck
    attempts: int = 0
    overhead_s: float = 0.0
    not_before: float = 0.0


class _WorkerPool:
    """Long-lived worker threads (a thread start per check would dominate cheap checks).

    A worker whose attempt timed out is abandoned: a replacement starts at once, and the
    abandoned thread exits when its call finally returns.
    """

    def __init__(self, size: int, completions: "queue.SimpleQueue[_Completion]") -> None:
        self.tasks: queue.SimpleQueue[tuple[_Attempt, CheckContext] | None] = queue.SimpleQueue()
        self.completions = completions
        self.abandoned: set[int] = set()
        self.live = 0
        for _ in range(max(1, size)):
            self._spawn()

    def _spawn(self) -> None:
        self.live += 1
        threading.Thread(target=self._work, name="healthcheck-worker", daemon=True).start()

    def _work(self) -> None:
        while (item := self.tasks.get()) is not None:
            attempt, ctx = item
            begin = time.monotonic()
            obs = _run_attempt(attempt.check, ctx)
            self.completions.put((attempt.token, obs, begin, time.monotonic()))
            if attempt.token in self.abandoned:
                return  # a replacement took this worker's place at the deadline

    def submit(self, attempt: _Attempt, ctx: CheckContext) -> None:
        self.tasks.put((attempt, ctx))

    def abandon(self, token: int) -> None:
        self.abandoned.add(token)
        self.live -= 1
        self._spawn()

    def close(self) -> None:
        # A worker abandoned just after it finished is still alive: one extra stop for each.
        for _ in range(self.live + len(self.abandoned)):
            self.tasks.put(None)


def _to_observation(value: Any, check: HealthCheck) -> Observation:
    if isinstance(value, Observation):
        return value
    if isinstance(value, HealthStatus):
        return Observation(status=value)
    if isinstance(value, bool) or value is None:
        if value is False:
            return Observation().error(f"{check.check_id} reported failure")
        return Observation()
    return Observation().error(
        f"check implementation returned {type(value).__name__}; return an Observation, "
        "a HealthStatus or a bool"
    )


def _run_attempt(check: HealthCheck, ctx: CheckContext) -> Observation:
    """Call the implementation; every exception becomes one CRITICAL line without a traceback."""
    try:
        return _to_observation(resolve(check)(check, ctx), check)
    except CheckFailed as exc:
        return Observation().error(str(exc))
    except Exception as exc:
        return Observation().error(
            f"{check.kind} check '{check.check_id}' raised {describe_exception(exc)}"
        )


class _Scheduler:
    """One run: which checks are ready, running, waiting for a retry or done."""

    def __init__(
        self,
        runner: "HealthCheckRunner",
        checks: Sequence[HealthCheck],
        known_results: Mapping[str, HealthCheckResult] | None,
        on_result: Callable[[HealthCheckResult], object] | None,
        respect_dependencies: bool,
    ) -> None:
        ids = [c.check_id for c in checks]
        if len(set(ids)) != len(ids):
            dupes = sorted({i for i in ids if ids.count(i) > 1})
            raise ValueError(f"duplicate check_id(s) in one run: {', '.join(dupes)}")
        self.environment = runner.environment
        self.thresholds = runner.thresholds
        self.max_concurrency = runner.max_concurrency
        self.retry_delay_seconds = runner.retry_delay_seconds
        self.on_result = on_result
        self.respect_dependencies = respect_dependencies
        self.states = {c.check_id: _State(c) for c in checks}
        self.done: dict[str, HealthCheckResult] = {}
        self.known = dict(known_results or {})
        self.waiting_on: dict[str, set[str]] = {}
        self.dependents: dict[str, list[str]] = {}
        for c in checks:
            deps = (
                {d for d in c.dependencies if d in self.states} if respect_dependencies else set()
            )
            self.waiting_on[c.check_id] = deps
            for d in deps:
                self.dependents.setdefault(d, []).append(c.check_id)
        self.ready = [i for i in ids if not self.waiting_on[i]]
        self.ready.reverse()  # pop() from the end keeps configuration order
        self.delayed: list[str] = []  # retries waiting for their backoff
        self.running: dict[int, _Attempt] = {}
        self.completions: queue.SimpleQueue[_Completion] = queue.SimpleQueue()
        self.pool = _WorkerPool(min(self.max_concurrency, len(checks)), self.completions)
        self.tokens = itertools.count(1)
        self.overhead: dict[str, float] = {}

    def finished(self) -> bool:
        return len(self.done) == len(self.states)

    def run(self) -> None:
        try:
            while not self.finished():
                now = time.monotonic()
                self._release_retries(now)
                while self.ready and len(self.running) < self.max_concurrency:
                    self._dispatch(self.ready.pop(), time.monotonic())
                if self.finished():
                    break
                if not self.running:
                    self._idle(now)
                    continue
                self._wait(now)
        finally:
            self.pool.close()

    def _release_retries(self, now: float) -> None:
        for check_id in [d for d in self.delayed if self.states[d].not_before <= now]:
            self.delayed.remove(check_id)
            self.ready.append(check_id)

    def _idle(self, now: float) -> None:
        """Nothing runs: sleep until the next retry is due, or report a dependency cycle."""
        if self.delayed:
            time.sleep(max(0.0, min(self.states[d].not_before for d in self.delayed) - now))
            return
        if self.ready:
            return
        # Nothing runs and nothing can start: only possible with a dependency cycle.
        stuck = sorted(set(self.states) - set(self.done))
        raise ValueError(f"dependency cycle among health checks: {', '.join(stuck)}")

    def _wait(self, now: float) -> None:
        """Collect one completion (or none by the next deadline or retry), then time out overdue
        attempts."""
        wake = min(a.deadline for a in self.running.values())
        if self.delayed:
            wake = min(wake, min(self.states[d].not_before for d in self.delayed))
        try:
            token, obs, begin, end = self.completions.get(timeout=max(0.0, wake - now))
        except queue.Empty:
            token = 0
        now = time.monotonic()
        if token:
            attempt = self.running.pop(token, None)
            if attempt is not None:  # None: an abandoned attempt answered after its deadline
                state = self.states[attempt.check.check_id]
                state.overhead_s += (begin - attempt.dispatched) + (now - end)
                self._conclude(attempt, obs, end - begin, now)
            else:
                return
        self._time_out(now)

    def _time_out(self, now: float) -> None:
        """Attempts past their deadline: reported now, their threads abandoned."""
        for tok, attempt in list(self.running.items()):
            if attempt.deadline <= now:
                del self.running[tok]
                self.pool.abandon(tok)
                timeout = attempt.check.timeout_seconds
                obs = Observation(details={"timed_out": True}).error(
                    f"{attempt.check.kind} check '{attempt.check.check_id}' timed out after "
                    f"{timeout:g}s (attempt {attempt.number}); the component did not answer "
                    "in time: check that it is up and not overloaded, or raise timeout_seconds"
                )
                self._conclude(attempt, obs, now - attempt.dispatched, now)

    def _finish(self, result: HealthCheckResult) -> None:
        self.done[result.check_id] = result
        if self.on_result is not None:
            self.on_result(result)
        for child in self.dependents.get(result.check_id, ()):
            self.waiting_on[child].discard(result.check_id)
            if not self.waiting_on[child]:
                self.ready.append(child)

    def _blocked_by(self, check: HealthCheck) -> tuple[str, str] | None:
        if not self.respect_dependencies:
            return None
        for dep in check.dependencies:
            res = self.done.get(dep) or self.known.get(dep)
            if res is None:
                continue
            if res.status == HealthStatus.CRITICAL:
                return dep, f"dependency {dep} failed ({res.message}); {check.check_id} not run"
            if res.status == HealthStatus.UNKNOWN and res.details.get("blocked_by"):
                return dep, f"dependency {dep} failed (it was not run); {check.check_id} not run"
        return None

    def _dispatch(self, check_id: str, now: float) -> None:
        state = self.states[check_id]
        check = state.check
        if state.attempts == 0:
            blocked = self._blocked_by(check)
            if blocked is not None:
                failed, reason = blocked
                self._finish(
                    HealthCheckResult(
                        check_id=check_id,
                        timestamp=datetime.now(UTC),
                        status=HealthStatus.UNKNOWN,
                        response_time_ms=0.0,
                        details={"blocked_by": failed},
                        errors=[short(reason)],
                        attempts=0,
                    )
                )
                return
        state.attempts += 1
        attempt = _Attempt(
            check, state.attempts, now + check.timeout_seconds, now, next(self.tokens)
        )
        self.running[attempt.token] = attempt
        self.pool.submit(attempt, CheckContext(self.environment, attempt.deadline, attempt.number))

    def _conclude(self, attempt: _Attempt, obs: Observation, own_s: float, now: float) -> None:
        state = self.states[attempt.check.check_id]
        response_ms = round(own_s * 1000, 3)
        result = HealthCheckResult(
            check_id=attempt.check.check_id,
            timestamp=datetime.now(UTC),
            status=obs.derived_status(),
            response_time_ms=response_ms,
            details=obs.details,
            errors=obs.errors,
            warnings=obs.warnings,
            metrics={**obs.metrics, "response_time_ms": response_ms},
            attempts=state.attempts,
        )
        apply_thresholds(result, attempt.check.component, self.thresholds)
        if (
            result.status == HealthStatus.CRITICAL
            and state.attempts <= attempt.check.retry_attempts
        ):
            delay = min(2.0, self.retry_delay_seconds * (2 ** (state.attempts - 1)))
            state.not_before = now + delay
            self.delayed.append(attempt.check.check_id)
            return
        self._finish(result)
        self.overhead[attempt.check.check_id] = state.overhead_s * 1000


class HealthCheckRunner:
    """Runs checks concurrently with per-check timeouts, retries and dependencies.

    ``max_concurrency`` bounds attempts running at once (a timed-out attempt stops counting at its
    deadline). ``retry_delay_seconds`` is the pause before a retry (doubling, at most 2 s).
    A CRITICAL attempt (including a timeout) is retried up to the check's ``retry_attempts``.
    """

    def __init__(
        self,
        environment: CheckEnvironment | None = None,
        max_concurrency: int = 32,
        retry_delay_seconds: float = 0.2,
        thresholds: Sequence[Any] = (),
    ) -> None:
        self.environment = environment or CheckEnvironment()
        # healthmon.yaml ``thresholds:``, judged on each attempt before retries and dependents see it
        self.thresholds = list(thresholds)
        self.max_concurrency = max(1, max_concurrency)
        self.retry_delay_seconds = retry_delay_seconds

    def run_health_check(self, check: HealthCheck) -> HealthCheckResult:
        """Run one check (with its retries and timeout), ignoring its dependencies."""
        return self.run([check], known_results=None, respect_dependencies=False).results[0]

    def run_all(
        self,
        checks: Sequence[HealthCheck],
        component: HealthComponent | None = None,
        known_results: Mapping[str, HealthCheckResult] | None = None,
        on_result: Callable[[HealthCheckResult], object] | None = None,
    ) -> list[HealthCheckResult]:
        """Run the enabled checks (of ``component`` if given); results in the order of ``checks``."""
        selected = [c for c in checks if component is None or c.component == component]
        report = self.run(selected, known_results, on_result=on_result)
        order = {c.check_id: i for i, c in enumerate(selected)}
        return sorted(report.results, key=lambda r: order[r.check_id])

    def run(
        self,
        checks: Sequence[HealthCheck],
        known_results: Mapping[str, HealthCheckResult] | None = None,
        on_result: Callable[[HealthCheckResult], object] | None = None,
        respect_dependencies: bool = True,
    ) -> RunReport:
        """Run ``checks`` (disabled ones are left out) and return every result.

        A dependency that is not among ``checks`` is judged by ``known_results`` (e.g. its latest
        stored result); a dependency with no result at all does not hold the check back.
        """
        started = time.monotonic()
        enabled = [c for c in checks if c.enabled]
        scheduler = _Scheduler(self, enabled, known_results, on_result, respect_dependencies)
        scheduler.run()
        return RunReport(
            results=list(scheduler.done.values()),
            overhead_ms=scheduler.overhead,
            wall_time_s=time.monotonic() - started,
        )
