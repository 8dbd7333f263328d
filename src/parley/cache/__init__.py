"""Cache backends behind ``parley.ports.Cache``, chosen by URL scheme."""

from __future__ import annotations

from parley.ports import Cache, PresenceStore


def connect_cache(url: str) -> Cache:
    """The cache for ``url``: ``memory://`` by default."""
    scheme = url.split("://", 1)[0]
    if scheme == "memory":
        from parley.cache.memory import MemoryCache

        return MemoryCache()
    raise ValueError(f"unsupported cache URL scheme {scheme!r} (supported: memory://)")


def connect_presence(url: str) -> PresenceStore:
    """The presence entries' home for ``url`` (the cache's URL)."""
    scheme = url.split("://", 1)[0]
    if scheme == "memory":
        from parley.cache.memory import MemoryPresence

        return MemoryPresence()
    raise ValueError(f"unsupported cache URL scheme {scheme!r} (supported: memory://)")
