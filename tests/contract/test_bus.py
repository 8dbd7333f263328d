"""The ``Bus`` contract: every backend (memory, Redis, NATS, RabbitMQ) passes this one
suite, through one parametrised fixture.

Delivery may be asynchronous (a network broker), so every check awaits what it
expects, with a generous timeout, and never sleeps to prove an absence: it
publishes a marker after the message that must not arrive and waits for that.

Faults are injected per node, never on the machine-wide brokers other tests share:
a "faulty" node of a network backend reaches its broker through a ``TcpProxy`` that
the test cuts and restores; a memory node is cut by its ``MemoryBroker``.
"""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from collections.abc import AsyncIterator, Callable, Sequence

import pytest

from parley.bus import connect_bus
from parley.bus.memory import MemoryBroker, MemoryBus
from parley.errors import Unavailable
from parley.ports import Bus
from parley.testing.proxy import TcpProxy
from tests.conftest import SERVICES, require_service

TIMEOUT = 10.0
BACKENDS = ["memory", "redis", "nats", "rabbitmq"]


class Node:
    """A bus, everything its handler received in order, and its reconnect signals."""

    def __init__(self, bus: Bus, *, faulty: bool = False, explode: bool = False) -> None:
        self.bus = bus
        self.faulty = faulty
        self.explode = explode
        self.got: list[tuple[str, bytes]] = []
        self.reconnects = 0
        self._changed = asyncio.Event()

    async def start(self) -> Node:
        await self.bus.start(self._handle, on_reconnect=self._reconnected)
        return self

    def _handle(self, channel: str, data: bytes) -> None:
        if self.explode:
            raise RuntimeError("handler bug")
        self.got.append((channel, data))
        self._changed.set()

    def _reconnected(self) -> None:
        self.reconnects += 1
        self._changed.set()

    async def wait_until(self, condition: Callable[[], bool]) -> None:
        async with asyncio.timeout(TIMEOUT):
            while not condition():
                self._changed.clear()
                # The bus reports a lost link only through ``connected``: poll it too.
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(0.02):
                        await self._changed.wait()

    async def wait_for(self, channel: str, data: bytes) -> None:
        await self.wait_until(lambda: (channel, data) in self.got)

    def payloads(self, channel: str) -> list[bytes]:
        return [d for c, d in self.got if c == channel]


class Backend:
    """Makes nodes on one broker; ``faulty`` nodes can be cut off and restored."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.prefix = f"t{uuid.uuid4().hex[:12]}"
        self.prefixes = {self.prefix}
        self.made: list[Node] = []
        self.broker = MemoryBroker()
        self.proxy: TcpProxy | None = None
        self.down = False

    async def node(self, *, faulty: bool = False, explode: bool = False) -> Node:
        bus = await self._bus(faulty=faulty)
        node = Node(bus, faulty=faulty, explode=explode)
        self.made.append(node)
        if self.down and faulty and isinstance(bus, MemoryBus):
            self.broker.cut(bus)
        return await node.start()

    async def _bus(self, *, faulty: bool, prefix: str | None = None) -> Bus:
        prefix = prefix or self.prefix
        if self.name == "memory":
            return MemoryBus(self.broker if prefix == self.prefix else MemoryBroker())
        host, port = SERVICES[self.name]
        if faulty:
            if self.proxy is None:
                self.proxy = await TcpProxy(host, port).start(accepting=not self.down)
            port = self.proxy.port
        node_id = f"node-{uuid.uuid4().hex[:6]}"
        if self.name == "redis":
            from parley.bus.redis import RedisBus

            return RedisBus(
                f"redis://{host}:{port}/0",
                prefix=prefix,
                connect_timeout=1.0,
                health_interval=0.5,
                retry_min=0.05,
                retry_max=0.3,
            )
        if self.name == "nats":
            from parley.bus.nats import NatsBus

            return NatsBus(
                f"nats://{host}:{port}",
                prefix=prefix,
                node_id=node_id,
                connect_timeout=1.0,
                ping_interval=1.0,
                reconnect_wait=0.1,
            )
        from parley.bus.rabbitmq import RabbitBus

        return RabbitBus(
            f"amqp://guest:guest@{host}:{port}/",
            prefix=prefix,
            node_id=node_id,
            connect_timeout=1.0,
            heartbeat=1,
            retry_min=0.05,
            retry_max=0.3,
        )

    async def stranger(self) -> Node:
        """A node of another cluster on the same broker (another prefix)."""
        prefix = f"o{uuid.uuid4().hex[:12]}"
        self.prefixes.add(prefix)
        node = Node(await self._bus(faulty=False, prefix=prefix))
        self.made.append(node)
        return await node.start()

    async def cut(self) -> None:
        """Cut every faulty node off the broker (or, before any exists, start down)."""
        self.down = True
        if self.proxy is not None:
            await self.proxy.cut()
        for bus in self._faulty_memory():
            self.broker.cut(bus)

    async def blackhole(self) -> None:
        """Starve every faulty node's connection without closing it (memory: a cut)."""
        if self.proxy is not None:
            await self.proxy.blackhole()
        for bus in self._faulty_memory():
            self.broker.cut(bus)

    async def restore(self) -> None:
        self.down = False
        if self.proxy is not None:
            await self.proxy.restore()
        for bus in self._faulty_memory():
            self.broker.restore(bus)

    def _faulty_memory(self) -> Sequence[MemoryBus]:
        return [n.bus for n in self.made if n.faulty and isinstance(n.bus, MemoryBus)]

    async def close(self) -> None:
        for node in self.made:
            await node.bus.close()
        if self.proxy is not None:
            await self.proxy.close()
        if self.name == "rabbitmq":
            for prefix in self.prefixes:
                await drop_exchange(f"parley.bus.{prefix}")


