"""A closed connection is freed by reference counting: it leaves no reference cycle
for the garbage collector, whose full collections stall the event loop (0.4 to
0.8 s with 19,900 connections open, 1.6 s once they had closed), and the hub may
freeze open connections out of the collector's sight (``Hub.refreeze_gc``).

The clients run in a child process, so that what this process makes meanwhile is
the node's; the node runs on uvloop, as ``parley serve`` does (asyncio's own
selector transport leaves a cycle per socket in Python 3.11, gh-100348).
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import gc
import subprocess
import sys
import time
from collections.abc import Coroutine, Iterator
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import httpx
import pytest
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from parley.client import ParleyClient
from parley.gateway import hub as hub_module
from parley.gateway.hub import Hub
from parley.settings import Settings
from parley.testing.server import ServerThread
from tests.realtime_support import (
    TIMEOUT,
    Proxy,
    frames_until_closed,
    recv,
    recv_until,
    room,
    running_server,
    send_frame,
    uid,
    user,
    ws_connect,
)

ROOT = Path(__file__).resolve().parents[2]
HEARTBEAT = 0.5
LIVES = 30
"""SDK connections; with reconnects, raw sockets and streams, ~45 in all."""
MAX_PER_CONNECTION = 3


async def clients(url: str, lives: int) -> None:
    """The child process: a first round of every kind of connection (the node's
    first use of each path: caches, lazy imports), then, once the parent has
    counted, the round under test."""
    owner = await user(url, "own")
    members = [await user(url, "m") for _ in range(3)]
    closed, aborted = await user(url, "cl"), await user(url, "ab")
    room_id = await room(owner, *members, closed, aborted)
    print("VICTIMS", uid(closed), uid(aborted), flush=True)
    await connections(url, room_id, [owner, *members], closed, aborted, 2)
    print("WARM", flush=True)
    await asyncio.to_thread(sys.stdin.readline)
    await connections(url, room_id, [owner, *members], closed, aborted, lives)
    for client in [owner, *members, closed, aborted]:
        await client.aclose()


async def connections(
    url: str,
    room_id: str,
    everyone: list[ParleyClient],
    closed: ParleyClient,
    aborted: ParleyClient,
    lives: int,
) -> None:
    """Open and close connections in every way there is."""
    owner = everyone[0]
    opened = []
    for i in range(lives):
        live = everyone[i % len(everyone)].live(cursors={room_id: 0} if i % 5 == 1 else None)
        await live.start()
        opened.append(live)
        if i % 3 == 0:
            await live.send(room_id, f"hello {i}")
        if i % 7 == 2:
            await live.typing(room_id)
            await live.presence_subscribe([uid(owner)])
            await live.mark_read(room_id, 1)
        if i % 11 == 4:
            live.drop()  # a network loss: it reconnects and resumes
            await live.wait_ready()
    for live in opened:
        await live.close()
    # authenticated by a first frame, then one the server does not know
    ws = await ws_connect(url)
    await send_frame(ws, type="auth", token=owner.access_token, id="a")
    await recv_until(ws, lambda frame: frame.get("type") == "ready")
    await send_frame(ws, type="nonsense", id="x")
    await recv(ws)
    await ws.close()
    # a bad token in the first frame: closed by the server (1008)
    ws = await ws_connect(url)
    await send_frame(ws, type="auth", token="nope", id="b")
    assert (await frames_until_closed(ws))[1] == 1008
    # a bad bearer token: refused with 401
    with contextlib.suppress(Exception):
        await ws_connect(url, "nope")
    # closed (1013) and aborted by the server (the parent does it)
    for victim in (closed, aborted):
        await frames_until_closed(await ws_connect(url, victim.access_token))
    # silent (a half-open link): closed by the heartbeat
    async with Proxy(int(url.rsplit(":", 1)[1])) as proxy:
        ws = await ws_connect(proxy.url, owner.access_token)
        await recv_until(ws, lambda frame: frame.get("type") == "ready")
        proxy.mute()
        async with asyncio.timeout(TIMEOUT):
            await proxy.pipes[0].tasks[1]  # from the node: ends when it closes
    # Server-Sent Events
    async with httpx.AsyncClient(timeout=TIMEOUT) as http:
        for _ in range(2):
            headers = {"Authorization": f"Bearer {owner.access_token}"}
            async with http.stream("GET", f"{url}/api/v1/events/stream", headers=headers) as r:
                async for line in r.aiter_lines():
                    if line.startswith("data:"):
                        break


def on_node(node: ServerThread, coro: Coroutine[Any, Any, None]) -> None:
    """Run ``coro`` on the node's event loop."""
    server = node._server
    assert server is not None
    asyncio.run_coroutine_threadsafe(coro, server.servers[0].get_loop()).result(TIMEOUT)


