"""The ``Cache`` contract: memory and Redis pass this one suite.

Both time expiry by a real clock, so the expiry checks use time to live of a
fraction of a second and poll for the lapse (bounded), rather than sleep a guess.
Each Redis test has its own key prefix and deletes its keys afterwards.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import AsyncIterator

import pytest

from parley.cache import connect_cache, connect_presence
from parley.cache.memory import MemoryCache, MemoryPresence
from parley.ports import Cache
from tests.conftest import require_service

REDIS_URL = "redis://127.0.0.1:6379/0"
TIMEOUT = 5.0


@pytest.fixture(params=["memory", "redis"])
async def cache(request: pytest.FixtureRequest) -> AsyncIterator[Cache]:
    if request.param == "memory":
        memory = MemoryCache()
        await memory.start()
        yield memory
        await memory.close()
        return
    require_service("redis")
    from parley.cache.redis import RedisCache

    prefix = f"parley:test-{uuid.uuid4().hex}:"
    redis = RedisCache.from_url(REDIS_URL, prefix=prefix)
    await redis.start()
    yield redis
    keys = [k async for k in redis.client.scan_iter(match=prefix + "*")]
    if keys:
        await redis.client.delete(*keys)
    await redis.close()


async def gone(cache: Cache, key: str) -> float:
    """Seconds until ``key`` reads as absent (fails after ``TIMEOUT``)."""
    start = time.monotonic()
    while time.monotonic() - start < TIMEOUT:
        if await cache.get(key) is None:
            return time.monotonic() - start
        await asyncio.sleep(0.02)  # polling: the lapse has no event to await
    raise AssertionError(f"{key!r} still there after {TIMEOUT} s")


async def test_set_get_delete(cache: Cache) -> None:
    assert await cache.get("k") is None
    await cache.set("k", b"\x00value")
    assert await cache.get("k") == b"\x00value"
    await cache.set("k", b"other")
    assert await cache.get("k") == b"other"
    await cache.delete("k")
    await cache.delete("k")
    assert await cache.get("k") is None


async def test_a_key_with_ttl_lapses_and_one_without_stays(cache: Cache) -> None:
    await cache.set("short", b"x", ttl=0.2)
    await cache.set("long", b"y")
    assert await cache.get("short") == b"x"
    assert await gone(cache, "short") < 2.0
    assert await cache.get("long") == b"y"


async def test_incr_counts_and_its_ttl_starts_at_creation(cache: Cache) -> None:
    assert [await cache.incr("n", ttl=0.3) for _ in range(3)] == [1, 2, 3]
    assert await cache.get("n") == b"3"
    # Incrementing does not extend the window: the counter lapses 0.3 s after it
    # was created, and starts again from one.
    assert await gone(cache, "n") < 2.0
    assert await cache.incr("n", ttl=10) == 1


async def test_ping(cache: Cache) -> None:
    await cache.ping()


def test_urls_choose_the_backend() -> None:
    assert isinstance(connect_cache("memory://"), MemoryCache)
    assert isinstance(connect_presence("memory://"), MemoryPresence)
    with pytest.raises(ValueError, match="unsupported"):
        connect_cache("memcached://x")


async def test_redis_urls_share_one_pool() -> None:
    from parley.cache.redis import RedisCache, RedisPresence

    cache = connect_cache(REDIS_URL)
    assert isinstance(cache, RedisCache)
    presence = connect_presence(REDIS_URL, cache=cache)
    assert isinstance(presence, RedisPresence) and presence.client is cache.client
    await cache.close()


async def test_take_allows_a_burst_then_refuses_with_the_wait(cache: Cache) -> None:
    rate, burst = 2.0, 3.0  # 3 at once, then one every half second
    assert [await cache.take("b", rate=rate, burst=burst) for _ in range(3)] == [0.0] * 3
    wait = await cache.take("b", rate=rate, burst=burst)
    assert 0.3 < wait <= 0.5
    # A refusal takes nothing: asking again does not push the wait further out.
    again = await cache.take("b", rate=rate, burst=burst)
    assert 0.0 < again <= wait
    assert await cache.take("other", rate=rate, burst=burst) == 0.0


async def test_take_refills_at_the_rate(cache: Cache) -> None:
    rate, burst = 10.0, 2.0
    assert await cache.take("r", rate=rate, burst=burst) == 0.0
    assert await cache.take("r", rate=rate, burst=burst) == 0.0
    wait = await cache.take("r", rate=rate, burst=burst)
    assert wait > 0.0
    start = time.monotonic()
    while await cache.take("r", rate=rate, burst=burst) > 0.0:
        assert time.monotonic() - start < TIMEOUT
        await asyncio.sleep(0.02)  # polling: the refill has no event to await
    # Refilled, but never beyond the burst.
    await asyncio.sleep(0.5)
    taken = [await cache.take("r", rate=rate, burst=burst) for _ in range(3)]
    assert taken[:2] == [0.0, 0.0]
    assert taken[2] > 0.0


async def test_take_with_a_cost(cache: Cache) -> None:
    assert await cache.take("c", rate=1.0, burst=5.0, cost=4.0) == 0.0
    wait = await cache.take("c", rate=1.0, burst=5.0, cost=4.0)
    assert 2.5 < wait <= 3.0
    assert await cache.take("c", rate=1.0, burst=5.0, cost=1.0) == 0.0


async def test_redis_url_prefix_names_the_keys() -> None:
    require_service("redis")
    from parley.cache.redis import RedisCache, RedisPresence

    name = f"t{uuid.uuid4().hex[:8]}"
    cache = connect_cache(f"{REDIS_URL}?prefix={name}")
    presence = connect_presence(f"{REDIS_URL}?prefix={name}", cache=cache)
    try:
        assert isinstance(cache, RedisCache) and cache.prefix == f"{name}:cache:"
        assert isinstance(presence, RedisPresence)
        assert presence.prefix == f"{name}:{{presence}}:"
        await cache.set("k", b"v", ttl=30)
        assert await cache.client.get(f"{name}:cache:k") == b"v"
        await cache.delete("k")
    finally:
        await cache.close()
    with pytest.raises(ValueError, match="prefix"):
        connect_cache(f"{REDIS_URL}?prefix=")
