"""Presence over the WebSocket against a real node with short timers: online,
offline after grace, no flash on a quick reconnect, dead peers, two devices, idle,
visibility, coalescing, typing."""

from __future__ import annotations

import asyncio
import dataclasses
import time
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from websockets.asyncio.client import ClientConnection

from parley.presence import PresenceStats
from parley.testing.server import ServerThread
from tests.realtime_support import (
    TIMEOUT,
    Proxy,
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

HEARTBEAT = 0.5
GRACE = 1.0
IDLE_AFTER = 2.0


@pytest.fixture(scope="module")
def node(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerThread]:
    with running_server(
        tmp_path_factory.mktemp("presence"),
        rate_limits="off",
        heartbeat_interval=HEARTBEAT,
        presence_grace=GRACE,
        idle_after=IDLE_AFTER,
    ) as server:
        yield server


async def connect(node: ServerThread, client: Any, url: str | None = None) -> ClientConnection:
    ws = await ws_connect(url or node.url, client.access_token)
    ready = await recv(ws)
    assert ready["type"] == "ready"
    return ws


async def subscribe(ws: ClientConnection, *user_ids: str) -> list[dict[str, Any]]:
    await send_frame(ws, type="presence.subscribe", user_ids=list(user_ids), id="sub")
    frames = []
    for _ in user_ids:
        frames.append(await recv_presence(ws))
    return frames


async def recv_presence(ws: ClientConnection) -> dict[str, Any]:
    frames = await recv_until(ws, lambda f: f["type"] in ("presence", "error"))
    return frames[-1]


async def online_after(ws: ClientConnection, first: dict[str, Any]) -> None:
    """A fresh connection's entry is written on the node's next tick: the first
    answer may still say offline, and ``online`` follows within a tick."""
    state = first
    while state["status"] != "online":
        state = await recv_presence(ws)


async def frames_for(ws: ClientConnection, seconds: float) -> list[dict[str, Any]]:
    """Every frame that arrives within ``seconds``."""
    frames = []
    deadline = time.monotonic() + seconds
    while (left := deadline - time.monotonic()) > 0:
        try:
            async with asyncio.timeout(left):
                frames.append(await recv(ws))
        except TimeoutError:
            break
    return frames


async def no_presence_for(ws: ClientConnection, seconds: float) -> list[dict[str, Any]]:
    """Presence frames that arrive within ``seconds`` (expected: none)."""
    return [f for f in await frames_for(ws, seconds) if f["type"] == "presence"]


async def test_online_on_connect_offline_after_grace(node: ServerThread) -> None:
    alice, bob = await user(node.url, "al"), await user(node.url, "bo")
    async with closing(alice, bob):
        await room(alice, bob)
        watcher = await connect(node, bob)
        [first] = await subscribe(watcher, uid(alice))
        assert first == {
            "type": "presence",
            "user_id": uid(alice),
            "status": "offline",
            "last_active_at": None,
        }
        device = await connect(node, alice)
        online = await recv_presence(watcher)
        assert online["status"] == "online" and online["last_active_at"]
        closed_at = time.monotonic()
        await device.close()
        offline = await recv_presence(watcher)
        waited = time.monotonic() - closed_at
        assert offline["status"] == "offline"
        assert offline["last_active_at"] == online["last_active_at"]
        assert GRACE * 0.8 <= waited < GRACE + TIMEOUT
        await watcher.close()


async def test_quick_reconnect_does_not_flash_offline(node: ServerThread) -> None:
    alice, bob = await user(node.url, "al"), await user(node.url, "bo")
    async with closing(alice, bob):
        await room(alice, bob)
        device = await connect(node, alice)
        watcher = await connect(node, bob)
        [state] = await subscribe(watcher, uid(alice))
        await online_after(watcher, state)
        await device.close()
        device = await connect(node, alice)  # a page reload
        seen = await no_presence_for(watcher, GRACE + 1.0)
        assert [f for f in seen if f["status"] == "offline"] == []
        await device.close()
        await watcher.close()


async def test_two_devices_one_closes_user_stays_online(node: ServerThread) -> None:
    alice, bob = await user(node.url, "al"), await user(node.url, "bo")
    async with closing(alice, bob):
        await room(alice, bob)
        laptop, phone = await connect(node, alice), await connect(node, alice)
        watcher = await connect(node, bob)
        [state] = await subscribe(watcher, uid(alice))
        await online_after(watcher, state)
        await phone.close()
        seen = await no_presence_for(watcher, GRACE + 1.0)
        assert [f for f in seen if f["status"] == "offline"] == []  # idle may come: no activity
        await laptop.close()
        while (await recv_presence(watcher))["status"] != "offline":
            pass  # idle by inactivity may come first
        await watcher.close()


async def test_vanished_client_goes_offline_within_two_heartbeats_plus_grace(
    node: ServerThread,
) -> None:
    alice, bob = await user(node.url, "al"), await user(node.url, "bo")
    async with closing(alice, bob), Proxy(node.port) as proxy:
        await room(alice, bob)
        device = await connect(node, alice, proxy.url)
        watcher = await connect(node, bob)
        [state] = await subscribe(watcher, uid(alice))
        await online_after(watcher, state)
        proxy.mute()  # no FIN, no RST, no pongs: a laptop lid closing
        muted_at = time.monotonic()
        offline = await recv_presence(watcher)
        assert offline["status"] == "offline"
        assert time.monotonic() - muted_at <= 2 * HEARTBEAT + GRACE + 2.0
        device.transport.abort()
        await watcher.close()


async def test_idle_by_inactivity_and_by_choice(node: ServerThread) -> None:
    alice, bob = await user(node.url, "al"), await user(node.url, "bo")
    async with closing(alice, bob):
        room_id = await room(alice, bob)
        device = await connect(node, alice)
        watcher = await connect(node, bob)
        [state] = await subscribe(watcher, uid(alice))
        await online_after(watcher, state)
        # Heartbeats alone are not activity: idle after IDLE_AFTER.
        idle = await recv_presence(watcher)
        assert idle["status"] == "idle"
        await send_frame(device, type="send", id="s1", room_id=room_id, body="back",
                         client_msg_id="back-1")  # fmt: skip
        back = await recv_presence(watcher)
        assert back["status"] == "online" and back["last_active_at"] > idle["last_active_at"]
        await asyncio.sleep(1.1)  # let the coalescing window pass
        await send_frame(device, type="presence.set", status="idle")
        assert (await recv_presence(watcher))["status"] == "idle"
        await send_frame(device, type="presence.set", status="online")
        assert (await recv_presence(watcher))["status"] == "online"
        await device.close()
        await watcher.close()


async def test_only_users_sharing_a_room_may_subscribe(node: ServerThread) -> None:
    alice, bob, stranger = [await user(node.url, p) for p in ("al", "bo", "st")]
    async with closing(alice, bob, stranger):
        await room(alice, bob)
        peeker = await connect(node, stranger)
        [refused] = await subscribe(peeker, uid(alice))
        assert refused["type"] == "error" and refused["code"] == "forbidden"
        assert refused["user_ids"] == [uid(alice)] and refused["id"] == "sub"
        assert "status" not in refused
        device = await connect(node, alice)
        assert await no_presence_for(peeker, 0.5) == []
        headers = {"Authorization": f"Bearer {stranger.access_token}"}
        async with httpx.AsyncClient(base_url=node.url, headers=headers) as http:
            r = await http.get("/api/v1/presence", params={"user_ids": [uid(alice)]})
        assert r.json() == {"presence": [], "forbidden": [uid(alice)]}
        headers = {"Authorization": f"Bearer {bob.access_token}"}
        async with httpx.AsyncClient(base_url=node.url, headers=headers) as http:
            r = await http.get("/api/v1/presence", params={"user_ids": [uid(alice)]})
        [entry] = r.json()["presence"]
        assert entry["user_id"] == uid(alice) and entry["status"] == "online"
        await device.close()
        await peeker.close()


async def test_burst_of_changes_is_coalesced(node: ServerThread) -> None:
    alice, bob = await user(node.url, "al"), await user(node.url, "bo")
    async with closing(alice, bob):
        await room(alice, bob)
        device = await connect(node, alice)
        watcher = await connect(node, bob)
        await subscribe(watcher, uid(alice))
        for i in range(20):
            await send_frame(device, type="presence.set", status="idle" if i % 2 == 0 else "online")
        await send_frame(device, type="presence.set", status="idle")
        frames = await no_presence_for(watcher, 2.5)
        # One at once, then at most one per second; the last says the final state.
        assert 1 <= len(frames) <= 3
        assert frames[-1]["status"] == "idle"
        await device.close()
        await watcher.close()


async def test_subscriptions_are_bounded(node: ServerThread) -> None:
    alice = await user(node.url, "al")
    async with closing(alice):
        ws = await connect(node, alice)
        await send_frame(
            ws, type="presence.subscribe", user_ids=[f"u{i}" for i in range(1001)], id="big"
        )
        frame = await recv_until(ws, lambda f: f["type"] == "error")
        assert frame[-1]["id"] == "big"
        await ws.close()


async def metric(node: ServerThread, name: str) -> float:
    """A sample of ``/metrics``, by its full name."""
    async with httpx.AsyncClient() as http:
        text = (await http.get(f"{node.url}/metrics")).text
    return float(next(x for x in text.splitlines() if x.startswith(name + " ")).split()[1])


async def test_metrics_count_presence_updates(node: ServerThread) -> None:
    async with httpx.AsyncClient() as http:
        text = (await http.get(f"{node.url}/metrics")).text
    for field in dataclasses.fields(PresenceStats):  # every counter, with its help
        assert f"# HELP parley_presence_{field.name}_total " in text
        assert f"# TYPE parley_presence_{field.name}_total counter" in text
    alice, bob = await user(node.url, "al"), await user(node.url, "bo")
    async with closing(alice, bob):
        await room(alice, bob)
        device = await connect(node, alice)
        watcher = await connect(node, bob)
        [state] = await subscribe(watcher, uid(alice))
        await online_after(watcher, state)
        before = await metric(node, "parley_presence_frames_sent_total")
        await send_frame(device, type="presence.set", status="idle")
        assert (await recv_presence(watcher))["status"] == "idle"
        assert await metric(node, "parley_presence_frames_sent_total") >= before + 1
        await device.close()
        await watcher.close()


async def test_typing_reaches_only_members_and_says_when_it_expires(node: ServerThread) -> None:
    alice, bob, carol = [await user(node.url, p) for p in ("al", "bo", "ca")]
    async with closing(alice, bob, carol):
        room_id = await room(alice, bob)
        await room(alice, carol)  # carol shares another room, not this one
        typist, member, outsider = [await connect(node, c) for c in (alice, bob, carol)]
        await send_frame(typist, type="typing", room_id=room_id)
        [*_, typing] = await recv_until(member, lambda f: f["type"] == "typing")
        assert typing == {"type": "typing", "room_id": room_id, "user_id": uid(alice),
                          "expires_in_ms": 6000}  # fmt: skip
        await send_frame(outsider, type="typing", room_id=room_id, id="t")
        refused = await recv_until(outsider, lambda f: f["type"] == "error")
        assert refused[-1]["id"] == "t"
        assert not [f for f in await frames_for(outsider, 0.5) if f["type"] == "typing"]
        for ws in (typist, member, outsider):
            await ws.close()
