"""A connection's delivery state, knowing no transport and no hub: its rooms'
cursors (``parley.protocol.session.RoomCursor``), its bounded outbound queue, and
the rooms it is replaying. ``Delivery`` is what it asks of the node.
"""

from __future__ import annotations

import asyncio
import logging
import math
from collections.abc import Callable
from typing import Protocol

from parley.delivery.fanout import Item
from parley.domain.models import UserId, new_id
from parley.errors import ParleyError
from parley.protocol.session import (
    CLOSE_GOING_AWAY,
    CLOSE_INTERNAL,
    CLOSE_TRY_AGAIN,
    Close,
    RoomCursor,
)

log = logging.getLogger("parley.delivery")


class Delivery(Protocol):
    """The node's side of a connection (the hub implements it)."""

    @property
    def outbound_queue(self) -> int:
        """Frames a connection may hold queued before it is closed (1013)."""
        ...

    def flush_soon(self, conn: Connection, *, urgent: bool = False) -> None:
        """Write the connection's queue once the current callback is done."""

    async def replay(self, conn: Connection, room_id: str) -> None:
        """Bring the room's cursor up to the live stream."""

    def overflowed(self, conn: Connection) -> None:
        """The connection's queue was full (it is being closed)."""


class Connection:
    """A client connection as delivery sees it: its user, its rooms' cursors and its
    bounded outbound queue. A transport (``gateway/ws.py``, ``gateway/sse.py``) pumps
    the queue to its socket; the node's ``Delivery`` fills it.

    ``close()`` asks the writer to close the connection; ``abort()`` (a writer stuck
    on a dead peer) cancels the connection's task, which then detaches it.
    """

    def __init__(self, delivery: Delivery, user_id: UserId, *, transport: str) -> None:
        self.delivery = delivery
        self.user_id = user_id
        self.transport = transport
        self.session_id = new_id()
        self.expires_at = math.inf
        """When the access token it was opened (or last re-authenticated) with
        expires, Unix seconds: the hub closes it then."""
        self.sid: str | None = None
        """The login session (refresh family) of that token: a logout ends it."""
        self.rooms: dict[str, RoomCursor] = {}
        self.close_request: Close | None = None
        self.opening = False
        self.membership_log: list[tuple[str, int, bool]] = []
        self.deferred_joins: dict[str, int] = {}
        self.sent = 0
        self.writing = False
        self.on_caught_up: Callable[[str], None] | None = None
        self.on_abort: Callable[[], None] | None = None
        self.flusher: Callable[[], None] | None = None
        self._dirty = False
        self._queue: list[Item] = []
        self._max = delivery.outbound_queue
        self._waiter: asyncio.Future[None] | None = None
        self._room_waiter: asyncio.Future[None] | None = None
        self._replay_rooms: list[str] = []
        self._replay_task: asyncio.Task[None] | None = None
        self._watch_sent = -1
        self._watch_sweeps = 0

    # outbound queue

    def push(self, item: Item, *, urgent: bool = False) -> bool:
        """Queue a frame for the writer; ``False`` (and the connection closes with
        1013) when the queue is full: the client reads too slowly. ``urgent``: this
        connection is written before the others this turn (an ack unblocks its
        sender, whose next send waits for it, while a fan-out's events wait on
        nothing)."""
        if self.close_request is not None:
            return True
        queue = self._queue
        if len(queue) >= self._max:
            self.delivery.overflowed(self)
            self.close(CLOSE_TRY_AGAIN, "too slow: outbound queue full", flush=False)
            return False
        queue.append(item)
        self._wake(urgent)
        return True

    def _wake(self, urgent: bool = False) -> None:
        """Something to write (or a close): a direct writer is flushed once the
        current callback is done; a writer task is woken."""
        if self.flusher is not None:
            if urgent:
                self._dirty = True
                self.delivery.flush_soon(self, urgent=True)
            elif not self._dirty:
                self._dirty = True
                self.delivery.flush_soon(self)
            return
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    def take_now(self) -> list[Item]:
        """Everything queued, at once (for a writer that can write synchronously)."""
        items, self._queue = self._queue, []
        if self._room_waiter is not None:
            self._made_room()
        return items

    async def wait_room(self, count: int) -> None:
        """Until ``count`` more frames fit in the queue with half of it to spare
        for live events: a replay's pace is the client's reading (the writer takes
        only what the socket accepts)."""
        limit = max(0, self._max // 2 - count)
        while len(self._queue) > limit and self.close_request is None:
            waiter = asyncio.get_running_loop().create_future()
            self._room_waiter = waiter
            try:
                await waiter
            finally:
                self._room_waiter = None

    def _made_room(self) -> None:
        waiter = self._room_waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    async def take(self) -> list[Item]:
        """Everything queued, waiting for at least one item; ``[]`` once closing."""
        while not self._queue:
            if self.close_request is not None:
                return []
            waiter = asyncio.get_running_loop().create_future()
            self._waiter = waiter
            try:
                await waiter
            finally:
                self._waiter = None
        items, self._queue = self._queue, []
        if self._room_waiter is not None:
            self._made_room()
        return items

    @property
    def queued(self) -> int:
        return len(self._queue)

    def close(self, code: int, reason: str, *, flush: bool = True) -> None:
        """Ask the writer to close; ``flush=False`` drops what is still queued."""
        if self.close_request is not None:
            return
        self.close_request = Close(code, reason)
        if not flush:
            self._queue.clear()
        self._wake()
        self._made_room()

    def end(self, frame: bytes, code: int, reason: str) -> None:
        """Close at once with ``frame`` as the last thing sent: whatever was still
        queued is dropped, and nothing queued after it is sent."""
        if self.close_request is not None:
            return
        self._queue.clear()
        self._queue.append(frame)
        self.close(code, reason)

    def abort(self) -> None:
        """Give up on the connection at once (its writer is stuck)."""
        self.close(CLOSE_INTERNAL, "stalled", flush=False)
        if self.on_abort is not None:
            self.on_abort()

    # replay

    def schedule_replay(self, room_id: str) -> None:
        """Read this room from the store until its cursor reaches the live head."""
        if room_id not in self._replay_rooms:
            self._replay_rooms.append(room_id)
        if self._replay_task is None and self.close_request is None:
            self._replay_task = asyncio.create_task(self._replay_all(), name="parley-replay")

    async def _replay_all(self) -> None:
        try:
            while self._replay_rooms and self.close_request is None:
                await self.delivery.replay(self, self._replay_rooms.pop(0))
        except ParleyError as exc:
            log.warning("replay for %s failed: %s", self.user_id, exc)
            self.close(CLOSE_TRY_AGAIN, "store unavailable; resume later", flush=False)
        finally:
            self._replay_task = None

    def caught_up(self, room_id: str) -> None:
        if self.on_caught_up is not None:
            self.on_caught_up(room_id)

    def stop(self) -> None:
        """The connection is gone: stop its background work, and drop the callbacks
        into its writer (bound methods of the pump, or closures over its task). Each
        closes a reference cycle through this connection; left in place, a closed
        connection waits for a full collection instead of going at once."""
        self.on_caught_up = self.on_abort = self.flusher = None
        if self._replay_task is not None:
            self._replay_task.cancel()
            self._replay_task = None
        self._replay_rooms.clear()
        if self.close_request is None:
            self.close_request = Close(CLOSE_GOING_AWAY, "gone")

    def stalled(self) -> bool:
        """Called once per sweep: true after two sweeps with frames queued and none
        written (a peer that stopped reading, or a half-open TCP connection)."""
        if (self._queue or self.writing) and self.sent == self._watch_sent:
            self._watch_sweeps += 1
        else:
            self._watch_sweeps = 0
        self._watch_sent = self.sent
        return self._watch_sweeps >= 2
