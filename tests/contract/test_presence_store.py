"""The ``PresenceStore`` contract: memory and Redis pass this one suite.

Time differs by backend: the memory store is timed by a fake clock that the test
moves; Redis times expiry by its own clock, so there the test waits out short real
time to live (a fraction of a second). ``elapse`` hides the difference. Each Redis
test uses its own key prefix and deletes its keys afterwards (parallel-safe).
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass

import pytest

from parley.cache.memory import MemoryPresence
from parley.domain.models import UserId
from parley.ports import ConnectionPresence, PresenceStore
from parley.testing.clock import FakeClock
from tests.conftest import require_service

REDIS_URL = "redis://127.0.0.1:6379/0"
TTL = 0.3
"""Seconds: long enough for a round trip to Redis, short enough to wait out."""
T = float(int(time.time())) + 0.5
"""A recent activity time (a store may forget last activity older than 30 days)."""


@dataclass
class Backend:
    """Stores sharing one backend (one per "node"), and a way to let time pass."""

    make: Callable[[], Awaitable[PresenceStore]]
    elapse: Callable[[float], Awaitable[None]]


@pytest.fixture(params=["memory", "redis"])
async def backend(request: pytest.FixtureRequest) -> AsyncIterator[Backend]:
    if request.param == "memory":
        clock = FakeClock()
        shared = MemoryPresence(clock.now)

        async def make_memory() -> PresenceStore:
            return shared

        async def advance(seconds: float) -> None:
            clock.advance(seconds)

        yield Backend(make_memory, advance)
        return

    require_service("redis")
    from redis.asyncio import Redis

    from parley.cache.redis import RedisPresence

    prefix = f"parley:{{test-{uuid.uuid4().hex}}}:"
    made: list[RedisPresence] = []

    async def make_redis() -> PresenceStore:
        store = RedisPresence(Redis.from_url(REDIS_URL), prefix=prefix, owns_client=True)
        await store.start()
        made.append(store)
        return store

    async def sleep(seconds: float) -> None:
        await asyncio.sleep(seconds)

    yield Backend(make_redis, sleep)
    if made:
        keys = [k async for k in made[0].client.scan_iter(match=prefix + "*")]
        if keys:
            await made[0].client.delete(*keys)
    for store in made:
        await store.close()


def entry(user: str, conn: str, chosen: str = "online", active: float = T) -> ConnectionPresence:
    return ConnectionPresence(UserId(user), conn, "node-a", chosen, active)


U1, U2, U3 = UserId("u1"), UserId("u2"), UserId("u3")


async def test_put_then_get_many_users_in_one_call(backend: Backend) -> None:
    store = await backend.make()
    await store.put([entry("u1", "c1"), entry("u1", "c2", "idle", T + 1.25), entry("u2", "c3")], 60)
    found = await store.get([U1, U2, U3])
    entries, last = found[U1]
    assert sorted(entries, key=lambda e: e.conn_id) == [
        entry("u1", "c1"),
        entry("u1", "c2", "idle", T + 1.25),
    ]
    assert last == T + 1.25
    assert found[U2] == ([entry("u2", "c3")], T)
    assert found[U3] == ([], None)


async def test_a_refresh_replaces_the_entry_and_last_active_only_rises(backend: Backend) -> None:
    store = await backend.make()
    await store.put([entry("u1", "c1", active=T + 10)], 60)
    await store.put([entry("u1", "c1", "idle", T - 5)], 60)
    assert (await store.get([U1]))[U1] == ([entry("u1", "c1", "idle", T - 5)], T + 10)


async def test_entries_lapse_after_their_ttl_and_are_reaped_once(backend: Backend) -> None:
    node_a, node_b = await backend.make(), await backend.make()
    await node_a.put([entry("u1", "c1"), entry("u1", "c2"), entry("u2", "c3")], TTL)
    await node_a.put([entry("u3", "c4")], 60)
    assert await node_b.expired() == []
    await backend.elapse(TTL + 0.1)
    # Lapsed entries are no longer read, even before anyone reaps them ...
    found = await node_b.get([U1, U2, U3])
    assert found[U1] == ([], T) and found[U2] == ([], T)
    assert found[U3][0] == [entry("u3", "c4")]
    # ... and exactly one caller, on any node, is told of each user once.
    first, second = await asyncio.gather(node_a.expired(), node_b.expired())
    assert sorted(first + second) == [U1, U2]
    assert await node_a.expired() == []
    # The last activity outlives the entries: an offline user shows when they were seen.
    assert (await node_a.get([U1]))[U1] == ([], T)


async def test_a_refreshed_entry_does_not_lapse(backend: Backend) -> None:
    store = await backend.make()
    await store.put([entry("u1", "c1")], TTL)
    await backend.elapse(TTL / 2)
    await store.put([entry("u1", "c1")], TTL)
    await backend.elapse(TTL / 2 + 0.05)
    assert await store.expired() == []
    assert len((await store.get([U1]))[U1][0]) == 1


async def test_a_shorter_ttl_shortens_the_life_of_an_entry(backend: Backend) -> None:
    """How a closed connection lingers only for the grace period."""
    store = await backend.make()
    await store.put([entry("u1", "c1")], 60)
    await store.put([entry("u1", "c1")], TTL)
    await backend.elapse(TTL + 0.1)
    assert await store.expired() == [U1]


async def test_remove_forgets_entries_but_not_the_last_activity(backend: Backend) -> None:
    store = await backend.make()
    await store.put([entry("u1", "c1"), entry("u1", "c2")], TTL)
    await store.remove([(U1, "c1"), (U2, "never")])
    assert [e.conn_id for e in (await store.get([U1]))[U1][0]] == ["c2"]
    await store.remove([(U1, "c2")])
    assert (await store.get([U1]))[U1] == ([], T)
    await backend.elapse(TTL + 0.1)
    assert await store.expired() == []  # removed entries are not reported again


async def test_large_batches(backend: Backend) -> None:
    store = await backend.make()
    users = [UserId(f"user-{i}") for i in range(600)]
    await store.put([entry(u, f"conn-{u}") for u in users], 60)
    found = await store.get(users)
    assert len(found) == 600 and all(len(found[u][0]) == 1 for u in users)
    await store.remove([(u, f"conn-{u}") for u in users])
    assert all(not entries for entries, _ in (await store.get(users)).values())


async def test_lifecycle_answers(backend: Backend) -> None:
    store = await backend.make()
    await store.start()
    await store.ping()