async def drop_exchange(name: str) -> None:
    """The suite's exchanges are not durable, but would outlive it on a shared broker."""
    import aio_pika

    host, port = SERVICES["rabbitmq"]
    conn = await aio_pika.connect(f"amqp://guest:guest@{host}:{port}/")
    async with conn:
        channel = await conn.channel()
        await channel.exchange_delete(name)


@pytest.fixture(params=BACKENDS)
async def backend(request: pytest.FixtureRequest) -> AsyncIterator[Backend]:
    """One broker per test run (memory, or a real one under a fresh prefix)."""
    name: str = request.param
    if name != "memory":
        require_service(name)
    made = Backend(name)
    yield made
    await made.close()


def channel() -> str:
    return f"room.{uuid.uuid4()}"


async def test_subscribers_receive_and_others_do_not(backend: Backend) -> None:
    a, b, c = await backend.node(), await backend.node(), await backend.node()
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


async def test_a_message_right_after_subscribe_arrives(backend: Backend) -> None:
    pub, sub = await backend.node(), await backend.node()
    for _ in range(5):
        ch = channel()
        await sub.bus.subscribe(ch)
        await pub.bus.publish(ch, b"first")
        await sub.wait_for(ch, b"first")


async def test_order_per_channel_from_one_publisher(backend: Backend) -> None:
    pub, sub = await backend.node(), await backend.node()
    ch = channel()
    await sub.bus.subscribe(ch)
    sent = [str(i).encode() for i in range(200)]
    for data in sent:
        await pub.bus.publish(ch, data)
    await sub.wait_for(ch, sent[-1])
    assert sub.payloads(ch) == sent


async def test_publish_batch_keeps_order_per_channel(backend: Backend) -> None:
    pub, sub = await backend.node(), await backend.node()
    ch1, ch2 = channel(), channel()
    await sub.bus.subscribe(ch1)
    await sub.bus.subscribe(ch2)
    batch = [(ch1 if i % 3 else ch2, str(i).encode()) for i in range(150)]
    await pub.bus.publish_batch(batch[:100])
    await pub.bus.publish_batch([])
    await pub.bus.publish_batch(batch[100:])
    await sub.wait_for(*[m for m in batch if m[0] == ch1][-1])
    await sub.wait_for(*[m for m in batch if m[0] == ch2][-1])
    assert sub.payloads(ch1) == [d for c, d in batch if c == ch1]
    assert sub.payloads(ch2) == [d for c, d in batch if c == ch2]


