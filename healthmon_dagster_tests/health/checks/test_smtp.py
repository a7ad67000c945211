"""The SMTP check against a real aiosmtpd server, up then down."""

from aiosmtpd.controller import Controller

from healthmon_dagster.enums import HealthStatus
from healthmon_dagster_tests.fixtures import free_port
from healthmon_dagster_tests.health.checks.fixtures import run


class _Sink:
    async def handle_DATA(self, server: object, session: object, envelope: object) -> str:
        return "250 OK"


def test_smtp_up_answers_ehlo_then_down_is_critical() -> None:
    port = free_port()
    controller = Controller(_Sink(), hostname="127.0.0.1", port=port)
    controller.start()
    try:
        up = run("smtp", host="127.0.0.1", port=port)
    finally:
        controller.stop()
    down = run("smtp", host="127.0.0.1", port=port)

    assert up.status == HealthStatus.HEALTHY, up.errors
    assert "ehlo_ms" in up.metrics
    assert down.status == HealthStatus.CRITICAL
    assert f"SMTP server 127.0.0.1:{port} is unavailable: Connection refused" in down.errors[0]
