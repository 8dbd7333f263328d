"""Bus backends behind ``parley.ports.Bus``, chosen by URL scheme.

=============================================  =======================================
``memory://``                                  one process (the embedded default)
``redis://[:password@]host:port/db``           Redis pub/sub (``rediss://`` for TLS)
``nats://[user:password@]host:port``           NATS core subjects (``tls://`` for TLS)
``amqp://user:password@host:port/vhost``       RabbitMQ, a topic exchange (``amqps://``)
=============================================  =======================================

Every network URL takes ``?prefix=NAME``: channels (Redis), subjects (NATS) and the
exchange (RabbitMQ) are namespaced by it, so that several clusters, or parallel test
runs, share one broker without hearing each other. Parley strips it before the driver
sees the URL; other query parameters go to the driver.
"""

from __future__ import annotations

from parley.bus._common import split_url
from parley.ports import Bus

_EXTRAS = {"nats": ("nats", "nats-py", "nats"), "rabbitmq": ("aio_pika", "aio-pika", "rabbitmq")}


def _require(backend: str) -> None:
    module, package, extra = _EXTRAS[backend]
    try:
        __import__(module)
    except ImportError:
        raise ValueError(
            f"the {backend} bus needs the {package} package (pip install 'parley[{extra}]')"
        ) from None


def connect_bus(url: str, *, node_id: str) -> Bus:
    """The bus for ``url`` (not yet started); ``node_id`` names this node's broker
    resources where a broker needs them (the RabbitMQ queue)."""
    scheme = url.split("://", 1)[0] if "://" in url else ""
    if scheme == "memory":
        from parley.bus.memory import MemoryBus

        return MemoryBus()
    driver_url, options = split_url(url)
    prefix = options.get("prefix", "")
    if scheme in {"redis", "rediss"}:
        from parley.bus.redis import RedisBus

        return RedisBus(driver_url, prefix=prefix)
    if scheme in {"nats", "tls"}:
        _require("nats")
        from parley.bus.nats import NatsBus

        return NatsBus(driver_url, prefix=prefix, node_id=node_id)
    if scheme in {"amqp", "amqps"}:
        _require("rabbitmq")
        from parley.bus.rabbitmq import RabbitBus

        return RabbitBus(driver_url, prefix=prefix, node_id=node_id)
    raise ValueError(
        f"unsupported bus URL scheme {scheme!r} "
        "(supported: memory://, redis://, rediss://, nats://, tls://, amqp://, amqps://)"
    )
