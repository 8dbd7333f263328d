"""Connection caps and client addresses: what keeps one client, or many slow ones,
from holding all of a node's sockets.

``ConnectionLimits`` counts a node's open connections, in total and per client
address, and its not yet authenticated WebSockets per address; the HTTP protocol
(``parley.gateway.server``) asks it before serving a connection, the WebSocket
endpoint before it waits for an ``auth`` frame. Refusals are logged once per
address per minute, so a flood does not become a flood of log lines.

``TrustedProxies`` are the peers whose ``X-Forwarded-For`` is believed (uvicorn's
proxy-headers middleware, configured by ``parley.gateway.server``, rewrites the
client address to the right-most hop that is not a trusted proxy: each proxy
appends the address it saw, so only the hops our own proxies appended can be
believed, everything left of them is the client's say).
"""

from __future__ import annotations

import functools
import ipaddress
import logging
import time
from collections.abc import Iterable

log = logging.getLogger("parley.limits")

LOG_EVERY = 60.0
"""Seconds between two log lines about refusals of one address."""
_LOG_MEMORY = 10_000
"""Addresses remembered for ``LOG_EVERY``; past that the memory starts over."""

IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network


class ThrottledLog:
    """Log a line at most once per ``every`` seconds per key (an address)."""

    def __init__(self, logger: logging.Logger, every: float = LOG_EVERY) -> None:
        self.logger = logger
        self.every = every
        self._last: dict[str, float] = {}

    def __call__(self, level: int, key: str, message: str, *args: object) -> bool:
        """Log unless ``key`` was logged within ``every`` seconds; True if logged."""
        now = time.monotonic()
        last = self._last.get(key)
        if last is not None and now - last < self.every:
            return False
        if len(self._last) >= _LOG_MEMORY:
            self._last = {k: t for k, t in self._last.items() if now - t < self.every}
            if len(self._last) >= _LOG_MEMORY:
                self._last.clear()
        self._last[key] = now
        self.logger.log(level, message, *args)
        return True


class TrustedProxies:
    """Addresses and networks whose forwarded headers are believed."""

    def __init__(self, items: Iterable[str]) -> None:
        self.networks: list[IPNetwork] = [
            ipaddress.ip_network(item, strict=False) for item in items
        ]
        self.contains = functools.lru_cache(maxsize=4096)(self._contains)

    def __bool__(self) -> bool:
        return bool(self.networks)

    def _contains(self, host: str) -> bool:
        try:
            address = ipaddress.ip_address(host)
        except ValueError:
            return False
        return any(address in network for network in self.networks)


class ConnectionLimits:
    """Open connections of a node, in total and per address, and WebSockets
    waiting for authentication per address. Trusted proxies carry many clients'
    connections, so they are capped only by the total."""

    def __init__(
        self,
        *,
        max_connections: int,
        max_per_ip: int,
        max_unauthenticated_ws_per_ip: int,
        trusted: TrustedProxies | None = None,
    ) -> None:
        self.max_connections = max_connections
        self.max_per_ip = max_per_ip
        self.max_unauthenticated = max_unauthenticated_ws_per_ip
        self.trusted = trusted or TrustedProxies(())
        self.total = 0
        self.per_ip: dict[str, int] = {}
        self.unauthenticated: dict[str, int] = {}
        self.refusals = 0
        self.log = ThrottledLog(log)

    def open(self, ip: str) -> str | None:
        """Count a new connection from ``ip``; or the reason it is refused."""
        if self.total >= self.max_connections:
            return self._refuse(ip, "the node has %d connections open", self.max_connections)
        count = self.per_ip.get(ip, 0)
        if count >= self.max_per_ip and not self.trusted.contains(ip):
            return self._refuse(ip, "%s has %d connections open", ip, self.max_per_ip)
        self.per_ip[ip] = count + 1
        self.total += 1
        return None

    def close(self, ip: str) -> None:
        """A connection counted by ``open`` has closed."""
        self.total -= 1
        count = self.per_ip.get(ip, 0) - 1
        if count > 0:
            self.per_ip[ip] = count
        else:
            self.per_ip.pop(ip, None)

    def enter_unauthenticated(self, ip: str) -> bool:
        """Count a WebSocket of ``ip`` that has yet to authenticate; False if over
        the cap (it is refused)."""
        count = self.unauthenticated.get(ip, 0)
        if count >= self.max_unauthenticated:
            self._refuse(
                ip, "%s has %d unauthenticated WebSockets open", ip, self.max_unauthenticated
            )
            return False
        self.unauthenticated[ip] = count + 1
        return True

    def leave_unauthenticated(self, ip: str) -> None:
        count = self.unauthenticated.get(ip, 0) - 1
        if count > 0:
            self.unauthenticated[ip] = count
        else:
            self.unauthenticated.pop(ip, None)

    def _refuse(self, ip: str, why: str, *args: object) -> str:
        self.refusals += 1
        message = why % args
        self.log(logging.WARNING, ip, "refusing connections: %s (logged once a minute)", message)
        return message
