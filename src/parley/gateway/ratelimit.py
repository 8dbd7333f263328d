"""Fixed-window rate limits kept in the ``Cache`` (so a cluster shares them)."""

from __future__ import annotations

import time

from parley.errors import RateLimited
from parley.ports import Cache


class RateLimiter:
    """``check(name, key, limit, window)`` raises ``RateLimited`` over the limit."""

    def __init__(self, cache: Cache, *, enabled: bool = True) -> None:
        self.cache = cache
        self.enabled = enabled

    async def check(self, name: str, key: str, *, limit: int, window: float) -> None:
        if not self.enabled:
            return
        bucket = int(time.time() // window)
        count = await self.cache.incr(f"rl:{name}:{key}:{bucket}", ttl=window + 1)
        if count > limit:
            retry = window - (time.time() % window)
            raise RateLimited(f"too many {name} requests; retry later", retry_after=retry)
