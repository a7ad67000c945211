"""``healthmon alerts test-channel``: a test notification through the channel's real notifier,
its resolve in the same thread, and clear errors for unknown or unconfigured channels."""

from pathlib import Path

import pytest
from click.testing import CliRunner

from healthmon_dagster.cli.main import cli
from healthmon_dagster_tests.notify.fixtures import Answer, slack_server, webhook_server

CONFIG = """\
channels:
  hook:
    type: webhook
    enabled: false
    configuration:
      url_env: TEST_CLI_HOOK_URL
  chat:
    type: slack
    configuration:
      channel: "#alerts"
      base_url: {slack}/api/
"""


def _config(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, slack: str = "http://127.0.0.1:9"
) -> None:
    path = tmp_path / "healthmon.yaml"
    path.write_text(CONFIG.format(slack=slack))
    monkeypatch.setenv("HEALTHMON_CONFIG", str(path))


def test_a_webhook_test_reaches_the_receiver(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    with webhook_server() as server:
        _config(tmp_path, monkeypatch)
        monkeypatch.setenv("TEST_CLI_HOOK_URL", f"{server.url}/in")
        result = CliRunner().invoke(cli, ["alerts", "test-channel", "hook"])

    assert result.exit_code == 0, result.output
    assert "channel 'hook' is disabled (enabled: false); testing it anyway" in result.output
    assert "OK: hook (webhook) accepted the test firing notification: HTTP 200" in result.output
    [request] = server.requests
    [alert] = request.json["alerts"]
    assert alert["labels"]["rule_id"] == "healthmon_test_notification"
    assert "test-channel hook" in alert["annotations"]["description"]


def test_slack_test_and_its_resolve_in_the_same_thread(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    with slack_server() as slack:
        _config(tmp_path, monkeypatch, slack.url)
        monkeypatch.setenv("SLACK_BOT_TOKEN", "xoxb-cli-test")
        result = CliRunner().invoke(cli, ["alerts", "test-channel", "chat", "--resolve"])

    assert result.exit_code == 0, result.output
    post, reply = slack.on("/api/chat.postMessage")
    assert reply.json["thread_ts"] and reply.json["channel"] == "C0ALERTS"
    assert post.json["channel"] == "#alerts"
    assert "accepted the test resolved notification: replied in thread" in result.output


def test_unknown_unconfigured_and_refusing_channels_exit_non_zero(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    _config(tmp_path, monkeypatch)
    monkeypatch.delenv("TEST_CLI_HOOK_URL", raising=False)
    monkeypatch.setenv("SLACK_BOT_TOKEN", "xoxb-cli-secret")
    runner = CliRunner()

    unknown = runner.invoke(cli, ["alerts", "test-channel", "pager"])
    unset = runner.invoke(cli, ["alerts", "test-channel", "hook"])
    with webhook_server() as server:
        server.then(Answer(403, b"forbidden"))
        monkeypatch.setenv("TEST_CLI_HOOK_URL", f"{server.url}/in")
        refused = runner.invoke(cli, ["alerts", "test-channel", "hook"])

    assert (
        unknown.exit_code == 2
        and "no channel 'pager' under channels: (defined: chat, hook, log)" in unknown.output
    )
    assert unset.exit_code == 1
    assert "channel 'hook' is not configured: TEST_CLI_HOOK_URL is not set" in unset.output
    assert refused.exit_code == 1 and "FAILED: webhook channel 'hook'" in refused.output
    assert "answered HTTP 403" in refused.output


def test_the_log_channel_always_works(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    _config(tmp_path, monkeypatch)
    result = CliRunner().invoke(cli, ["alerts", "test-channel", "log"])

    assert result.exit_code == 0, result.output
    assert "OK: log (log) accepted the test firing notification: logged 1 line(s)" in result.output
