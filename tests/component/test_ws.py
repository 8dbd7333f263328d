"""Real-time delivery over the WebSocket, against a real node: live exchange,
concurrent senders, resume after a network loss, live membership, slow readers."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from parley.delivery import session as session_module
from parley.protocol.frames import TYPING_EXPIRES_MS
from parley.testing.server import ServerThread
from tests.realtime_support import (
    TIMEOUT,
    Proxy,
    body_of,
    closing,
    events_until,
    frames_until_closed,
    recv,
    recv_until,
    room,
    running_server,
    send_frame,
    take_events,
    uid,
    user,
    ws_connect,
)

WRITE_PATHS = pytest.mark.parametrize("asgi", [False, True], ids=["direct", "asgi"])


@pytest.fixture(scope="module", params=[False, True], ids=["direct", "asgi"])
def node(
    tmp_path_factory: pytest.TempPathFactory, request: pytest.FixtureRequest
) -> Iterator[ServerThread]:
    """A node writing WebSocket frames through the direct socket (``parley serve``)
    and one writing through plain ASGI ``send`` (any other ASGI server)."""
    with running_server(
        tmp_path_factory.mktemp("ws"), rate_limits="off", asgi_websockets=request.param
    ) as server:
        yield server


async def test_two_users_exchange_messages_live(node: ServerThread) -> None:
    alice, bob = await user(node.url, "alice"), await user(node.url, "bob")
    async with closing(alice, bob):
        room_id = await room(alice, bob)
        async with alice.live() as a, bob.live() as b:
            assert a.rooms[room_id] == b.rooms[room_id]
            sent = await a.send(room_id, "hi bob")
            assert sent["body"] == "hi bob" and sent["sender_id"] == uid(alice)
            [seen] = await take_events(b, 1)
            assert seen["type"] == "message.created" and seen["message"] == sent
            reply = await b.send(room_id, "hi alice")
            got = await events_until(a, lambda e: body_of(e) == "hi alice")
            assert [body_of(e) for e in got] == ["hi bob", "hi alice"]
            assert got[-1]["seq"] == reply["seq"] == sent["seq"] + 1


async def test_concurrent_senders_reach_every_receiver_in_the_same_order(
    node: ServerThread,
) -> None:
    owner = await user(node.url, "own")
    senders = [await user(node.url, "snd") for _ in range(5)]
    receivers = [await user(node.url, "rcv") for _ in range(3)]
    async with closing(owner, *senders, *receivers):
        room_id = await room(owner, *senders, *receivers)
        lives = [r.live() for r in receivers]
        for live in lives:
            await live.start()
        start = lives[0].rooms[room_id]

        async def burst(client: object, n: int) -> None:
            async with client.live() as live:  # type: ignore[attr-defined]
                for i in range(50):
                    await live.send(room_id, f"s{n}-{i}")

        await asyncio.gather(*(burst(s, n) for n, s in enumerate(senders)))
        streams = [await take_events(live, 250) for live in lives]
        for live in lives:
            await live.close()
        first = [(e["seq"], body_of(e)) for e in streams[0]]
        assert [seq for seq, _ in first] == list(range(start + 1, start + 251))
        assert len({body for _, body in first}) == 250
        for stream in streams[1:]:
            assert [(e["seq"], body_of(e)) for e in stream] == first
        for n in range(5):  # each sender's messages in the order it sent them
            mine = [b for _, b in first if b is not None and b.startswith(f"s{n}-")]
            assert mine == [f"s{n}-{i}" for i in range(50)]
        assert all(live.duplicates == 0 for live in lives)


async def test_receiver_cut_off_mid_stream_resumes_with_nothing_lost_or_repeated(
    node: ServerThread,
) -> None:
    alice, bob = await user(node.url, "alice"), await user(node.url, "bob")
    async with closing(alice, bob), Proxy(node.port) as proxy:
        room_id = await room(alice, bob)
        bob_via_proxy = bob.__class__(
            proxy.url, access_token=bob.access_token, refresh_token=bob.refresh_token
        )
        async with closing(bob_via_proxy), alice.live() as a, bob_via_proxy.live() as b:
            for i in range(20):
                await a.send(room_id, f"m{i}")
            first = await take_events(b, 10)
            connects = b.connects
            proxy.cut()  # the link drops: no close frame, no FIN
            for i in range(20, 40):
                await a.send(room_id, f"m{i}")
            rest = await take_events(b, 30)
            assert b.connects > connects
            bodies = [body_of(e) for e in first + rest]
            assert bodies == [f"m{i}" for i in range(40)]
            seqs = [e["seq"] for e in first + rest]
            assert seqs == list(range(seqs[0], seqs[0] + 40))
            assert b.duplicates == 0


async def test_kicked_member_stops_receiving_at_once_on_every_connection(
    node: ServerThread,
) -> None:
    owner, bob = await user(node.url, "own"), await user(node.url, "bob")
    async with closing(owner, bob):
        kept = await room(owner, bob)
        kicked = await room(owner, bob)
        async with owner.live() as o, bob.live() as b1, bob.live() as b2:
            await o.send(kicked, "before")
            for live in (b1, b2):
                [event] = await take_events(live, 1)
                assert body_of(event) == "before"
            await owner.remove_member(kicked, uid(bob))
            await o.send(kicked, "secret")
            await o.send(kept, "marker")
            for live in (b1, b2):
                got = await events_until(live, lambda e: body_of(e) == "marker")
                assert [(e["room_id"], e["type"]) for e in got] == [
                    (kicked, "member.left"),
                    (kept, "message.created"),
                ]
                assert got[0]["user_id"] == uid(bob) and got[0]["reason"] == "kicked"
                assert kicked not in live.cursors
            # Joining again (an owner adds him back) starts delivery at once.
            await owner.add_member(kicked, uid(bob))
            await o.send(kicked, "welcome back")
            for live in (b1, b2):
                got = await events_until(live, lambda e: body_of(e) == "welcome back")
                assert [e["type"] for e in got] == ["member.joined", "message.created"]


async def test_a_new_room_is_delivered_without_reconnecting(node: ServerThread) -> None:
    alice, bob = await user(node.url, "alice"), await user(node.url, "bob")
    async with closing(alice, bob), bob.live() as b:
        dm = await alice.open_dm(uid(bob))
        await alice.post_message(dm["id"], "psst")
        got = await events_until(b, lambda e: body_of(e) == "psst")
        assert {e["room_id"] for e in got} == {dm["id"]}
        assert got[0]["type"] == "member.joined" and got[0]["user_id"] == uid(bob)


async def test_raw_resume_replays_after_each_cursor_then_resumed(node: ServerThread) -> None:
    alice = await user(node.url, "alice")
    async with closing(alice):
        r1, r2 = await room(alice), await room(alice)
        for i in range(5):
            await alice.post_message(r1, f"a{i}")
            await alice.post_message(r2, f"b{i}")
        ws = await ws_connect(node.url, alice.access_token)
        try:
            # Sent before `ready` arrives, so it is read before anything goes live.
            await send_frame(ws, type="resume", id="r", cursors={r1: 4, r2: 6, "nope": 1})
            ready = await recv(ws)
            assert ready["type"] == "ready" and ready["rooms"][r1] == 7
            frames = await recv_until(ws, lambda f: f["type"] == "resumed")
            assert frames[-1] == {"type": "resumed", "id": "r"}
            events = [f["event"] for f in frames[:-1]]
            assert [e["seq"] for e in events if e["room_id"] == r1] == [5, 6, 7]
            assert [e["seq"] for e in events if e["room_id"] == r2] == [7]
            await alice.post_message(r1, "live")
            frame = await recv(ws)
            assert frame["type"] == "event" and frame["event"]["seq"] == 8
        finally:
            await ws.close()


async def test_send_errors_answer_the_frame_and_keep_the_connection(node: ServerThread) -> None:
    alice, bob = await user(node.url, "alice"), await user(node.url, "bob")
    async with closing(alice, bob):
        theirs = await room(bob)
        mine = await room(alice)
        ws = await ws_connect(node.url, alice.access_token)
        try:
            await recv(ws)
            await send_frame(ws, type="send", id=1, room_id=theirs, body="x", client_msg_id="a")
            await send_frame(ws, type="send", id=2, room_id=mine, body=" ", client_msg_id="b")
            await send_frame(ws, type="send", id=3, room_id=mine, body="x" * 20000)
            await send_frame(ws, type="send", id=4, room_id=mine, body="ok", client_msg_id="c")
            answers: dict[int, dict[str, object]] = {}
            while len(answers) < 4:  # answers may come in any order: sends run at once
                frame = await recv(ws)
                if frame["type"] in ("ack", "error"):
                    answers[frame["id"]] = frame
            errors = {i: f["code"] for i, f in answers.items() if f["type"] == "error"}
            assert errors == {1: "not_found", 2: "empty_body", 3: "too_large"}
            assert answers[4]["type"] == "ack"
        finally:
            await ws.close()


async def test_typing_reaches_other_members_only_and_is_throttled(node: ServerThread) -> None:
    alice, bob, eve = [await user(node.url, n) for n in ("alice", "bob", "eve")]
    async with closing(alice, bob, eve):
        room_id = await room(alice, bob)
        typing: list[dict[str, object]] = []
        got_typing = asyncio.Event()

        def on_frame(frame: dict[str, object]) -> None:
            typing.append(frame)
            got_typing.set()

        eve_frames: list[dict[str, object]] = []
        async with (
            alice.live() as a,
            bob.live(on_frame=on_frame) as b,
            eve.live(on_frame=eve_frames.append) as e,
        ):
            await a.typing(room_id)
            await a.typing(room_id)  # within 3 s: dropped
            async with asyncio.timeout(TIMEOUT):
                await got_typing.wait()
            for live in (a, b, e):  # a round trip: anything sent before has arrived
                await live.ping()
            assert typing == [
                {
                    "type": "typing",
                    "room_id": room_id,
                    "user_id": uid(alice),
                    "expires_in_ms": TYPING_EXPIRES_MS,
                }
            ]
            assert eve_frames == []
        ws = await ws_connect(node.url, eve.access_token)
        try:
            await recv(ws)
            await send_frame(ws, type="typing", id="t1", room_id=room_id)
            error = await recv(ws)
            assert (error["type"], error["code"], error["id"]) == ("error", "not_found", "t1")
        finally:
            await ws.close()


async def test_read_cursor_over_the_websocket(node: ServerThread) -> None:
    alice = await user(node.url, "alice")
    async with closing(alice):
        room_id = await room(alice)
        await alice.post_message(room_id, "one")
        async with alice.live() as a:
            assert await a.mark_read(room_id, 3) == 3
            assert await a.mark_read(room_id, 1) == 3  # forward only
        [summary] = [r for r in await alice.rooms() if r["id"] == room_id]
        assert summary["read_seq"] == 3


@WRITE_PATHS
async def test_slow_reader_is_closed_and_the_room_keeps_flowing(tmp_path: Path, asgi: bool) -> None:
    with running_server(
        tmp_path, rate_limits="off", outbound_queue=8, asgi_websockets=asgi
    ) as server:
        alice, bob, slow = [await user(server.url, n) for n in ("alice", "bob", "slow")]
        async with closing(alice, bob, slow), httpx.AsyncClient() as http:
            room_id = await room(alice, bob, slow)
            # A reader that stops reading: a small receive window, and a client
            # library that stops taking frames off the socket after one.
            sock = socket.socket()
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
            sock.connect(("127.0.0.1", server.port))
            sluggish = await ws_connect(server.url, slow.access_token, max_queue=1, sock=sock)
            assert (await recv(sluggish))["type"] == "ready"

            async def dropped() -> bool:
                text = (await http.get(f"{server.url}/metrics")).text
                return "parley_queue_drops_total 1.0" in text

            body = "x" * 16000
            async with alice.live() as a, bob.live() as b:
                sent = 0
                while sent < 2000 and not (sent % 10 == 0 and await dropped()):
                    await a.send(room_id, f"{sent} {body}")
                    sent += 1
                assert await dropped()
                for i in range(sent, sent + 5):  # the room keeps flowing
                    await a.send(room_id, f"{i} after")
                got = await take_events(b, sent + 5)
                assert [e["message"]["body"].split()[0] for e in got] == [
                    str(i) for i in range(sent + 5)
                ]
            _, code = await frames_until_closed(sluggish)
            assert code == 1013


async def test_metrics_count_connections_and_frames(node: ServerThread) -> None:
    alice = await user(node.url, "alice")
    async with closing(alice):
        room_id = await room(alice)
        async with alice.live() as a:
            await a.send(room_id, "counted")
            async with httpx.AsyncClient() as http:
                text = (await http.get(f"{node.url}/metrics")).text
        assert 'parley_connections{transport="ws"}' in text
        for name in (
            "parley_frames_in_total",
            "parley_sends_total",
            "parley_deliveries_total",
            "parley_send_seconds_count",
        ):
            line = next(x for x in text.splitlines() if x.startswith(name + " "))
            assert float(line.split()[1]) >= 1
        assert "parley_fanout_seconds_bucket" in text
        assert "parley_loop_lag_seconds_bucket" in text
        assert "parley_store_commit_seconds" in text


async def test_the_node_writes_through_the_path_it_was_given(node: ServerThread) -> None:
    """``parley serve`` writes frames straight to the transport; an ASGI server
    without the direct socket gets the same frames through ``send``."""
    alice = await user(node.url, "alice")
    async with closing(alice), alice.live():
        server = node._server
        assert server is not None
        hub = server.config.app.state.runtime.hub  # type: ignore[attr-defined]
        mine = [c for c in hub.connections if c.user_id == uid(alice)]
        assert mine
        assert all((c.flusher is None) == node.asgi_websockets for c in mine)


async def replayed_from_memory(http: httpx.AsyncClient, url: str) -> float:
    text = (await http.get(f"{url}/metrics")).text
    [served] = [
        float(line.split()[-1])
        for line in text.splitlines()
        if line.startswith("parley_replayed_from_memory_total")
    ]
    return served


@pytest.mark.parametrize("cache", [128, 3], ids=["recent-events", "store"])
async def test_resume_is_served_from_recent_events_or_from_the_store(
    tmp_path: Path, cache: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A resume within the room's recent events shares the live frames, reads
    nothing and is answered at once, with no replay task; one further back reads
    the store in the connection's replay task. Same frames either way."""
    scheduled: list[str] = []
    schedule = session_module.Connection.schedule_replay

    def recording(conn: session_module.Connection, room_id: str) -> None:
        scheduled.append(room_id)
        schedule(conn, room_id)

    monkeypatch.setattr(session_module.Connection, "schedule_replay", recording)
    with running_server(tmp_path, rate_limits="off", replay_cache=cache) as server:
        alice = await user(server.url, "alice")
        async with closing(alice), httpx.AsyncClient() as http:
            room_id = await room(alice)
            watcher = await ws_connect(server.url, alice.access_token)  # the room is live
            try:
                assert (await recv(watcher))["type"] == "ready"
                seqs = [(await alice.post_message(room_id, f"m{i}"))["seq"] for i in range(10)]
                await recv_until(watcher, lambda f: f.get("event", {}).get("seq") == seqs[-1])
                scheduled.clear()
                # the watcher itself may have caught up on the room's first events so
                before = await replayed_from_memory(http, server.url)
                ws = await ws_connect(server.url, alice.access_token)
                try:
                    await send_frame(ws, type="resume", id="r", cursors={room_id: seqs[2]})
                    assert (await recv(ws))["type"] == "ready"
                    frames = await recv_until(ws, lambda f: f["type"] == "resumed")
                    events = [f["event"] for f in frames[:-1]]
                    assert [e["seq"] for e in events] == seqs[3:]
                    assert [e["message"]["body"] for e in events] == [f"m{i}" for i in range(3, 10)]
                    assert scheduled == ([] if cache == 128 else [room_id])
                finally:
                    await ws.close()
            finally:
                await watcher.close()
            served = await replayed_from_memory(http, server.url) - before
            assert served == (7 if cache == 128 else 0), (served, before)
