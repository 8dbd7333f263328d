"""Three ``parley serve`` processes on one PostgreSQL database, one broker and Redis,
behind nginx, for each broker this build has: clients anywhere see what one node
would show them, live; a node killed, the broker cut or PostgreSQL cut mid-stream
loses and repeats nothing that was acknowledged.

The nodes reach PostgreSQL and the broker through TCP proxies of the test's own
(``parley.testing.proxy``), so a test cuts the lines of its own cluster and never
touches the machine's services. One cluster per broker serves the module; a test that
kills a node leaves it dead, and the next test starts it again. Heartbeats of 2 s and a
presence grace of 1 s keep the offline bound short.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import dataclass
from typing import Any, TypeVar

import pytest

from parley.client import ApiError, ParleyClient
from parley.client._live import Live
from parley.presence import PresenceConfig
from parley.settings import Settings
from parley.testing.cluster import FAST_ARGON2, LocalCluster, Node
from parley.testing.proxy import TcpProxy
from tests.integration.cluster_support import (
    ProxyThread,
    broker_port,
    cache_url,
    fresh_database,
    require_broker,
    require_nginx,
    through,
)
from tests.realtime_support import TIMEOUT, body_of, room, uid, user

pytestmark = pytest.mark.xdist_group("cluster")
"""One worker runs the module, so each broker's cluster starts once."""

SENDERS = 3
PER_SENDER = 50
NODE_ENV = {
    "PARLEY_RATE_LIMITS": "off",
    "PARLEY_HEARTBEAT_INTERVAL": "2",
    "PARLEY_PRESENCE_GRACE": "1",
    **FAST_ARGON2,
}
T = TypeVar("T")


@dataclass
class Harness:
    """A running cluster and the proxies its nodes reach PostgreSQL and the broker by."""

    broker: str
    cluster: LocalCluster
    proxies: ProxyThread
    pg: TcpProxy
    bus: TcpProxy

    @property
    def nodes(self) -> list[Node]:
        return self.cluster.nodes


@pytest.fixture(scope="module")
def database() -> Iterator[str]:
    with fresh_database() as url:
        yield url


@pytest.fixture(scope="module", params=["redis", "nats", "amqp"])
def harness(
    request: pytest.FixtureRequest, database: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Harness]:
    require_nginx()
    broker: str = request.param
    bus_url = require_broker(broker)
    proxies = ProxyThread()
    try:
        pg = proxies.add(5432)
        bus = proxies.add(broker_port(broker))
        cluster = LocalCluster(
            tmp_path_factory.mktemp(f"cluster-{broker}"),
            nodes_count=3,
            database_url=through(database, pg),
            bus_url=through(bus_url, bus),
            cache_url=cache_url(),
            extra_env=NODE_ENV,
        )
        with cluster:
            yield Harness(broker, cluster, proxies, pg, bus)
    finally:
        proxies.close()


@pytest.fixture(autouse=True)
def all_nodes_up(harness: Harness) -> None:
    """Start again any node an earlier test killed (lazily: the last test's victim
    is not restarted only to be stopped)."""
    for node in harness.nodes:
        if not node.alive:
            harness.cluster.start_node(node)


@contextlib.asynccontextmanager
async def lives(
    *pairs: tuple[ParleyClient, str], cursors: dict[str, int] | None = None
) -> AsyncIterator[list[Live]]:
    """A ready ``Live`` for each (client, base URL), connected to that URL, resuming
    from ``cursors`` when given."""
    async with contextlib.AsyncExitStack() as stack:
        out = []
        for client, url in pairs:
            there = ParleyClient(
                url, access_token=client.access_token, refresh_token=client.refresh_token
            )
            stack.push_async_callback(there.aclose)
            live = await stack.enter_async_context(there.live(cursors=cursors))
            out.append(live)
        async with asyncio.timeout(TIMEOUT):
            for live in out:
                await live.wait_ready()
        yield out


