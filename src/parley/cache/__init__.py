"""Cache backends behind ``parley.ports.Cache`` and ``parley.ports.PresenceStore``,
chosen by URL scheme: ``memory://`` (one process) or ``redis://`` / ``rediss://``."""

from __future__ import annotations

from parley.ports import Cache, PresenceStore

_SUPPORTED = "memory://, redis://, rediss://"


def _scheme(url: str) -> str:
    scheme = url.split("://", 1)[0]
    if scheme not in ("memory", "redis", "rediss"):
        raise ValueError(f"unsupported cache URL scheme {scheme!r} (supported: {_SUPPORTED})")
    return scheme


def connect_cache(url: str) -> Cache:
    """The cache for ``url``: ``memory://`` by default."""
    if _scheme(url) == "memory":
        from parley.cache.memory import MemoryCache

        return MemoryCache()
    from parley.cache.redis import RedisCache

    return RedisCache.from_url(url)


def connect_presence(url: str, *, cache: Cache | None = None) -> PresenceStore:
    """The presence entries' home for ``url`` (the cache's URL). Given the Redis
    ``cache`` of the same URL, it shares that cache's connection pool."""
    if _scheme(url) == "memory":
        from parley.cache.memory import MemoryPresence

        return MemoryPresence()
    from parley.cache.redis import RedisCache, RedisPresence

    if isinstance(cache, RedisCache):
        return RedisPresence(cache.client)
    return RedisPresence.from_url(url)
