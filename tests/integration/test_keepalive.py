"""WebSocket heartbeats against a real node (``parley.gateway.direct.Keepalive``):
an idle connection is pinged once an interval and stays; one whose peer stopped
answering is closed after two silent intervals and freed; one that talks is never
pinged. The client is websockets' sans-I/O protocol over a plain socket, so the
test sees each ping as it arrives, and can choose not to answer."""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from websockets.client import ClientProtocol
from websockets.frames import Opcode
from websockets.http11 import Response
from websockets.uri import parse_uri

from parley.gateway.direct import DirectWebSocketProtocol
from parley.testing.server import ServerThread
from tests.realtime_support import TIMEOUT, closing, poll_until, running_server, user

INTERVAL = 0.5
"""The module's node; its wheel ticks every INTERVAL / 10."""


@pytest.fixture(scope="module")
def node(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerThread]:
    with running_server(
        tmp_path_factory.mktemp("keepalive"), heartbeat_interval=INTERVAL, rate_limits="off"
    ) as server:
        yield server


class RawClient:
    """A WebSocket client: it records when each server ping arrives and, when
    ``answers``, writes what the protocol queues in reply (the pongs); when not,
    it never says anything unless told to (``send``)."""

    def __init__(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, *, answers: bool
    ) -> None:
        self.reader = reader
        self.writer = writer
        self.answers = answers
        self.proto: ClientProtocol | None = None
        self.upgraded = asyncio.Event()
        self.frames: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
        self.pings: list[float] = []
        self.close_code: int | None = None
        self.closed_at: float | None = None
        self.ended = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    @classmethod
    async def connect(cls, server: ServerThread, token: str, *, answers: bool = True) -> RawClient:
        reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
        client = cls(reader, writer, answers=answers)
        proto = client.proto = ClientProtocol(parse_uri(server.ws_url))
        request = proto.connect()
        request.headers["Authorization"] = f"Bearer {token}"
        proto.send_request(request)
        writer.write(b"".join(proto.data_to_send()))
        client._task = asyncio.create_task(client._read())
        async with asyncio.timeout(TIMEOUT):
            await client.upgraded.wait()
        return client

    async def _read(self) -> None:
        proto = self.proto
        assert proto is not None
        while True:
            try:
                data = await self.reader.read(65536)
            except OSError:
                data = b""
            now = time.monotonic()
            if data:
                proto.receive_data(data)
            else:
                proto.receive_eof()
            for event in proto.events_received():
                if isinstance(event, Response):
                    assert event.status_code == 101, event
                    self.upgraded.set()
                elif event.opcode is Opcode.PING:
                    self.pings.append(now)
                elif event.opcode is Opcode.TEXT:
                    self.frames.put_nowait(json.loads(event.data))
                elif event.opcode is Opcode.CLOSE:
                    self.closed_at = now
                    self.close_code = proto.close_rcvd.code if proto.close_rcvd else None
            out = b"".join(proto.data_to_send())
            if self.answers and out and not self.writer.is_closing():
                self.writer.write(out)
            if not data:
                break
        self.ended.set()

    async def send(self, **frame: Any) -> float:
        """Send an application frame; the time it was written."""
        assert self.proto is not None
        self.proto.send_text(json.dumps(frame).encode())
        self.writer.write(b"".join(self.proto.data_to_send()))
        return time.monotonic()

    async def recv(self) -> dict[str, Any]:
        async with asyncio.timeout(TIMEOUT):
            return await self.frames.get()

    async def wait_closed(self) -> None:
        async with asyncio.timeout(TIMEOUT):
            await self.ended.wait()

    async def aclose(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        self.writer.transport.abort()


async def ws_connections(url: str) -> float:
    async with httpx.AsyncClient() as http:
        text = (await http.get(f"{url}/metrics")).text
    line = next(x for x in text.splitlines() if x.startswith('parley_connections{transport="ws"}'))
    return float(line.split()[1])


async def round_trip(client: RawClient, id: str) -> tuple[float, float]:
    """An application ping answered: when it was sent, when its pong arrived."""
    sent = await client.send(type="ping", id=id)
    while (frame := await client.recv()).get("id") != id:
        pass
    assert frame["type"] == "pong"
    return sent, time.monotonic()


def gaps(times: list[float]) -> list[float]:
    return [b - a for a, b in itertools.pairwise(times)]


async def test_an_idle_connection_is_pinged_once_an_interval_and_stays_open(
    node: ServerThread,
) -> None:
    alice = await user(node.url, "alice")
    async with closing(alice):
        client = await RawClient.connect(node, alice.access_token)
        try:
            assert (await client.recv())["type"] == "ready"
            opened = time.monotonic()
            await asyncio.sleep(6 * INTERVAL)  # idle: six intervals of pings and pongs
            pings = [t - opened for t in client.pings]
            assert 4 <= len(pings) <= 6, pings
            assert pings[0] >= INTERVAL * 0.8, pings
            assert all(0.8 * INTERVAL <= gap < 2 * INTERVAL for gap in gaps(pings)), pings
            assert client.closed_at is None and not client.ended.is_set()
            await round_trip(client, "still-here")
            # uvicorn's own keepalive (two timers a ping) never ran.
            assert node._server is not None
            protos = [
                p
                for p in list(node._server.server_state.connections)
                if isinstance(p, DirectWebSocketProtocol)
            ]
            assert protos
            for proto in protos:
                assert proto.ping_timer is None and proto.pong_timer is None
                assert proto.pending_ping_payload is None
        finally:
            await client.aclose()


async def test_a_peer_that_stops_answering_is_closed_after_two_silent_intervals(
    tmp_path: Path,
) -> None:
    interval = 1.0
    with running_server(tmp_path, heartbeat_interval=interval, rate_limits="off") as server:
        alice = await user(server.url, "alice")
        async with closing(alice):
            healthy = await RawClient.connect(server, alice.access_token)
            silent = await RawClient.connect(server, alice.access_token, answers=False)
            try:
                for client in (healthy, silent):
                    assert (await client.recv())["type"] == "ready"
                assert await ws_connections(server.url) == 2
                # The last the server hears of ``silent``: sent at t0, answered by t1.
                t0, t1 = await round_trip(silent, "last-word")
                await silent.wait_closed()
                assert silent.close_code == 1011  # keepalive ping timeout
                assert silent.closed_at is not None
                # One ping after an interval of silence, the close after two.
                [ping] = silent.pings
                assert t0 + interval <= ping <= t1 + interval + 0.1 + 0.7
                assert t0 + 2 * interval <= silent.closed_at <= t1 + 2 * interval + 0.1 + 0.7
                # The hub freed it; the healthy one, pinged too, stays.
                await poll_until(lambda: ws_connections(server.url), 1)
                assert healthy.pings and healthy.closed_at is None
                await round_trip(healthy, "still-here")
            finally:
                await healthy.aclose()
                await silent.aclose()


async def test_a_connection_that_talks_is_never_pinged(node: ServerThread) -> None:
    alice = await user(node.url, "alice")
    async with closing(alice):
        talker = await RawClient.connect(node, alice.access_token)
        idle = await RawClient.connect(node, alice.access_token)  # the control
        try:
            for client in (talker, idle):
                assert (await client.recv())["type"] == "ready"
            for k in range(24):  # six intervals, a frame every quarter of one
                await round_trip(talker, f"p{k}")
                await asyncio.sleep(INTERVAL / 4)
            assert talker.pings == []
            assert len(idle.pings) >= 4
            assert talker.closed_at is None and idle.closed_at is None
        finally:
            await talker.aclose()
            await idle.aclose()
