"""A synchronous write path for WebSocket fan-out, under uvicorn.

ASGI sends one message per ``await send(...)``: for a chat server that is a task
switch, a frame built by the websockets library and a ``write`` syscall for every
event and every recipient, most of the CPU of a fan-out (py-spy, ``parley bench
fanout``). A server-to-client text frame is unmasked and, with compression off,
the same bytes for every recipient, so the hub builds it once per event
(``text_frame``) and writes it straight to each connection's transport, coalescing
whatever is queued for a connection into a single write.

``DirectWebSocketProtocol`` is uvicorn's sans-I/O WebSocket protocol with three
changes. The ASGI scope carries it under ``EXTENSION``, as a ``DirectSocket``;
an application without the extension (another server, compression negotiated)
keeps the plain ASGI path. Inbound text frames go to the application's ``on_text``
handler as they are read, when it takes them: uvicorn would queue each one as an
ASGI message, pause reading, wake the application's task and resume reading once
it took the message, for every frame. And its heartbeats are a shared
``Keepalive`` wheel instead of uvicorn's: uvicorn's cost ~12% of a core for 19,900
idle connections (two ``call_later`` timers, a random payload and a frame built by
the websockets library per ping, a timer cancelled per pong). Handshake, close and
the framing itself stay uvicorn's and the websockets library's.

Heartbeat semantics (the contract: the server sends WebSocket pings and closes a
connection that stays silent for two intervals). Anything received from the peer
(a pong, a frame, any bytes) records ``last_heard``. One timer chain per event
loop checks each connection when it is due: silent for two intervals, it is
closed as uvicorn's ``keepalive_timeout`` closes it (1011); silent for one
interval, it is sent a constant empty ping and checked again when its two
intervals are up; otherwise it is checked again an interval after it was last
heard. So a connection that talks is never pinged, an idle one gets one ping an
interval, and a silent one is closed after between 2 and 2 + 1/10 intervals (the
wheel's resolution, at most 1 s) of silence. ``ws_ping_timeout`` is not used.
"""

from __future__ import annotations

import asyncio
import logging
import math
from collections.abc import Callable
from typing import Any, Final, Protocol

from uvicorn.protocols.websockets.websockets_sansio_impl import WebSocketsSansIOProtocol
from websockets.frames import Frame, Opcode
from websockets.protocol import State

EXTENSION: Final = "parley.direct_socket"
DIRECT_MESSAGES_PER_READ: Final = 32
"""Inbound messages carried out by ``on_text`` per read from the socket."""
PING_FRAME: Final = Frame(Opcode.PING, b"").serialize(mask=False)
"""An empty ping, unmasked as a server sends it: the same two bytes for every
connection (compression never applies to control frames)."""

log = logging.getLogger("parley.ws")


def text_frame(payload: bytes) -> bytes:
    """A whole, unmasked, uncompressed text frame: what a server sends. The header
    is built here (RFC 6455 §5.2: FIN + text opcode, then the length in 7, 16 or 64
    bits), in 0.24 µs against the websockets library's general ``Frame.serialize``
    1.2 µs; every event and every ack takes one."""
    size = len(payload)
    if size < 126:
        return bytes((0x81, size)) + payload
    if size < 1 << 16:
        return b"\x81\x7e" + size.to_bytes(2, "big") + payload
    return b"\x81\x7f" + size.to_bytes(8, "big") + payload


class KeepalivePeer(Protocol):
    """What the ``Keepalive`` wheel needs of a connection."""

    last_heard: float
    """``loop.time()`` when the peer was last heard from."""
    keepalive_bucket: _Bucket | None
    """Where the connection waits on the wheel; None: not on it."""

    def keepalive_ping(self) -> bool:
        """Send a ping; False (and nothing sent) when the connection is not open."""

    def keepalive_timeout(self) -> None:
        """Close the connection: silent for too long."""


class _Bucket(set[KeepalivePeer]):
    """The connections due in one slot of a wheel."""

    __slots__ = ("slot", "wheel")

    def __init__(self, wheel: Keepalive, slot: int) -> None:
        super().__init__()
        self.wheel = wheel
        self.slot = slot


_WHEELS: dict[tuple[asyncio.AbstractEventLoop, float], Keepalive] = {}


