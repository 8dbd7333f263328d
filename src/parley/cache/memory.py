"""The in-process cache: keys with expiry and counters, for one node."""

from __future__ import annotations

import heapq
import time
from collections.abc import Callable, Sequence

from parley.domain.models import UserId
from parley.ports import Cache, ConnectionPresence, PresenceStore

_SWEEP_EVERY = 1024
_BUCKET_SWEEP_SECONDS = 10.0


class MemoryCache(Cache):
    """A dict with lazy expiry; an occasional sweep bounds memory held by dead keys."""

    def __init__(self) -> None:
        self._data: dict[str, tuple[bytes | int, float | None]] = {}
        self._writes = 0
        # key -> (tokens, last update, when full again); a full bucket is dropped.
        self._buckets: dict[str, tuple[float, float, float]] = {}
        self._bucket_sweep = time.monotonic() + _BUCKET_SWEEP_SECONDS

    async def start(self) -> None:
        return None

    async def close(self) -> None:
        self._data.clear()
        self._buckets.clear()

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

    async def take(self, key: str, *, rate: float, burst: float, cost: float = 1.0) -> float:
        now = time.monotonic()
        buckets = self._buckets
        entry = buckets.get(key)
        tokens = burst if entry is None else min(burst, entry[0] + (now - entry[1]) * rate)
        wait = 0.0
        if tokens >= cost:
            tokens -= cost
        else:
            wait = (cost - tokens) / rate
        buckets[key] = (tokens, now, now + (burst - tokens) / rate)
        if now >= self._bucket_sweep:
            self._bucket_sweep = now + _BUCKET_SWEEP_SECONDS
            for full in [k for k, (_, _, f) in buckets.items() if f <= now]:
                del buckets[full]
        return wait


class MemoryPresence(PresenceStore):
    """Presence entries of one process (or of several in-process nodes sharing it).

    Expiry is timed by ``clock`` (epoch seconds; a fake one in tests). Reads filter
    lapsed entries out; only ``expired`` deletes them, so each lapse is reported to
    exactly one caller and the nodes learn of it. A heap of expiry times makes that
    cost the number of lapsed entries, not of all entries.
    """

    def __init__(self, clock: Callable[[], float] = time.time) -> None:
        self._clock = clock
        self._entries: dict[UserId, dict[str, tuple[ConnectionPresence, float]]] = {}
        self._last_active: dict[UserId, float] = {}
        # (expires, user, conn); stale items (refreshed or removed entries) are
        # skipped when popped.
        self._expiry: list[tuple[float, UserId, str]] = []

    async def put(self, entries: Sequence[ConnectionPresence], ttl: float) -> None:
        expires = self._clock() + ttl
        for entry in entries:
            self._entries.setdefault(entry.user_id, {})[entry.conn_id] = (entry, expires)
            heapq.heappush(self._expiry, (expires, entry.user_id, entry.conn_id))
            if entry.last_active > self._last_active.get(entry.user_id, 0.0):
                self._last_active[entry.user_id] = entry.last_active

    async def remove(self, keys: Sequence[tuple[UserId, str]]) -> None:
        for user_id, conn_id in keys:
            conns = self._entries.get(user_id)
            if conns is not None:
                conns.pop(conn_id, None)
                if not conns:
                    del self._entries[user_id]

    async def get(
        self, user_ids: Sequence[UserId]
    ) -> dict[UserId, tuple[list[ConnectionPresence], float | None]]:
        now = self._clock()
        result: dict[UserId, tuple[list[ConnectionPresence], float | None]] = {}
        for user_id in user_ids:
            conns = self._entries.get(user_id, {})
            live = [entry for entry, expires in conns.values() if expires > now]
            result[user_id] = (live, self._last_active.get(user_id))
        return result

    async def expired(self, limit: int = 1000) -> list[UserId]:
        now = self._clock()
        heap = self._expiry
        users: dict[UserId, None] = {}
        reaped = 0
        while heap and heap[0][0] <= now and reaped < limit:
            expires, user_id, conn_id = heapq.heappop(heap)
            conns = self._entries.get(user_id)
            current = conns.get(conn_id) if conns is not None else None
            if conns is None or current is None or current[1] != expires:
                continue
            del conns[conn_id]
            if not conns:
                del self._entries[user_id]
            users[user_id] = None
            reaped += 1
        return list(users)
