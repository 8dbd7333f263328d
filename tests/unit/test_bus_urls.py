"""Choosing and configuring a bus from its URL, and the RabbitMQ batch framing."""

from __future__ import annotations

import pytest

from parley.bus import connect_bus
from parley.bus._common import split_url
from parley.bus.memory import MemoryBus
from parley.bus.nats import NatsBus
from parley.bus.rabbitmq import RabbitBus, pack, unpack
from parley.bus.redis import RedisBus


def test_prefix_is_parleys_and_the_rest_goes_to_the_driver() -> None:
    url, options = split_url("redis://h:6379/2?prefix=blue&socket_keepalive=true")
    assert url == "redis://h:6379/2?socket_keepalive=true"
    assert options == {"prefix": "blue"}
    assert split_url("nats://h:4222") == ("nats://h:4222", {})


@pytest.mark.parametrize("prefix", ["", "a.b", "a b", "x*", "y>", "z%23"])
def test_a_prefix_must_be_one_word(prefix: str) -> None:
    with pytest.raises(ValueError, match="prefix"):
        split_url(f"nats://h:4222?prefix={prefix}")


@pytest.mark.parametrize(
    ("url", "kind"),
    [
        ("memory://", MemoryBus),
        ("redis://127.0.0.1:6379/0?prefix=p", RedisBus),
        ("rediss://127.0.0.1:6380/0", RedisBus),
        ("nats://127.0.0.1:4222?prefix=p", NatsBus),
        ("tls://127.0.0.1:4222", NatsBus),
        ("amqp://guest:guest@127.0.0.1:5672/?prefix=p", RabbitBus),
        ("amqps://u:p@127.0.0.1:5671/vh", RabbitBus),
    ],
)
def test_connect_bus_by_scheme(url: str, kind: type) -> None:
    assert isinstance(connect_bus(url, node_id="n1"), kind)


@pytest.mark.parametrize("url", ["carrier-pigeon://x", "redis", "http://h/"])
def test_unknown_schemes_are_refused_in_one_line(url: str) -> None:
    with pytest.raises(ValueError, match=r"^unsupported bus URL scheme [^\n]+$"):
        connect_bus(url, node_id="n1")


def test_rabbitmq_batch_framing_round_trips() -> None:
    payloads = [b"", b"a", bytes(range(256)) * 300, b"\x00\x00\x00\x05"]
    assert unpack(pack(payloads)) == payloads
    assert unpack(b"") == []


@pytest.mark.parametrize("cut", [1, 3, 6])
def test_a_truncated_batch_is_refused(cut: int) -> None:
    body = pack([b"hello", b"world"])
    with pytest.raises(ValueError, match="truncated"):
        unpack(body[: len(body) - cut])
