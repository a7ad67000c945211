"""The Slack check against a local stand-in for ``auth.test``: ok, invalid_auth, no token."""

import pytest
from pytest_httpserver import HTTPServer

from healthmon_dagster.enums import HealthStatus
from healthmon_dagster_tests.health.checks.fixtures import run


def test_slack_auth_test_ok_and_invalid_auth(
    httpserver: HTTPServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("TEST_SLACK_TOKEN", "xoxb-good")
    base = httpserver.url_for("/api/")
    httpserver.expect_ordered_request("/api/auth.test", method="POST").respond_with_json(
        {"ok": True, "team": "Data Platform", "user": "healthmon"}
    )
    httpserver.expect_ordered_request("/api/auth.test", method="POST").respond_with_json(
        {"ok": False, "error": "invalid_auth"}
    )

    ok = run("slack", token_env="TEST_SLACK_TOKEN", base_url=base)
    bad = run("slack", token_env="TEST_SLACK_TOKEN", base_url=base)

    assert ok.status == HealthStatus.HEALTHY, ok.errors
    assert bad.status == HealthStatus.CRITICAL
    assert bad.errors[0].startswith("Slack rejected the token in TEST_SLACK_TOKEN: invalid_auth")
    assert "xoxb-good" not in str(bad.to_dict())
    httpserver.check_assertions()


def test_slack_without_a_token_says_which_variable(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("TEST_SLACK_TOKEN", raising=False)

    result = run("slack", token_env="TEST_SLACK_TOKEN", base_url="http://127.0.0.1:9/")

    assert result.status == HealthStatus.CRITICAL
    assert "TEST_SLACK_TOKEN is not set" in result.errors[0]