async def test_unsubscribe_stops_delivery(backend: Backend) -> None:
    pub, sub = await backend.node(), await backend.node()
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
    await sub.bus.subscribe(ch)
    await pub.bus.publish(ch, b"again")
    await sub.wait_for(ch, b"again")


async def test_bytes_are_delivered_unchanged(backend: Backend) -> None:
    pub, sub = await backend.node(), await backend.node()
    ch = channel()
    await sub.bus.subscribe(ch)
    data = bytes(range(256)) * 64
    await pub.bus.publish(ch, data)
    await pub.bus.publish_batch([(ch, b""), (ch, data[::-1])])
    await sub.wait_for(ch, data[::-1])
    assert sub.payloads(ch) == [data, b"", data[::-1]]


async def test_a_failing_handler_does_not_fail_the_publisher(backend: Backend) -> None:
    good, bad = await backend.node(), await backend.node(explode=True)
    ch = channel()
    await bad.bus.subscribe(ch)
    await good.bus.subscribe(ch)
    await good.bus.publish(ch, b"x")
    await good.bus.publish(ch, b"y")
    await good.wait_for(ch, b"y")


async def test_closed_bus_receives_nothing(backend: Backend) -> None:
    pub, sub, witness = await backend.node(), await backend.node(), await backend.node()
    ch = channel()
    await sub.bus.subscribe(ch)
    await witness.bus.subscribe(ch)
    await sub.bus.close()
    await pub.bus.publish(ch, b"late")
    await witness.wait_for(ch, b"late")
    assert sub.payloads(ch) == []


async def test_prefixes_keep_clusters_apart(backend: Backend) -> None:
    ours, theirs = await backend.node(), await backend.stranger()
    ch = channel()
    await ours.bus.subscribe(ch)
    await theirs.bus.subscribe(ch)
    await theirs.bus.publish(ch, b"theirs")
    await theirs.wait_for(ch, b"theirs")
    await ours.bus.publish(ch, b"ours")
    await ours.wait_for(ch, b"ours")
    assert ours.payloads(ch) == [b"ours"]


async def test_connected_and_ping_tell_the_truth(backend: Backend) -> None:
    node = await backend.node()
    assert node.bus.connected
    await node.bus.ping()
    await node.bus.close()
    assert not node.bus.connected
    with pytest.raises(Unavailable):
        await node.bus.ping()


async def test_reconnect_is_signalled_and_delivery_resumes(backend: Backend) -> None:
    node = await backend.node(faulty=True)
    witness = await backend.node()
    ch, late = channel(), channel()
    await node.bus.subscribe(ch)
    await witness.bus.subscribe(ch)
    await witness.bus.publish(ch, b"before")
    await node.wait_for(ch, b"before")
    assert node.reconnects == 0

    await backend.cut()
    await node.wait_until(lambda: not node.bus.connected)
    with pytest.raises(Unavailable):
        await node.bus.ping()
    with pytest.raises(Unavailable):
        await node.bus.publish(ch, b"lost")
    await node.bus.subscribe(late)  # while cut: takes effect on reconnect

    await backend.restore()
    await node.wait_until(lambda: node.reconnects >= 1 and node.bus.connected)
    await node.bus.ping()
    await witness.bus.publish(ch, b"after")
    await witness.bus.publish(late, b"late")
    await node.wait_for(ch, b"after")
    await node.wait_for(late, b"late")
    await node.bus.publish(ch, b"from-node")
    await witness.wait_for(ch, b"from-node")


async def test_a_silent_dead_line_is_found(backend: Backend) -> None:
    node = await backend.node(faulty=True)
    witness = await backend.node()
    ch = channel()
    await node.bus.subscribe(ch)
    await witness.bus.subscribe(ch)
    await witness.bus.publish(ch, b"before")
    await node.wait_for(ch, b"before")

    await backend.blackhole()
    await node.wait_until(lambda: not node.bus.connected)
    await backend.restore()
    await node.wait_until(lambda: node.reconnects >= 1 and node.bus.connected)
    await witness.bus.publish(ch, b"after")
    await node.wait_for(ch, b"after")


