"""Shared fixtures: external services are skipped with a message where absent,
except under ``CI=true`` where a missing service fails the run."""

from __future__ import annotations

import os
import socket
from collections.abc import Iterator

import pytest

SERVICES = {
    "postgres": ("127.0.0.1", 5432),
    "redis": ("127.0.0.1", 6379),
    "rabbitmq": ("127.0.0.1", 5672),
    "nats": ("127.0.0.1", 4222),
}


def require_service(name: str) -> None:
    """Skip (or, under CI=true, fail) when the service is not listening."""
    host, port = SERVICES[name]
    try:
        with socket.create_connection((host, port), timeout=1):
            return
    except OSError:
        message = f"{name} is not reachable at {host}:{port}"
        if os.environ.get("CI") == "true":
            pytest.fail(f"{message} (CI=true: services are required)")
        pytest.skip(message)


@pytest.fixture(scope="session")
def postgres_url() -> Iterator[str]:
    """A fresh PostgreSQL database for this test session, dropped afterwards."""
    require_service("postgres")
    from parley.testing.postgres import fresh_database

    admin = os.environ.get("PARLEY_TEST_POSTGRES", "postgresql://postgres@127.0.0.1:5432/test")
    with fresh_database(admin, "parley_test") as url:
        yield url