async def wait_for(condition: Callable[[], bool], within: float = TIMEOUT) -> None:
    """Poll ``condition`` (state a client's reader task updates) until it holds."""
    async with asyncio.timeout(within):
        for _ in itertools.count():
            if condition():
                return
            await asyncio.sleep(0.02)


async def collect(
    live: Live, room_id: str, bodies: set[str], within: float = TIMEOUT
) -> list[dict[str, Any]]:
    """The room's message events until every one of ``bodies`` has come."""
    seen: list[dict[str, Any]] = []
    missing = set(bodies)
    try:
        async with asyncio.timeout(within):
            while missing:
                event = await live.next_event()
                if event["room_id"] == room_id and event.get("type") == "message.created":
                    seen.append(event)
                    missing.discard(str(body_of(event)))
    except TimeoutError:
        raise AssertionError(
            f"{len(missing)} of {len(bodies)} events never came to {live.client.base_url} "
            f"(last seq {seen[-1]['seq'] if seen else None}, {live.gaps_repaired} gaps "
            f"repaired, {live.duplicates} repeats, {live.connects} connects)"
        ) from None
    return seen


def check_exactly_once_in_order(seen: list[dict[str, Any]], sent: dict[str, list[str]]) -> None:
    """Each body once, seqs rising by one, each sender's bodies in its order."""
    bodies = [str(body_of(e)) for e in seen]
    assert len(bodies) == len(set(bodies)), "an event came twice"
    seqs = [e["seq"] for e in seen]
    assert seqs == list(range(seqs[0], seqs[0] + len(seqs))), "seqs skip or go back"
    for sender, theirs in sent.items():
        mine = [b for b in bodies if b.startswith(f"{sender}:")]
        assert mine == [b for b in theirs if b in set(bodies)], f"{sender}'s order changed"


async def send_all(
    live: Live, room_id: str, tag: str, count: int, acked: list[str], *, pause: float = 0.0
) -> None:
    """``count`` messages ``tag:i``, each awaited; the acknowledged ones in ``acked``."""
    for i in range(count):
        body = f"{tag}:{i}"
        await live.send(room_id, body)
        acked.append(body)
        if pause:
            await asyncio.sleep(pause)


async def send_all_range(
    live: Live, room_id: str, tag: str, first: int, last: int, acked: list[str]
) -> None:
    """Messages ``tag:first`` .. ``tag:last-1``, each awaited, as ``send_all``."""
    for i in range(first, last):
        body = f"{tag}:{i}"
        await live.send(room_id, body)
        acked.append(body)


async def stored_bodies(client: ParleyClient, room_id: str) -> list[str]:
    """Every message body in the room, oldest first, from the database (REST)."""
    out: list[str] = []
    after = 0
    while True:
        events, more = await client.events(room_id, after_seq=after, limit=200)
        out += [str(body_of(e)) for e in events if e.get("type") == "message.created"]
        if not events or not more:
            return out
        after = events[-1]["seq"]


async def members(url: str, count: int) -> tuple[ParleyClient, list[ParleyClient], str]:
    owner = await user(url, "owner")
    others = [await user(url, f"m{i}") for i in range(count)]
    return owner, others, await room(owner, *others)


async def close_all(*clients: ParleyClient) -> None:
    for client in clients:
        await client.aclose()


