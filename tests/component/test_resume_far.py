"""Resumes at the edges: a cursor beyond the room's head (``cursor_ahead``, on the
WebSocket and on SSE), and a resume 100,000 events behind, which must complete on
one connection, paced by the client's reading, every event once and in order."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from parley.domain.models import RoomId, UserId
from parley.ports import SendRequest
from parley.protocol.cursors import encode_cursors
from parley.store import SqlStore
from parley.testing.server import ServerThread
from tests.realtime_support import (
    TIMEOUT,
    closing,
    recv,
    recv_until,
    room,
    running_server,
    send_frame,
    uid,
    user,
    ws_connect,
)

FAR = 100_000


@pytest.fixture(scope="module", params=[False, True], ids=["direct", "asgi"])
def node(
    tmp_path_factory: pytest.TempPathFactory, request: pytest.FixtureRequest
) -> Iterator[ServerThread]:
    with running_server(
        tmp_path_factory.mktemp("far"), rate_limits="off", asgi_websockets=request.param
    ) as server:
        yield server


async def test_a_cursor_beyond_the_head_is_answered_and_the_room_stays_live(
    node: ServerThread,
) -> None:
    alice = await user(node.url, "alice")
    async with closing(alice):
        r = await room(alice)
        await alice.post_message(r, "one")
        ws = await ws_connect(node.url, alice.access_token)
        try:
            ready = await recv(ws)
            head = ready["rooms"][r]
            await send_frame(ws, type="resume", id="x", cursors={r: 9_007_199_254_740_992})
            frames = await recv_until(ws, lambda f: f["type"] == "resumed")
            assert frames[0] == {
                "type": "error",
                "id": "x",
                "code": "cursor_ahead",
                "message": frames[0]["message"],
                "room_id": r,
                "head": head,
            }
            assert frames[-1] == {"type": "resumed", "id": "x"}
            await send_frame(ws, type="send", id="s", room_id=r, body="heard", client_msg_id="c1")
            got = await recv_until(ws, lambda f: f["type"] == "event")
            assert got[-1]["event"]["seq"] == head + 1
            assert any(f["type"] == "ack" for f in got) or (await recv(ws))["type"] == "ack"
        finally:
            await ws.close()


async def test_an_sse_last_event_id_beyond_the_head_is_answered(node: ServerThread) -> None:
    alice = await user(node.url, "alice")
    async with closing(alice):
        r = await room(alice)
        await alice.post_message(r, "one")
        headers = {
            "Authorization": f"Bearer {alice.access_token}",
            "Last-Event-ID": encode_cursors({r: 9_007_199_254_740_992}),
        }
        async with (
            httpx.AsyncClient(base_url=node.url, timeout=TIMEOUT) as http,
            http.stream("GET", "/api/v1/events/stream", headers=headers) as response,
        ):
            assert response.status_code == 200
            lines = response.aiter_lines()
            names: list[str] = []
            data: list[dict[str, object]] = []
            async with asyncio.timeout(TIMEOUT):
                async for line in lines:
                    if line.startswith("event: "):
                        names.append(line[7:])
                    elif line.startswith("data: "):
                        data.append(json.loads(line[6:]))
                        if len(data) == 2:
                            break
            assert names == ["ready", "error"]
            assert data[1]["code"] == "cursor_ahead" and data[1]["room_id"] == r
            assert data[1]["head"] == data[0]["rooms"][r]  # type: ignore[index]


async def _fill(db: Path, room_id: str, sender: str, count: int) -> None:
    """Store ``count`` messages beside the running node (a second store on its
    database file, as a second node would be): the node hears nothing of them."""
    store = SqlStore(f"sqlite:///{db}")
    await store.start()
    try:
        for start in range(0, count, 2000):
            await asyncio.gather(
                *(
                    store.send_message(SendRequest(RoomId(room_id), UserId(sender), f"m{i}", None))
                    for i in range(start, min(count, start + 2000))
                )
            )
    finally:
        await store.close()


async def test_a_resume_100k_behind_completes_on_one_connection(node: ServerThread) -> None:
    alice = await user(node.url, "alice")
    async with closing(alice):
        r = await room(alice)
        before = time.monotonic()
        await _fill(node.settings.data_dir / "parley.db", r, uid(alice), FAR)
        filled = time.monotonic() - before
        ws = await ws_connect(node.url, alice.access_token, max_queue=64)
        try:
            await send_frame(ws, type="resume", id="far", cursors={r: 0})
            ready = await recv(ws)
            assert ready["type"] == "ready"
            head = ready["rooms"][r]
            assert head > FAR
            expected = 1
            async with asyncio.timeout(120):
                while True:
                    frame = json.loads(await ws.recv())
                    if frame["type"] == "resumed":
                        break
                    assert frame["type"] == "event", frame
                    assert frame["event"]["seq"] == expected, (frame["event"]["seq"], expected)
                    expected += 1
                    if expected % 20_000 == 0:
                        # A slow reader: the replay must wait for it, not overflow.
                        await asyncio.sleep(0.5)
            assert expected == head + 1, f"stopped at {expected - 1} of {head} (fill {filled:.1f}s)"
        finally:
            await ws.close()
