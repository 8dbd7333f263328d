"""The ``Bus`` contract: every backend passes this one suite (memory now; RabbitMQ,
Redis and NATS join the ``backend`` parameter when they land).

Delivery may be asynchronous (a network broker), so every check awaits what it
expects, with a generous timeout, and never sleeps to prove an absence: it
publishes a marker after the message that must not arrive and waits for that.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable

import pytest

from parley.bus import connect_bus
from parley.bus.memory import MemoryBroker, MemoryBus
from parley.ports import Bus

TIMEOUT = 10.0

NodeFactory = Callable[[], Awaitable["Node"]]


class Node:
    """A bus and everything its handler received, in order."""

    def __init__(self, bus: Bus) -> None:
        self.bus = bus
        self.got: list[tuple[str, bytes]] = []
        self._changed = asyncio.Event()

    async def start(self) -> Node:
        await self.bus.start(self._handle)
        return self

    def _handle(self, channel: str, data: bytes) -> None:
        self.got.append((channel, data))
        self._changed.set()

    async def wait_for(self, channel: str, data: bytes) -> None:
        async with asyncio.timeout(TIMEOUT):
            while (channel, data) not in self.got:
                self._changed.clear()
                await self._changed.wait()

    def payloads(self, channel: str) -> list[bytes]:
        return [d for c, d in self.got if c == channel]


@pytest.fixture(params=["memory"])
async def nodes(request: pytest.FixtureRequest) -> AsyncIterator[NodeFactory]:
    """Make nodes connected to one backend (one shared broker)."""
    made: list[Node] = []
    broker = MemoryBroker()

    async def make() -> Node:
        assert request.param == "memory"
        node = await Node(MemoryBus(broker)).start()
        made.append(node)
        return node

    yield make
    for node in made:
        await node.bus.close()


def channel() -> str:
    return f"room.{uuid.uuid4()}"


async def test_subscribers_receive_and_others_do_not(nodes: NodeFactory) -> None:
    a, b, c = await nodes(), await nodes(), await nodes()
    ch, other = channel(), channel()
    await a.bus.subscribe(ch)
    await b.bus.subscribe(ch)
    await c.bus.subscribe(other)
    await a.bus.publish(ch, b"one")
    await a.bus.publish(other, b"marker")
    await a.wait_for(ch, b"one")
    await b.wait_for(ch, b"one")
    await c.wait_for(other, b"marker")
    assert c.payloads(ch) == []


async def test_order_per_channel_from_one_publisher(nodes: NodeFactory) -> None:
    pub, sub = await nodes(), await nodes()
    ch = channel()
    await sub.bus.subscribe(ch)
    sent = [str(i).encode() for i in range(200)]
    for data in sent:
        await pub.bus.publish(ch, data)
    await sub.wait_for(ch, sent[-1])
    assert sub.payloads(ch) == sent


async def test_unsubscribe_stops_delivery(nodes: NodeFactory) -> None:
    pub, sub = await nodes(), await nodes()
    ch, marker = channel(), channel()
    await sub.bus.subscribe(ch)
    await sub.bus.subscribe(marker)
    await pub.bus.publish(ch, b"before")
    await sub.wait_for(ch, b"before")
    await sub.bus.unsubscribe(ch)
    await pub.bus.publish(ch, b"after")
    await pub.bus.publish(marker, b"done")
    await sub.wait_for(marker, b"done")
    assert sub.payloads(ch) == [b"before"]


async def test_bytes_are_delivered_unchanged(nodes: NodeFactory) -> None:
    pub, sub = await nodes(), await nodes()
    ch = channel()
    await sub.bus.subscribe(ch)
    data = bytes(range(256)) * 64
    await pub.bus.publish(ch, data)
    await sub.wait_for(ch, data)


async def test_a_failing_handler_does_not_fail_the_publisher(nodes: NodeFactory) -> None:
    good = await nodes()
    ch = channel()

    def explode(_channel: str, _data: bytes) -> None:
        raise RuntimeError("handler bug")

    bad = await nodes()
    await bad.bus.start(explode)
    await bad.bus.subscribe(ch)
    await good.bus.subscribe(ch)
    await good.bus.publish(ch, b"x")
    await good.wait_for(ch, b"x")


async def test_closed_bus_receives_nothing(nodes: NodeFactory) -> None:
    pub, sub, witness = await nodes(), await nodes(), await nodes()
    ch = channel()
    await sub.bus.subscribe(ch)
    await witness.bus.subscribe(ch)
    await sub.bus.close()
    await pub.bus.publish(ch, b"late")
    await witness.wait_for(ch, b"late")
    assert sub.payloads(ch) == []


async def test_ping(nodes: NodeFactory) -> None:
    node = await nodes()
    await node.bus.ping()


def test_connect_bus_by_url() -> None:
    assert isinstance(connect_bus("memory://", node_id="n1"), MemoryBus)
    with pytest.raises(ValueError, match="unsupported bus URL"):
        connect_bus("carrier-pigeon://", node_id="n1")
