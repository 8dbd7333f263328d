"""A lean WebSocket receiver for ``parley bench --lean-receivers``.

A receiver on the SDK costs its generator ~15–20 µs of CPU a frame (the websockets
client's parser, a coroutine hop per frame, a JSON decode of the whole frame): one
generator core then takes ~55,000 deliveries a second, half of what the server can
send, and ``fanout`` measures the generator. This receiver speaks the same public
protocol as any client (an HTTP upgrade with the bearer token, RFC 6455 frames) but
parses frames itself in an ``asyncio.Protocol``, several per read, and decodes only
the fields it checks (``msgspec`` structs), ~2 µs a frame. It answers pings (the
server closes a connection that stays silent for two heartbeat intervals) and never
sends anything else: it cannot resume, so it is for scenarios without drops.

The server does the same work for it as for an SDK client: the same handshake, the
same frames, the same writes.
"""

from __future__ import annotations

import asyncio
import base64
import secrets
from collections.abc import Callable
from urllib.parse import urlsplit

import msgspec
from websockets.frames import Frame, Opcode


class _Message(msgspec.Struct):
    body: str


class _Event(msgspec.Struct):
    room_id: str = ""
    seq: int = 0
    message: _Message | None = None


class _Frame(msgspec.Struct):
    type: str
    event: _Event | None = None


_decode = msgspec.json.Decoder(_Frame).decode


def _masked(opcode: Opcode, payload: bytes) -> bytes:
    """A client frame (clients must mask), for the pong and the close: rare, so the
    websockets library builds it."""
    return Frame(opcode, payload).serialize(mask=True)


class LeanReceiver(asyncio.Protocol):
    """One connection: ``on_body(body)`` for every event carrying a message, in
    order; ``errors`` collects what a correct server never sends (a skipped or
    repeated ``seq`` in a room, an unexpected opcode, a failed upgrade)."""

    def __init__(self, on_body: Callable[[str], None]) -> None:
        self.on_body = on_body
        self.errors: list[str] = []
        self.upgraded: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self.closed: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._transport: asyncio.Transport | None = None
        self._buffer = bytearray()
        self._open = False
        self._seqs: dict[str, int] = {}

    @classmethod
    async def connect(
        cls, url: str, path: str, token: str | None, on_body: Callable[[str], None]
    ) -> LeanReceiver:
        """Open and upgrade a connection to ``url`` (``http://host:port``) at ``path``."""
        parts = urlsplit(url)
        host, port = parts.hostname or "127.0.0.1", parts.port or 80
        loop = asyncio.get_running_loop()
        transport, receiver = await loop.create_connection(lambda: cls(on_body), host, port)
        receiver._transport = transport
        key = base64.b64encode(secrets.token_bytes(16)).decode()
        lines = [
            f"GET {path} HTTP/1.1",
            f"Host: {host}:{port}",
            "Upgrade: websocket",
            "Connection: Upgrade",
            f"Sec-WebSocket-Key: {key}",
            "Sec-WebSocket-Version: 13",
        ]
        if token is not None:
            lines.append(f"Authorization: Bearer {token}")
        transport.write(("\r\n".join(lines) + "\r\n\r\n").encode())
        try:
            async with asyncio.timeout(30):
                await receiver.upgraded
        except BaseException:
            receiver.abort()
            raise
        return receiver

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport = transport  # type: ignore[assignment]  # a stream transport

    def connection_lost(self, exc: Exception | None) -> None:
        if not self.upgraded.done():
            self.upgraded.set_exception(ConnectionError(f"closed before the upgrade: {exc!r}"))
        if not self.closed.done():
            self.closed.set_result(None)

    def data_received(self, data: bytes) -> None:
        if self._buffer:
            data = bytes(self._buffer) + data
            self._buffer.clear()
        if not self._open:
            end = data.find(b"\r\n\r\n")
            if end < 0:
                self._buffer += data
                return
            status = data[: data.find(b"\r\n")]
            if not status.startswith(b"HTTP/1.1 101"):
                self.upgraded.set_exception(ConnectionError(status.decode("latin-1")))
                self.abort()
                return
            data = data[end + 4 :]
            self._open = True
            self.upgraded.set_result(None)
        self._buffer += data[self._frames(data) :]

    def _frames(self, data: bytes) -> int:
        """Handle every whole frame in ``data``; where the incomplete rest starts."""
        start, size = 0, len(data)
        while size - start >= 2:
            opcode, length = data[start] & 0x0F, data[start + 1] & 0x7F
            head = 2
            if length == 126:
                if size - start < 4:
                    break
                length, head = int.from_bytes(data[start + 2 : start + 4], "big"), 4
            elif length == 127:
                if size - start < 10:
                    break
                length, head = int.from_bytes(data[start + 2 : start + 10], "big"), 10
            end = start + head + length
            if end > size:
                break
            payload = data[start + head : end]
            start = end
            if opcode == Opcode.TEXT:
                self._text(payload)
            elif opcode == Opcode.PING:
                self._write(_masked(Opcode.PONG, payload))
            elif opcode == Opcode.CLOSE:
                self._write(_masked(Opcode.CLOSE, payload[:2]))
            elif opcode != Opcode.PONG:
                self.errors.append(f"unexpected opcode {opcode}")
        return start

    def _text(self, payload: bytes) -> None:
        frame = _decode(payload)
        event = frame.event
        if frame.type != "event" or event is None:
            return
        last = self._seqs.get(event.room_id)
        if last is not None and event.seq != last + 1:
            self.errors.append(f"room {event.room_id}: seq {event.seq} after {last}")
        self._seqs[event.room_id] = event.seq
        if event.message is not None:
            self.on_body(event.message.body)

    def _write(self, data: bytes) -> None:
        if self._transport is not None and not self._transport.is_closing():
            self._transport.write(data)

    def abort(self) -> None:
        if self._transport is not None:
            self._transport.abort()

    async def close(self) -> None:
        """A close frame, then wait (briefly) for the server to close the socket."""
        self._write(_masked(Opcode.CLOSE, (1000).to_bytes(2, "big")))
        try:
            async with asyncio.timeout(2):
                await asyncio.shield(self.closed)
        except TimeoutError:
            self.abort()
