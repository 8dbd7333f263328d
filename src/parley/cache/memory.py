"""The in-process cache: keys with expiry and counters, for one node."""

from __future__ import annotations

import time

from parley.ports import Cache

_SWEEP_EVERY = 1024


class MemoryCache(Cache):
    """A dict with lazy expiry; an occasional sweep bounds memory held by dead keys."""

    def __init__(self) -> None:
        self._data: dict[str, tuple[bytes | int, float | None]] = {}
        self._writes = 0

    async def start(self) -> None:
        return None

    async def close(self) -> None:
        self._data.clear()

    async def ping(self) -> None:
        return None

    def _live(self, key: str) -> bytes | int | None:
        entry = self._data.get(key)
        if entry is None:
            return None
        value, expires = entry
        if expires is not None and expires <= time.monotonic():
            del self._data[key]
            return None
        return value

    def _wrote(self) -> None:
        self._writes += 1
        if self._writes % _SWEEP_EVERY == 0:
            now = time.monotonic()
            for key in [k for k, (_, e) in self._data.items() if e is not None and e <= now]:
                del self._data[key]

    async def get(self, key: str) -> bytes | None:
        value = self._live(key)
        if isinstance(value, int):
            return str(value).encode()
        return value

    async def set(self, key: str, value: bytes, *, ttl: float | None = None) -> None:
        self._data[key] = (value, time.monotonic() + ttl if ttl is not None else None)
        self._wrote()

    async def delete(self, key: str) -> None:
        self._data.pop(key, None)

    async def incr(self, key: str, *, ttl: float) -> int:
        value = self._live(key)
        if isinstance(value, int):
            count = value + 1
            self._data[key] = (count, self._data[key][1])
        else:
            count = 1
            self._data[key] = (count, time.monotonic() + ttl)
            self._wrote()
        return count
