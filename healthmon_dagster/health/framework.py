"""The health check framework: definitions, results, a registry of implementations and a runner.

No Dagster import: the Dagster ops, the CLI and the tests use this module directly.

A check implementation is a callable ``impl(check, ctx) -> Observation`` (or a ``HealthStatus`` or a
``bool``). It records what it saw on an :class:`Observation`: metrics, details, warnings and errors;
the status follows from them (any error: CRITICAL, else any warning: WARNING, else HEALTHY) unless
the implementation sets one. Built-in implementations are registered by ``kind``
(:func:`register`); a ``custom`` check names its callable by import path (``impl: "pkg.mod:func"``).

The runner (:class:`HealthCheckRunner`) runs many checks concurrently, each attempt in its own
thread with its own deadline. A check that does not answer within ``timeout_seconds`` is reported
CRITICAL ("timed out after Xs") at its deadline and its thread is abandoned (implementations pass
``ctx.remaining()`` to their socket timeouts, so abandoned threads end soon after). Checks start as
soon as their own dependencies have finished, so a slow check delays only the checks that depend on
it; a check whose dependency failed reports UNKNOWN instead of running. Results never hold a stack
trace: an unexpected exception becomes one line naming the check, the exception type and message.
"""

import difflib
import importlib
import queue
import threading
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from healthmon_dagster.enums import HealthCheckType, HealthComponent, HealthStatus
from healthmon_dagster.store.errors import error_text

MAX_MESSAGE_CHARS = 500
_SEVERITY = {
    HealthStatus.HEALTHY: 0,
    HealthStatus.UNKNOWN: 1,
    HealthStatus.WARNING: 2,
    HealthStatus.CRITICAL: 3,
}


# --------------------------------------------------------------------------------------------------
# Definitions and results


@dataclass(frozen=True)
class HealthCheck:
    """One health check (the seed's HealthCheck): what to run, how often, and how patiently.

    ``timeout_seconds`` bounds each attempt; a CRITICAL attempt (including a timeout) is retried up
    to ``retry_attempts`` more times before the result is reported.
    """

    check_id: str
    component: HealthComponent
    kind: str
    name: str = ""
    description: str = ""
    check_type: HealthCheckType = HealthCheckType.CONNECTIVITY
    impl: str | None = None
    interval_seconds: int = 60
    timeout_seconds: float = 10.0
    retry_attempts: int = 0
    enabled: bool = True
    critical: bool = False
    dependencies: tuple[str, ...] = ()
    custom_parameters: Mapping[str, Any] = field(default_factory=dict)

    @classmethod
    def from_config(cls, config: Any) -> "HealthCheck":
        """From a ``HealthCheckConfiguration`` of ``healthmon.yaml``."""
        return cls(
            check_id=config.check_id,
            component=HealthComponent(config.component),
            kind=config.kind,
            name=config.name or config.check_id,
            description=config.description,
            check_type=HealthCheckType(config.check_type),
            impl=config.impl,
            interval_seconds=config.interval_seconds,
            timeout_seconds=float(config.timeout_seconds),
            retry_attempts=config.retry_attempts,
            enabled=config.enabled,
            critical=config.critical,
            dependencies=tuple(config.dependencies),
            custom_parameters=dict(config.custom_parameters),
        )

    def param(self, name: str, default: Any = None) -> Any:
        """``custom_parameters[name]``, else ``default``."""
        value = self.custom_parameters.get(name)
        return default if value is None else value

    def float_param(self, name: str, default: float | None) -> float | None:
        """A numeric parameter; a non-number raises :class:`CheckFailed` naming the parameter."""
        value = self.custom_parameters.get(name)
        if value is None:
            return default
        try:
            return float(value)
        except (TypeError, ValueError):
            raise CheckFailed(
                f"custom_parameters.{name} of health check '{self.check_id}' is {value!r}, "
                "not a number; fix it in healthmon.yaml"
            ) from None