async def test_live_fanout_across_nodes_exactly_once_in_order(harness: Harness) -> None:
    """Senders on each node, receivers on each node and through nginx: every
    receiver gets all 150 events live (no gap filled from REST, nothing twice)."""
    nodes, lb = harness.nodes, harness.cluster.url
    owner, people, room_id = await members(lb, SENDERS + 9)
    senders, receivers = people[:SENDERS], people[SENDERS:]
    try:
        where = [n.url for n in nodes] * 2 + [lb] * 3
        async with (
            lives(*zip(senders, [n.url for n in nodes], strict=True)) as send_lives,
            lives(*zip(receivers, where, strict=True)) as recv_lives,
        ):
            sent = {f"s{i}": [f"s{i}:{j}" for j in range(PER_SENDER)] for i in range(SENDERS)}
            everything = {b for bodies in sent.values() for b in bodies}
            acked: list[str] = []
            receiving = [asyncio.create_task(collect(r, room_id, everything)) for r in recv_lives]
            async with asyncio.timeout(TIMEOUT):
                await asyncio.gather(
                    *(
                        send_all(live, room_id, f"s{i}", PER_SENDER, acked)
                        for i, live in enumerate(send_lives)
                    )
                )
            results = await asyncio.gather(*receiving)
            for live, seen in zip(recv_lives, results, strict=True):
                check_exactly_once_in_order(seen, sent)
                assert (live.gaps_repaired, live.duplicates) == (0, 0)
            assert len({tuple(e["seq"] for e in seen) for seen in results}) == 1
        assert sorted(await stored_bodies(owner, room_id)) == sorted(everything)
    finally:
        await close_all(owner, *people)


