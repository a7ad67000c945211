"""Helpers shared by test modules: the admin URL of the test Postgres server, free loopback ports."""

import os
import socket

ADMIN_URL = os.environ.get(
    "HEALTHMON_TEST_POSTGRES_URL", "postgresql+psycopg2://postgres@127.0.0.1:5432/postgres"
)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])
