"""The in-process bus: the embedded default, and real product code, not a test fake.

A ``MemoryBus`` belongs to one node. Buses that share a ``MemoryBroker`` see each
other's publishes, which is how one test process runs a "cluster" of several nodes
against the same contract as the network brokers (``tests/contract/test_bus.py``).
Delivery is synchronous, in publish order, exactly once (at least once is all the
port promises); a handler that raises is logged and does not fail the publisher,
as a broker would not let one consumer fail another's publish.
"""

from __future__ import annotations

import inspect
import logging
from collections.abc import Sequence

from parley.ports import Bus, BusHandler, BusSignal

log = logging.getLogger("parley.bus")


class MemoryBroker:
    """What several in-process buses share: who listens on which channel."""

    def __init__(self) -> None:
        self._listeners: dict[str, list[MemoryBus]] = {}

    def _add(self, channel: str, bus: MemoryBus) -> None:
        listeners = self._listeners.setdefault(channel, [])
        if bus not in listeners:
            listeners.append(bus)

    def _remove(self, channel: str, bus: MemoryBus) -> None:
        listeners = self._listeners.get(channel)
        if listeners and bus in listeners:
            listeners.remove(bus)
            if not listeners:
                del self._listeners[channel]

    async def _publish(self, channel: str, data: bytes) -> None:
        # A copy: a handler may (un)subscribe while we iterate.
        for bus in tuple(self._listeners.get(channel, ())):
            await bus._deliver(channel, data)


class MemoryBus(Bus):
    """One node's connection to a ``MemoryBroker`` (its own unless one is given)."""

    def __init__(self, broker: MemoryBroker | None = None) -> None:
        self._broker = broker if broker is not None else MemoryBroker()
        self._handler: BusHandler | None = None
        self._channels: set[str] = set()

    async def start(self, handler: BusHandler, *, on_reconnect: BusSignal | None = None) -> None:
        self._handler = handler

    async def close(self) -> None:
        for channel in self._channels:
            self._broker._remove(channel, self)
        self._channels.clear()
        self._handler = None

    async def publish(self, channel: str, data: bytes) -> None:
        await self._broker._publish(channel, data)

    async def publish_batch(self, messages: Sequence[tuple[str, bytes]]) -> None:
        for channel, data in messages:
            await self._broker._publish(channel, data)

    @property
    def connected(self) -> bool:
        return True

    async def subscribe(self, channel: str) -> None:
        self._channels.add(channel)
        self._broker._add(channel, self)

    async def unsubscribe(self, channel: str) -> None:
        self._channels.discard(channel)
        self._broker._remove(channel, self)

    async def ping(self) -> None:
        return None

    async def _deliver(self, channel: str, data: bytes) -> None:
        handler = self._handler
        if handler is None:
            return
        try:
            result = handler(channel, data)
            if inspect.isawaitable(result):
                await result
        except Exception:
            log.exception("bus handler failed on channel %s", channel)
