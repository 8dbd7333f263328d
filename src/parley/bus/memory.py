"""The in-process bus: the embedded default, and real product code, not a test fake.

A ``MemoryBus`` belongs to one node. Buses that share a ``MemoryBroker`` see each
other's publishes, which is how one test process runs a "cluster" of several nodes
against the same contract as the network brokers (``tests/contract/test_bus.py``).
Delivery is synchronous, in publish order, exactly once (at least once is all the
port promises); a handler that raises is logged and does not fail the publisher,
as a broker would not let one consumer fail another's publish.

The broker can cut one bus off and restore it (``MemoryBroker.cut``/``restore``),
with what a network broker would do: while cut, the bus hears nothing, its publishes
raise ``Unavailable`` and so does ``ping``; on restore its subscriptions (including
those made while cut) are active again before its ``on_reconnect`` is called. In-process
multi-node tests use this to drive the repair path without a network.
"""

from __future__ import annotations

from collections.abc import Sequence

from parley.bus._common import dispatch, signal
from parley.errors import Unavailable
from parley.ports import Bus, BusHandler, BusSignal


class MemoryBroker:
    """What several in-process buses share: who listens on which channel, and which
    buses are cut off."""

    def __init__(self) -> None:
        self._listeners: dict[str, list[MemoryBus]] = {}
        self._cut: set[MemoryBus] = set()

    def cut(self, bus: MemoryBus) -> None:
        """Drop ``bus``'s connection: the broker forgets its subscriptions."""
        if bus in self._cut:
            return
        self._cut.add(bus)
        for channel in bus._channels:
            self._remove(channel, bus)

    def restore(self, bus: MemoryBus) -> None:
        """Let ``bus`` connect again: its subscriptions come back, then its
        ``on_reconnect`` fires (if it has been started)."""
        if bus not in self._cut:
            return
        self._cut.discard(bus)
        if bus._closed:
            return
        for channel in bus._channels:
            self._add(channel, bus)
        if bus._started:
            signal(bus._on_reconnect)

    def is_cut(self, bus: MemoryBus) -> bool:
        return bus in self._cut

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
            await dispatch(bus._handler, channel, data)


class MemoryBus(Bus):
    """One node's connection to a ``MemoryBroker`` (its own unless one is given)."""

    def __init__(self, broker: MemoryBroker | None = None) -> None:
        self._broker = broker if broker is not None else MemoryBroker()
        self._handler: BusHandler | None = None
        self._on_reconnect: BusSignal | None = None
        self._channels: set[str] = set()
        self._started = False
        self._closed = False

    @property
    def broker(self) -> MemoryBroker:
        return self._broker

    async def start(self, handler: BusHandler, *, on_reconnect: BusSignal | None = None) -> None:
        self._handler = handler
        self._on_reconnect = on_reconnect
        self._started = True

    async def close(self) -> None:
        for channel in self._channels:
            self._broker._remove(channel, self)
        self._channels.clear()
        self._handler = None
        self._closed = True

    async def publish(self, channel: str, data: bytes) -> None:
        self._check()
        await self._broker._publish(channel, data)

    async def publish_batch(self, messages: Sequence[tuple[str, bytes]]) -> None:
        self._check()
        for channel, data in messages:
            await self._broker._publish(channel, data)

    @property
    def connected(self) -> bool:
        return not self._closed and not self._broker.is_cut(self)

    async def subscribe(self, channel: str) -> None:
        self._channels.add(channel)
        if self.connected:
            self._broker._add(channel, self)

    async def unsubscribe(self, channel: str) -> None:
        self._channels.discard(channel)
        self._broker._remove(channel, self)

    async def ping(self) -> None:
        self._check()

    def _check(self) -> None:
        if self._closed:
            raise Unavailable("the bus is closed")
        if self._broker.is_cut(self):
            raise Unavailable("cut off from the in-process broker")
