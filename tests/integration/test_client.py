"""The Python SDK against a real node: retried sends stored once, resume across
network loss and server restarts, gap repair from REST, token refresh, backoff."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from websockets.exceptions import ConnectionClosedError

from parley.client import ApiError, AuthError, Backoff, ParleyClient, _live
from parley.testing.server import ServerThread
from tests.realtime_support import (
    TIMEOUT,
    Proxy,
    body_of,
    closing,
    events_until,
    room,
    running_server,
    take_events,
    user,
)


@pytest.fixture(scope="module")
def node(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerThread]:
    with running_server(tmp_path_factory.mktemp("sdk"), rate_limits="off") as server:
        yield server


def through(proxy: Proxy, client: ParleyClient) -> ParleyClient:
    """The same user, connecting through ``proxy``."""
    return ParleyClient(
        proxy.url, access_token=client.access_token, refresh_token=client.refresh_token
    )


async def test_send_retried_across_a_dropped_connection_is_stored_once(
    node: ServerThread,
) -> None:
    alice, bob = await user(node.url, "alice"), await user(node.url, "bob")
    async with closing(alice, bob), Proxy(node.port) as proxy:
        room_id = await room(alice, bob)
        flaky = through(proxy, alice)
        async with closing(flaky), flaky.live() as a, bob.live() as b:
            proxy.mute_down()  # the server's answers are lost from now on
            sending = asyncio.create_task(a.send(room_id, "exactly once", client_msg_id="k-1"))
            [stored] = await take_events(b, 1)  # it was stored and fanned out...
            assert not sending.done()  # ...but the ack never arrived
            proxy.cut()  # the client notices the dead link and reconnects
            async with asyncio.timeout(TIMEOUT):
                acked = await sending
            assert acked == stored["message"]
            assert a.connects >= 2
            await alice.post_message(room_id, "marker")
            later = await events_until(b, lambda e: body_of(e) == "marker")
            assert [body_of(e) for e in later] == ["marker"]
        messages, _ = await alice.messages(room_id)
        assert [m["body"] for m in messages] == ["exactly once", "marker"]


async def test_a_connection_dropped_mid_handshake_is_retried(
    node: ServerThread, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A server that closes the socket around the upgrade (restarting, out of file
    descriptors) is a transient failure, not the end of the client: both the way a
    real proxy drop shows up and the way websockets reports a socket already lost
    when the handshake starts (a busy client loop sees the EOF first)."""
    real_connect = _live.connect
    lost_early = 2

    def connect(*args: Any, **kwargs: Any) -> Any:
        nonlocal lost_early
        if lost_early:
            lost_early -= 1
            raise ConnectionClosedError(None, None)
        return real_connect(*args, **kwargs)

    monkeypatch.setattr(_live, "connect", connect)
    alice = await user(node.url, "alice")
    async with closing(alice), Proxy(node.port) as proxy:
        proxy.drop_next = 3
        live = through(proxy, alice).live(backoff=Backoff(base=0.01, cap=0.05))
        async with asyncio.timeout(TIMEOUT):
            await live.start()
        try:
            assert live.connected and live.connects == 1
            assert proxy.drop_next == 0 and lost_early == 0
        finally:
            await live.close()


async def test_iterating_events_across_reconnects(node: ServerThread) -> None:
    alice, bob = await user(node.url, "alice"), await user(node.url, "bob")
    async with closing(alice, bob), Proxy(node.port) as proxy:
        room_id = await room(alice, bob)
        reader = through(proxy, bob)
        async with closing(reader), reader.live() as live:
            received: list[str] = []

            async def consume() -> None:
                async for event in live:
                    if body := body_of(event):
                        received.append(body)
                        if len(received) == 30:
                            return

            consumer = asyncio.create_task(consume())
            for i in range(30):
                await alice.post_message(room_id, f"n{i}")
                if i % 10 == 5:
                    proxy.cut()
            async with asyncio.timeout(TIMEOUT):
                await consumer
            assert received == [f"n{i}" for i in range(30)]
            assert live.duplicates >= 0 and live.connects >= 2


async def room_of_five(alice: ParleyClient) -> tuple[str, list[dict[str, Any]]]:
    """A new room with five messages: its id and its events (creation, join, m0..m4)."""
    room_id = await room(alice)
    for i in range(5):
        await alice.post_message(room_id, f"m{i}")
    events, _ = await alice.events(room_id)
    return room_id, events


