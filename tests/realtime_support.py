"""Helpers for the real-time tests: users and rooms through the SDK, raw WebSocket
frames, a fault-injecting TCP proxy, and a server with WebSocket heartbeats on.

Everything talks to a real node (``ServerThread``: uvicorn on 127.0.0.1, port 0,
SQLite in a temp dir). Waits are on events with generous timeouts, never bare
sleeps; ``TIMEOUT`` scales them all.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import os
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed

from parley.client import ParleyClient
from parley.testing.server import ServerThread

TIMEOUT = 20.0 * float(os.environ.get("PARLEY_TEST_TIMEOUT_FACTOR", "1"))
PASSWORD = "correct horse battery"


@contextlib.contextmanager
def running_server(data_dir: Path, **settings: Any) -> Iterator[ServerThread]:
    """A node as ``parley serve`` runs it (heartbeats on), in a background thread."""
    with ServerThread(data_dir, **settings) as server:
        yield server


async def user(url: str, prefix: str = "u") -> ParleyClient:
    """A registered, logged-in client; its user id is ``client.user_id``."""
    client = ParleyClient(url)
    name = f"{prefix}{uuid.uuid4().hex[:10]}"
    registered = await client.register(name, PASSWORD)
    await client.login(name, PASSWORD)
    client.user_id = registered["id"]  # type: ignore[attr-defined]
    client.username = name  # type: ignore[attr-defined]
    return client


def uid(client: ParleyClient) -> str:
    return str(client.user_id)  # type: ignore[attr-defined]


async def room(owner: ParleyClient, *members: ParleyClient, visibility: str = "private") -> str:
    """A room owned by ``owner`` with ``members`` added."""
    created = await owner.create_room(f"room-{uuid.uuid4().hex[:6]}", visibility=visibility)
    for member in members:
        await owner.add_member(created["id"], uid(member))
    return str(created["id"])


async def ws_connect(url: str, token: str | None = None, **kwargs: Any) -> ClientConnection:
    """A raw WebSocket to the node, authenticated by header when ``token`` is given."""
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    ws_url = url.replace("http://", "ws://") + "/api/v1/ws"
    return await connect(ws_url, additional_headers=headers, compression=None, **kwargs)


async def recv(ws: ClientConnection) -> dict[str, Any]:
    async with asyncio.timeout(TIMEOUT):
        frame: dict[str, Any] = json.loads(await ws.recv())
    return frame


async def recv_until(
    ws: ClientConnection, match: Callable[[dict[str, Any]], bool]
) -> list[dict[str, Any]]:
    """Frames up to and including the first that matches."""
    seen = []
    while True:
        frame = await recv(ws)
        seen.append(frame)
        if match(frame):
            return seen


async def frames_until_closed(ws: ClientConnection) -> tuple[list[dict[str, Any]], int | None]:
    """Every frame until the server closes; and its close code."""
    frames = []
    try:
        while True:
            frames.append(await recv(ws))
    except ConnectionClosed as exc:
        return frames, exc.rcvd.code if exc.rcvd else None


async def poll_until(read: Callable[[], Awaitable[object]], expected: object) -> None:
    """Poll a server-side figure (a metric) until it has the expected value."""
    async with asyncio.timeout(TIMEOUT):
        for _ in itertools.count():
            if await read() == expected:
                return
            await asyncio.sleep(0.05)


async def send_frame(ws: ClientConnection, **frame: Any) -> None:
    await ws.send(json.dumps(frame))


async def take_events(live: Any, count: int) -> list[dict[str, Any]]:
    """The next ``count`` room events from a ``Live``."""
    out = []
    async with asyncio.timeout(TIMEOUT):
        for _ in range(count):
            out.append(await live.next_event())
    return out


async def events_until(live: Any, match: Callable[[dict[str, Any]], bool]) -> list[dict[str, Any]]:
    out = []
    async with asyncio.timeout(TIMEOUT):
        while True:
            event = await live.next_event()
            out.append(event)
            if match(event):
                return out


def body_of(event: dict[str, Any]) -> str | None:
    message = event.get("message")
    return str(message["body"]) if isinstance(message, dict) else None


class _Pipe:
    """One proxied connection: two pumps, each of which can be muted."""

    def __init__(self, client: asyncio.StreamWriter, server: asyncio.StreamWriter) -> None:
        self.client = client
        self.server = server
        self.mute_up = False
        self.mute_down = False
        self.tasks: list[asyncio.Task[None]] = []

    def abort(self) -> None:
        for writer in (self.client, self.server):
            transport = writer.transport
            if not transport.is_closing():
                transport.abort()
        for task in self.tasks:
            task.cancel()


class Proxy:
    """A TCP proxy in front of a node, to fail the network as tests need: ``cut()``
    resets every connection (like a dropped link), ``mute()`` stops forwarding on
    the open ones without closing anything (a half-open connection: no FIN, no
    RST), ``mute_down()`` loses only what the server sends."""

    def __init__(self, target_port: int) -> None:
        self.target_port = target_port
        self.pipes: list[_Pipe] = []
        self.drop_next = 0
        """Connections still to be closed as soon as they are accepted, before the
        WebSocket upgrade, as a server out of file descriptors would."""
        self._server: asyncio.Server | None = None
        self.port = 0

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    async def __aenter__(self) -> Proxy:
        self._server = await asyncio.start_server(self._accept, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    async def __aexit__(self, *exc: object) -> None:
        self.cut()
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if self.drop_next > 0:
            self.drop_next -= 1
            writer.close()
            return
        try:
            up_reader, up_writer = await asyncio.open_connection("127.0.0.1", self.target_port)
        except OSError:
            writer.transport.abort()
            return
        pipe = _Pipe(writer, up_writer)
        self.pipes.append(pipe)
        pipe.tasks = [
            asyncio.create_task(self._pump(reader, up_writer, pipe, up=True)),
            asyncio.create_task(self._pump(up_reader, writer, pipe, up=False)),
        ]

    async def _pump(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, pipe: _Pipe, *, up: bool
    ) -> None:
        try:
            while data := await reader.read(65536):
                if pipe.mute_up if up else pipe.mute_down:
                    continue
                writer.write(data)
                await writer.drain()
            if not (pipe.mute_up or pipe.mute_down):
                writer.close()
        except (OSError, asyncio.CancelledError):
            pass

    def cut(self) -> None:
        for pipe in self.pipes:
            pipe.abort()
        self.pipes.clear()

    def mute(self) -> None:
        for pipe in self.pipes:
            pipe.mute_up = pipe.mute_down = True

    def mute_down(self) -> None:
        for pipe in self.pipes:
            pipe.mute_down = True


@contextlib.asynccontextmanager
async def closing(*clients: ParleyClient) -> AsyncIterator[None]:
    try:
        yield
    finally:
        for client in clients:
            await client.aclose()
