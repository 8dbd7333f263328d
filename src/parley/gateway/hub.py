"""Fan-out: committed events go onto the bus; events from the bus go to the local
connections of the room's members. (Placeholder until the real-time gateway lands.)"""

from __future__ import annotations

from collections.abc import Sequence

from parley.domain.models import Event
from parley.ports import Bus, Store
from parley.settings import Settings


class Hub:
    """Implements ``parley.service.notify.Notifier`` for the gateway."""

    def __init__(self, *, bus: Bus, store: Store, settings: Settings, node_id: str) -> None:
        self.bus = bus
        self.store = store
        self.settings = settings
        self.node_id = node_id

    async def start(self) -> None:
        return None

    async def close(self) -> None:
        return None

    async def publish(self, events: Sequence[Event]) -> None:
        return None
