"""Where committed events go: the gateway's hub implements ``Notifier``."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

from parley.domain.models import Event


class Notifier(Protocol):
    """Receives every event after its transaction committed (never before)."""

    async def publish(self, events: Sequence[Event]) -> None: ...


class NullNotifier:
    """Drops events: for the admin CLI and tools that run without a gateway."""

    async def publish(self, events: Sequence[Event]) -> None:
        return None
