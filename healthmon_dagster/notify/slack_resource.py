"""dagster-slack's ``SlackResource`` with a ``base_url`` and a timeout.

dagster-slack's resource holds only the token; a deployment behind a proxy, and the tests (a local
stand-in for Slack's Web API), need the API's base URL too. The client it returns does not retry by
itself: the outbox dispatcher owns retries, backoff and ``Retry-After``.
"""

from typing import Any

from dagster_slack import SlackResource
from pydantic import Field
from slack_sdk import WebClient

SLACK_API_URL = "https://slack.com/api/"


class HealthmonSlackResource(SlackResource):
    """Slack Web API access for notifications: the bot token, the API's base URL, a timeout."""

    base_url: str = Field(
        default=SLACK_API_URL, description="Base URL of Slack's Web API (a proxy or a test server)."
    )
    timeout_seconds: float = Field(
        default=10, gt=0, description="Seconds to wait for Slack to answer."
    )

    def get_client(self) -> WebClient:
        base = self.base_url if self.base_url.endswith("/") else self.base_url + "/"
        # slack_sdk annotates the timeout as int but hands it to urllib, which takes seconds as a
        # float (the alert fast path and the tests wait less than a second or two).
        timeout: Any = self.timeout_seconds
        return WebClient(token=self.token, base_url=base, timeout=timeout, retry_handlers=[])


def slack_resource(token: str, base_url: str | None, timeout: float) -> HealthmonSlackResource:
    """The resource for a token read from the channel's variable (outside a Dagster run)."""
    return HealthmonSlackResource(
        token=token, base_url=base_url or SLACK_API_URL, timeout_seconds=timeout
    )


__all__ = ["HealthmonSlackResource", "slack_resource"]