def hub_of(node: ServerThread) -> Hub:
    assert node._server is not None
    hub: Hub = node._server.config.app.state.runtime.hub
    return hub


async def close_and_abort(hub: Hub, closed: str, aborted: str) -> None:
    """Once they are live, close one user's connection (1013), abort the other's."""
    for user_id in (closed, aborted):
        while True:
            conns = [c for c in hub.users.get(user_id, ()) if c.sent]
            if conns:
                break
            await asyncio.sleep(0.01)
        if user_id == closed:
            conns[0].close(1013, "closed by the test")
        else:
            conns[0].abort()


def settle(node: ServerThread, *, keep_alive: bool = False) -> None:
    """Wait until the node has let go of every connection (``keep_alive``: but
    idle HTTP ones, which the client keeps for its next requests)."""
    server = node._server
    assert server is not None
    hub = hub_of(node)
    deadline = time.monotonic() + TIMEOUT
    while True:
        protocols = list(server.server_state.connections)
        if keep_alive:
            protocols = [p for p in protocols if not isinstance(p, HttpToolsProtocol)]
        if not (hub.connections or protocols or server.server_state.tasks):
            break
        assert time.monotonic() < deadline, "the node kept connections open"
        time.sleep(0.02)
    on_node(node, asyncio.sleep(0.1))  # what the loop still had to run for them


@contextlib.contextmanager
def no_automatic_collection() -> Iterator[None]:
    """None of the garbage under test is collected before it is counted."""
    gc.disable()
    try:
        yield
    finally:
        gc.enable()


def collect() -> collections.Counter[str]:
    """A full collection; what it found unreachable, by type."""
    gc.set_debug(gc.DEBUG_SAVEALL)
    try:
        gc.collect()
        found = collections.Counter(type(o).__qualname__ for o in gc.garbage)
    finally:
        gc.set_debug(0)
        gc.garbage.clear()
    return found


@pytest.mark.parametrize("asgi", [False, True], ids=["direct", "asgi"])
def test_closed_connections_leave_no_reference_cycles(tmp_path: Path, asgi: bool) -> None:
    settings = {"rate_limits": "off", "heartbeat_interval": HEARTBEAT}
    code = (
        "import asyncio, sys; from tests.component.test_gc_cycles import clients; "
        "asyncio.run(clients(sys.argv[1], int(sys.argv[2])))"
    )
    with (
        running_server(tmp_path, asgi_websockets=asgi, loop="uvloop", **settings) as node,
        subprocess.Popen(
            [sys.executable, "-c", code, node.url, str(LIVES)],
            cwd=ROOT,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        ) as child,
    ):
        assert child.stdin is not None and child.stdout is not None
        _, closed, aborted = child.stdout.readline().split()
        hub = hub_of(node)
        on_node(node, close_and_abort(hub, closed, aborted))
        assert child.stdout.readline() == "WARM\n"
        settle(node, keep_alive=True)
        with no_automatic_collection():
            collect()
            child.stdin.write("go\n")
            child.stdin.flush()
            on_node(node, close_and_abort(hub, closed, aborted))
            assert child.wait(4 * TIMEOUT) == 0
            settle(node)
            found = collect()
    total = sum(found.values())
    # fewer than MAX_PER_CONNECTION for each SDK connection, let alone each connection
    assert total < MAX_PER_CONNECTION * LIVES, f"{total} unreachable: {found.most_common(12)}"


def test_hub_freezes_again_once_the_connections_grew(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    calls: list[str] = []
    fake_gc = SimpleNamespace(
        collect=lambda: calls.append("collect"), freeze=lambda: calls.append("freeze")
    )
    monkeypatch.setattr(hub_module, "gc", fake_gc)
    settings = Settings(data_dir=tmp_path)
    hub = Hub(bus=None, store=None, settings=settings, node_id="n")  # type: ignore[arg-type]
    conns: set[Any] = hub.connections  # stand-ins: only their number matters
    conns.update(range(50))
    hub.refreeze_gc()
    assert calls == []  # off unless tune_gc turned it on
    hub.gc_freeze_growth = 10
    conns.difference_update(range(41, 50))
    hub.refreeze_gc()
    assert calls == ["collect", "freeze"]  # 41 since the start
    calls.clear()
    conns.update(range(100, 109))
    hub.refreeze_gc()
    assert calls == []  # 50: +9
    conns.difference_update(range(20))
    hub.refreeze_gc()
    assert calls == []  # 30: the new low point
    conns.update(range(200, 210))
    hub.refreeze_gc()
    assert calls == ["collect", "freeze"]  # 40: +10 since the low point