async def test_gap_is_repaired_from_the_rest_log(node: ServerThread) -> None:
    """A seq that skips (a frame the client never got) is filled from REST before
    the event that revealed it. Driven frame by frame: a real server never skips."""
    alice = await user(node.url, "alice")
    async with closing(alice):
        room_id, events = await room_of_five(alice)
        live = alice.live(cursors={room_id: 3})
        await live._on_frame(
            {"type": "ready", "user_id": "u", "session_id": "s", "rooms": {room_id: 7}}
        )
        await live._on_frame({"type": "event", "event": events[6]})  # seq 7: 4..6 missing
        await live._on_frame({"type": "event", "event": events[5]})  # a repeat now
        got = [await live.next_event() for _ in range(4)]
        assert [e["seq"] for e in got] == [4, 5, 6, 7]
        assert live.gaps_repaired == 1 and live.duplicates == 1
        assert live.cursors[room_id] == 7


async def test_expired_access_token_is_refreshed_on_connect(node: ServerThread) -> None:
    alice = await user(node.url, "alice")
    async with closing(alice):
        room_id = await room(alice)
        seen: list[str] = []
        client = ParleyClient(
            node.url,
            access_token="expired-or-forged",
            refresh_token=alice.refresh_token,
            on_tokens=lambda t: seen.append(t.access_token),
        )
        async with closing(client), client.live() as live:
            assert seen and client.access_token == seen[-1]
            await live.send(room_id, "after refresh")
        with pytest.raises(AuthError):
            await ParleyClient(node.url, access_token="bad").rooms()


async def test_refusals_are_api_errors(node: ServerThread) -> None:
    alice, bob = await user(node.url, "alice"), await user(node.url, "bob")
    async with closing(alice, bob):
        theirs = await room(bob)
        async with alice.live() as live:
            with pytest.raises(ApiError) as info:
                await live.send(theirs, "not mine")
            assert info.value.code == "not_found"
            with pytest.raises(ApiError) as info:
                await live.send(theirs, " ")
            assert info.value.code == "empty_body"
        with pytest.raises(ApiError) as info:
            await alice.join("no-such-room")
        assert info.value.status == 404


async def test_resume_across_a_server_restart(tmp_path: Path) -> None:
    data = tmp_path / "data"
    with running_server(data, rate_limits="off") as first:
        alice, bob = await user(first.url, "alice"), await user(first.url, "bob")
        room_id = await room(alice, bob)
        proxy = Proxy(first.port)
        await proxy.__aenter__()
        reader = through(proxy, bob)
        live = reader.live(backoff=Backoff(base=0.05, cap=0.2))
        await live.start()
        await alice.post_message(room_id, "before")
        await take_events(live, 1)
    # The node is gone; messages are stored by its successor on the same data.
    with running_server(data, rate_limits="off") as second:
        alice.base_url = second.url
        for i in range(3):
            await alice.post_message(room_id, f"after-{i}")
        proxy.target_port = second.port
        proxy.cut()
        got = await take_events(live, 3)
        assert [body_of(e) for e in got] == ["after-0", "after-1", "after-2"]
        await live.close()
        await proxy.__aexit__(None, None, None)
        for client in (alice, bob, reader):
            await client.aclose()


def test_backoff_grows_with_full_jitter_and_resets() -> None:
    backoff = Backoff(base=0.1, cap=1.0)
    bounds = [min(1.0, 0.1 * 2**n) for n in range(8)]
    delays = [backoff.next_delay() for _ in bounds]
    assert all(0 <= d <= b for d, b in zip(delays, bounds, strict=True))
    backoff.reset()
    assert backoff.next_delay() <= 0.1


async def test_a_live_event_ahead_of_the_resume_waits_for_its_replay(node: ServerThread) -> None:
    """An event that arrives before the server read a late ``resume`` skips ahead
    of the cursor: the replay the resume asked for re-sends it, so no REST repair."""
    alice = await user(node.url, "alice")
    async with closing(alice):
        room_id, events = await room_of_five(alice)
        live = alice.live(cursors={room_id: 3})
        live._resuming = ("c1", {room_id})  # what _session sets as it sends the resume
        await live._on_frame({"type": "event", "event": events[6]})  # seq 7, live
        assert (live.gaps_repaired, live.cursors[room_id]) == (0, 3)
        for event in events[3:7]:  # the replay: 4 .. 7
            await live._on_frame({"type": "event", "event": event})
        await live._on_frame({"type": "resumed", "id": "c1"})
        assert live._resuming is None
        got = [await live.next_event() for _ in range(4)]
        assert [e["seq"] for e in got] == [4, 5, 6, 7]
        assert (live.gaps_repaired, live.duplicates) == (0, 0)


