"""Slack check: ``auth.test`` with the bot token, through slack_sdk's WebClient.

Parameters: ``token_env`` (default ``SLACK_BOT_TOKEN``), ``base_url`` (default Slack's API; tests
point it at a local server), ``latency_warning_ms`` (2000). The token is never logged or returned.
"""

import os
import time

from slack_sdk import WebClient
from slack_sdk.errors import SlackApiError

from healthmon_dagster.health.context import CheckContext
from healthmon_dagster.health.kind import builtin
from healthmon_dagster.health.result import CheckFailed, HealthCheck, Observation

DEFAULT_BASE_URL = "https://slack.com/api/"


@builtin(
    "slack",
    params=(
        "base_url",
        "latency_warning_ms",
        "token_env",
    ),
)
def slack_check(check: HealthCheck, ctx: CheckContext) -> Observation:
    """The bot token is accepted by Slack (``auth.test`` answers ok)."""
    token_env = str(check.param("token_env", "SLACK_BOT_TOKEN"))
    token = os.environ.get(token_env)
    if not token:
        raise CheckFailed(
            f"environment variable {token_env} is not set; Slack notifications cannot be sent "
            "until it holds the bot token"
        )
    base_url = str(check.param("base_url", DEFAULT_BASE_URL))
    if not base_url.endswith("/"):
        base_url += "/"
    obs = Observation(details={"base_url": base_url, "token_env": token_env})
    client = WebClient(token=token, base_url=base_url, timeout=max(1, int(ctx.remaining())))
    start = time.perf_counter()
    try:
        response = client.auth_test()
    except SlackApiError as exc:
        error = exc.response.get("error", "unknown_error") if exc.response else "unknown_error"
        return obs.error(
            f"Slack rejected the token in {token_env}: {error}; create or reinstall the app's "
            "bot token and update the variable"
        )
    except OSError as exc:
        reason = getattr(exc, "reason", None) or exc.strerror or type(exc).__name__
        return obs.error(f"Slack API at {base_url} is unreachable: {reason}; check the network")
    obs.threshold(
        "auth_test_ms",
        (time.perf_counter() - start) * 1000,
        check.float_param("latency_warning_ms", 2000),
        None,
        "Slack auth.test",
        "ms",
    )
    obs.details["team"] = response.get("team")
    return obs
