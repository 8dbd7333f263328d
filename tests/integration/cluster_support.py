"""What the cluster tests share: the brokers this build has, their URLs with a
private ``?prefix=``, the cache URL likewise, and nginx's presence."""

from __future__ import annotations

import importlib.util
import os
import uuid

import pytest

from parley.testing.cluster import find_nginx
from tests.conftest import require_service

BROKERS = {
    # broker: (backend module under parley.bus, service in tests.conftest.SERVICES, URL)
    "redis": ("redis", "redis", "redis://127.0.0.1:6379/0"),
    "nats": ("nats", "nats", "nats://127.0.0.1:4222"),
    "amqp": ("rabbitmq", "rabbitmq", "amqp://guest:guest@127.0.0.1:5672/"),
}


def has_backend(broker: str) -> bool:
    """Whether this build has the bus backend for ``broker`` yet."""
    return importlib.util.find_spec(f"parley.bus.{BROKERS[broker][0]}") is not None


def require_broker(broker: str) -> str:
    """A bus URL of ``broker`` with a prefix of its own; skip (or under CI=true, fail)
    when the service is down; skip when this build has no backend for it."""
    module, service, url = BROKERS[broker]
    if not has_backend(broker):
        pytest.skip(f"no parley.bus.{module} backend in this build")
    require_service(service)
    return f"{url}?prefix=t{uuid.uuid4().hex[:10]}"


def cache_url() -> str:
    """A Redis cache URL with a key prefix of its own."""
    require_service("redis")
    return f"redis://127.0.0.1:6379/0?prefix=t{uuid.uuid4().hex[:10]}"


def require_nginx() -> None:
    """Skip (or, under CI=true, fail) when nginx is not installed."""
    if find_nginx() is None:
        message = "nginx is not installed (apt-get install nginx)"
        if os.environ.get("CI") == "true":
            pytest.fail(f"{message} (CI=true: services are required)")
        pytest.skip(message)
