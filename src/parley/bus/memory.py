"""The in-process bus: the embedded default, and real product code, not a test fake."""

from __future__ import annotations

import inspect

from parley.ports import Bus, BusHandler


class MemoryBus(Bus):
    """Delivers each publish synchronously to this process's handler when subscribed."""

    def __init__(self) -> None:
        self._handler: BusHandler | None = None
        self._channels: set[str] = set()

    async def start(self, handler: BusHandler) -> None:
        self._handler = handler

    async def close(self) -> None:
        self._handler = None
        self._channels.clear()

    async def publish(self, channel: str, data: bytes) -> None:
        if self._handler is not None and channel in self._channels:
            result = self._handler(channel, data)
            if inspect.isawaitable(result):
                await result

    async def subscribe(self, channel: str) -> None:
        self._channels.add(channel)

    async def unsubscribe(self, channel: str) -> None:
        self._channels.discard(channel)

    async def ping(self) -> None:
        return None