async def test_killed_node_clients_resume_elsewhere(harness: Harness) -> None:
    """``kill -9`` a node while three senders write: clients through nginx reconnect
    there, one on the dead node moves to another by hand with its cursors; every
    message stored is seen once and in order by every receiver, and every
    acknowledged one is stored."""
    nodes, lb = harness.nodes, harness.cluster.url
    victim, alive = nodes[0], nodes[1:]
    owner, people, room_id = await members(lb, SENDERS + 5)
    senders, receivers = people[:SENDERS], people[SENDERS:]
    try:
        send_at = [victim.url] + [n.url for n in alive]
        # three WebSockets in a row through nginx's round robin: one lands on each node
        recv_at = [victim.url, lb, lb, lb, alive[0].url]
        acked: list[str] = []
        async with (
            lives(*zip(senders, send_at, strict=True)) as send_lives,
            lives(*zip(receivers, recv_at, strict=True)) as recv_lives,
        ):
            sending = [
                asyncio.create_task(send_all(live, room_id, f"s{i}", PER_SENDER, acked, pause=0.01))
                for i, live in enumerate(send_lives)
            ]
            await wait_for(lambda: len(acked) >= PER_SENDER // 2)
            await asyncio.to_thread(harness.cluster.kill_node, victim)
            sending[0].cancel()  # its node is gone: what it had acked is what counts
            stranded = recv_lives[0]
            seen_before = [
                e
                for e in _drain(stranded)
                if e["room_id"] == room_id and e.get("type") == "message.created"
            ]
            cursors = dict(stranded.cursors)
            # a client that knows another node resumes there from its cursors
            async with lives((receivers[0], alive[1].url), cursors=cursors) as [moved]:
                async with asyncio.timeout(TIMEOUT):
                    await asyncio.gather(*sending[1:])
                stored = await stored_bodies(owner, room_id)
                assert set(acked) <= set(stored), "an acknowledged message is not stored"
                assert len(stored) == len(set(stored)), "a message was stored twice"
                after = await collect(
                    moved, room_id, set(stored) - {str(body_of(e)) for e in seen_before}
                )
                by_sender = {
                    f"s{i}": [b for b in stored if b.startswith(f"s{i}:")] for i in range(SENDERS)
                }
                check_exactly_once_in_order(seen_before + after, by_sender)
                for live in recv_lives[1:]:
                    seen = await collect(live, room_id, set(stored))
                    check_exactly_once_in_order(seen, by_sender)
                through_lb = recv_lives[1:4]
                assert any(live.connects >= 2 for live in through_lb), (
                    "no client through nginx was on the killed node"
                )
    finally:
        await close_all(owner, *people)


def _drain(live: Live) -> list[dict[str, Any]]:
    """The events ``live`` received and nobody read yet."""
    out = []
    while not live._events.empty():
        out.append(live._events.get_nowait())
    return out


REPAIR_WAIT = 10.0
"""Seconds a node may take to repair its rooms from the database after its broker
connection is back (a few reconnect attempts and one pass over its rooms)."""


async def test_broker_cut_mid_stream_loses_nothing_acknowledged(harness: Harness) -> None:
    """Senders on every node write while the nodes' broker connections are reset and
    refused; then the line comes back and nobody sends again. Every acknowledged
    message still reaches every receiver on every node, once and in order, with no
    later message to reveal a gap (the nodes repair from the database after the
    reconnect); then delivery goes on live."""
    nodes = harness.nodes
    owner, people, room_id = await members(harness.cluster.url, 2 * SENDERS)
    senders, receivers = people[:SENDERS], people[SENDERS:]
    third = PER_SENDER // 3
    sent = {f"s{i}": [f"s{i}:{j}" for j in range(PER_SENDER)] for i in range(SENDERS)}
    try:
        at = [n.url for n in nodes]
        acked: list[str] = []
        async with (
            lives(*zip(senders, at, strict=True)) as send_lives,
            lives(*zip(receivers, at, strict=True)) as recv_lives,
        ):

            async def burst(first: int, last: int) -> None:
                async with asyncio.timeout(TIMEOUT):
                    await asyncio.gather(
                        *(
                            send_all_range(live, room_id, f"s{i}", first, last, acked)
                            for i, live in enumerate(send_lives)
                        )
                    )

            await burst(0, third)
            await asyncio.to_thread(harness.proxies.cut, harness.bus)
            try:
                await burst(third, 2 * third)  # stored; the doorbells cannot ring
            finally:
                await asyncio.to_thread(harness.proxies.restore, harness.bus)
            expected = set(acked)
            for live in recv_lives:
                seen = await collect(live, room_id, expected, REPAIR_WAIT)
                check_exactly_once_in_order(seen, sent)
            await burst(2 * third, PER_SENDER)
            rest = set(acked) - expected
            for live in recv_lives:
                check_exactly_once_in_order(await collect(live, room_id, rest), sent)
    finally:
        await asyncio.to_thread(harness.proxies.restore, harness.bus)
        await close_all(owner, *people)


async def answer_to_send(live: Live, room_id: str) -> str:
    """What a send gets: ``acknowledged``, an error code, or no answer in time."""
    try:
        async with asyncio.timeout(TIMEOUT):
            await live.send(room_id, "while down")
    except ApiError as exc:
        return exc.code
    except TimeoutError:
        return f"no answer within {TIMEOUT:g} s"
    return "acknowledged"


async def cut_postgres(harness: Harness, live: Live, room_id: str) -> None:
    """Cut the nodes' PostgreSQL line; a send meanwhile is refused with
    ``unavailable``; restore it."""
    await asyncio.to_thread(harness.proxies.cut, harness.pg)
    try:
        assert await answer_to_send(live, room_id) == "unavailable"
    finally:
        await asyncio.to_thread(harness.proxies.restore, harness.pg)


async def until_ok(call: Callable[[], Awaitable[T]]) -> T:
    """``call()`` again while it fails with ``unavailable`` (a node reconnecting)."""
    async with asyncio.timeout(TIMEOUT):
        for _ in itertools.count():
            try:
                return await call()
            except ApiError as exc:
                failure = exc
            assert failure.code == "unavailable", failure
            await asyncio.sleep(0.1)
    raise AssertionError("unreachable")


async def heal(harness: Harness, client: ParleyClient) -> None:
    """Read through every node until twenty reads in a row succeed on each (more than
    a node's read connections), so that the next test meets no connection the outage
    left stale."""
    for node in harness.nodes:
        there = ParleyClient(
            node.url, access_token=client.access_token, refresh_token=client.refresh_token
        )
        try:
            async with asyncio.timeout(TIMEOUT):
                good = 0
                while good < 20:
                    try:
                        await there.rooms()
                        await there.me()
                        if good < 3:
                            await there.create_room(f"heal-{uuid.uuid4().hex[:8]}")
                        good += 1
                    except ApiError:
                        good = 0
        finally:
            await there.aclose()


async def test_postgres_cut_fails_sends_clearly_then_recovers(harness: Harness) -> None:
    """With PostgreSQL unreachable a send is refused with ``unavailable``; once it is
    back, sends succeed, and every acknowledged message is stored and delivered."""
    nodes = harness.nodes
    owner, people, room_id = await members(harness.cluster.url, 3)
    sender, receivers = people[0], people[1:]
    try:
        async with (
            lives((sender, nodes[0].url)) as [s],
            lives(*zip(receivers, [nodes[1].url, nodes[2].url], strict=True)) as recv_lives,
        ):
            acked: list[str] = []
            await send_all(s, room_id, "before", 10, acked)
            await cut_postgres(harness, s, room_id)
            await until_ok(lambda: send_all(s, room_id, "probe", 1, acked))
            await send_all(s, room_id, "after", 10, acked)
            stored = await until_ok(lambda: stored_bodies(owner, room_id))
            assert set(acked) <= set(stored)
            assert len(stored) == len(set(stored))
            sent = {
                t: [b for b in stored if b.startswith(f"{t}:")]
                for t in ("before", "probe", "after")
            }
            for live in recv_lives:
                seen = await collect(live, room_id, set(acked))
                check_exactly_once_in_order(seen, sent)
    finally:
        await asyncio.to_thread(harness.proxies.restore, harness.pg)
        await heal(harness, owner)
        await close_all(owner, *people)


async def test_first_reads_after_postgres_returns_succeed(harness: Harness) -> None:
    """Once a write has succeeded again after the outage, writes and reads on every
    node succeed too: no client should see a 503 from a database that is back."""
    owner, [member], room_id = await members(harness.cluster.url, 1)
    try:
        async with lives((owner, harness.nodes[0].url)) as [live]:
            await live.send(room_id, "before")
            await cut_postgres(harness, live, room_id)
            await until_ok(lambda: live.send(room_id, "back"))
        for node in harness.nodes:
            there = ParleyClient(
                node.url, access_token=owner.access_token, refresh_token=owner.refresh_token
            )
            try:
                await there.post_message(room_id, f"via {node.node_id}")
                for _ in range(3):
                    await there.events(room_id)
            finally:
                await there.aclose()
    finally:
        await asyncio.to_thread(harness.proxies.restore, harness.pg)
        await heal(harness, owner)
        await close_all(owner, member)


async def test_killed_node_users_go_offline_within_the_bound(harness: Harness) -> None:
    """A user connected only to a node that is killed shows offline to a watcher on
    another node within the presence bound (heartbeats 2 s, grace 1 s here)."""
    nodes = harness.nodes
    victim = nodes[2]
    settings = Settings(heartbeat_interval=2, presence_grace=1)
    bound = PresenceConfig.from_settings(settings).offline_bound
    owner, [gone], _ = await members(harness.cluster.url, 1)
    try:
        async with lives((gone, victim.url)), lives((owner, nodes[0].url)) as [w]:
            await w.presence_subscribe([uid(gone)])
            await wait_for(lambda: w.presence.get(uid(gone), {}).get("status") == "online")
            loop = asyncio.get_running_loop()
            await asyncio.to_thread(harness.cluster.kill_node, victim)
            killed_at = loop.time()
            await wait_for(
                lambda: w.presence.get(uid(gone), {}).get("status") == "offline", bound + 5
            )
            took = loop.time() - killed_at
            assert took <= bound + 1, f"offline after {took:.1f} s, bound {bound:.1f} s"
    finally:
        await close_all(owner, gone)
