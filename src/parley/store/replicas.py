"""Read replicas: history pages read from a streaming standby when it has caught up.

What may go to a replica
    ``list_messages`` and ``list_events`` only (REST paging, replay, export). ``seq``
    assignment, every write, membership checks and every other read stay on the
    primary.

Why a client never sees a replica's lag
    Every change to a room's messages, reactions and events takes a ``seq`` from the
    room's counter row (``rooms.last_seq``) in the same transaction, and those
    transactions are serialised by that row's lock, so a replica whose
    ``last_seq`` for the room is ``h`` holds every change of the room up to ``h``.
    On the replica the head is read first and the page after it (each statement a
    newer snapshot), so the page holds at least everything up to ``h``. The page is
    used when ``h`` is at least the primary's head read before it (the page is then
    as fresh as the primary was when the request came), or, for events (rows never
    change once written, ``seq`` has no gaps), when the page is full: the first
    ``limit + 1`` events after a ``seq`` are the same rows everywhere. Otherwise the
    primary answers. A replica that fails or times out is left alone for
    ``RETRY_SECONDS`` and the primary answers meanwhile.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TypeVar

from sqlalchemy.engine import URL, Connection
from sqlalchemy.exc import SQLAlchemyError

from parley.errors import Unavailable
from parley.store.crypto import KeyRing
from parley.store.runners import _PostgresRunner
from parley.store.statements import _ROOM_HEADS

log = logging.getLogger(__name__)

_T = TypeVar("_T")

RETRY_SECONDS = 5.0
"""How long a replica that failed is passed over."""
TIMEOUT_SECONDS = 2.0
"""The longest a read waits for a replica before the primary answers instead."""


@dataclass
class ReplicaStats:
    """Running counters (``/metrics``: ``parley_replica_*``). A history read is
    either ``served`` by a replica or answered by the primary because the replica
    ``lagged`` (its head of the room behind the primary's), ``failed`` (an error or
    ``TIMEOUT_SECONDS``) or every replica was ``resting`` after a failure. Reads
    never wait for a replica to catch up: ``head_checks`` counts the primary's head
    reads that judge a replica's page that is not a full page of events."""

    sent: int = 0
    served: int = 0
    lagged: int = 0
    failed: int = 0
    resting: int = 0
    head_checks: int = 0


def _head(conn: Connection, room_id: str) -> int | None:
    row = conn.execute(_ROOM_HEADS, {"rooms": [room_id]}).first()
    return None if row is None else int(row[1])


def room_head(room_id: str) -> Callable[[Connection], int | None]:
    """A read of the room's ``last_seq`` (``None``: no such room)."""
    return lambda conn: _head(conn, room_id)


class _Replicas:
    """Reader connections to each replica, taken in turn."""

    def __init__(self, urls: Sequence[URL], readers: int, keys: KeyRing | None = None) -> None:
        self._runners = [_PostgresRunner(url, readers, keys) for url in urls]
        self._resting = [0.0] * len(self._runners)
        self._turn = 0
        self.stats = ReplicaStats()

    def _pick(self) -> int | None:
        now = time.monotonic()
        for step in range(len(self._runners)):
            index = (self._turn + step) % len(self._runners)
            if self._resting[index] <= now:
                self._turn = index + 1
                return index
        return None

    async def read(
        self, room_id: str, fn: Callable[[Connection], _T]
    ) -> tuple[int | None, _T] | None:
        """``(replica's head of the room, fn's result)``, the head read first; ``None``
        when no replica is usable now."""
        index = self._pick()
        if index is None:
            self.stats.resting += 1
            return None
        self.stats.sent += 1

        def run(conn: Connection) -> tuple[int | None, _T]:
            head = _head(conn, room_id)
            return head, fn(conn)

        try:
            async with asyncio.timeout(TIMEOUT_SECONDS):
                return await self._runners[index].read(run, snapshot=False)
        except (SQLAlchemyError, OSError, Unavailable, TimeoutError) as exc:
            self.stats.failed += 1
            self._resting[index] = time.monotonic() + RETRY_SECONDS
            log.warning("read replica %d failed, the primary answers: %r", index + 1, exc)
            return None

    async def close(self) -> None:
        for runner in self._runners:
            await runner.close()
