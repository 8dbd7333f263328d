"""Redis behind the ``Cache`` and ``PresenceStore`` ports (redis-py asyncio).

Presence layout, under a configurable prefix (tests use their own)::

    <prefix>u:<user_id>   hash   conn_id -> "expires|chosen|last_active|node_id"
    <prefix>exp           zset   "user_id\\nconn_id" scored by expiry (what lapses next)
    <prefix>last          zset   user_id scored by last activity (survives its entries)

Expiry is timed by the Redis server's clock (``TIME`` inside the scripts), so nodes
with skewed clocks still agree on what has lapsed. Every call is one round trip:
``put`` and ``expired`` are Lua scripts (atomic, so an entry refreshed while it is
being reaped is either refreshed or reaped, never half of each), ``get`` one
pipeline. The default prefix carries a hash tag (``{presence}``) so that all the
keys share one slot, which keeps the scripts legal on Redis Cluster. Needs Redis 7
(``ZADD GT``, ``ZRANGE BYSCORE``, ``TIME`` in scripts).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any, cast

from redis.asyncio import Redis

from parley.domain.models import UserId
from parley.ports import Cache, ConnectionPresence, PresenceStore

PRESENCE_PREFIX = "parley:{presence}:"
CACHE_PREFIX = "parley:cache:"
LAST_SEEN_KEEP = 30 * 86400.0
"""Seconds an offline user's last activity is remembered after it."""
KEY_SLACK = 3600
"""Seconds a user's hash outlives its longest entry: a safety net that frees memory
when no node is left to reap (entries are still judged by their own expiry)."""

_PUT = """
local t = redis.call('TIME')
local now = tonumber(t[1]) + tonumber(t[2]) / 1000000
local ttl = tonumber(ARGV[1])
local expires = string.format('%.6f', now + ttl)
local keep = math.ceil(ttl) + tonumber(ARGV[2])
for i = 3, #KEYS do
  local j = 3 + (i - 3) * 4
  local user, conn, body, active = ARGV[j], ARGV[j + 1], ARGV[j + 2], ARGV[j + 3]
  redis.call('HSET', KEYS[i], conn, expires .. '|' .. body)
  redis.call('ZADD', KEYS[1], expires, user .. '\\n' .. conn)
  redis.call('ZADD', KEYS[2], 'GT', active, user)
  if redis.call('TTL', KEYS[i]) < keep then
    redis.call('EXPIRE', KEYS[i], keep)
  end
end
return #KEYS - 2
"""

_EXPIRED = """
local t = redis.call('TIME')
local now = tonumber(t[1]) + tonumber(t[2]) / 1000000
local due = redis.call('ZRANGE', KEYS[1], '-inf', string.format('%.6f', now),
                       'BYSCORE', 'LIMIT', 0, tonumber(ARGV[2]))
local users = {}
for _, member in ipairs(due) do
  local sep = string.find(member, '\\n', 1, true)
  local user = string.sub(member, 1, sep - 1)
  redis.call('ZREM', KEYS[1], member)
  redis.call('HDEL', ARGV[1] .. user, string.sub(member, sep + 1))
  users[#users + 1] = user
end
redis.call('ZREMRANGEBYSCORE', KEYS[2], '-inf', string.format('%.6f', now - tonumber(ARGV[3])))
return users
"""

_INCR = """
local n = redis.call('INCR', KEYS[1])
if n == 1 then
  redis.call('PEXPIRE', KEYS[1], ARGV[1])
end
return n
"""


_TAKE = """
local t = redis.call('TIME')
local now = tonumber(t[1]) + tonumber(t[2]) / 1000000
local rate, burst, cost = tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[3])
local b = redis.call('HMGET', KEYS[1], 't', 'ts')
local tokens = tonumber(b[1])
if tokens == nil then
  tokens = burst
else
  tokens = math.min(burst, tokens + math.max(0, now - tonumber(b[2])) * rate)
end
local wait = 0
if tokens >= cost then
  tokens = tokens - cost
else
  wait = (cost - tokens) / rate
end
redis.call('HSET', KEYS[1], 't', string.format('%.6f', tokens), 'ts', string.format('%.6f', now))
redis.call('PEXPIRE', KEYS[1], math.ceil((burst - tokens) / rate * 1000) + 1000)
return string.format('%.6f', wait)
"""
"""A token bucket as a hash (tokens, last update), timed by the Redis server's
clock so that every node agrees; it expires once it would be full again."""


def _ms(seconds: float) -> int:
    return max(1, math.ceil(seconds * 1000))


