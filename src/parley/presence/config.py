"""The presence service's knobs, built once from ``Settings`` and passed down."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from parley.domain import presence as rules
from parley.settings import Settings


@dataclass(frozen=True, slots=True)
class PresenceConfig:
    """Timings and bounds of presence; the derived ones are properties."""

    heartbeat_interval: float = 20.0
    """The WebSocket ping interval: a connection silent for two is dead."""
    idle_after: float = 300.0
    """Seconds without activity before a connection is idle by itself."""
    grace: float = 10.0
    """Seconds a closed connection still counts, so a reload does not flash offline."""
    max_subscriptions: int = rules.MAX_SUBSCRIPTIONS
    """Users one connection may watch."""
    coalesce_interval: float = rules.COALESCE_INTERVAL
    """At most one update per watched user per this many seconds to a subscriber."""
    tick_interval: float = 0.5
    """Seconds between two ticks: the latency added to a change, and how often each
    node reaps lapsed entries (one cheap call)."""
    activity_write_every: float = 5.0
    """Seconds of activity a connection's stored ``last_active`` may lag behind: real
    activity is frequent, and other nodes only need it to a few seconds."""
    visibility_ttl: float = 30.0
    """Seconds a viewer's set of co-members is reused for subscription checks."""
    typing_throttle: float = rules.TYPING_THROTTLE
    typing_ttl: float = rules.TYPING_TTL
    expire_batch: int = 1000
    """Most lapsed entries one tick reaps (the rest wait for the next tick)."""

    def __post_init__(self) -> None:
        for name in ("heartbeat_interval", "idle_after", "tick_interval", "coalesce_interval"):
            if getattr(self, name) <= 0:
                raise ValueError(f"{name} must be positive")
        if self.grace < 0 or self.max_subscriptions < 1 or self.expire_batch < 1:
            raise ValueError("grace must be >= 0, max_subscriptions and expire_batch >= 1")

    @classmethod
    def from_settings(cls, settings: Settings, **overrides: Any) -> PresenceConfig:
        values: dict[str, Any] = {
            "heartbeat_interval": settings.heartbeat_interval,
            "idle_after": settings.idle_after,
            "grace": settings.presence_grace,
        }
        return cls(**(values | overrides))

    @property
    def entry_ttl(self) -> float:
        """Time to live of a live connection's entry after each refresh."""
        return rules.entry_ttl(self.heartbeat_interval, self.grace)

    @property
    def refresh_interval(self) -> float:
        """How often a node re-writes its entries: one heartbeat interval, so an entry
        survives a missed refresh or two (a slow store) before it could lapse."""
        return self.heartbeat_interval

    @property
    def offline_bound(self) -> float:
        """Seconds from a node's death to its users shown offline (``rules``)."""
        return rules.offline_bound(
            self.heartbeat_interval, self.grace, self.tick_interval, self.coalesce_interval
        )