class Keepalive:
    """The heartbeats of every connection of one event loop (and one interval),
    on a single ``call_at`` chain: time is cut into slots of ``resolution``
    seconds, and a connection waits in the bucket of the first slot at or after
    it is due. The chain runs only while a connection is on the wheel.

    Per connection it costs a set entry and two attributes (``last_heard``, its
    bucket); taking one off (``remove``) is a set discard. A check is a
    subtraction and, for an idle connection, a two-byte ``transport.write``."""

    __slots__ = (
        "_armed",
        "_buckets",
        "_done",
        "_ticking",
        "_timer",
        "interval",
        "loop",
        "resolution",
    )

    def __init__(self, loop: asyncio.AbstractEventLoop, interval: float) -> None:
        self.loop = loop
        self.interval = interval
        self.resolution = min(1.0, interval / 10)
        self._buckets: dict[int, _Bucket] = {}
        self._done = math.floor(loop.time() / self.resolution)
        """The last slot checked: nothing is added at or before it."""
        self._timer: asyncio.TimerHandle | None = None
        self._armed = 0
        """The slot ``_timer`` is for."""
        self._ticking = False

    @classmethod
    def of(cls, loop: asyncio.AbstractEventLoop, interval: float) -> Keepalive:
        """The loop's wheel for ``interval``, created on first use."""
        wheel = _WHEELS.get((loop, interval))
        if wheel is None:
            wheel = _WHEELS[(loop, interval)] = cls(loop, interval)
        return wheel

    def __len__(self) -> int:
        return sum(len(bucket) for bucket in self._buckets.values())

    def add(self, peer: KeepalivePeer, due: float) -> None:
        """Check ``peer`` at ``due`` (or in the first slot after it)."""
        slot = max(math.ceil(due / self.resolution), self._done + 1)
        bucket = self._buckets.get(slot)
        if bucket is None:
            bucket = self._buckets[slot] = _Bucket(self, slot)
        bucket.add(peer)
        peer.keepalive_bucket = bucket
        if not self._ticking and (self._timer is None or slot < self._armed):
            self._arm(slot)

    @staticmethod
    def remove(peer: KeepalivePeer) -> None:
        """Take ``peer`` off its wheel, if it is on one."""
        bucket = peer.keepalive_bucket
        if bucket is None:
            return
        peer.keepalive_bucket = None
        bucket.discard(peer)
        if not bucket:
            bucket.wheel._drop(bucket)

    def _drop(self, bucket: _Bucket) -> None:
        if self._buckets.get(bucket.slot) is bucket:
            del self._buckets[bucket.slot]
            if not self._buckets and not self._ticking:
                self._stop()

    def _arm(self, slot: int) -> None:
        if self._timer is not None:
            self._timer.cancel()
        self._armed = slot
        self._timer = self.loop.call_at(slot * self.resolution, self._tick)

    def _stop(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        key = (self.loop, self.interval)
        if _WHEELS.get(key) is self:
            del _WHEELS[key]

    def _tick(self) -> None:
        self._timer = None
        loop_now = self.loop.time()
        resolution = self.resolution
        # The slot this call was for, even if the loop ran it a little early.
        last = max(self._armed, math.floor(loop_now / resolution))
        buckets = self._buckets
        self._ticking = True
        try:
            while buckets:
                slot = min(buckets)
                if slot > last:
                    break
                bucket = buckets.pop(slot)
                self._done = slot
                self._check(bucket, max(loop_now, slot * resolution))
        finally:
            self._ticking = False
            if buckets:
                self._arm(min(buckets))
            else:
                self._stop()

    def _check(self, bucket: _Bucket, now: float) -> None:
        interval = self.interval
        for peer in tuple(bucket):
            if peer.keepalive_bucket is not bucket:
                continue  # taken off meanwhile
            peer.keepalive_bucket = None
            try:
                silence = now - peer.last_heard
                if silence >= 2 * interval:
                    peer.keepalive_timeout()
                elif silence < interval:
                    self.add(peer, peer.last_heard + interval)
                elif peer.keepalive_ping():
                    # The peer answers by then, or is closed (no ping since
                    # ``last_heard`` can reach this branch: after one, the next
                    # check is at two intervals of silence or after a new word).
                    self.add(peer, peer.last_heard + 2 * interval)
            except Exception:
                log.exception("keepalive check failed")


class _Inbox:
    """What uvicorn's protocol needs of its receive queue (``put_nowait``, ``get``,
    ``empty``) without an ``asyncio.Queue``'s three deques (~2.3 KiB per idle
    connection): uvicorn pauses reading while a message waits, so it holds one or
    two messages at a time, and only the endpoint's task ever waits on it."""

    __slots__ = ("_items", "_waiter")

    def __init__(self) -> None:
        self._items: list[Any] = []
        self._waiter: asyncio.Future[None] | None = None

    def put_nowait(self, item: Any) -> None:
        self._items.append(item)
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    async def get(self) -> Any:
        while not self._items:
            waiter = self._waiter = asyncio.get_running_loop().create_future()
            try:
                await waiter
            finally:
                self._waiter = None
        return self._items.pop(0)

    def empty(self) -> bool:
        return not self._items


class DirectWebSocketProtocol(WebSocketsSansIOProtocol):
    """uvicorn's ``websockets-sansio`` protocol, offering its transport to the app,
    and lighter to keep open: a small receive queue, and the upgrade request and
    response dropped once the handshake is answered."""

    on_writable: Callable[[], None] | None = None
    on_text: Callable[[str], bool] | None = None
    direct_budget: int = 0
    """Messages ``on_text`` may still take from the bytes being read."""
    last_heard: float = 0.0
    keepalive_bucket: _Bucket | None = None

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.inbox = _Inbox()
        self.queue = self.inbox  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        self.last_heard = self.loop.time()
        self.direct_budget = DIRECT_MESSAGES_PER_READ
        super().data_received(data)

    def send_receive_event_to_app(self) -> None:
        """A whole message read: a text one goes to ``on_text`` while nothing waits
        in the queue (so messages keep their order) and the read's budget lasts;
        the rest, and what the handler declines, to the queue as uvicorn does (bad
        UTF-8 included: it closes 1007). The budget keeps one read (up to 256 KiB
        of small frames) from holding the loop: beyond it, the endpoint's task
        takes the messages one a turn, between other connections' work."""
        handler = self.on_text
        if (
            handler is not None
            and self.direct_budget > 0
            and self.curr_msg_data_type == "text"
            and not self.close_sent
            and self.queue.empty()
        ):
            frames = self.frames
            data = frames[0] if len(frames) == 1 else b"".join(frames)
            try:
                text = data.decode()
            except UnicodeDecodeError:
                pass
            else:
                if handler(text):
                    self.direct_budget -= 1
                    self.frames = []
                    return
        super().send_receive_event_to_app()

    # heartbeats: the loop's ``Keepalive`` wheel instead of uvicorn's two timers a
    # ping (``schedule_ping``, ``send_keepalive_ping`` never run)

    def start_keepalive(self) -> None:
        self.last_heard = now = self.loop.time()
        interval = self.ping_interval
        if interval is not None and interval > 0:
            Keepalive.of(self.loop, interval).add(self, now + interval)

    def stop_keepalive(self) -> None:
        Keepalive.remove(self)

    def keepalive_ping(self) -> bool:
        transport = self.transport
        if self.close_sent or self.conn.state is not State.OPEN or transport.is_closing():
            return False
        transport.write(PING_FRAME)
        return True

    def handle_pong(self, event: Frame) -> None:
        pass  # ``data_received`` has recorded that the peer is alive

    def schedule_ping(self) -> None:
        pass

    def send_keepalive_ping(self) -> None:
        pass

    async def send(self, message: Any) -> None:
        await super().send(message)
        if self.handshake_complete and getattr(self, "response", None) is not None:
            self.request = self.response = None  # type: ignore[assignment]

    def handle_connect(self, event: Any) -> None:
        super().handle_connect(event)
        scope = getattr(self, "scope", None)
        if scope is not None and not self.close_sent:
            scope["extensions"][EXTENSION] = DirectSocket(self)

    def on_task_complete(self, task: asyncio.Task[None]) -> None:
        """The app is done with the connection: take the ``DirectSocket`` out of
        the scope. It points back at this protocol (protocol, scope, extensions,
        socket, protocol): a cycle that would keep every closed connection, its
        transport and its app's state, until a full collection."""
        super().on_task_complete(task)
        scope = getattr(self, "scope", None)
        if scope is not None:
            scope["extensions"].pop(EXTENSION, None)

    def resume_writing(self) -> None:
        super().resume_writing()
        self._writable_again()

    def connection_lost(self, exc: Exception | None) -> None:
        super().connection_lost(exc)
        self._writable_again()

    def _writable_again(self) -> None:
        callback = self.on_writable
        if callback is not None:
            callback()


class DirectSocket:
    """What the application sees of a ``DirectWebSocketProtocol``."""

    __slots__ = ("_proto",)

    def __init__(self, proto: DirectWebSocketProtocol) -> None:
        self._proto = proto

    @property
    def usable(self) -> bool:
        """True when frames may bypass the library: no extension (compression)
        was negotiated, so a text frame's bytes are the same for every peer."""
        return not self._proto.conn.extensions

    @property
    def gone(self) -> bool:
        """Closed, closing or lost: nothing more may be written."""
        proto = self._proto
        return proto.disconnected or proto.close_sent or proto.conn.state is not State.OPEN

    @property
    def paused(self) -> bool:
        """The transport's buffer is over its high-water mark."""
        return not self._proto.writable.is_set()

    def write(self, data: bytes) -> None:
        """Whole frames, in order, between the protocol's own writes."""
        self._proto.transport.write(data)

    def on_text(self, handler: Callable[[str], bool] | None) -> None:
        """Hand inbound text messages to ``handler`` as they are read, before any
        ASGI message is made of them. It returns False to decline one (it then
        reaches ``receive`` as usual); it must not raise. None: back to ``receive``."""
        self._proto.on_text = handler

    def deliver(self, message: dict[str, Any]) -> None:
        """Put ``message`` in the queue ``receive`` reads, after what waits there."""
        self._proto.inbox.put_nowait(message)

    def on_writable(self, callback: Callable[[], None] | None) -> None:
        """Call ``callback`` when a paused transport drains, or the peer is lost."""
        self._proto.on_writable = callback
