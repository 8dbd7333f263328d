"""The bus outbox: publishes in the background, retries while the broker is away,
keeps order, and drops the oldest past its bound (the store repairs those)."""

from __future__ import annotations

import asyncio

from parley.bus.memory import MemoryBroker, MemoryBus
from parley.delivery.outbox import Outbox


async def _listener(broker: MemoryBroker, channel: str) -> tuple[MemoryBus, list[bytes]]:
    got: list[bytes] = []
    bus = MemoryBus(broker)
    await bus.start(lambda _channel, data: got.append(data))
    await bus.subscribe(channel)
    return bus, got


async def test_messages_go_out_in_order_without_the_caller_waiting() -> None:
    broker = MemoryBroker()
    _, got = await _listener(broker, "room.r")
    outbox = Outbox(MemoryBus(broker))
    outbox.start()
    for i in range(600):
        outbox.put("room.r", b"%d" % i)
    assert got == []  # nothing was published by ``put`` itself
    async with asyncio.timeout(5):
        await outbox.wait_sent()
    assert got == [b"%d" % i for i in range(600)]
    assert outbox.stats.batches >= 3  # at most 256 a batch
    await outbox.close()


async def test_a_broker_that_is_away_gets_everything_when_it_is_back() -> None:
    broker = MemoryBroker()
    _, got = await _listener(broker, "room.r")
    publisher = MemoryBus(broker)
    await publisher.start(lambda _c, _d: None)
    broker.cut(publisher)
    outbox = Outbox(publisher)
    outbox.start()
    for i in range(10):
        outbox.put("room.r", b"%d" % i)
    async with asyncio.timeout(5):
        while outbox.stats.failures < 2:  # noqa: ASYNC110 (a counter, no event to await)
            await asyncio.sleep(0.01)
    assert got == [] and outbox.pending == 10
    broker.restore(publisher)
    async with asyncio.timeout(5):
        await outbox.wait_sent()
    assert got == [b"%d" % i for i in range(10)]
    assert outbox.stats.dropped == 0
    await outbox.close()


async def test_past_its_bound_the_oldest_are_dropped_and_counted() -> None:
    broker = MemoryBroker()
    _, got = await _listener(broker, "room.r")
    publisher = MemoryBus(broker)
    await publisher.start(lambda _c, _d: None)
    broker.cut(publisher)
    outbox = Outbox(publisher, limit=16)
    for i in range(20):
        outbox.put("room.r", b"%d" % i)
    assert outbox.stats.dropped == 4 and outbox.pending == 16
    broker.restore(publisher)
    outbox.start()
    async with asyncio.timeout(5):
        await outbox.wait_sent()
    assert got == [b"%d" % i for i in range(4, 20)]
    await outbox.close()
