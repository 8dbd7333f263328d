"""Delivery between nodes, in one process: two hubs, each with its own store on one
SQLite database and its own ``MemoryBus`` on one ``MemoryBroker`` (the in-process
bus is product code, and its broker can cut a node off, as a broker restart or a
network cut would). Connections are read with ``Connection.take`` (no socket).

What is checked is the promise of commit-driven delivery: an event committed on one
node reaches the other node's connections live; when the bus loses it (a failed
publish, a node cut off), the store repairs it; and a resume on a node that missed
traffic is complete only once the database's head is delivered.
"""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

import pytest

from parley.bus.memory import MemoryBroker, MemoryBus
from parley.delivery.fanout import Fanout
from parley.delivery.session import Connection
from parley.domain.models import RoomId, RoomKind, UserId, Visibility
from parley.gateway.hub import Hub
from parley.ports import SendRequest
from parley.protocol.session import Close
from parley.settings import Settings
from parley.store import SqlStore, migrate

TIMEOUT = 10.0


class Node:
    """One node: store, bus and hub, wired as ``Runtime`` wires them."""

    def __init__(self, name: str, url: str, broker: MemoryBroker, settings: Settings) -> None:
        self.store = SqlStore(url)
        self.bus = MemoryBus(broker)
        self.hub = Hub(bus=self.bus, store=self.store, settings=settings, node_id=name)
        self.store.on_events = self.hub.committed
        self.store.on_notifications = self.hub.notified

    async def start(self) -> Node:
        await self.store.start()
        await self.hub.start()
        return self

    async def close(self) -> None:
        await self.hub.close()
        await self.store.close()

    async def connect(self, user: UserId) -> Reader:
        conn = Connection(self.hub, user, transport="ws")
        await self.hub.attach(conn, lambda rooms: None)
        return Reader(conn)

    async def send(self, room: RoomId, user: UserId, body: str) -> int:
        result = await self.store.send_message(SendRequest(room, user, body, None))
        return result.message.seq


class Reader:
    """A connection's frames as they are queued; ``seqs`` of its room events."""

    def __init__(self, conn: Connection) -> None:
        self.conn = conn
        self.seqs: list[int] = []
        self.log: list[str] = []
        self._changed = asyncio.Event()
        self._task = asyncio.create_task(self._read())

    async def _read(self) -> None:
        while True:
            items = await self.conn.take()
            if not items:
                return
            for item in items:
                if isinstance(item, Fanout):
                    self.seqs.append(item.seq)
                    self.log.append(f"event {item.seq}")
                else:
                    self.log.append(item.decode())
            self._changed.set()

    async def wait_seqs(self, count: int) -> None:
        async with asyncio.timeout(TIMEOUT):
            while len(self.seqs) < count:
                self._changed.clear()
                await self._changed.wait()

    def stop(self) -> None:
        self._task.cancel()
        self.conn.delivery.detach(self.conn)  # type: ignore[attr-defined]


@pytest.fixture
async def cluster(tmp_path: Path) -> AsyncIterator[Callable[..., Awaitable[list[Node]]]]:
    url = f"sqlite+aiosqlite:///{tmp_path / 'parley.db'}"
    await migrate(url)
    broker = MemoryBroker()
    nodes: list[Node] = []

    async def make(count: int = 2, **settings: object) -> list[Node]:
        values = {"data_dir": tmp_path, "repair_interval": 60.0} | settings
        for i in range(count):
            node = Node(f"n{i}", url, broker, Settings.model_validate(values))
            nodes.append(await node.start())
        return nodes

    yield make
    for node in nodes:
        with contextlib.suppress(Exception):
            await node.close()


async def room_of(node: Node, *members: UserId) -> RoomId:
    store = node.store
    room, _ = await store.create_room(
        name="r",
        visibility=Visibility.PRIVATE,
        topic="",
        kind=RoomKind.ROOM,
        owner_id=members[0],
    )
    for member in members[1:]:
        await store.join_room(room.id, member)
    return room.id


async def users(node: Node, count: int) -> list[UserId]:
    made = []
    for _ in range(count):
        user = await node.store.create_user(f"u{uuid.uuid4().hex[:10]}", "x", "U")
        made.append(user.id)
    return made


async def test_an_event_committed_on_one_node_reaches_the_other_live(cluster) -> None:  # type: ignore[no-untyped-def]
    a, b = await cluster()
    alice, bob = await users(a, 2)
    room = await room_of(a, alice, bob)
    reader = await b.connect(bob)
    head = (await b.store.room_heads([room]))[room]
    sent = [await a.send(room, alice, f"m{i}") for i in range(20)]
    await reader.wait_seqs(20)
    assert reader.seqs == sent == list(range(head + 1, head + 21))
    assert a.hub.outbox.stats.published >= 1
    reader.stop()


