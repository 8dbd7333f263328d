"""A node told to stop (SIGTERM) drains: ``/readyz`` says ``draining``, the sends
it read are answered (an ``ack``, or ``draining`` for those read after the stop),
every WebSocket is closed with 1012, SSE streams end, and the process exits 0
within ``PARLEY_DRAIN_SECONDS``. What is stored is exactly what was acknowledged: a
send still in the socket when the node closed was never read, gets no answer, and
is sent again by the client to another node (the SDK does, with its
``client_msg_id``)."""

from __future__ import annotations

import asyncio
import json
import signal
import subprocess
import time
from pathlib import Path
from typing import Any

import httpx
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed

from parley.domain.models import RoomId
from parley.gateway.runtime import open_key_ring
from parley.settings import Settings
from parley.store import SqlStore
from parley.testing.server import ServerThread
from tests.integration.test_serve import PARLEY, env_for, free_port, wait_ready

DRAIN = 6.0


async def _until_closed(ws: ClientConnection) -> tuple[list[dict[str, Any]], int | None]:
    frames: list[dict[str, Any]] = []
    try:
        async with asyncio.timeout(DRAIN + 5):
            while True:
                frames.append(json.loads(await ws.recv()))
    except ConnectionClosed as exc:
        return frames, exc.rcvd.code if exc.rcvd is not None else None


def _register(url: str, name: str) -> str:
    httpx.post(
        f"{url}/api/v1/auth/register", json={"username": name, "password": "a long password"}
    ).raise_for_status()
    tokens = httpx.post(
        f"{url}/api/v1/auth/token",
        data={"grant_type": "password", "username": name, "password": "a long password"},
    ).json()
    return str(tokens["access_token"])


async def test_sigterm_answers_accepted_sends_closes_1012_and_exits_in_time(
    tmp_path: Path,
) -> None:
    data_dir = tmp_path / "data"
    port = free_port()
    proc = await asyncio.to_thread(
        subprocess.Popen,
        [*PARLEY, "serve", "--port", str(port)],
        env=env_for(data_dir, PARLEY_DRAIN_SECONDS=str(DRAIN), PARLEY_RATE_LIMITS="off"),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        await asyncio.to_thread(wait_ready, url, proc)
        token = await asyncio.to_thread(_register, url, f"drain{time.monotonic_ns() % 10**9}")
        headers = {"Authorization": f"Bearer {token}"}
        async with httpx.AsyncClient(base_url=url, headers=headers) as http:
            room = (await http.post("/api/v1/rooms", json={"name": "drain"})).json()["id"]
            stream = http.stream("GET", "/api/v1/events/stream")
            sse = await stream.__aenter__()
            ws = await connect(
                url.replace("http", "ws") + "/api/v1/ws",
                additional_headers=headers,
                compression=None,
            )
            try:
                assert json.loads(await ws.recv())["type"] == "ready"
                for i in range(200):
                    await ws.send(
                        json.dumps(
                            {
                                "type": "send",
                                "id": f"s{i}",
                                "room_id": room,
                                "body": f"m{i}",
                                "client_msg_id": f"c{i}",
                            }
                        )
                    )
                proc.send_signal(signal.SIGTERM)
                stopped = time.monotonic()
                frames, code = await _until_closed(ws)
                assert code == 1012
                async with asyncio.timeout(DRAIN + 5):
                    async for _ in sse.aiter_bytes():
                        pass  # the stream ends
            finally:
                await ws.close()
                await stream.__aexit__(None, None, None)
        status = await asyncio.to_thread(proc.wait, DRAIN + 10)
        took = time.monotonic() - stopped
        assert status == 0
        assert took < DRAIN + 3, took
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()

    answered = {str(f["id"]): f for f in frames if f.get("type") in ("ack", "error")}
    acked = {str(f["message"]["body"]) for f in answered.values() if f["type"] == "ack"}
    refused = [f for f in answered.values() if f["type"] == "error"]
    assert acked, "the sends read before the stop are acknowledged"
    assert all(f["code"] == "draining" for f in refused), refused
    keys = open_key_ring(Settings(data_dir=data_dir))  # the node's generated master key
    store = SqlStore(f"sqlite:///{data_dir / 'parley.db'}", keys=keys)
    await store.start()
    try:
        messages, _ = await store.list_messages(
            RoomId(room), before_seq=None, after_seq=0, limit=200
        )
    finally:
        await store.close()
    assert {m.body for m in messages} == acked


def test_readyz_says_draining_once_the_node_is_stopping(tmp_path: Path) -> None:
    with ServerThread(tmp_path) as server:
        assert httpx.get(f"{server.url}/readyz").status_code == 200
        assert server._server is not None
        runtime = server._server.config.app.state.runtime
        runtime.hub.closing = True
        answer = httpx.get(f"{server.url}/readyz")
        assert answer.status_code == 503
        assert answer.json()["status"] == "draining"