@dataclass
class HealthCheckResult:
    """The outcome of one check run (the seed's HealthCheckResult)."""

    check_id: str
    timestamp: datetime
    status: HealthStatus
    response_time_ms: float
    details: dict[str, Any] = field(default_factory=dict)
    errors: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    metrics: dict[str, float] = field(default_factory=dict)
    attempts: int = 1

    @property
    def message(self) -> str:
        """One line for people: the errors, else the warnings, else 'ok'."""
        return "; ".join(self.errors or self.warnings) or "ok"

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict."""
        return {
            "check_id": self.check_id,
            "timestamp": self.timestamp.isoformat(),
            "status": self.status.value,
            "response_time_ms": self.response_time_ms,
            "details": self.details,
            "errors": self.errors,
            "warnings": self.warnings,
            "metrics": self.metrics,
            "attempts": self.attempts,
        }


class CheckFailed(Exception):
    """Raised by an implementation to report CRITICAL with exactly this message."""


@dataclass
class Observation:
    """What an implementation saw; the runner turns it into a :class:`HealthCheckResult`."""

    status: HealthStatus | None = None  # None: derived from errors and warnings
    details: dict[str, Any] = field(default_factory=dict)
    errors: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    metrics: dict[str, float] = field(default_factory=dict)

    def error(self, message: str) -> "Observation":
        self.errors.append(short(message))
        return self

    def warn(self, message: str) -> "Observation":
        self.warnings.append(short(message))
        return self

    def metric(self, name: str, value: float | int | None) -> None:
        if value is not None and value == value:  # drop None and NaN
            self.metrics[name] = round(float(value), 3)

    def threshold(
        self,
        name: str,
        value: float | None,
        warning: float | None,
        critical: float | None,
        what: str,
        unit: str = "",
        higher_is_worse: bool = True,
    ) -> None:
        """Record ``value`` as metric ``name`` and warn/fail when it crosses a threshold.

        The message names the measurement, its value and the threshold it crossed.
        """
        self.metric(name, value)
        if value is None:
            return

        def crossed(limit: float | None) -> bool:
            if limit is None:
                return False
            return value > limit if higher_is_worse else value < limit

        side = "above" if higher_is_worse else "below"
        shown = f"{value:.1f}{unit}" if isinstance(value, float) else f"{value}{unit}"
        if crossed(critical):
            self.error(f"{what} is {shown}, {side} the critical threshold {critical:g}{unit}")
        elif crossed(warning):
            self.warn(f"{what} is {shown}, {side} the warning threshold {warning:g}{unit}")

    def derived_status(self) -> HealthStatus:
        if self.status is not None:
            return self.status
        if self.errors:
            return HealthStatus.CRITICAL
        return HealthStatus.WARNING if self.warnings else HealthStatus.HEALTHY


def short(message: str) -> str:
    """One line, at most ``MAX_MESSAGE_CHARS``: never a multi-line dump or a traceback."""
    line = " ".join(str(message).split())
    return line if len(line) <= MAX_MESSAGE_CHARS else line[: MAX_MESSAGE_CHARS - 3] + "..."


def describe_exception(exc: BaseException) -> str:
    """``Type: first line of the message``, quoted values redacted (see ``store.errors``)."""
    return error_text(exc)


def worst(statuses: Iterable[HealthStatus]) -> HealthStatus:
    """The most severe status (CRITICAL > WARNING > UNKNOWN > HEALTHY); HEALTHY when empty."""
    return max(statuses, key=lambda s: _SEVERITY[s], default=HealthStatus.HEALTHY)


# --------------------------------------------------------------------------------------------------
# What a check may use


@dataclass(frozen=True)
class CheckEnvironment:
    """Where the monitored things are; the Dagster op builds it from resources, the CLI from settings.

    ``instance`` is a ``dagster.DagsterInstance`` for checks that read Dagster's history.
    """

    database_url: str | None = None
    health_database_url: str | None = None
    s3_bucket: str | None = None
    s3_prefix: str = ""
    aws_endpoint_url: str | None = None
    aws_region: str | None = None
    landing_dir: Path | None = None
    landing_pattern: str = "patients*.csv"
    instance: Any = None

    @classmethod
    def from_settings(cls, settings: Any = None, instance: Any = None) -> "CheckEnvironment":
        """From ``healthmon_dagster.settings.get_settings()`` (read now, not at import)."""
        if settings is None:
            from healthmon_dagster.settings import get_settings

            settings = get_settings()
        return cls(
            database_url=settings.database_url,
            health_database_url=settings.health_database_url,
            s3_bucket=settings.s3_bucket,
            s3_prefix=settings.s3_prefix,
            aws_endpoint_url=settings.aws_endpoint_url,
            aws_region=settings.aws_region,
            landing_dir=settings.landing_dir,
            instance=instance,
        )


@dataclass(frozen=True)
class CheckContext:
    """Handed to an implementation for one attempt."""

    environment: CheckEnvironment
    deadline: float  # time.monotonic() value
    attempt: int = 1

    def remaining(self, floor: float = 0.1) -> float:
        """Seconds left before the deadline (at least ``floor``): pass it to socket timeouts."""
        return max(floor, self.deadline - time.monotonic())

    def require_instance(self, check: "HealthCheck") -> Any:
        """The Dagster instance, for checks that read Dagster's own history."""
        if self.environment.instance is None:
            raise CheckFailed(
                f"{check.kind} check '{check.check_id}' needs a Dagster instance; run it from the "
                "health job or set DAGSTER_HOME"
            )
        return self.environment.instance


