"""Network checks: TCP connect to ``host:port`` endpoints and DNS resolution of names.

Parameters: ``endpoints`` (a list of ``"host:port"`` strings or ``{host, port, name}`` mappings),
``dns_names`` (names to resolve), ``latency_warning_ms`` (200), ``latency_critical_ms`` (none).
"""

import socket
import time
from typing import Any

from healthmon_dagster.health.context import CheckContext
from healthmon_dagster.health.kind import builtin
from healthmon_dagster.health.result import CheckFailed, HealthCheck, Observation, metric_safe


def _endpoints(check: HealthCheck) -> list[tuple[str, str, int]]:
    out = []
    for i, item in enumerate(check.param("endpoints", [])):
        try:
            if isinstance(item, str):
                host, _, port = item.rpartition(":")
                out.append((item, host, int(port)))
            else:
                name, number = str(item["host"]), int(item["port"])
                out.append((str(item.get("name") or f"{name}:{number}"), name, number))
        except (KeyError, ValueError, TypeError):
            raise CheckFailed(
                f"custom_parameters.endpoints[{i}] of '{check.check_id}' is {item!r}; "
                "use 'host:port' or {host: ..., port: ...}"
            ) from None
    return out


@builtin(
    "network",
    params=(
        "dns_names",
        "endpoints",
        "latency_critical_ms",
        "latency_warning_ms",
    ),
)
def network_check(check: HealthCheck, ctx: CheckContext) -> Observation:
    """Every configured endpoint accepts a TCP connection; every DNS name resolves."""
    endpoints = _endpoints(check)
    names: list[Any] = list(check.param("dns_names", []))
    if not endpoints and not names:
        raise CheckFailed(
            f"network check '{check.check_id}' has nothing to check; set "
            "custom_parameters.endpoints and/or dns_names"
        )
    obs = Observation(details={"endpoints": [e[0] for e in endpoints], "dns_names": names})
    warn = check.float_param("latency_warning_ms", 200)
    crit = check.float_param("latency_critical_ms", None)
    reachable = 0
    for label, host, port in endpoints:
        start = time.perf_counter()
        try:
            with socket.create_connection((host, port), timeout=ctx.remaining()):
                pass
        except OSError as exc:
            reason = exc.strerror or type(exc).__name__
            obs.error(
                f"TCP connect to {label} failed: {reason}; check that the service is up and "
                "that no firewall blocks it"
            )
            continue
        reachable += 1
        elapsed = (time.perf_counter() - start) * 1000
        obs.threshold(
            f"{metric_safe(label)}.connect_ms", elapsed, warn, crit, f"connect to {label}", "ms"
        )
    for name in names:
        start = time.perf_counter()
        try:
            socket.getaddrinfo(str(name), None)
        except OSError as exc:
            obs.error(f"DNS lookup of {name} failed: {exc.strerror or exc}; check the resolver")
            continue
        obs.metric(f"{metric_safe(str(name))}.dns_ms", (time.perf_counter() - start) * 1000)
    obs.metric("endpoints_reachable", reachable)
    obs.metric("endpoints_total", len(endpoints))
    return obs
