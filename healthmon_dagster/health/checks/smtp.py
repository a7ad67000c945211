"""SMTP check: connect and EHLO to the server the email channel uses.

Parameters: ``host`` / ``port``, or ``host_env`` / ``port_env`` (default ``HEALTHMON_SMTP_HOST`` /
``HEALTHMON_SMTP_PORT``; port 25 when unset), ``latency_warning_ms`` (1000).
"""

import os
import smtplib
import time

from healthmon_dagster.health.context import CheckContext
from healthmon_dagster.health.kind import builtin
from healthmon_dagster.health.result import CheckFailed, HealthCheck, Observation


def _host_port(check: HealthCheck) -> tuple[str, int]:
    host_env = str(check.param("host_env", "HEALTHMON_SMTP_HOST"))
    port_env = str(check.param("port_env", "HEALTHMON_SMTP_PORT"))
    host = check.param("host") or os.environ.get(host_env)
    port = check.param("port") or os.environ.get(port_env) or 25
    if not host:
        raise CheckFailed(f"no SMTP host: set custom_parameters.host or the variable {host_env}")
    try:
        return str(host), int(port)
    except ValueError:
        raise CheckFailed(f"SMTP port {port!r} is not a number; fix {port_env}") from None


@builtin(
    "smtp",
    params=(
        "host",
        "host_env",
        "latency_warning_ms",
        "port",
        "port_env",
    ),
)
def smtp_check(check: HealthCheck, ctx: CheckContext) -> Observation:
    """The SMTP server accepts a connection and answers EHLO with 250."""
    host, port = _host_port(check)
    obs = Observation(details={"host": host, "port": port})
    start = time.perf_counter()
    try:
        with smtplib.SMTP(host, port, timeout=ctx.remaining()) as smtp:
            connect_ms = (time.perf_counter() - start) * 1000
            t = time.perf_counter()
            code, _ = smtp.ehlo()
            ehlo_ms = (time.perf_counter() - t) * 1000
            obs.details["extensions"] = sorted(smtp.esmtp_features)
    except (OSError, smtplib.SMTPException) as exc:
        reason = getattr(exc, "strerror", None) or f"{type(exc).__name__}: {exc}"
        return obs.error(
            f"SMTP server {host}:{port} is unavailable: {reason}; email notifications cannot be "
            "sent until it is reachable (check HEALTHMON_SMTP_HOST/PORT and the server)"
        )
    obs.metric("connect_ms", connect_ms)
    obs.threshold(
        "ehlo_ms", ehlo_ms, check.float_param("latency_warning_ms", 1000), None, "EHLO", "ms"
    )
    if code != 250:
        obs.error(f"SMTP server {host}:{port} answered EHLO with {code}, expected 250")
    return obs
