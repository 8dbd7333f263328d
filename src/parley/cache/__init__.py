"""Cache backends behind ``parley.ports.Cache``, chosen by URL scheme."""

from __future__ import annotations

from parley.ports import Cache


def connect_cache(url: str) -> Cache:
    """The cache for ``url``: ``memory://`` by default."""
    scheme = url.split("://", 1)[0]
    if scheme == "memory":
        from parley.cache.memory import MemoryCache

        return MemoryCache()
    raise ValueError(f"unsupported cache URL scheme {scheme!r} (supported: memory://)")
