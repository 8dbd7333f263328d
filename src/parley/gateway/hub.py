"""Fan-out: committed events reach every local connection of the room's members.

Flow (``docs/architecture.md``)::

    Store writer ──commit──▶ Hub.committed(events) ──▶ local fan-out  (at once, no await)
                                     └──▶ Outbox ──▶ Bus.publish_batch(room.<id>: the commit's
                                          events)  ──▶ other nodes' Hub._on_bus

Delivery follows the commit, not the caller: the store's writer calls
``committed`` (its ``on_events`` hook) before it answers anyone, and the outbox
publishes in the background, retrying, so neither a cancelled caller nor a failing
broker loses a doorbell and no ack waits on the broker.

Invariants
    * One ``RoomChannel`` per room with local subscribers. Its ``head`` is the last
      ``seq`` it fanned out; it fans out strictly ``head + 1`` next, so duplicates
      (the bus is at-least-once, and a node hears its own publishes) are dropped by
      ``(room_id, seq)`` and an out-of-order event waits in ``pending``. A gap that
      does not close within ``REPAIR_DELAY`` is read from the store, the source of
      truth (the bus is only a doorbell). A channel also repairs up to a ``target``
      read from the store: after a bus reconnect, every ``repair_interval``, when a
      connection attaches with a newer head, and for a ``resume``.
    * A ``resume`` is answered ``resumed`` only once each named room was delivered
      up to the database's head at the time of the resume, not merely the node's
      (which may have missed bus traffic). Replay is paced by the client's reading:
      a page is read only when the connection's queue has room for it, so a resume
      of any age completes on one connection while live events keep flowing.
    * Each event is framed once (``Fanout``) and the same object is queued for every
      recipient: no per-recipient encoding, query or ``await``. Each connection has
      one bounded queue and one writer (in ``ws.py``/``sse.py``); a full queue closes
      that connection (1013) and never slows the room.
    * Per connection and room a ``RoomCursor`` (sans I/O, ``parley.protocol.session``)
      delivers ``cursor + 1`` only; behind the head it replays from the store and goes
      live at the head with no gap and no duplicate.
    * Membership is live: ``member.joined`` attaches the user's connections to the
      room before the event is fanned out (so they receive it), ``member.left``
      detaches them right after it (so it is the last event of the room they see).

Bus channels: ``room.<room_id>`` (subscribed while the room has local subscribers),
``user.<user_id>`` (while the user has local connections: a join reaches a node
that has no channel for the room yet), and ``sessions`` (always: every node hears
of a logout, to end the session's connections and refuse its access tokens). Each bus message is a
``parley.protocol.envelope``: the origin node's id (so a node skips its own echo
without decoding), then a commit's stored events for the room, an ephemeral
``typing`` frame, a commit's notifications in the room (each with its user), or (on
``sessions``) a user's sessions that ended.

Live connections follow their token: each has an ``expires_at`` (the access token's
``exp``), extended when the client sends a fresh token on it. One timer per hub,
over a heap of (expiry, connection), closes each at its expiry (1008
``token_expired``), whatever the number of connections.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import heapq
import logging
import math
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Final

from parley.delivery.channel import RoomChannel
from parley.delivery.fanout import Fanout
from parley.delivery.outbox import Outbox
from parley.delivery.session import Connection
from parley.domain.mentions import Notification
from parley.domain.models import Event, RoomId, UserId
from parley.errors import NotFound, ParleyError
from parley.gateway.metrics import HubStats, Metrics
from parley.ports import Bus, Store
from parley.presence import PresenceService
from parley.protocol import envelope
from parley.protocol.codec import loads
from parley.protocol.events import MEMBER_JOINED, MEMBER_LEFT, REWRITES
from parley.protocol.frames import encode_message, error_frame, notification_frame, typing_frame
from parley.protocol.session import (
    CLOSE_POLICY,
    CLOSE_SERVICE_RESTART,
    CLOSE_TRY_AGAIN,
    DELIVER,
    GAP,
    RoomCursor,
)
from parley.settings import Settings

log = logging.getLogger("parley.hub")

REPAIR_DELAY: Final = 0.05
"""Seconds an out-of-order event waits for the ones before it before the store is
read: concurrent publishes after one group commit arrive microseconds apart."""
REPLAY_PAGE: Final = 200
CHANNEL_LINGER: Final = 60.0
"""Seconds a room's channel outlives its last local subscriber, so that a burst of
reconnects (a deploy, a network blip) does not re-read every room's head."""
DRAIN_TIMEOUT: Final = 5.0
OPERATION: Final = "parley-operation"
"""The name of a connection's accepted operation's task (a send, a read): a drain
lets them finish."""
# The event loop's lag is sampled this often (s).
LAG_PROBE: Final = 0.05
SESSIONS_CHANNEL: Final = "sessions"
"""Logouts and password changes: every node subscribes (they are rare)."""