async def test_a_publish_that_fails_is_repaired_within_the_repair_interval(cluster) -> None:  # type: ignore[no-untyped-def]
    """The sending node is cut off from the broker for good: its publishes fail (and
    are retried); the other node reads the room's head every ``repair_interval``."""
    a, b = await cluster(repair_interval=0.2)
    alice, bob = await users(a, 2)
    room = await room_of(a, alice, bob)
    reader = await b.connect(bob)
    a.bus.broker.cut(a.bus)
    sent = [await a.send(room, alice, f"m{i}") for i in range(5)]
    await reader.wait_seqs(5)
    assert reader.seqs == sent
    assert a.hub.outbox.stats.failures >= 1
    assert b.hub.stats.gap_repairs >= 1
    reader.stop()


async def test_a_node_cut_off_from_the_bus_repairs_when_it_is_back(cluster) -> None:  # type: ignore[no-untyped-def]
    a, b = await cluster()
    alice, bob = await users(a, 2)
    room = await room_of(a, alice, bob)
    reader = await b.connect(bob)
    b.bus.broker.cut(b.bus)
    sent = [await a.send(room, alice, f"m{i}") for i in range(5)]
    await a.hub.outbox.wait_sent()
    assert reader.seqs == []
    b.bus.broker.restore(b.bus)
    await reader.wait_seqs(5)
    assert reader.seqs == sent
    assert b.hub.stats.bus_reconnects == 1
    reader.stop()


async def test_a_resume_on_a_node_that_missed_traffic_ends_at_the_databases_head(cluster) -> None:  # type: ignore[no-untyped-def]
    """Node b never hears of 30 events (its bus is cut; no periodic check runs in
    the test's time). A resume from before them is answered only once all 30 were
    delivered: the head is the database's, not b's fan-out's."""
    a, b = await cluster()
    alice, bob = await users(a, 2)
    room = await room_of(a, alice, bob)
    reader = await b.connect(bob)
    start = (await b.store.room_heads([room]))[room]
    b.bus.broker.cut(b.bus)
    sent = [await a.send(room, alice, f"m{i}") for i in range(30)]
    assert b.hub.rooms[room].head == start
    done = asyncio.Event()
    seen_at_done: list[int] = []

    def caught_up(room_id: str) -> None:
        queued = [i.seq for i in reader.conn._queue if isinstance(i, Fanout)]
        seen_at_done.extend(reader.seqs + queued)
        done.set()

    reader.conn.on_caught_up = caught_up
    result = await b.hub.resume(reader.conn, {room: start})
    assert result.replaying == [room]
    async with asyncio.timeout(TIMEOUT):
        await done.wait()
    assert seen_at_done == sent
    await reader.wait_seqs(30)
    assert reader.seqs == sent
    reader.stop()


async def test_a_cursor_beyond_the_head_is_reported_and_the_room_stays_live(cluster) -> None:  # type: ignore[no-untyped-def]
    (a,) = await cluster(1)
    alice, bob = await users(a, 2)
    room = await room_of(a, alice, bob)
    reader = await a.connect(bob)
    head = (await a.store.room_heads([room]))[room]
    result = await a.hub.resume(reader.conn, {room: 9_007_199_254_740_992})
    assert result.ahead == {room: head}
    assert result.replaying == []
    seq = await a.send(room, alice, "still here")
    await reader.wait_seqs(1)
    assert reader.seqs == [seq]
    reader.stop()


async def test_a_cancelled_sender_still_rings_the_other_node(cluster) -> None:  # type: ignore[no-untyped-def]
    """Delivery follows the commit: the caller that asked for the write is gone
    before it committed, and the event still reaches the other node."""
    a, b = await cluster()
    alice, bob = await users(a, 2)
    room = await room_of(a, alice, bob)
    reader = await b.connect(bob)
    task = asyncio.create_task(a.send(room, alice, "orphan"))
    await asyncio.sleep(0)
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task
    await reader.wait_seqs(1)
    assert len(reader.seqs) == 1
    reader.stop()


async def test_a_logout_on_one_node_ends_that_sessions_connections_on_the_other(cluster) -> None:  # type: ignore[no-untyped-def]
    """``end_sessions`` on node a (a revoke there) reaches node b on ``sessions``:
    the session's connection there ends with ``session_ended``, the user's other
    session stays, and b is told to refuse the session's tokens from then on, as is c,
    which has no connection of the user."""
    a, b, c = await cluster(3)
    (alice,) = await users(a, 1)
    told: list[list[str]] = []
    b.hub.sessions_ended = told.append
    told_c: list[list[str]] = []
    heard = asyncio.Event()

    def tell_c(sids: list[str]) -> None:
        told_c.append(sids)
        heard.set()

    c.hub.sessions_ended = tell_c
    readers = []
    for sid in ("s-ended", "s-kept"):
        conn = Connection(b.hub, alice, transport="ws")
        conn.sid = sid
        await b.hub.attach(conn, lambda rooms: None)
        readers.append(Reader(conn))
    ended, kept = readers
    async with asyncio.timeout(TIMEOUT):
        a.hub.end_sessions(alice, ["s-ended"])
        await ended._task
    assert ended.conn.close_request == Close(1008, "session_ended")
    assert '"session_ended"' in ended.log[-1]
    assert kept.conn.close_request is None
    assert told == [["s-ended"]]
    async with asyncio.timeout(TIMEOUT):
        await heard.wait()
    assert told_c == [["s-ended"]]
    kept.stop()
    ended.stop()