async def test_a_draining_node_is_left_at_once_without_backoff(node: ServerThread) -> None:
    """Closed with 1012 (the node is restarting), the SDK reconnects within a
    quarter second, whatever its backoff says, and loses nothing."""
    alice = await user(node.url, "alice")
    async with closing(alice):
        room_id = await room(alice)
        slow = Backoff(base=60.0, cap=60.0)  # a plain close would wait up to a minute
        async with alice.live(backoff=slow) as live:
            await live.send(room_id, "before")
            assert node._server is not None
            hub = node._server.config.app.state.runtime.hub
            for conn in list(hub.users[str(alice.user_id)]):  # type: ignore[attr-defined]
                conn.close(1012, "service restart")
            async with asyncio.timeout(5):
                while live.connects < 2:  # noqa: ASYNC110 (a counter, no event to await)
                    await asyncio.sleep(0.02)
                await live.wait_ready()
            await live.send(room_id, "after")
            bodies = [body_of(e) for e in await events_until(live, lambda e: body_of(e) == "after")]
            assert bodies.count("before") == 1 and bodies[-1] == "after"


async def test_a_cursor_beyond_the_head_is_reset_and_the_room_goes_on(node: ServerThread) -> None:
    alice = await user(node.url, "alice")
    async with closing(alice):
        room_id = await room(alice)
        seen: list[dict[str, Any]] = []
        async with alice.live(cursors={room_id: 10**9}, on_frame=seen.append) as live:
            async with asyncio.timeout(TIMEOUT):
                while not any(f.get("code") == "cursor_ahead" for f in seen):  # noqa: ASYNC110
                    await asyncio.sleep(0.02)
            head = next(f["head"] for f in seen if f.get("code") == "cursor_ahead")
            assert live.cursors[room_id] == head
            await alice.post_message(room_id, "still heard")
            [event] = await take_events(live, 1)
            assert event["seq"] == head + 1 and body_of(event) == "still heard"


async def test_a_sender_that_never_reads_its_events_gets_every_ack(node: ServerThread) -> None:
    """Sends whose own events overflow the queue are still acknowledged (the reader
    once waited on the full queue, and every later send waited for an ack forever);
    the events that did not fit are read from the log later, once each, in order."""
    alice, bob = await user(node.url, "alice"), await user(node.url, "bob")
    async with closing(alice, bob):
        room_id = await room(alice, bob)
        async with alice.live(queue_size=4) as live:
            async with asyncio.timeout(TIMEOUT):
                for i in range(30):
                    await live.send(room_id, f"m{i}")
                    if i % 10 == 0:
                        await bob.post_message(room_id, f"bob{i}")
            assert live.overflows >= 1
            events = await take_events(live, 33)
            first = events[0]["seq"]
            assert [e["seq"] for e in events] == list(range(first, first + 33))
            bodies = [body_of(e) for e in events]
            assert [b for b in bodies if b and b.startswith("m")] == [f"m{i}" for i in range(30)]
            assert bodies.count("bob20") == 1


async def test_a_client_that_does_not_read_still_hears_the_server(node: ServerThread) -> None:
    """A client whose queue is full still reads its socket: a ping is answered (it
    used to wait behind the queue for good), a 1012 close makes it reconnect at
    once, and the events that did not fit come from the log, in order."""
    alice = await user(node.url, "alice")
    async with closing(alice):
        room_id = await room(alice)
        async with alice.live(queue_size=2) as live:
            for i in range(10):
                await alice.post_message(room_id, f"m{i}")
            async with asyncio.timeout(TIMEOUT):
                await live.ping()  # every event has reached the client
            assert node._server is not None
            hub = node._server.config.app.state.runtime.hub
            for conn in list(hub.users[str(alice.user_id)]):  # type: ignore[attr-defined]
                conn.close(1012, "service restart")
            async with asyncio.timeout(5):
                while live.connects < 2:  # noqa: ASYNC110 (a counter, no event to await)
                    await asyncio.sleep(0.02)
            bodies = [body_of(e) for e in await take_events(live, 10)]
            assert bodies == [f"m{i}" for i in range(10)]