def sessions_message(origin: bytes, user_id: str, sids: Sequence[str]) -> bytes:
    """What ``SESSIONS_CHANNEL`` carries: these sessions of ``user_id`` ended (also
    sent by ``parley admin`` after a deactivation, to reach every node)."""
    return envelope.pack(envelope.SESSIONS, origin, "\n".join([user_id, *sids]).encode())


HEADS_PER_QUERY: Final = 500
"""Rooms whose heads one store read checks."""
TARGET_WAIT: Final = 10.0
"""Seconds a resume waits for its rooms to reach the database's head (a store that
cannot be read meanwhile): then the connection is closed, to resume again later."""


@dataclass(slots=True)
class Resumed:
    """What ``Hub.resume`` did: rooms still replaying, rooms whose cursor was beyond
    the database's head (with that head)."""

    replaying: list[str] = field(default_factory=list)
    ahead: dict[str, int] = field(default_factory=dict)


def _replay_head(cursor: RoomCursor, channel: RoomChannel | None) -> int | None:
    """Where a replay stops: the user's leave, else the channel's live head; None
    while the head is not known (or there is no channel)."""
    if cursor.end_seq is not None:
        return cursor.end_seq
    return channel.head if channel is not None else None


class Hub:
    """Owns every local connection; ``committed`` is the store's commit hook."""

    def __init__(self, *, bus: Bus, store: Store, settings: Settings, node_id: str) -> None:
        self.bus = bus
        self.store = store
        self.settings = settings
        self.node_id = node_id
        self.stats = HubStats()
        self.metrics = Metrics(self.stats)
        self.rooms: dict[str, RoomChannel] = {}
        self.users: dict[str, set[Connection]] = {}
        self.connections: set[Connection] = set()
        self.closing = False
        self._drained = False
        self._origin = node_id.encode()
        self._prefix_events = envelope.prefix(envelope.EVENTS, self._origin)
        self._prefix_typing = envelope.prefix(envelope.TYPING, self._origin)
        self._prefix_notifications = envelope.prefix(envelope.NOTIFICATIONS, self._origin)
        self.outbox = Outbox(bus, limit=settings.bus_outbox)
        self.metrics.watch_outbox(self.outbox)
        self.presence: PresenceService | None = None
        self._tasks: set[asyncio.Task[Any]] = set()
        self._sweeper: asyncio.Task[None] | None = None
        self._empty = asyncio.Event()
        self._empty.set()
        self._dirty: list[Connection] = []
        self._urgent: list[Connection] = []
        self._flushing: asyncio.Handle | None = None
        self.gc_freeze_growth: int | None = None
        """Connections gained between two ``gc.freeze()`` calls (``refreeze_gc``);
        None: never (``parley.gateway.server.tune_gc`` turns it on)."""
        self._frozen_at = 0
        self.sessions_ended: Callable[[list[str]], None] | None = None
        """Told the sessions a logout or password change ended, here or on another
        node (``Tokens.end_sessions``: their access tokens are refused from now)."""
        self._by_session: dict[str, Connection] = {}
        self._expiries: list[tuple[float, str]] = []
        """A heap of (expiry in Unix seconds, connection's session id); an entry whose
        connection is gone or was extended since is skipped when it comes up."""
        self._expiry_timer: asyncio.TimerHandle | None = None
        self._expiry_due = 0.0

    # lifecycle

    async def start(self) -> None:
        await self.bus.start(self._on_bus, on_reconnect=self._bus_reconnected)
        await self.bus.subscribe(SESSIONS_CHANNEL)
        self.outbox.start()
        self._sweeper = asyncio.create_task(self._sweep_forever(), name="parley-hub-sweeper")
        self.spawn(self._watch_lag(), "parley-loop-lag")
        self.spawn(self._check_heads_forever(), "parley-head-check")

    async def drain(self, grace: float = DRAIN_TIMEOUT) -> None:
        """Stop taking work (new connections and sends are refused, ``/readyz`` says
        ``draining``), let the operations already accepted finish (their acks are
        queued: never silence), then close every connection with 1012 (service
        restart) after what is queued for it, and wait for them to go, ``grace``
        seconds in all. Clients reconnect to another node at once and resume.

        Only the first call waits: later ones (the runtime's close after the
        server's drain) abort what is left at once, so that a stop stays within
        ``PARLEY_DRAIN_SECONDS`` even when a connection never goes."""
        if self._drained:
            for conn in list(self.connections):
                conn.abort()
            return
        self._drained = True
        self.closing = True
        loop = asyncio.get_running_loop()
        deadline = loop.time() + grace
        accepted = [t for t in self._tasks if t.get_name() == OPERATION]
        if accepted:
            await asyncio.wait(accepted, timeout=grace / 2)
        for conn in list(self.connections):
            conn.close(CLOSE_SERVICE_RESTART, "service restart: reconnect to another node")
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout_at(deadline):
                await self._empty.wait()
        for conn in list(self.connections):
            conn.abort()

    async def close(self) -> None:
        """Drain the connections, stop background work, leave the bus."""
        await self.drain()
        if self._expiry_timer is not None:
            self._expiry_timer.cancel()
            self._expiry_timer = None
        tasks = [t for t in (self._sweeper, *self._tasks) if t is not None]
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        for channel in self.rooms.values():
            if channel.repair is not None:
                channel.repair.cancel()
        self.rooms.clear()
        await self.outbox.close()
        await self.bus.close()

    @property
    def outbound_queue(self) -> int:
        return self.settings.outbound_queue

    def overflowed(self, conn: Connection) -> None:
        self.stats.queue_drops += 1

    def flush_soon(self, conn: Connection, *, urgent: bool = False) -> None:
        """Write ``conn``'s queue once the current callback is done: every frame a
        fan-out (or a whole commit's fan-outs) queued for it goes in one write.
        ``urgent`` connections are written first (one on both lists is written
        once: the second time its queue is empty)."""
        (self._urgent if urgent else self._dirty).append(conn)
        if self._flushing is None:
            self._flushing = asyncio.get_running_loop().call_soon(self._flush)

    def _flush(self) -> None:
        self._flushing = None
        dirty = self._urgent + self._dirty if self._urgent else self._dirty
        self._urgent, self._dirty = [], []
        for conn in dirty:
            conn._dirty = False
            flusher = conn.flusher
            if flusher is None:
                continue
            try:
                flusher()
            except Exception:
                log.exception("writing to a connection of %s failed", conn.user_id)
                conn.abort()

    def spawn(self, coro: Awaitable[Any], name: str) -> None:
        """Run ``coro`` in the background, held until done; failures are logged."""
        task: asyncio.Task[Any] = asyncio.ensure_future(coro)
        task.set_name(name)
        self._tasks.add(task)
        task.add_done_callback(self._task_done)

    def _task_done(self, task: asyncio.Task[Any]) -> None:
        self._tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            log.error("hub task %s failed", task.get_name(), exc_info=task.exception())

    # connections

    async def attach(
        self, conn: Connection, before_live: Callable[[dict[str, int]], None]
    ) -> dict[str, int]:
        """Register an authenticated connection and start its rooms.

        The user is indexed first, so membership changes made while the store is
        read are logged and applied to the snapshot. ``before_live(rooms)`` runs
        (to queue ``ready``) before any event can be queued. Returns the rooms and
        the ``seq`` each starts after.
        """
        user = conn.user_id
        conns = self.users.get(user)
        if conns is None:
            conns = self.users[user] = set()
            self.spawn(self.bus.subscribe(f"user.{user}"), "parley-bus-subscribe")
        conns.add(conn)
        self.connections.add(conn)
        self._by_session[conn.session_id] = conn
        self.watch_expiry(conn)
        self._empty.clear()
        self._count(conn.transport, +1)
        self.refreeze_gc()
        conn.opening = True
        try:
            rooms = {str(r): seq for r, seq in (await self.store.user_room_ids(user)).items()}
        finally:
            conn.opening = False
        for room_id, seq, joined in conn.membership_log:
            if joined and rooms.get(room_id, -1) < seq:
                rooms[room_id] = seq - 1
            elif not joined and room_id in rooms and rooms[room_id] < seq:
                del rooms[room_id]
        conn.membership_log.clear()
        if conn.close_request is not None:
            return rooms
        before_live(rooms)
        created: list[RoomChannel] = []
        for room_id, seq in rooms.items():
            channel = self.rooms.get(room_id)
            if channel is None:
                channel = self._open_channel(room_id, None)
                created.append(channel)
            else:
                self._want(channel, seq)
            self._subscribe(conn, channel, RoomCursor(room_id, seq))
        if created:
            self.spawn(self._init_channels(user, created), "parley-channel-init")
        return rooms

    def detach(self, conn: Connection) -> None:
        """Forget a connection that has closed (idempotent)."""
        conn.stop()
        if conn not in self.connections:
            return
        self.connections.discard(conn)
        self._by_session.pop(conn.session_id, None)
        self._count(conn.transport, -1)
        for room_id in conn.rooms:
            channel = self.rooms.get(room_id)
            removed = channel.subs.pop(conn, None) if channel is not None else None
            if channel is not None and removed is not None and not channel.subs:
                channel.idle_since = time.monotonic()
        conn.rooms.clear()
        conns = self.users.get(conn.user_id)
        if conns is not None:
            conns.discard(conn)
            if not conns:
                del self.users[conn.user_id]
                self.spawn(self.bus.unsubscribe(f"user.{conn.user_id}"), "parley-bus-unsub")
        if not self.connections:
            self._empty.set()

    # token expiry and ended sessions

    def watch_expiry(self, conn: Connection) -> None:
        """Close ``conn`` at its ``expires_at`` (call again after extending it)."""
        if conn.expires_at == math.inf:
            return
        heapq.heappush(self._expiries, (conn.expires_at, conn.session_id))
        if self._expiry_timer is None or conn.expires_at < self._expiry_due:
            self._arm_expiry()

    def _arm_expiry(self) -> None:
        if self._expiry_timer is not None:
            self._expiry_timer.cancel()
            self._expiry_timer = None
        if not self._expiries:
            return
        due = self._expiries[0][0]
        loop = asyncio.get_running_loop()
        self._expiry_due = due
        self._expiry_timer = loop.call_at(
            loop.time() + max(0.0, due - time.time()), self._expire_due
        )

    def _expire_due(self) -> None:
        self._expiry_timer = None
        now = time.time()
        heap = self._expiries
        while heap and heap[0][0] <= now:
            _, session_id = heapq.heappop(heap)
            conn = self._by_session.get(session_id)
            if conn is not None and conn.expires_at <= now:
                self.expire(conn)
        self._arm_expiry()

    def expire(self, conn: Connection) -> None:
        """The connection's token expired: nothing more is delivered on it (what is
        queued is dropped), then an ``error`` and close 1008 ``token_expired``."""
        self.stats.tokens_expired += 1
        conn.end(
            error_frame("token_expired", "the access token expired: authenticate again"),
            CLOSE_POLICY,
            "token_expired",
        )

    def end_sessions(self, user_id: str, sids: Sequence[str]) -> None:
        """A logout or password change ended these sessions of ``user_id``: close
        their connections and refuse their access tokens here, and on every other
        node (``sessions`` on the bus)."""
        if not sids:
            return
        self._end_local(user_id, sids)
        self.outbox.put(SESSIONS_CHANNEL, sessions_message(self._origin, user_id, sids))

    def _end_local(self, user_id: str, sids: Sequence[str]) -> None:
        if self.sessions_ended is not None:
            self.sessions_ended(list(sids))
        ended = set(sids)
        for conn in list(self.users.get(user_id, ())):
            if conn.sid in ended:
                self.stats.sessions_ended += 1
                conn.end(
                    error_frame("session_ended", "this session was logged out"),
                    CLOSE_POLICY,
                    "session_ended",
                )

    def _count(self, transport: str, delta: int) -> None:
        if transport == "sse":
            self.stats.connections_sse += delta
        else:
            self.stats.connections_ws += delta

    def _subscribe(self, conn: Connection, channel: RoomChannel, cursor: RoomCursor) -> None:
        conn.rooms[channel.room_id] = cursor
        channel.subs[conn] = cursor
        if channel.head is None or cursor.need_replay(channel.head):
            cursor.replaying = True
            conn.schedule_replay(channel.room_id)

    async def resume(self, conn: Connection, cursors: dict[str, int]) -> Resumed:
        """Rewind the named rooms the user is in to the client's cursors.

        The rooms' heads are read from the store first: each replay then goes on
        until the database's head at this moment, even where this node's fan-out
        is behind it (it missed bus traffic: the channel is repaired meanwhile). A
        cursor beyond that head (the client holds a history this database does not:
        a restore, a failover) is not rewound; the room goes on live from where the
        connection stands, and the caller tells the client (``cursor_ahead``).

        A room whose missed events are all in the channel's memory (the usual short
        disconnect) is replayed here and now: no task and no store read beyond the
        heads'. Returns the rooms still replaying and the rooms ahead."""
        result = Resumed()
        wanted = {
            room_id: seq
            for room_id, seq in cursors.items()
            if (cursor := conn.rooms.get(room_id)) is not None and cursor.end_seq is None
        }
        self.stats.resumes += 1
        if not wanted:
            return result
        heads = await self.store.room_heads([RoomId(r) for r in wanted])
        for room_id, seq in wanted.items():
            cursor = conn.rooms.get(room_id)
            if cursor is None or cursor.end_seq is not None:
                continue
            head = heads.get(RoomId(room_id), 0)
            if seq > head:
                result.ahead[room_id] = head
                continue
            cursor.rewind(seq, head)
            channel = self.rooms.get(room_id)
            if channel is not None:
                self._want(channel, head)
            if self._replay_from_memory(conn, room_id, cursor) and cursor.reached:
                self._replayed(conn, room_id, cursor)
                continue
            conn.schedule_replay(room_id)
            result.replaying.append(room_id)
        return result

    # channels

    def _open_channel(self, room_id: str, head: int | None) -> RoomChannel:
        """A channel with a known head subscribes in the background; one without
        subscribes in ``_init_channels``, before its head is read."""
        channel = RoomChannel(room_id, head, self.settings.replay_cache)
        self.rooms[room_id] = channel
        if head is not None:
            self.spawn(self.bus.subscribe(f"room.{room_id}"), "parley-bus-subscribe")
        return channel

    async def _init_channels(self, user: UserId, channels: list[RoomChannel]) -> None:
        """Subscribe channels opened with no head, then set their heads from a store
        read made after they started listening: every later event reaches them."""
        try:
            for channel in channels:
                await self.bus.subscribe(f"room.{channel.room_id}")
            heads = await self.store.user_room_ids(user)
            for channel in channels:
                if channel.head is not None or self.rooms.get(channel.room_id) is not channel:
                    continue
                head = heads.get(RoomId(channel.room_id))
                if head is None:
                    room = await self.store.get_room(RoomId(channel.room_id))
                    head = room.last_seq if room is not None else 0
                self._set_head(channel, head)
        except Exception as exc:
            log.warning("could not start room channels: %r", exc)
            for channel in channels:
                if channel.head is None:
                    self._drop_channel(channel, "store unavailable; resume later")

    def _set_head(self, channel: RoomChannel, head: int) -> None:
        channel.head = head
        channel.moved()
        if channel.ready is not None:
            channel.ready.set()
            channel.ready = None
        self._drain_pending(channel)

    def _drop_channel(self, channel: RoomChannel, reason: str) -> None:
        for conn in list(channel.subs):
            conn.close(CLOSE_TRY_AGAIN, reason, flush=False)
        if self.rooms.get(channel.room_id) is channel:
            del self.rooms[channel.room_id]
            self.spawn(self.bus.unsubscribe(f"room.{channel.room_id}"), "parley-bus-unsub")
        if channel.ready is not None:
            channel.ready.set()
        channel.moved()

    # events in

    def committed(self, events: Sequence[Event]) -> None:
        """The store's commit hook: fan out locally at once, then queue one bus
        message per room (the commit's events for it) and one per member whose
        membership changed (a join reaches a node with no channel for the room)."""
        by_room: dict[str, list[bytes]] = {}
        outbox, head = self.outbox, self._prefix_events
        for event in events:
            fanout = Fanout.of_event(event)
            self._accept(fanout)
            raws = by_room.get(fanout.room_id)
            if raws is None:
                by_room[fanout.room_id] = [fanout.raw]
            else:
                raws.append(fanout.raw)
            if fanout.member is not None:
                outbox.put(f"user.{fanout.member}", envelope.pack_events(head, (fanout.raw,)))
        for room_id, raws in by_room.items():
            outbox.put(f"room.{room_id}", envelope.pack_events(head, raws))

    def notified(self, notifications: Sequence[Notification]) -> None:
        """The store's notifications hook: each notification's frame is encoded
        once (its message once for all its recipients), pushed to every local
        connection of its user, and published for the user's connections on other
        nodes: one bus message per room and commit, on the room's channel, which
        every node holding a connection of a member listens on."""
        by_room: dict[str, list[bytes]] = {}
        messages: dict[str, bytes] = {}
        for item in notifications:
            message = messages.get(item.message.id)
            if message is None:
                message = messages[item.message.id] = encode_message(item.message.public())
            frame = notification_frame(item, message)
            self._notify_local(item.user_id, frame)
            by_room.setdefault(item.room_id, []).append(item.user_id.encode() + b"\n" + frame)
        head = self._prefix_notifications
        for room_id, addressed in by_room.items():
            self.outbox.put(f"room.{room_id}", envelope.pack_events(head, addressed))

    def _notify_local(self, user_id: str, frame: bytes) -> None:
        """Not on a connection still attaching: nothing may come before its
        ``ready``, and a client reads the feed after ``ready`` anyway."""
        conns = self.users.get(user_id)
        if conns:
            for conn in conns:
                if not conn.opening:
                    conn.push(frame)
            self.stats.notifications_out += 1

    async def _on_bus(self, channel: str, data: bytes) -> None:
        if data[:1] == envelope.PRESENCE:
            if self.presence is not None:
                self.presence.on_bus(data)
            return
        try:
            message = envelope.unpack(data)
            if message.origin == self._origin:
                return
            if message.kind == envelope.EVENTS:
                for raw in envelope.unpack_events(message.body):
                    self._accept(Fanout.of_raw(raw))
            elif message.kind == envelope.TYPING:
                frame = loads(message.body)
                self._typing_local(str(frame["room_id"]), str(frame["user_id"]), message.body)
            elif message.kind == envelope.SESSIONS:
                user_id, *sids = message.body.decode().split("\n")
                self._end_local(user_id, sids)
            elif message.kind == envelope.NOTIFICATIONS:
                for addressed in envelope.unpack_events(message.body):
                    addressee, _, frame = addressed.partition(b"\n")
                    self._notify_local(addressee.decode(), frame)
        except (ValueError, KeyError, TypeError):
            log.warning("dropped a malformed bus message on %s", channel)

    # repair: the store is the truth, the bus a doorbell

    def _bus_reconnected(self) -> None:
        """The bus was cut off and is back: what was published meanwhile may be gone."""
        self.stats.bus_reconnects += 1
        self.spawn(self.check_heads(), "parley-head-check")

    async def _check_heads_forever(self) -> None:
        interval = self.settings.repair_interval
        while True:
            await asyncio.sleep(interval)
            try:
                await self.check_heads()
            except ParleyError as exc:
                log.warning("checking room heads failed: %s", exc)

    async def check_heads(self) -> None:
        """Read the heads of this node's rooms from the store and repair every
        channel that is behind (a doorbell that never rang here)."""
        channels = [c for c in self.rooms.values() if c.head is not None]
        for start in range(0, len(channels), HEADS_PER_QUERY):
            chunk = channels[start : start + HEADS_PER_QUERY]
            heads = await self.store.room_heads([RoomId(c.room_id) for c in chunk])
            for channel in chunk:
                head = heads.get(RoomId(channel.room_id))
                if head is not None:
                    self._want(channel, head)
        self.stats.head_checks += 1

    def _want(self, channel: RoomChannel, head: int) -> None:
        """The store holds ``head``: repair the channel up to it if it is behind."""
        if head > channel.target:
            channel.target = head
        if channel.head is not None and channel.head < channel.target:
            self._schedule_repair(channel)

    def _accept(self, fanout: Fanout) -> None:
        """Fan out in ``seq`` order per room, once per ``(room_id, seq)``."""
        channel = self.rooms.get(fanout.room_id)
        if channel is None:
            channel = self._channel_for_join(fanout)
            if channel is None:
                return
        for ready in channel.take(fanout):
            self._fanout(channel, ready)
        if channel.pending and channel.behind:
            self._schedule_repair(channel)

    def _channel_for_join(self, fanout: Fanout) -> RoomChannel | None:
        """No channel: only a join (or leave) of a locally connected user matters."""
        conns = self.users.get(fanout.member) if fanout.member is not None else None
        if not conns:
            return None
        joined = fanout.type == MEMBER_JOINED
        live = False
        for conn in conns:
            if conn.opening:
                conn.membership_log.append((fanout.room_id, fanout.seq, joined))
            else:
                live = True
        if not (joined and live):
            return None
        return self._open_channel(fanout.room_id, fanout.seq - 1)

    def _drain_pending(self, channel: RoomChannel) -> None:
        for ready in channel.drain():
            self._fanout(channel, ready)
        if channel.pending:
            self._schedule_repair(channel)

    def _schedule_repair(self, channel: RoomChannel) -> None:
        if channel.repair is None:
            channel.repair = asyncio.create_task(self._repair(channel), name="parley-repair")

    async def _repair(self, channel: RoomChannel) -> None:
        """Fill a gap the bus left from the store (the doorbell missed a ring), and
        reach the channel's ``target``."""
        try:
            await asyncio.sleep(REPAIR_DELAY)
            while channel.behind and channel.head is not None:
                events, _ = await self.store.list_events(
                    RoomId(channel.room_id), after_seq=channel.head, limit=REPLAY_PAGE
                )
                if not events:
                    break
                self.stats.gap_repairs += 1
                for event in events:
                    if channel.head is not None and event.seq == channel.head + 1:
                        self._fanout(channel, Fanout.of_event(event))
                self._drain_pending(channel)
        except ParleyError as exc:
            log.warning("gap repair of room %s failed: %s", channel.room_id, exc)
        finally:
            channel.repair = None
        if channel.behind and self.rooms.get(channel.room_id) is channel:
            self._schedule_repair(channel)

    def _fanout(self, channel: RoomChannel, fanout: Fanout) -> None:
        """Deliver ``head + 1`` to every local subscriber: no await, no encoding."""
        started = time.perf_counter()
        seq = fanout.seq
        member = fanout.member
        if member is not None and fanout.type == MEMBER_JOINED:
            self._joined(channel, member, seq)
        channel.head = seq
        if channel.advanced is not None:
            channel.moved()
        if channel.recent.maxlen:
            if fanout.type in REWRITES:
                # Earlier events in memory may hold text the store no longer has.
                channel.recent.clear()
            channel.recent.append(fanout)
        delivered = 0
        for conn, cursor in channel.subs.items():
            outcome = cursor.live(seq)
            if outcome == DELIVER:
                conn.push(fanout)
                delivered += 1
            elif outcome == GAP:
                conn.schedule_replay(channel.room_id)
        if member is not None and fanout.type == MEMBER_LEFT:
            self._left(channel, member, seq)
        stats = self.stats
        stats.events += 1
        stats.deliveries += delivered
        self.metrics.fanout_seconds.observe(time.perf_counter() - started)

    def _joined(self, channel: RoomChannel, user: str, seq: int) -> None:
        for conn in self.users.get(user, ()):
            if conn.opening:
                conn.membership_log.append((channel.room_id, seq, True))
                continue
            cursor = conn.rooms.get(channel.room_id)
            if cursor is None:
                self._subscribe(conn, channel, RoomCursor(channel.room_id, seq - 1))
            elif cursor.end_seq is not None:
                conn.deferred_joins[channel.room_id] = seq

    def _left(self, channel: RoomChannel, user: str, seq: int) -> None:
        for conn in self.users.get(user, ()):
            if conn.opening:
                conn.membership_log.append((channel.room_id, seq, False))
                continue
            cursor = channel.subs.pop(conn, None)
            if cursor is None:
                continue
            if cursor.replaying and cursor.seq < seq:
                cursor.end_seq = seq
            else:
                del conn.rooms[channel.room_id]
                conn.caught_up(channel.room_id)
        if not channel.subs:
            channel.idle_since = time.monotonic()
        if self.presence is not None:
            # Who may see whose presence follows shared rooms.
            self.spawn(self.presence.revalidate(user), "parley-presence-revalidate")

    # replay (per connection, off the fan-out path)

    async def replay(self, conn: Connection, room_id: str) -> None:
        """Bring one room of a connection up to the live stream, then report it
        caught up (which completes ``resume`` requests waiting for it)."""
        cursor = conn.rooms.get(room_id)
        if cursor is not None:
            await self._replay_room(conn, room_id, cursor)
            if not await self._reach_target(conn, room_id, cursor):
                return
        self._replayed(conn, room_id, cursor)

    async def _reach_target(self, conn: Connection, room_id: str, cursor: RoomCursor) -> bool:
        """After the replay met the channel's head: wait until the cursor reached
        the store's head of the resume too (the channel repairs up to it, and its
        live events carry the cursor there). False: the connection was closed."""
        while not cursor.reached and not cursor.ended:
            if conn.rooms.get(room_id) is not cursor or conn.close_request is not None:
                return True
            if cursor.replaying:
                await self._replay_room(conn, room_id, cursor)
                continue
            channel = self.rooms.get(room_id)
            if channel is None:
                return True
            self._want(channel, cursor.target)
            try:
                async with asyncio.timeout(TARGET_WAIT):
                    await channel.wait_advance()
            except TimeoutError:
                log.warning("room %s: could not reach the store's head for a resume", room_id)
                conn.close(CLOSE_TRY_AGAIN, "store unavailable; resume later", flush=False)
                return False
        return True

    def _replayed(self, conn: Connection, room_id: str, cursor: RoomCursor | None) -> None:
        """A room's replay is over: forget it if the user left it there (or follow a
        rejoin made meanwhile), then report it caught up."""
        if cursor is not None and cursor.ended and conn.rooms.get(room_id) is cursor:
            del conn.rooms[room_id]
            rejoin = conn.deferred_joins.pop(room_id, None)
            channel = self.rooms.get(room_id)
            if rejoin is not None and channel is not None:
                self._subscribe(conn, channel, RoomCursor(room_id, rejoin - 1))
                return
        conn.caught_up(room_id)

    def _replay_from_memory(self, conn: Connection, room_id: str, cursor: RoomCursor) -> bool:
        """Replay synchronously while the channel's memory holds what the cursor
        lacks. True: the cursor is live again (or ended); False: the store is
        needed (or the head is not known yet), and the cursor is still replaying."""
        channel = self.rooms.get(room_id)
        while cursor.replaying:
            if (
                channel is None
                or conn.close_request is not None
                or conn.rooms.get(room_id) is not cursor
            ):
                return False
            head = _replay_head(cursor, channel)
            if head is None:
                return False
            if cursor.catch_up(head):
                return True
            page = channel.recent_after(cursor.seq, REPLAY_PAGE)
            if not page:
                return False
            before = cursor.seq
            self._deliver_page(conn, channel, cursor, page, from_memory=True)
            if cursor.ended:
                return True
            if cursor.seq == before:
                return False
        return True

    async def _replay_room(self, conn: Connection, room_id: str, cursor: RoomCursor) -> None:
        """Send the room's events until the cursor reaches the live head (or the
        leave that ends it); live delivery then takes over. Pages come from the
        channel's recent events while it holds them (``_replay_from_memory``: shared
        frames, no store read), else from the store."""
        while not self._replay_from_memory(conn, room_id, cursor):
            if conn.rooms.get(room_id) is not cursor or conn.close_request is not None:
                return
            channel = self.rooms.get(room_id)
            head = _replay_head(cursor, channel)
            if head is None:
                if channel is None or await channel.wait_head() is None:
                    return
                continue
            await conn.wait_room(REPLAY_PAGE)
            if conn.rooms.get(room_id) is not cursor or conn.close_request is not None:
                return
            events, _ = await self.store.list_events(
                RoomId(room_id), after_seq=cursor.seq, limit=REPLAY_PAGE
            )
            if conn.rooms.get(room_id) is not cursor or conn.close_request is not None:
                return
            if not events:
                log.warning("room %s: store is behind the fan-out head %d", room_id, head)
                cursor.replaying = False
                return
            page = [Fanout.of_event(e) for e in events]
            self._deliver_page(conn, channel, cursor, page, from_memory=False)

    def _deliver_page(
        self,
        conn: Connection,
        channel: RoomChannel | None,
        cursor: RoomCursor,
        page: list[Fanout],
        *,
        from_memory: bool,
    ) -> None:
        """Queue the page's events the cursor takes, in order, up to the user's
        leave if the page holds it (the channel then stops delivering to them)."""
        stats = self.stats
        for fanout in page:
            if not cursor.replayed(fanout.seq):
                continue
            conn.push(fanout)
            stats.replayed += 1
            stats.replayed_from_memory += from_memory
            if (
                fanout.type == MEMBER_LEFT
                and cursor.end_seq is None
                and fanout.member == conn.user_id
            ):
                cursor.end_seq = fanout.seq
                if channel is not None:
                    channel.subs.pop(conn, None)
            if cursor.ended:
                return

    # typing (ephemeral: never stored, throttled, members only)

    async def typing(self, conn: Connection, room_id: str) -> None:
        """Tell the room's other members that this user is typing, at most once per
        throttle period (the presence service's typing tracker decides, and counts
        the frame as activity)."""
        if room_id not in conn.rooms or conn.rooms[room_id].end_seq is not None:
            raise NotFound("room not found")
        if self.presence is not None and not self.presence.typing(conn, room_id):
            return
        frame = typing_frame(room_id, conn.user_id)
        self._typing_local(room_id, conn.user_id, frame)
        self.outbox.put(f"room.{room_id}", self._prefix_typing + frame)

    def _typing_local(self, room_id: str, user_id: str, frame: bytes) -> None:
        channel = self.rooms.get(room_id)
        if channel is None:
            return
        for conn in channel.subs:
            if conn.user_id != user_id and conn.transport == "ws":
                conn.push(frame)

    # housekeeping

    async def _watch_lag(self) -> None:
        """How late the event loop runs a timer: every frame waits as long, so a
        stall (a long callback, a full collection) shows here first."""
        loop = asyncio.get_running_loop()
        while True:
            due = loop.time() + LAG_PROBE
            await asyncio.sleep(LAG_PROBE)
            self.metrics.loop_lag_seconds.observe(max(0.0, loop.time() - due))

    async def _sweep_forever(self) -> None:
        interval = self.settings.heartbeat_interval
        while True:
            await asyncio.sleep(interval)
            try:
                self._sweep(time.monotonic())
            except Exception:
                log.exception("hub sweep failed")

    def refreeze_gc(self) -> None:
        """Once the connections have grown by ``gc_freeze_growth`` since the last
        freeze (or since their low point after it): a full collection, then
        ``gc.freeze()``. Checked as each connection attaches, so a surge is frozen
        in steps (a step's collection walks ~1,000 connections' objects, not the
        19,900 a once-per-sweep check found after a ramp: 0.4 s). An open
        connection is ~100 long-lived objects, which the collector would otherwise
        walk in every full collection, the loop stalled meanwhile (0.4 to 0.8 s
        with 19,900 open); frozen, they are out of its
        sight, and a full collection walks only what came since the last freeze.
        The collection first, so that no garbage already there gets frozen.

        The risk: a frozen object that later becomes cyclic garbage is never
        collected (reference counting still frees the acyclic). That is safe
        only because a closed connection leaves no reference cycle (its pump,
        connection, protocol and upgrade protocol break theirs at close:
        ``tests/component/test_gc_cycles.py``). Whatever else is alive at a
        freeze (a request in flight) and later dies in a cycle leaks; freezes are
        rare (one per ``gc_freeze_growth`` connections gained)."""
        growth = self.gc_freeze_growth
        if growth is None:
            return
        count = len(self.connections)
        if count < self._frozen_at:
            self._frozen_at = count
        elif count >= self._frozen_at + growth:
            gc.collect()
            gc.freeze()
            self._frozen_at = count

    def _sweep(self, now: float) -> None:
        """Abort stalled writers, close idle channels."""
        for conn in list(self.connections):
            if conn.stalled():
                log.info("aborting a stalled connection of %s", conn.user_id)
                self.stats.stalled += 1
                conn.abort()
        for channel in list(self.rooms.values()):
            idle = not channel.subs and channel.head is not None and not channel.pending
            if idle and now - channel.idle_since > CHANNEL_LINGER:
                del self.rooms[channel.room_id]
                self.spawn(self.bus.unsubscribe(f"room.{channel.room_id}"), "parley-bus-unsub")
