"""Bus backends behind ``parley.ports.Bus``, chosen by URL scheme."""

from __future__ import annotations

from parley.ports import Bus


def connect_bus(url: str, *, node_id: str) -> Bus:
    """The bus for ``url``: ``memory://`` (one process); brokers come as they land."""
    scheme = url.split("://", 1)[0]
    if scheme == "memory":
        from parley.bus.memory import MemoryBus

        return MemoryBus()
    raise ValueError(f"unsupported bus URL scheme {scheme!r} (supported: memory://)")
