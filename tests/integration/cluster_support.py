"""What the cluster tests share: the brokers this build has, their URLs with a
private ``?prefix=``, the cache URL likewise, and nginx's presence."""

from __future__ import annotations

import asyncio
import contextlib
import importlib.util
import os
import threading
import uuid
from collections.abc import Coroutine, Iterator
from typing import Any, TypeVar
from urllib.parse import urlsplit, urlunsplit

import pytest

from parley.testing import postgres
from parley.testing.cluster import find_nginx
from parley.testing.proxy import TcpProxy
from tests.conftest import SERVICES, require_service

T = TypeVar("T")

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


class ProxyThread:
    """``TcpProxy`` instances on an event loop of their own, in a thread: the nodes'
    lines to PostgreSQL and the broker must keep flowing while a test blocks (a node
    starting) and across the tests of a module."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self.loop.run_forever, name="test-proxies")
        self._thread.start()
        self.proxies: list[TcpProxy] = []

    def _run(self, coro: Coroutine[Any, Any, T]) -> T:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(30)

    def add(self, port: int) -> TcpProxy:
        """A proxy to ``127.0.0.1:port``, accepting."""
        proxy = TcpProxy("127.0.0.1", port)
        self._run(proxy.start())
        self.proxies.append(proxy)
        return proxy

    def cut(self, proxy: TcpProxy) -> None:
        self._run(proxy.cut())

    def restore(self, proxy: TcpProxy) -> None:
        self._run(proxy.restore())

    def close(self) -> None:
        for proxy in self.proxies:
            self._run(proxy.close())
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join(10)
        self.loop.close()


def through(url: str, proxy: TcpProxy) -> str:
    """``url`` with its ``host:port`` replaced by the proxy's."""
    parts = urlsplit(url)
    userinfo = parts.netloc.rpartition("@")[0]
    netloc = f"{userinfo}@" if userinfo else ""
    return urlunsplit(parts._replace(netloc=f"{netloc}127.0.0.1:{proxy.port}"))


def broker_port(broker: str) -> int:
    return SERVICES[BROKERS[broker][1]][1]


@contextlib.contextmanager
def fresh_database() -> Iterator[str]:
    """A PostgreSQL database of its own, dropped afterwards."""
    require_service("postgres")
    admin = os.environ.get("PARLEY_TEST_POSTGRES", "postgresql://postgres@127.0.0.1:5432/test")
    with postgres.fresh_database(admin, "parley_cluster") as url:
        yield url
