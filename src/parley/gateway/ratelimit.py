"""Rate limits as token buckets kept in the ``Cache`` (in a cluster, Redis: every
node draws from the same buckets, one round trip per check).

One class of limit per kind of action, each a ``PARLEY_RATE_LIMIT_<CLASS>`` setting
(``BURST/SECONDS``: a bucket of BURST tokens, refilled evenly over SECONDS). A
refused request takes no token, so a client that keeps retrying still gets through
at the refill rate. Per user: ``send``, ``edit`` (edits, deletions, reactions),
``rooms``, ``membership``, ``read`` (REST reads), ``typing``, ``presence``. Per
client address: ``register``, ``login`` (across usernames), ``login_user`` (per
username), ``refresh``, ``revoke``.
"""

from __future__ import annotations

import math
from typing import Final

from parley.errors import RateLimited
from parley.ports import Cache
from parley.settings import Settings, parse_rate

CLASSES: Final = (
    "send",
    "edit",
    "rooms",
    "membership",
    "read",
    "typing",
    "presence",
    "register",
    "login",
    "login_user",
    "refresh",
    "revoke",
)


class RateLimiter:
    """``check(name, key)`` raises ``RateLimited`` when ``key`` is over the limit of
    class ``name``."""

    def __init__(self, cache: Cache, settings: Settings, *, enabled: bool = True) -> None:
        self.cache = cache
        self.enabled = enabled
        self.limits: dict[str, tuple[float, float]] = {
            name: parse_rate(getattr(settings, f"rate_limit_{name}")) for name in CLASSES
        }

    async def check(self, name: str, key: str) -> None:
        if not self.enabled:
            return
        rate, burst = self.limits[name]
        wait = await self.cache.take(f"rl:{name}:{key}", rate=rate, burst=burst)
        if wait > 0.0:
            raise RateLimited(
                f"too many {name} requests; retry in {math.ceil(wait)} s", retry_after=wait
            )
