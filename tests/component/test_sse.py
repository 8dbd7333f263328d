"""Server-Sent Events: the same ``event`` frames as the WebSocket, and a resume by
``Last-Event-ID`` that loses and repeats nothing."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any

import httpx
import pytest

from parley.client import ParleyClient
from parley.testing.server import ServerThread
from tests.realtime_support import TIMEOUT, closing, poll_until, room, running_server, uid, user


@pytest.fixture(scope="module")
def node(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerThread]:
    with running_server(tmp_path_factory.mktemp("sse"), rate_limits="off") as server:
        yield server


@dataclass
class SseEvent:
    event: str
    id: str | None
    data: dict[str, Any]


class Stream:
    """A minimal SSE reader (what ``EventSource`` does), over httpx."""

    def __init__(self, response: httpx.Response) -> None:
        self.response = response
        self._lines = response.aiter_lines()
        self.retry: int | None = None

    async def next(self) -> SseEvent:
        name, event_id, data = "message", None, []
        async with asyncio.timeout(TIMEOUT):
            async for line in self._lines:
                if line == "":
                    if data:
                        return SseEvent(name, event_id, json.loads("\n".join(data)))
                    name, event_id, data = "message", None, []
                    continue
                field, _, value = line.partition(":")
                value = value.removeprefix(" ")
                if field == "data":
                    data.append(value)
                elif field == "id":
                    event_id = value
                elif field == "event":
                    name = value
                elif field == "retry":
                    self.retry = int(value)
        raise AssertionError("the stream ended")

    async def take(self, count: int) -> list[SseEvent]:
        return [await self.next() for _ in range(count)]


@asynccontextmanager
async def stream(
    client: ParleyClient, *, last_event_id: str | None = None, via_query: bool = False
) -> AsyncIterator[Stream]:
    headers = {}
    params = {}
    if via_query:
        params["access_token"] = str(client.access_token)
    else:
        headers["Authorization"] = f"Bearer {client.access_token}"
    if last_event_id is not None:
        headers["Last-Event-ID"] = last_event_id
    async with (
        httpx.AsyncClient(timeout=TIMEOUT) as http,
        http.stream(
            "GET",
            f"{client.base_url}/api/v1/events/stream",
            headers=headers,
            params=params,
        ) as response,
    ):
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("text/event-stream")
        yield Stream(response)


async def test_events_stream_with_ready_first(node: ServerThread) -> None:
    alice = await user(node.url, "alice")
    async with closing(alice):
        room_id = await room(alice)
        async with stream(alice, via_query=True) as events:
            ready = await events.next()
            assert ready.event == "ready" and ready.data["type"] == "ready"
            assert ready.data["rooms"] == {room_id: 2}
            assert events.retry is not None
            sent = await alice.post_message(room_id, "hello")
            got = await events.next()
            assert got.event == "message" and got.id
            assert got.data == {"type": "event", "event": got.data["event"]}
            assert got.data["event"]["message"] == sent


async def test_last_event_id_resumes_every_room_without_loss_or_repeat(node: ServerThread) -> None:
    alice, bob = await user(node.url, "alice"), await user(node.url, "bob")
    async with closing(alice, bob):
        r1, r2 = await room(alice, bob), await room(alice, bob)
        async with stream(bob) as events:
            await events.next()  # ready
            for i in range(3):
                await alice.post_message(r1, f"one-{i}")
                await alice.post_message(r2, f"two-{i}")
            seen = await events.take(4)
        last_id = seen[-1].id
        assert last_id is not None
        for i in range(3, 6):
            await alice.post_message(r1, f"one-{i}")
            await alice.post_message(r2, f"two-{i}")
        async with stream(bob, last_event_id=last_id) as events:
            ready = await events.next()
            assert ready.event == "ready"
            rest = await events.take(8)
        bodies = [e.data["event"]["message"]["body"] for e in seen + rest]
        assert sorted(bodies) == sorted(
            [f"one-{i}" for i in range(6)] + [f"two-{i}" for i in range(6)]
        )
        for room_id in (r1, r2):
            seqs = [
                e.data["event"]["seq"] for e in seen + rest if e.data["event"]["room_id"] == room_id
            ]
            assert seqs == list(range(seqs[0], seqs[0] + 6))


async def test_ready_id_resumes_when_nothing_was_received(node: ServerThread) -> None:
    alice = await user(node.url, "alice")
    async with closing(alice):
        room_id = await room(alice)
        async with stream(alice) as events:
            ready = await events.next()
        await alice.post_message(room_id, "while away")
        async with stream(alice, last_event_id=ready.id) as events:
            await events.next()
            got = await events.next()
            assert got.data["event"]["message"]["body"] == "while away"


async def test_kicked_member_stream_stops_with_the_leave(node: ServerThread) -> None:
    owner, bob = await user(node.url, "own"), await user(node.url, "bob")
    async with closing(owner, bob):
        gone, kept = await room(owner, bob), await room(owner, bob)
        async with stream(bob) as events:
            await events.next()
            await owner.remove_member(gone, uid(bob))
            await owner.post_message(gone, "secret")
            await owner.post_message(kept, "marker")
            left, marker = await events.take(2)
            assert left.data["event"]["type"] == "member.left"
            assert marker.data["event"]["message"]["body"] == "marker"


async def test_stream_needs_a_valid_token(node: ServerThread) -> None:
    async with httpx.AsyncClient() as http:
        for params, headers in (
            ({}, {}),
            ({"access_token": "forged"}, {}),
            ({}, {"Authorization": "Bearer forged"}),
        ):
            response = await http.get(
                f"{node.url}/api/v1/events/stream", params=params, headers=headers
            )
            assert response.status_code == 401
            assert response.json()["error"]["code"] in {"unauthorized", "invalid_token"}


async def test_sse_stream_is_counted_and_released(node: ServerThread) -> None:
    alice = await user(node.url, "alice")
    async with closing(alice):

        async def sse_count() -> float:
            async with httpx.AsyncClient() as http:
                text = (await http.get(f"{node.url}/metrics")).text
            line = next(
                x for x in text.splitlines() if x.startswith('parley_connections{transport="sse"}')
            )
            return float(line.split()[1])

        before = await sse_count()
        async with stream(alice) as events:
            await events.next()
            assert await sse_count() == before + 1
        await poll_until(sse_count, before)
