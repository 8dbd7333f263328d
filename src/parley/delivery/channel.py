"""One room's fan-out on a node: its head, the events waiting for a gap to close,
the recent events kept for resumes, and its local subscribers. The ordering rule is
plain logic (``take``): fan out strictly ``head + 1``; a repeat is dropped (the bus
is at least once, and a node hears its own publishes), an event ahead of a gap
waits in ``pending`` until the gap is filled (by the bus or from the store).
"""

from __future__ import annotations

import asyncio
import itertools
import time
from collections import deque
from collections.abc import Iterator

from parley.delivery.fanout import Fanout
from parley.delivery.session import Connection
from parley.protocol.session import RoomCursor


class RoomChannel:
    """One room's fan-out on this node (see the module doc).

    ``head`` is the last ``seq`` fanned out here (None until read from the store);
    ``target`` a head the store is known to hold: the channel repairs up to it.
    """

    __slots__ = (
        "advanced",
        "head",
        "idle_since",
        "pending",
        "ready",
        "recent",
        "repair",
        "room_id",
        "subs",
        "target",
    )

    def __init__(self, room_id: str, head: int | None, recent: int = 0) -> None:
        self.room_id = room_id
        self.head = head
        self.recent: deque[Fanout] = deque(maxlen=recent)
        """The last events fanned out, contiguous up to ``head``: a resume within
        them is served from memory, with the frames already built."""
        self.subs: dict[Connection, RoomCursor] = {}
        self.pending: dict[int, Fanout] = {}
        self.ready: asyncio.Event | None = None if head is not None else asyncio.Event()
        self.repair: asyncio.Task[None] | None = None
        self.idle_since = time.monotonic()
        self.target = 0
        """A head the store is known to hold: the channel repairs up to it."""
        self.advanced: asyncio.Event | None = None
        """Set (and dropped) when the head moves, for resumes waiting on a target."""

    async def wait_advance(self) -> None:
        """Until the head moves (or the channel is dropped)."""
        if self.advanced is None:
            self.advanced = asyncio.Event()
        await self.advanced.wait()

    def moved(self) -> None:
        advanced = self.advanced
        if advanced is not None:
            self.advanced = None
            advanced.set()

    async def wait_head(self) -> int | None:
        """The head, once read; None if the channel was dropped before that (its
        ``ready`` is set then too, and stays set: waiting again would spin)."""
        if self.head is None and self.ready is not None:
            await self.ready.wait()
        return self.head

    def take(self, fanout: Fanout) -> Iterator[Fanout]:
        """The events to fan out now, in order, given one that arrived: it, if it
        is ``head + 1``, then whatever waited for it. The caller fans each out (and
        so advances ``head``) before asking for the next. An event ahead of a gap
        waits in ``pending`` (``behind`` is then true)."""
        head = self.head
        if head is None:
            self.pending[fanout.seq] = fanout
            return
        if fanout.seq <= head:
            return
        if fanout.seq > head + 1:
            self.pending[fanout.seq] = fanout
            return
        yield fanout
        yield from self.drain()

    def drain(self) -> Iterator[Fanout]:
        """What waited in ``pending`` and is next now; drops what is behind."""
        pending = self.pending
        while pending and self.head is not None:
            fanout = pending.pop(self.head + 1, None)
            if fanout is None:
                break
            yield fanout
        if self.head is not None and pending:
            for seq in [s for s in pending if s <= self.head]:
                del pending[seq]

    @property
    def behind(self) -> bool:
        """Something to repair: a gap before a pending event, or the store ahead."""
        return self.head is not None and (bool(self.pending) or self.head < self.target)

    def recent_after(self, after: int, page: int) -> list[Fanout] | None:
        """The events after ``after`` (``page`` at most) when the recent events
        still hold them all; ``None``: read the store."""
        recent = self.recent
        if not recent or recent[0].seq > after + 1 or recent[-1].seq <= after:
            return None
        start = after + 1 - recent[0].seq
        return list(itertools.islice(recent, start, start + page))