def metric_safe(text: str) -> str:
    """``text`` (an asset key, a host:port) as part of a metric name: non-alphanumerics -> ``_``."""
    return "".join(c if c.isalnum() else "_" for c in text)


CheckImpl = Callable[[HealthCheck, CheckContext], "Observation | HealthStatus | bool | None"]


# --------------------------------------------------------------------------------------------------
# Registry

_REGISTRY: dict[str, CheckImpl] = {}
_custom_cache: dict[str, CheckImpl] = {}
_registry_lock = threading.Lock()
_builtins_loaded = False


_PARAMS: dict[str, frozenset[str]] = {}


def register(kind: str, params: Iterable[str] | None = None) -> Callable[[CheckImpl], CheckImpl]:
    """Decorator: make ``impl`` the implementation of ``kind``.

    ``params`` names the ``custom_parameters`` it reads; when given, any other key in a check of
    this kind is a configuration error (a typo must not silently fall back to a default).
    """

    def wrap(impl: CheckImpl) -> CheckImpl:
        _REGISTRY[kind] = impl
        if params is not None:
            _PARAMS[kind] = frozenset(params)
        return impl

    return wrap


def parameter_problems(config: Any) -> list[str]:
    """``health_checks[i].custom_parameters.<key>: ...`` for every key its kind does not read."""
    registry()  # the built-ins declare their parameters when they register
    problems = []
    for i, check in enumerate(config.health_checks):
        known = _PARAMS.get(check.kind)
        if known is None:  # custom checks read what they like
            continue
        for key in sorted(set(check.custom_parameters) - known):
            close = difflib.get_close_matches(key, known, n=1)
            hint = f"did you mean '{close[0]}'?" if close else f"known: {', '.join(sorted(known))}"
            problems.append(
                f"health_checks[{i}].custom_parameters.{key}: not a parameter of the "
                f"{check.kind} check '{check.check_id}'; {hint}"
            )
    return problems


def registry() -> Mapping[str, CheckImpl]:
    """``kind`` -> implementation, built-ins included."""
    global _builtins_loaded
    if not _builtins_loaded:
        with _registry_lock:
            if not _builtins_loaded:
                importlib.import_module("healthmon_dagster.health.checks")
                _builtins_loaded = True
    return _REGISTRY


def load_custom(impl_path: str) -> CheckImpl:
    """Import ``"pkg.module:attr"``; raises :class:`CheckFailed` with what to fix."""
    cached = _custom_cache.get(impl_path)
    if cached is not None:
        return cached
    module_name, _, attr = impl_path.partition(":")
    try:
        target: Any = importlib.import_module(module_name)
        for part in attr.split("."):
            target = getattr(target, part)
    except (ImportError, AttributeError) as exc:
        raise CheckFailed(
            f"custom check impl '{impl_path}' could not be loaded ({describe_exception(exc)}); "
            "fix 'impl' in healthmon.yaml or install the module"
        ) from None
    if not callable(target):
        raise CheckFailed(f"custom check impl '{impl_path}' is not callable; fix 'impl'")
    _custom_cache[impl_path] = target
    return target


def resolve(check: HealthCheck) -> CheckImpl:
    """The implementation of ``check``: its ``impl`` for kind 'custom', else the registry's."""
    if check.kind == "custom":
        if not check.impl:
            raise CheckFailed(f"custom check '{check.check_id}' has no impl; set impl in config")
        return load_custom(check.impl)
    impl = registry().get(check.kind)
    if impl is None:
        known = ", ".join(sorted(registry()))
        raise CheckFailed(f"no implementation for kind '{check.kind}' (known: {known})")
    return impl


# --------------------------------------------------------------------------------------------------
# Runner


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
    begin: float = 0.0
    end: float = 0.0


@dataclass
class _State:
    check: HealthCheck
    attempts: int = 0
    first_dispatch: float = 0.0
    overhead_s: float = 0.0
    not_before: float = 0.0


class _WorkerPool:
    """Long-lived worker threads (a thread start per check would dominate cheap checks).

    A worker whose attempt timed out is abandoned: a replacement starts at once, and the
    abandoned thread exits when its call finally returns.
    """

    def __init__(
        self, size: int, completions: "queue.SimpleQueue[tuple[int, Observation, float, float]]"
    ) -> None:
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

    def submit(self, attempt: "_Attempt", ctx: CheckContext) -> None:
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


