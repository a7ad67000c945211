"""Receiver URLs must be http(s): a ``file://``, ``ftp://`` or schemeless URL for Slack's
``base_url``, PagerDuty's ``url`` (literal in healthmon.yaml: a configuration error naming the
channel and key) or a webhook's or Teams' URL (from an environment variable: "not configured",
naming the variable and channel, never the value) is refused before anything is opened.
Plain http on loopback stays allowed (a local receiver)."""

from pathlib import Path

import pytest

from healthmon_dagster.config.loader import ConfigError, load_config_text
from healthmon_dagster.enums import NotificationKind
from healthmon_dagster.notify.base import Message, NotConfigured, receiver_url_problem
from healthmon_dagster.notify.channels import build_notifier
from healthmon_dagster.notify.http import post
from healthmon_dagster_tests.notify.fixtures import webhook_server

BAD = ["file:///etc/passwd", "ftp://files.example.org/in", "/var/run/hook", "http:///no-host"]


@pytest.mark.parametrize("url", BAD)
def test_a_literal_url_that_is_not_http_is_a_configuration_error(url: str) -> None:
    with pytest.raises(ConfigError) as slack:
        load_config_text(
            f"channels:\n  chat:\n    type: slack\n    configuration: {{channel: C1, "
            f"base_url: '{url}'}}\n"
        )
    assert "channels.chat.configuration.base_url" in str(slack.value)
    with pytest.raises(ConfigError) as pagerduty:
        load_config_text(
            f"channels:\n  pager:\n    type: pagerduty\n    configuration: {{url: '{url}'}}\n"
        )
    assert "channels.pager.configuration.url" in str(pagerduty.value)
    assert "only http:// and https:// URLs are allowed" in str(pagerduty.value) or (
        "no host" in str(pagerduty.value)
    )


def test_loopback_and_https_urls_are_accepted() -> None:
    for url in ("http://127.0.0.1:8080/api/", "http://localhost/x", "https://slack.com/api/"):
        assert receiver_url_problem(url) is None
        load_config_text(
            f"channels:\n  chat:\n    type: slack\n    configuration: {{channel: C1, "
            f"base_url: '{url}'}}\n"
        )


@pytest.mark.parametrize("kind", ["webhook", "teams"])
def test_a_url_from_the_environment_that_is_not_http_is_not_configured(
    kind: str, tmp_path: Path
) -> None:
    secret = tmp_path / "secret.txt"
    secret.write_text("file content that must never be read")
    url = f"file://{secret}"
    config = load_config_text(
        f"channels:\n  out:\n    type: {kind}\n    configuration: {{url_env: OUT_URL}}\n"
    )
    notifier = build_notifier("out", config.channels["out"], env={"OUT_URL": url})
    (problem,) = notifier.configured()
    assert problem.startswith("OUT_URL (the ") and "'out'" in problem
    assert "its scheme is file:" in problem and str(secret) not in problem
    message = Message("out", NotificationKind.FIRING, "g", (), "k" * 64)
    with pytest.raises(NotConfigured) as refused:
        notifier.send(message)
    assert str(secret) not in str(refused.value)


def test_post_never_opens_a_file_url(tmp_path: Path) -> None:
    target = tmp_path / "x.json"
    with pytest.raises(NotConfigured, match="the URL of webhook channel 'w' .* is unusable"):
        post(f"file://{target}", b"{}", {}, 1, "webhook channel 'w' (W_URL)")
    assert not target.exists()
    with webhook_server() as receiver:  # loopback http is posted to
        assert post(receiver.url, b"{}", {}, 2, "webhook channel 'w' (W_URL)").status == 200
    assert len(receiver.requests) == 1
