"""The SDK's presence API against a real node: subscribe, changes, unsubscribe, and
what it sets up again after a reconnect (subscriptions, an ``idle`` status), which
the server forgets with the connection."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterator
from typing import Any

import httpx
import pytest

from parley.client import Backoff, Live, ParleyClient
from parley.testing.server import ServerThread
from tests.realtime_support import (
    TIMEOUT,
    Proxy,
    closing,
    poll_until,
    room,
    running_server,
    uid,
    user,
)

TICKS = 1.5
"""Seconds for a change the server has read to reach the store and the subscribers:
three presence ticks (0.5 s), more than a tick plus the coalescing interval (1 s)."""


@pytest.fixture(scope="module")
def node(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerThread]:
    with running_server(tmp_path_factory.mktemp("sdk-presence"), rate_limits="off") as server:
        yield server


def through(proxy: Proxy, client: ParleyClient) -> ParleyClient:
    """The same user, connecting through ``proxy``."""
    return ParleyClient(
        proxy.url, access_token=client.access_token, refresh_token=client.refresh_token
    )


class Seen:
    """An ``on_frame`` callback that keeps the frames, to be waited on in order."""

    def __init__(self) -> None:
        self.frames: list[dict[str, Any]] = []
        self._read = 0
        self._arrived = asyncio.Event()

    def __call__(self, frame: dict[str, Any]) -> None:
        self.frames.append(frame)
        self._arrived.set()

    async def next(self, match: Callable[[dict[str, Any]], bool]) -> dict[str, Any]:
        """The next frame not read yet that matches (the others are skipped)."""
        async with asyncio.timeout(TIMEOUT):
            while True:
                while self._read < len(self.frames):
                    frame = self.frames[self._read]
                    self._read += 1
                    if match(frame):
                        return frame
                self._arrived.clear()
                await self._arrived.wait()

    def unread(self) -> list[dict[str, Any]]:
        return self.frames[self._read :]


def presence_of(client: ParleyClient, status: str | None = None) -> Callable[[Any], bool]:
    def match(frame: dict[str, Any]) -> bool:
        return (
            frame.get("type") == "presence"
            and frame.get("user_id") == uid(client)
            and (status is None or frame.get("status") == status)
        )

    return match


def forbidden(frame: dict[str, Any]) -> bool:
    return frame.get("type") == "error" and frame.get("code") == "forbidden"


async def reconnected(live: Live, connects: int = 2) -> None:
    async def back() -> bool:
        return live.connects >= connects and live.connected

    await poll_until(back, True)


async def status_over_rest(viewer: ParleyClient, watched: ParleyClient) -> str:
    headers = {"Authorization": f"Bearer {viewer.access_token}"}
    async with httpx.AsyncClient(base_url=viewer.base_url, headers=headers) as http:
        r = await http.get("/api/v1/presence", params={"user_ids": [uid(watched)]})
    [entry] = r.json()["presence"]
    return str(entry["status"])


async def test_subscribe_gets_the_status_then_changes_until_unsubscribed(
    node: ServerThread,
) -> None:
    alice, bob = await user(node.url, "alice"), await user(node.url, "bob")
    async with closing(alice, bob):
        await room(alice, bob)
        seen = Seen()
        async with alice.live() as a, bob.live(on_frame=seen) as b:
            await b.presence_subscribe([uid(alice)])
            assert b.presence_subscriptions == {uid(alice)}
            # The answer may say offline until the node's next tick writes alice's
            # fresh connection; online follows.
            online = await seen.next(presence_of(alice, "online"))
            assert b.presence[uid(alice)] == online

            await a.set_presence("idle")
            assert a.presence_status == "idle"
            idle = await seen.next(presence_of(alice))
            assert idle["status"] == "idle"
            assert b.presence[uid(alice)] == idle

            await b.presence_unsubscribe([uid(alice)])
            assert b.presence_subscriptions == frozenset() and uid(alice) not in b.presence
            await b.ping()  # the server has read the unsubscribe
            await a.set_presence("online")
            await a.ping()
            await asyncio.sleep(TICKS)
            assert [x for x in seen.unread() if x["type"] == "presence"] == []
            assert await status_over_rest(bob, alice) == "online"  # the change was made


async def test_a_subscription_survives_a_network_cut(node: ServerThread) -> None:
    alice, bob = await user(node.url, "alice"), await user(node.url, "bob")
    async with closing(alice, bob), Proxy(node.port) as proxy:
        await room(alice, bob)
        watcher = through(proxy, bob)
        seen = Seen()
        backoff = Backoff(base=0.05, cap=0.2)
        async with (
            closing(watcher),
            alice.live() as a,
            watcher.live(on_frame=seen, backoff=backoff) as b,
        ):
            await b.presence_subscribe([uid(alice)])
            await seen.next(presence_of(alice, "online"))
            proxy.cut()  # the server drops the connection's subscriptions with it
            await reconnected(b)
            # The SDK subscribed again: the answer, then a change made afterwards.
            answer = await seen.next(presence_of(alice))
            assert answer["status"] == "online"
            await a.set_presence("idle")
            changed = await seen.next(presence_of(alice))
            assert changed["status"] == "idle"
            assert b.presence[uid(alice)] == changed
            assert b.presence_subscriptions == {uid(alice)}


async def test_idle_is_set_again_after_a_reconnect(node: ServerThread) -> None:
    alice, bob = await user(node.url, "alice"), await user(node.url, "bob")
    async with closing(alice, bob), Proxy(node.port) as proxy:
        await room(alice, bob)
        device = through(proxy, alice)
        seen = Seen()
        backoff = Backoff(base=0.05, cap=0.2)
        async with (
            closing(device),
            device.live(backoff=backoff) as a,
            bob.live(on_frame=seen) as b,
        ):
            await b.presence_subscribe([uid(alice)])
            await seen.next(presence_of(alice, "online"))
            await a.set_presence("idle")
            await seen.next(presence_of(alice, "idle"))
            proxy.cut()
            await reconnected(a)
            await a.ping()  # the server has read what the SDK sent after ready
            await asyncio.sleep(TICKS)
            # A new connection starts online, and the user's status is the best of
            # their connections': only the SDK setting idle again keeps it idle.
            assert await status_over_rest(bob, alice) == "idle"
            assert a.presence_status == "idle"
            assert b.presence[uid(alice)]["status"] == "idle"


async def test_subscriptions_are_sent_in_chunks_and_refusals_forgotten(
    node: ServerThread,
) -> None:
    """600 ids of the longest allowed length: in one frame they would exceed the
    server's 64 KiB frame limit (close 1009); the SDK sends three. Subscribing
    before ``start`` sends them with the first ``ready``."""
    alice, bob = await user(node.url, "alice"), await user(node.url, "bob")
    async with closing(alice, bob):
        await room(alice, bob)
        strangers = [f"{i:03d}".ljust(128, "x") for i in range(599)]
        seen = Seen()
        live = bob.live(on_frame=seen)
        await live.presence_subscribe([*strangers, uid(alice)])
        assert len(live.presence_subscriptions) == 600
        async with live as b:
            refusals = [await seen.next(forbidden) for _ in range(3)]
            assert sorted(u for r in refusals for u in r["user_ids"]) == strangers
            await seen.next(presence_of(alice))
            assert b.presence_subscriptions == {uid(alice)}  # refused ones are forgotten
            assert b.connects == 1
            with pytest.raises(ValueError, match="1000"):
                await b.presence_subscribe([f"u{i}" for i in range(1000)])
            assert b.presence_subscriptions == {uid(alice)}
            with pytest.raises(TypeError):
                await b.presence_subscribe(uid(alice))