class RedisCache(Cache):
    """Keys with expiry and counters in Redis, shared by every node."""

    def __init__(self, client: Redis, *, prefix: str = CACHE_PREFIX, owns_client: bool = True):
        self.client = client
        self.prefix = prefix
        self._owns = owns_client
        self._incr = client.register_script(_INCR)
        self._take = client.register_script(_TAKE)

    @classmethod
    def from_url(cls, url: str, *, prefix: str = CACHE_PREFIX) -> RedisCache:
        return cls(Redis.from_url(url), prefix=prefix)

    async def start(self) -> None:
        await self.ping()

    async def close(self) -> None:
        if self._owns:
            await self.client.aclose()

    async def ping(self) -> None:
        await self.client.ping()

    async def get(self, key: str) -> bytes | None:
        return cast(bytes | None, await self.client.get(self.prefix + key))

    async def set(self, key: str, value: bytes, *, ttl: float | None = None) -> None:
        await self.client.set(self.prefix + key, value, px=None if ttl is None else _ms(ttl))

    async def delete(self, key: str) -> None:
        await self.client.delete(self.prefix + key)

    async def incr(self, key: str, *, ttl: float) -> int:
        return int(await self._incr(keys=[self.prefix + key], args=[_ms(ttl)]))

    async def take(self, key: str, *, rate: float, burst: float, cost: float = 1.0) -> float:
        reply = await self._take(keys=[self.prefix + key], args=[rate, burst, cost])
        return float(reply)


class RedisPresence(PresenceStore):
    """Presence entries in Redis (see the module doc for the layout)."""

    def __init__(
        self,
        client: Redis,
        *,
        prefix: str = PRESENCE_PREFIX,
        owns_client: bool = False,
        last_seen_keep: float = LAST_SEEN_KEEP,
    ) -> None:
        self.client = client
        self.prefix = prefix
        self._owns = owns_client
        self._last_seen_keep = last_seen_keep
        self._exp = prefix + "exp"
        self._last = prefix + "last"
        self._put = client.register_script(_PUT)
        self._expired = client.register_script(_EXPIRED)

    @classmethod
    def from_url(cls, url: str, *, prefix: str = PRESENCE_PREFIX) -> RedisPresence:
        return cls(Redis.from_url(url), prefix=prefix, owns_client=True)

    def _user_key(self, user_id: str) -> str:
        return f"{self.prefix}u:{user_id}"

    async def start(self) -> None:
        await self.ping()

    async def close(self) -> None:
        if self._owns:
            await self.client.aclose()

    async def ping(self) -> None:
        await self.client.ping()

    async def put(self, entries: Sequence[ConnectionPresence], ttl: float) -> None:
        if not entries:
            return
        keys = [self._exp, self._last]
        args: list[str | float] = [ttl, KEY_SLACK]
        for e in entries:
            keys.append(self._user_key(e.user_id))
            args += [e.user_id, e.conn_id, f"{e.chosen}|{e.last_active!r}|{e.node_id}"]
            args.append(repr(e.last_active))
        await self._put(keys=keys, args=args)

    async def remove(self, keys: Sequence[tuple[UserId, str]]) -> None:
        if not keys:
            return
        async with self.client.pipeline(transaction=True) as pipe:
            for user_id, conn_id in keys:
                pipe.hdel(self._user_key(user_id), conn_id)
                pipe.zrem(self._exp, f"{user_id}\n{conn_id}")
            await pipe.execute()

    async def get(
        self, user_ids: Sequence[UserId]
    ) -> dict[UserId, tuple[list[ConnectionPresence], float | None]]:
        if not user_ids:
            return {}
        async with self.client.pipeline(transaction=False) as pipe:
            pipe.time()
            pipe.zmscore(self._last, list(user_ids))
            for user_id in user_ids:
                pipe.hgetall(self._user_key(user_id))
            replies: list[Any] = await pipe.execute()
        seconds, micros = replies[0]
        now = seconds + micros / 1e6
        result: dict[UserId, tuple[list[ConnectionPresence], float | None]] = {}
        for user_id, last, conns in zip(user_ids, replies[1], replies[2:], strict=True):
            live: list[ConnectionPresence] = []
            for conn_id, value in cast(dict[bytes, bytes], conns).items():
                expires, chosen, active, node_id = value.decode().split("|", 3)
                if float(expires) > now:
                    live.append(
                        ConnectionPresence(
                            user_id, conn_id.decode(), node_id, chosen, float(active)
                        )
                    )
            result[user_id] = (live, None if last is None else float(last))
        return result

    async def expired(self, limit: int = 1000) -> list[UserId]:
        reply = await self._expired(
            keys=[self._exp, self._last], args=[self.prefix + "u:", limit, self._last_seen_keep]
        )
        return [UserId(u) for u in dict.fromkeys(m.decode() for m in cast(list[bytes], reply))]