async def test_broker_down_at_start(backend: Backend) -> None:
    await backend.cut()
    async with asyncio.timeout(5):
        node = await backend.node(faulty=True)
    assert not node.bus.connected
    with pytest.raises(Unavailable):
        await node.bus.ping()
    ch = channel()
    async with asyncio.timeout(5):
        await node.bus.subscribe(ch)

    await backend.restore()
    await node.wait_until(lambda: node.bus.connected and node.reconnects >= 1)
    await node.bus.ping()
    witness = await backend.node()
    await witness.bus.publish(ch, b"hello")
    await node.wait_for(ch, b"hello")


def test_connect_bus_by_url() -> None:
    assert isinstance(connect_bus("memory://", node_id="n1"), MemoryBus)
    with pytest.raises(ValueError, match="unsupported bus URL"):
        connect_bus("carrier-pigeon://", node_id="n1")
    with pytest.raises(ValueError, match="prefix"):
        connect_bus("redis://127.0.0.1:6379/0?prefix=a.b", node_id="n1")


async def test_nats_slow_consumer_drops_are_signalled() -> None:
    """A subscription past its pending limit loses messages: the node must hear of it."""
    require_service("nats")
    from parley.bus.nats import NatsBus

    host, port = SERVICES["nats"]
    prefix = f"t{uuid.uuid4().hex[:12]}"
    release = asyncio.Event()

    async def stuck(_channel: str, _data: bytes) -> None:
        await release.wait()

    slow = NatsBus(f"nats://{host}:{port}", prefix=prefix, pending_msgs_limit=2)
    pub = NatsBus(f"nats://{host}:{port}", prefix=prefix)
    signals = asyncio.Event()
    await slow.start(stuck, on_reconnect=signals.set)
    await pub.start(lambda _c, _d: None)
    try:
        ch = channel()
        await slow.subscribe(ch)
        await pub.publish_batch([(ch, b"x")] * 20)
        async with asyncio.timeout(TIMEOUT):
            await signals.wait()
    finally:
        release.set()
        await slow.close()
        await pub.close()


async def test_rabbitmq_queue_expired_during_a_cut_is_bound_afresh() -> None:
    """A cut longer than ``queue_expiry`` loses the queue and its bindings: the node
    must declare and bind it anew, not trust what it bound before."""
    require_service("rabbitmq")
    import aio_pika
    from aio_pika.exceptions import ChannelNotFoundEntity

    from parley.bus.rabbitmq import RabbitBus

    host, port = SERVICES["rabbitmq"]
    prefix = f"t{uuid.uuid4().hex[:12]}"
    proxy = await TcpProxy(host, port).start()
    node = Node(
        RabbitBus(
            f"amqp://guest:guest@127.0.0.1:{proxy.port}/",
            prefix=prefix,
            queue_expiry=0.5,
            heartbeat=1,
            retry_min=0.05,
            retry_max=0.3,
        )
    )
    witness = Node(RabbitBus(f"amqp://guest:guest@{host}:{port}/", prefix=prefix))
    admin = await aio_pika.connect(f"amqp://guest:guest@{host}:{port}/")
    try:
        await node.start()
        await witness.start()
        ch = channel()
        await node.bus.subscribe(ch)
        await proxy.cut()
        assert isinstance(node.bus, RabbitBus)
        async with asyncio.timeout(TIMEOUT):
            while True:
                # A passive declare renews the queue's lease: probe less often than it.
                await asyncio.sleep(1.0)
                probe = await admin.channel()
                try:
                    await probe.declare_queue(node.bus.queue_name, passive=True)
                except ChannelNotFoundEntity:
                    break
                await probe.close()
        await proxy.restore()
        await node.wait_until(lambda: node.reconnects >= 1 and node.bus.connected)
        await witness.bus.publish(ch, b"after expiry")
        await node.wait_for(ch, b"after expiry")
    finally:
        await node.bus.close()
        await witness.bus.close()
        await proxy.close()
        async with admin:
            await (await admin.channel()).exchange_delete(f"parley.bus.{prefix}")