class HealthCheckRunner:
    """Runs checks concurrently with per-check timeouts, retries and dependencies.

    ``max_concurrency`` bounds attempts running at once (a timed-out attempt stops counting at its
    deadline). ``retry_delay_seconds`` is the pause before a retry (doubling, at most 2 s).
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
        on_result: Callable[[HealthCheckResult], None] | None = None,
    ) -> list[HealthCheckResult]:
        """Run the enabled checks (of ``component`` if given); results in the order of ``checks``."""
        selected = [c for c in checks if component is None or c.component == component]
        report = self.run(selected, known_results, on_result=on_result)
        order = {c.check_id: i for i, c in enumerate(selected)}
        return sorted(report.results, key=lambda r: order[r.check_id])

    def run_critical(self, checks: Sequence[HealthCheck]) -> list[HealthCheckResult]:
        """Run only the checks marked ``critical`` (and nothing they depend on that is not)."""
        return self.run_all([c for c in checks if c.critical])

    def run(
        self,
        checks: Sequence[HealthCheck],
        known_results: Mapping[str, HealthCheckResult] | None = None,
        on_result: Callable[[HealthCheckResult], None] | None = None,
        respect_dependencies: bool = True,
    ) -> RunReport:
        """Run ``checks`` (disabled ones are left out) and return every result.

        A dependency that is not among ``checks`` is judged by ``known_results`` (e.g. its latest
        stored result); a dependency with no result at all does not hold the check back.
        """
        started = time.monotonic()
        registry()  # import the built-ins here, not in the first check's thread and deadline
        enabled = [c for c in checks if c.enabled]
        ids = [c.check_id for c in enabled]
        if len(set(ids)) != len(ids):
            dupes = sorted({i for i in ids if ids.count(i) > 1})
            raise ValueError(f"duplicate check_id(s) in one run: {', '.join(dupes)}")
        states = {c.check_id: _State(c) for c in enabled}
        done: dict[str, HealthCheckResult] = {}
        known = dict(known_results or {})
        waiting_on: dict[str, set[str]] = {}
        dependents: dict[str, list[str]] = {}
        for c in enabled:
            deps = {d for d in c.dependencies if d in states} if respect_dependencies else set()
            waiting_on[c.check_id] = deps
            for d in deps:
                dependents.setdefault(d, []).append(c.check_id)

        ready: list[str] = [i for i in ids if not waiting_on[i]]
        ready.reverse()  # pop() from the end keeps configuration order
        delayed: list[str] = []  # retries waiting for their backoff
        running: dict[int, _Attempt] = {}
        completions: queue.SimpleQueue[tuple[int, Observation, float, float]] = queue.SimpleQueue()
        pool = _WorkerPool(min(self.max_concurrency, len(enabled)), completions)
        tokens = iter(range(1, 1 << 62))
        overhead: dict[str, float] = {}

        def finish(result: HealthCheckResult) -> None:
            done[result.check_id] = result
            if on_result is not None:
                on_result(result)
            for child in dependents.get(result.check_id, ()):
                waiting_on[child].discard(result.check_id)
                if not waiting_on[child]:
                    ready.append(child)

        def blocked_by(check: HealthCheck) -> tuple[str, str] | None:
            if not respect_dependencies:
                return None
            for dep in check.dependencies:
                res = done.get(dep) or known.get(dep)
                if res is None:
                    continue
                if res.status == HealthStatus.CRITICAL:
                    why = f"dependency {dep} failed ({res.message}); {check.check_id} not run"
                    return dep, why
                if res.status == HealthStatus.UNKNOWN and res.details.get("blocked_by"):
                    why = f"dependency {dep} failed (it was not run); {check.check_id} not run"
                    return dep, why
            return None

        def dispatch(check_id: str, now: float) -> None:
            state = states[check_id]
            check = state.check
            if state.attempts == 0:
                blocked = blocked_by(check)
                if blocked is not None:
                    failed, reason = blocked
                    finish(
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
                state.first_dispatch = now
            state.attempts += 1
            attempt = _Attempt(
                check, state.attempts, now + check.timeout_seconds, now, next(tokens)
            )
            running[attempt.token] = attempt
            pool.submit(attempt, CheckContext(self.environment, attempt.deadline, attempt.number))

        def conclude(attempt: _Attempt, obs: Observation, own_s: float, now: float) -> None:
            state = states[attempt.check.check_id]
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
                delayed.append(attempt.check.check_id)
                return
            finish(result)
            overhead[attempt.check.check_id] = state.overhead_s * 1000

        while len(done) < len(states):
            now = time.monotonic()
            for check_id in [d for d in delayed if states[d].not_before <= now]:
                delayed.remove(check_id)
                ready.append(check_id)
            while ready and len(running) < self.max_concurrency:
                dispatch(ready.pop(), time.monotonic())
            if len(done) == len(states):
                break
            if not running:
                if delayed:
                    time.sleep(max(0.0, min(states[d].not_before for d in delayed) - now))
                    continue
                if ready:
                    continue
                # Nothing runs and nothing can start: only possible with a dependency cycle.
                stuck = sorted(set(states) - set(done))
                raise ValueError(f"dependency cycle among health checks: {', '.join(stuck)}")
            wake = min(a.deadline for a in running.values())
            if delayed:
                wake = min(wake, min(states[d].not_before for d in delayed))
            try:
                token, obs, begin, end = completions.get(timeout=max(0.0, wake - now))
            except queue.Empty:
                token = 0
            now = time.monotonic()
            if token:
                attempt = running.pop(token, None)
                if attempt is None:
                    continue  # an abandoned attempt answered after its deadline: ignored
                state = states[attempt.check.check_id]
                state.overhead_s += (begin - attempt.dispatched) + (now - end)
                conclude(attempt, obs, end - begin, now)
            # Attempts past their deadline: reported now, their threads abandoned.
            for tok, attempt in list(running.items()):
                if attempt.deadline <= now:
                    del running[tok]
                    pool.abandon(tok)
                    timeout = attempt.check.timeout_seconds
                    obs = Observation(details={"timed_out": True}).error(
                        f"{attempt.check.kind} check '{attempt.check.check_id}' timed out after "
                        f"{timeout:g}s (attempt {attempt.number}); the component did not answer "
                        "in time: check that it is up and not overloaded, or raise timeout_seconds"
                    )
                    conclude(attempt, obs, now - attempt.dispatched, now)

        pool.close()
        return RunReport(
            results=list(done.values()),
            overhead_ms=overhead,
            wall_time_s=time.monotonic() - started,
        )


def checks_from_config(config: Any) -> list[HealthCheck]:
    """Every health check of a ``HealthConfiguration`` (disabled ones included; capacity
    forecasts only while the ``forecasting`` feature flag is on). Unknown ``custom_parameters``
    raise :class:`~healthmon_dagster.config.ConfigError`."""
    problems = parameter_problems(config)
    if problems:
        from healthmon_dagster.config import ConfigError

        raise ConfigError(problems, "healthmon.yaml")
    return [
        HealthCheck.from_config(c)
        for c in config.health_checks
        if c.kind != "capacity" or config.feature_enabled("forecasting")
    ]


_COMPARE: dict[str, tuple[Callable[[float, float], bool], str]] = {
    "greater_than": (lambda v, t: v > t, "above"),
    "greater_than_or_equals": (lambda v, t: v >= t, "at or above"),
    "less_than": (lambda v, t: v < t, "below"),
    "less_than_or_equals": (lambda v, t: v <= t, "at or below"),
    "equals": (lambda v, t: v == t, "equal to"),
    "not_equals": (lambda v, t: v != t, "not equal to"),
}


def apply_thresholds(
    result: HealthCheckResult, component: HealthComponent, thresholds: Sequence[Any]
) -> HealthCheckResult:
    """Judge ``result``'s metrics against the configured ``thresholds`` of its component.

    A threshold (``healthmon.yaml`` ``thresholds:``) names a component, a metric of its checks and a
    warning and critical level; crossing one adds a warning or an error that names the threshold,
    and raises the status (never lowers it). Thresholds on metrics the result does not carry, and
    the string operators (contains/not_contains), do not apply here.
    """
    for t in thresholds:
        if not t.enabled or HealthComponent(t.component) != component:
            continue
        compare = _COMPARE.get(getattr(t.operator, "value", t.operator))
        if compare is None:
            continue
        test, words = compare
        # "query_time_ms" also matches "warehouse.query_time_ms" (checks with several targets).
        matching = [
            (n, v)
            for n, v in result.metrics.items()
            if n == t.metric_name or n.endswith("." + t.metric_name)
        ]
        for name, value in matching:
            for level, status, sink in (
                (t.critical_threshold, HealthStatus.CRITICAL, result.errors),
                (t.warning_threshold, HealthStatus.WARNING, result.warnings),
            ):
                if test(value, level):
                    sink.append(
                        short(
                            f"{name} is {value:g}, {words} the {status.value} "
                            f"threshold {level:g} (threshold {t.threshold_id})"
                        )
                    )
                    result.status = worst([result.status, status])
                    break
    return result
