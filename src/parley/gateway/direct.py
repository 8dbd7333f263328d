"""A synchronous write path for WebSocket fan-out, under uvicorn.

ASGI sends one message per ``await send(...)``: for a chat server that is a task
switch, a frame built by the websockets library and a ``write`` syscall for every
event and every recipient, most of the CPU of a fan-out (py-spy, ``parley bench
fanout``). A server-to-client text frame is unmasked and, with compression off,
the same bytes for every recipient, so the hub builds it once per event
(``text_frame``) and writes it straight to each connection's transport, coalescing
whatever is queued for a connection into a single write.

``DirectWebSocketProtocol`` is uvicorn's sans-I/O WebSocket protocol with one
addition: the ASGI scope carries it under ``EXTENSION``, as a ``DirectSocket``.
Everything else (handshake, pings, close, reading) stays uvicorn's, and an
application without the extension (another server, compression negotiated) keeps
the plain ASGI path.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any, Final

from uvicorn.protocols.websockets.websockets_sansio_impl import WebSocketsSansIOProtocol
from websockets.frames import Frame, Opcode
from websockets.protocol import State

EXTENSION: Final = "parley.direct_socket"


def text_frame(payload: bytes) -> bytes:
    """A whole, unmasked, uncompressed text frame: what a server sends."""
    return Frame(Opcode.TEXT, payload).serialize(mask=False)


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

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.queue = _Inbox()  # type: ignore[assignment]

    async def send(self, message: Any) -> None:
        await super().send(message)
        if self.handshake_complete and getattr(self, "response", None) is not None:
            self.request = self.response = None  # type: ignore[assignment]

    def handle_connect(self, event: Any) -> None:
        super().handle_connect(event)
        scope = getattr(self, "scope", None)
        if scope is not None and not self.close_sent:
            scope["extensions"][EXTENSION] = DirectSocket(self)

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

    def on_writable(self, callback: Callable[[], None] | None) -> None:
        """Call ``callback`` when a paused transport drains, or the peer is lost."""
        self._proto.on_writable = callback
