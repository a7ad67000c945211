"""dagster-slack's ``SlackResource`` with a ``base_url`` and a timeout.

dagster-slack's resource holds only the token; a deployment behind a proxy, and the tests (a local
stand-in for Slack's Web API), need the API's base URL too. The client it returns does not retry by
itself: the outbox dispatcher owns retries, backoff and ``Retry-After``.
"""

from dagster_slack import SlackResource
from pydantic import Field
from slack_sdk import WebClient

SLACK_API_URL = "https://slack.com/api/"


class HealthmonSlackResource(SlackResource):
    """Slack Web API access for notifications: the bot token, the API's base URL, a timeout."""

    base_url: str = Field(
        default=SLACK_API_URL, description="Base URL of Slack's Web API (a proxy or a test server)."
    )
    timeout_seconds: int = Field(default=10, description="Seconds to wait for Slack to answer.")

    def get_client(self) -> WebClient:
        base = self.base_url if self.base_url.endswith("/") else self.base_url + "/"
        return WebClient(
            token=self.token, base_url=base, timeout=self.timeout_seconds, retry_handlers=[]
        )


def slack_resource(token: str, base_url: str | None, timeout: float) -> HealthmonSlackResource:
    """The resource for a token read from the channel's variable (outside a Dagster run)."""
    return HealthmonSlackResource(
        token=token, base_url=base_url or SLACK_API_URL, timeout_seconds=max(1, round(timeout))
    )


__all__ = ["HealthmonSlackResource", "slack_resource"]
