"""Cache backends behind ``parley.ports.Cache`` and ``parley.ports.PresenceStore``,
chosen by URL scheme: ``memory://`` (one process) or ``redis://`` / ``rediss://``.

A Redis URL may end in ``?prefix=NAME``: every key then starts with ``NAME:``
instead of ``parley:``, so that several clusters (or test runs) share one Redis
without seeing each other's presence or counters, as ``?prefix=`` does for the bus."""

from __future__ import annotations

from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

from parley.ports import Cache, PresenceStore

_SUPPORTED = "memory://, redis://, rediss://"


def _scheme(url: str) -> str:
    scheme = url.split("://", 1)[0]
    if scheme not in ("memory", "redis", "rediss"):
        raise ValueError(f"unsupported cache URL scheme {scheme!r} (supported: {_SUPPORTED})")
    return scheme


def split_prefix(url: str) -> tuple[str, str]:
    """``url`` without its ``prefix`` parameter, and the key namespace it names
    (``parley`` when absent). redis-py refuses query parameters it does not know."""
    parts = urlsplit(url)
    query = parse_qsl(parts.query, keep_blank_values=True)
    names = [v for k, v in query if k == "prefix"]
    if len(names) > 1 or (names and not names[0]):
        raise ValueError("a cache URL takes one non-empty ?prefix=")
    rest = urlencode([(k, v) for k, v in query if k != "prefix"])
    return urlunsplit(parts._replace(query=rest)), names[0] if names else "parley"


def connect_cache(url: str) -> Cache:
    """The cache for ``url``: ``memory://`` by default."""
    if _scheme(url) == "memory":
        from parley.cache.memory import MemoryCache

        return MemoryCache()
    from parley.cache.redis import RedisCache

    plain, name = split_prefix(url)
    return RedisCache.from_url(plain, prefix=f"{name}:cache:")


def connect_presence(url: str, *, cache: Cache | None = None) -> PresenceStore:
    """The presence entries' home for ``url`` (the cache's URL). Given the Redis
    ``cache`` of the same URL, it shares that cache's connection pool."""
    if _scheme(url) == "memory":
        from parley.cache.memory import MemoryPresence

        return MemoryPresence()
    from parley.cache.redis import RedisCache, RedisPresence

    plain, name = split_prefix(url)
    prefix = f"{name}:{{presence}}:"
    if isinstance(cache, RedisCache):
        return RedisPresence(cache.client, prefix=prefix)
    return RedisPresence.from_url(plain, prefix=prefix)
