"""The presence service on the in-memory store and bus, with a fake clock: every
timing (grace, idle, expiry of a dead node, coalescing, typing) is checked by
moving the clock and ticking, never by sleeping. Several nodes in one process share
one store and one broker, as a cluster shares Redis and a broker."""

from __future__ import annotations

import itertools
import json
from collections.abc import Callable, Collection, Sequence
from typing import Any

import pytest

from parley.bus.memory import MemoryBroker, MemoryBus
from parley.cache.memory import MemoryPresence
from parley.domain.models import UserId
from parley.presence import (
    PRESENCE_CHANNEL,
    CoMembers,
    PresenceConfig,
    PresenceService,
    decode_notice,
    encode_notice,
)
from parley.testing.clock import FakeClock

CONFIG = PresenceConfig(heartbeat_interval=20.0, idle_after=300.0, grace=10.0)
STEP = CONFIG.tick_interval
_ids = itertools.count()


class FakePeer:
    """A connection that records what it is sent."""

    def __init__(self, user_id: str) -> None:
        self.user_id = user_id
        self.session_id = f"conn-{next(_ids)}"
        self.frames: list[dict[str, Any]] = []

    def push(self, item: bytes) -> bool:
        self.frames.append(json.loads(item))
        return True

    def take(self, type_: str = "presence") -> list[dict[str, Any]]:
        """The frames of this type received since the last ``take``."""
        got = [f for f in self.frames if f["type"] == type_]
        self.frames = [f for f in self.frames if f["type"] != type_]
        return got


class Rooms:
    """Visibility as "shares a room", over fixed groups of users."""

    def __init__(self, *groups: Collection[str]) -> None:
        self.groups = [set(g) for g in groups]
        self.calls = 0

    async def visible(self, viewer: UserId, targets: Sequence[UserId]) -> set[UserId]:
        self.calls += 1
        return {t for t in targets if any(viewer in g and t in g for g in self.groups)}

    def forget(self, user_id: UserId) -> None:
        return None


class Cluster:
    """Nodes sharing one presence store and one bus broker, and one fake clock."""

    def __init__(self, rooms: Rooms, config: PresenceConfig = CONFIG) -> None:
        self.clock = FakeClock()
        self.rooms = rooms
        self.config = config
        self.store = MemoryPresence(self.clock.now)
        self.broker = MemoryBroker()
        self.nodes: list[PresenceService] = []

    async def node(self, name: str = "") -> PresenceService:
        bus = MemoryBus(self.broker)
        service = PresenceService(
            self.store,
            bus,
            self.clock,
            self.config,
            node_id=name or f"node-{len(self.nodes)}",
            visibility=self.rooms,
        )

        def route(channel: str, data: bytes) -> None:
            if channel == PRESENCE_CHANNEL:
                service.on_bus(data)

        await bus.start(route)
        await service.start(ticker=False)
        self.nodes.append(service)
        return service

    async def run(self, seconds: float, *, nodes: Sequence[PresenceService] | None = None) -> None:
        """Let ``seconds`` pass, ticking the (living) nodes every tick interval."""
        for _ in range(round(seconds / STEP)):
            self.clock.advance(STEP)
            for node in self.nodes if nodes is None else nodes:
                await node.tick()

    async def until(
        self,
        done: Callable[[], bool],
        limit: float,
        *,
        nodes: Sequence[PresenceService] | None = None,
    ) -> float:
        """Seconds of fake time until ``done()``; fails after ``limit``."""
        waited = 0.0
        while not done():
            assert waited < limit, f"not done within {limit} s"
            await self.run(STEP, nodes=nodes)
            waited += STEP
        return waited


def statuses(frames: list[dict[str, Any]]) -> list[str]:
    return [f["status"] for f in frames]


@pytest.fixture
async def cluster() -> Cluster:
    return Cluster(Rooms({"alice", "bob", "carol"}, {"dave", "erin"}))


async def watch(node: PresenceService, viewer: str, *users: str) -> FakePeer:
    peer = FakePeer(viewer)
    peer.frames.extend(json.loads(f) for f in await node.subscribe(peer, list(users), "sub"))
    return peer


async def test_online_on_connect(cluster: Cluster) -> None:
    node = await cluster.node()
    bob = await watch(node, "bob", "alice")
    [first] = bob.take()
    assert first == {
        "type": "presence",
        "user_id": "alice",
        "status": "offline",
        "last_active_at": None,
    }
    node.connected(FakePeer("alice"))
    await cluster.run(STEP)
    [online] = bob.take()
    assert online["status"] == "online" and online["last_active_at"].endswith("Z")


async def test_offline_after_grace_on_clean_close(cluster: Cluster) -> None:
    node = await cluster.node()
    device = FakePeer("alice")
    node.connected(device)
    await cluster.run(1)
    bob = await watch(node, "bob", "alice")
    [online] = bob.take()
    node.disconnected(device)
    await cluster.run(CONFIG.grace - 1)
    assert bob.take() == []
    waited = await cluster.until(lambda: bool(bob.frames), 3)
    [offline] = bob.take()
    assert offline["status"] == "offline"
    assert offline["last_active_at"] == online["last_active_at"]
    assert waited <= 2 * STEP + CONFIG.coalesce_interval


async def test_logout_goes_offline_without_grace(cluster: Cluster) -> None:
    node = await cluster.node()
    device = FakePeer("alice")
    node.connected(device)
    await cluster.run(1)
    bob = await watch(node, "bob", "alice")
    bob.take()
    node.disconnected(device, grace=False)
    await cluster.run(STEP)
    assert statuses(bob.take()) == ["offline"]


async def test_no_offline_flash_on_quick_reconnect(cluster: Cluster) -> None:
    a, b = await cluster.node(), await cluster.node()
    device = FakePeer("alice")
    a.connected(device)
    await cluster.run(1)
    bob = await watch(b, "bob", "alice")
    assert statuses(bob.take()) == ["online"]
    a.disconnected(device)
    await cluster.run(2)
    b.connected(FakePeer("alice"))  # the reload lands on another node
    await cluster.run(CONFIG.entry_ttl + CONFIG.heartbeat_interval)
    assert bob.take() == []


async def test_entries_of_a_dead_node_lapse_within_the_stated_bound(cluster: Cluster) -> None:
    doomed, survivor = await cluster.node("doomed"), await cluster.node("survivor")
    doomed.connected(FakePeer("alice"))
    await cluster.run(7.5)  # some refreshes, at any phase
    bob = await watch(survivor, "bob", "alice")
    assert statuses(bob.take()) == ["online"]
    # The node dies without a word: it neither ticks nor closes again.
    waited = await cluster.until(
        lambda: bool(bob.frames), CONFIG.offline_bound + STEP, nodes=[survivor]
    )
    assert statuses(bob.take()) == ["offline"]
    assert waited <= CONFIG.offline_bound
    # ... and not before an entry could have lapsed (two heartbeats + grace after
    # its last refresh, at most one refresh interval before the death).
    assert waited >= CONFIG.entry_ttl - CONFIG.refresh_interval


async def test_a_closed_node_lingers_then_lapses(cluster: Cluster) -> None:
    a, b = await cluster.node(), await cluster.node()
    a.connected(FakePeer("alice"))
    await cluster.run(1)
    bob = await watch(b, "bob", "alice")
    bob.take()
    await a.close()
    await cluster.run(CONFIG.grace - 1, nodes=[b])
    assert bob.take() == []
    await cluster.run(3, nodes=[b])
    assert statuses(bob.take()) == ["offline"]


async def test_two_devices(cluster: Cluster) -> None:
    node = await cluster.node()
    laptop, phone = FakePeer("alice"), FakePeer("alice")
    node.connected(laptop)
    node.connected(phone)
    await cluster.run(1)
    bob = await watch(node, "bob", "alice")
    bob.take()
    node.set_status(phone, "idle")
    await cluster.run(2)
    assert bob.take() == []  # the laptop is still active
    node.disconnected(laptop)
    await cluster.run(CONFIG.grace + 2)
    assert statuses(bob.take()) == ["idle"]  # only the idle phone is left
    node.disconnected(phone)
    await cluster.run(CONFIG.grace + 2)
    assert statuses(bob.take()) == ["offline"]


async def test_idle_by_inactivity_not_moved_by_heartbeats_or_refreshes(cluster: Cluster) -> None:
    node = await cluster.node()
    device = FakePeer("alice")
    node.connected(device)
    await cluster.run(1)
    bob = await watch(node, "bob", "alice")
    [online] = bob.take()
    # 15 heartbeat intervals: the node re-writes the entry every one; no activity.
    waited = await cluster.until(lambda: bool(bob.frames), CONFIG.idle_after + 3)
    [idle] = bob.take()
    assert idle["status"] == "idle"
    assert idle["last_active_at"] == online["last_active_at"]
    assert CONFIG.idle_after - 2 <= waited <= CONFIG.idle_after
    node.activity(device)  # a send
    await cluster.run(CONFIG.coalesce_interval)
    [back] = bob.take()
    assert back["status"] == "online" and back["last_active_at"] > idle["last_active_at"]


async def test_activity_defers_idle_and_idleness_comes_back_after_it(cluster: Cluster) -> None:
    """Idle transitions are filed by due time, not found by scanning every
    connection: activity half-way moves the due time, and a connection that went
    idle and came back is filed again."""
    node = await cluster.node()
    device, quiet = FakePeer("alice"), FakePeer("carol")
    node.connected(device)
    node.connected(quiet)
    await cluster.run(1)
    bob = await watch(node, "bob", "alice", "carol")
    bob.take()
    await cluster.run(CONFIG.idle_after / 2)
    node.activity(device)
    waited = await cluster.until(lambda: bool(bob.frames), CONFIG.idle_after)
    assert [(f["user_id"], f["status"]) for f in bob.take()] == [("carol", "idle")]
    assert CONFIG.idle_after / 2 - 3 <= waited <= CONFIG.idle_after / 2 + 1
    waited = await cluster.until(lambda: bool(bob.frames), CONFIG.idle_after)
    assert [(f["user_id"], f["status"]) for f in bob.take()] == [("alice", "idle")]
    node.activity(device)
    await cluster.run(CONFIG.coalesce_interval)
    assert statuses(bob.take()) == ["online"]
    waited = await cluster.until(lambda: bool(bob.frames), CONFIG.idle_after + 3)
    assert statuses(bob.take()) == ["idle"]
    assert CONFIG.idle_after - 3 <= waited <= CONFIG.idle_after + 1


async def test_idle_by_choice_until_activity(cluster: Cluster) -> None:
    node = await cluster.node()
    device = FakePeer("alice")
    node.connected(device)
    await cluster.run(1)
    bob = await watch(node, "bob", "alice")
    bob.take()
    node.set_status(device, "idle")
    await cluster.run(2)
    assert statuses(bob.take()) == ["idle"]
    node.set_status(device, "online")
    await cluster.run(2)
    assert statuses(bob.take()) == ["online"]
    node.set_status(device, "idle")
    await cluster.run(2)
    node.typing(device, "room-1")  # typing is activity
    await cluster.run(2)
    assert statuses(bob.take()) == ["idle", "online"]
    with pytest.raises(ValueError, match="online or idle"):
        node.set_status(device, "offline")


async def test_stored_last_active_follows_activity_closely(cluster: Cluster) -> None:
    node = await cluster.node()
    device = FakePeer("alice")
    node.connected(device)
    for _ in range(30):
        await cluster.run(1)
        node.activity(device)
    await cluster.run(STEP)
    presence = (await node.current([UserId("alice")]))[UserId("alice")]
    assert presence.status == "online"
    assert presence.last_active is not None
    lag = cluster.clock.now() - presence.last_active
    assert lag <= CONFIG.activity_write_every + 1


async def test_subscribe_refused_for_users_sharing_no_room(cluster: Cluster) -> None:
    node = await cluster.node()
    node.connected(FakePeer("dave"))
    await cluster.run(1)
    bob = await watch(node, "bob", "dave", "alice", "nobody")
    refused, alice = bob.frames
    assert refused == {
        "type": "error",
        "id": "sub",
        "code": "forbidden",
        "message": refused["message"],
        "user_ids": ["dave", "nobody"],
    }
    assert alice["type"] == "presence" and alice["user_id"] == "alice"
    bob.frames.clear()
    node.connected(FakePeer("erin"))
    node.activity(FakePeer("dave"))
    await cluster.run(3)
    assert bob.frames == []


async def test_subscribing_to_oneself_needs_no_shared_room(cluster: Cluster) -> None:
    node = await cluster.node()
    loner = await watch(node, "zed", "zed")
    assert [(f["user_id"], f["status"]) for f in loner.take()] == [("zed", "offline")]
    assert cluster.rooms.calls == 0


async def test_a_change_reaches_only_its_subscribers_once_encoded(cluster: Cluster) -> None:
    node = await cluster.node()
    watchers = [await watch(node, "bob", "alice") for _ in range(5)]
    others = [await watch(node, "erin", "dave") for _ in range(5)]
    for peer in watchers + others:
        peer.take()
    sent = node.stats.frames_sent
    node.connected(FakePeer("alice"))
    await cluster.run(STEP)
    assert node.stats.frames_sent - sent == 5
    assert all(statuses(p.take()) == ["online"] for p in watchers)
    assert all(p.frames == [] for p in others)


async def test_updates_are_coalesced_to_one_per_second(cluster: Cluster) -> None:
    node = await cluster.node()
    device = FakePeer("alice")
    node.connected(device)
    await cluster.run(1)
    bob = await watch(node, "bob", "alice")
    bob.take()
    arrivals: list[tuple[float, str]] = []
    for i in range(40):  # a client flapping every tick for 20 s
        if i % 2 == 0:
            node.set_status(device, "idle")
        else:
            node.set_status(device, "online")
        await cluster.run(STEP)
        arrivals += [(cluster.clock.monotonic(), f["status"]) for f in bob.take()]
    await cluster.run(3)
    arrivals += [(cluster.clock.monotonic(), f["status"]) for f in bob.take()]
    times = [t for t, _ in arrivals]
    assert all(b - a >= CONFIG.coalesce_interval for a, b in itertools.pairwise(times))
    assert 5 <= len(arrivals) <= 21
    assert arrivals[-1][1] == "online"  # the final state always arrives


async def test_subscriptions_are_bounded_per_connection() -> None:
    cluster = Cluster(Rooms({"v", "u1", "u2", "u3", "u4"}), PresenceConfig(max_subscriptions=3))
    node = await cluster.node()
    peer = FakePeer("v")
    [too_many] = [json.loads(f) for f in await node.subscribe(peer, ["u1", "u2", "u3", "u4"], 7)]
    assert too_many["code"] == "too_many_subscriptions" and too_many["id"] == 7
    assert len(await node.subscribe(peer, ["u1", "u2", "u3"])) == 3
    assert len(await node.subscribe(peer, ["u1"])) == 1  # again: answered, not counted
    [refused] = [json.loads(f) for f in await node.subscribe(peer, ["u4"])]
    assert refused["code"] == "too_many_subscriptions"
    node.unsubscribe(peer, ["u1"])
    assert len(await node.subscribe(peer, ["u4"])) == 1


async def test_unsubscribe_and_disconnect_stop_updates(cluster: Cluster) -> None:
    node = await cluster.node()
    bob = await watch(node, "bob", "alice", "carol")
    bob.take()
    node.unsubscribe(bob, ["alice"])
    node.connected(FakePeer("alice"))
    node.connected(FakePeer("carol"))
    await cluster.run(STEP)
    assert [f["user_id"] for f in bob.take()] == ["carol"]
    node.disconnected(bob)
    node.connected(FakePeer("carol"))
    node.disconnected(FakePeer("carol"), grace=False)
    await cluster.run(2)
    assert bob.frames == []


async def test_changes_on_one_node_reach_subscribers_on_another(cluster: Cluster) -> None:
    a, b = await cluster.node(), await cluster.node()
    bob = await watch(b, "bob", "alice")
    bob.take()
    device = FakePeer("alice")
    a.connected(device)
    await cluster.run(STEP)
    assert statuses(bob.take()) == ["online"]
    assert b.stats.notices_heard >= 1
    await cluster.run(2)
    a.set_status(device, "idle")
    await cluster.run(STEP)
    assert statuses(bob.take()) == ["idle"]


async def test_a_missed_notice_is_repaired_by_the_resync(cluster: Cluster) -> None:
    a, b = await cluster.node(), await cluster.node()
    bob = await watch(b, "bob", "alice")
    bob.take()
    b.on_bus = lambda data: None  # type: ignore[method-assign]  # the notice is lost
    a.connected(FakePeer("alice"))
    await cluster.run(STEP)
    assert bob.frames == []
    await cluster.run(CONFIG.refresh_interval)
    assert statuses(bob.take()) == ["online"]


async def test_rest_lookup(cluster: Cluster) -> None:
    node = await cluster.node()
    node.connected(FakePeer("alice"))
    await cluster.run(STEP)
    body = await node.lookup("bob", ["alice", "carol", "dave", "alice"])
    assert body["forbidden"] == ["dave"]
    assert [(p["user_id"], p["status"]) for p in body["presence"]] == [
        ("alice", "online"),
        ("carol", "offline"),
    ]


async def test_revalidate_ends_subscriptions_without_a_shared_room(cluster: Cluster) -> None:
    node = await cluster.node()
    bob = await watch(node, "bob", "alice", "carol")
    alice = await watch(node, "alice", "bob")
    bob.take()
    alice.take()
    cluster.rooms.groups = [{"bob", "carol"}]  # alice left the room
    await node.revalidate("alice")
    [ended] = bob.take("error")
    assert ended["code"] == "forbidden" and ended["user_ids"] == ["alice"]
    assert alice.take("error")[0]["user_ids"] == ["bob"]
    node.connected(FakePeer("alice"))
    node.connected(FakePeer("bob"))
    node.connected(FakePeer("carol"))
    await cluster.run(STEP)
    assert [f["user_id"] for f in bob.take()] == ["carol"]
    assert alice.frames == []


async def test_typing_throttle_and_expiry(cluster: Cluster) -> None:
    node = await cluster.node()
    device = FakePeer("alice")
    node.connected(device)
    assert node.typing(device, "r1")
    await cluster.run(1)
    assert not node.typing(device, "r1")
    assert node.typers("r1") == ["alice"]
    await cluster.run(2)
    assert node.typing(device, "r1")  # 3 s after the last forwarded one
    await cluster.run(CONFIG.typing_ttl)
    assert node.typers("r1") == []
    assert node.typing(device, "r1")
    node.message_sent(device, "r1")
    assert node.typers("r1") == []
    assert node.typing(device, "r1")  # the next keystroke goes at once


async def test_a_failed_write_is_retried(cluster: Cluster) -> None:
    node = await cluster.node()
    put = cluster.store.put
    failures = 0

    async def flaky(entries: Any, ttl: float) -> None:
        nonlocal failures
        if failures < 1:
            failures += 1
            raise ConnectionError("store down")
        await put(entries, ttl)

    cluster.store.put = flaky  # type: ignore[method-assign]
    node.connected(FakePeer("alice"))
    cluster.clock.advance(STEP)
    with pytest.raises(ConnectionError):
        await node.tick()
    await cluster.run(STEP)
    assert (await node.current([UserId("alice")]))[UserId("alice")].status == "online"


async def test_co_members_cache_one_lookup_per_viewer() -> None:
    clock = FakeClock()
    calls: list[str] = []

    async def co_members(viewer: UserId) -> set[UserId]:
        calls.append(viewer)
        return {UserId("alice"), UserId("bob")}

    visibility = CoMembers(co_members, clock, ttl=30.0)
    targets = [UserId(f"u{i}") for i in range(500)] + [UserId("alice")]
    assert await visibility.visible(UserId("bob"), targets) == {"alice"}
    assert await visibility.visible(UserId("bob"), [UserId("alice")]) == {"alice"}
    assert calls == ["bob"]
    clock.advance(31)
    await visibility.visible(UserId("bob"), [UserId("alice")])
    visibility.forget(UserId("bob"))
    await visibility.visible(UserId("bob"), [UserId("alice")])
    assert calls == ["bob"] * 3


def test_notice_encoding_round_trips_and_matches_the_hub_envelope() -> None:
    data = encode_notice(b"node-1", ["a", "b"])
    assert data[:1] == b"P" and data[1] == len(b"node-1")
    assert decode_notice(data) == (b"node-1", ["a", "b"])
    assert decode_notice(encode_notice(b"n", ["solo"])) == (b"n", ["solo"])
    with pytest.raises(ValueError, match="notice"):
        decode_notice(b"E\x01n{}")


async def test_entries_are_refreshed_a_share_at_every_tick(cluster: Cluster) -> None:
    """Each entry is re-written once a refresh interval, spread over the ticks: a
    node with many connections never re-writes them all in one tick."""
    node = await cluster.node()
    peers = [FakePeer(f"u{i}") for i in range(200)]
    for peer in peers:
        node.connected(peer)
    await cluster.run(STEP)
    written: dict[str, list[float]] = {p.session_id: [] for p in peers}
    per_tick: list[int] = []
    store_put = cluster.store.put

    async def put(entries: Sequence[Any], ttl: float) -> None:
        per_tick.append(len(entries))
        for entry in entries:
            written[entry.conn_id].append(cluster.clock.monotonic())
        await store_put(entries, ttl)

    cluster.store.put = put  # type: ignore[method-assign]
    await cluster.run(3 * CONFIG.refresh_interval)
    share = -(-len(peers) * STEP // CONFIG.refresh_interval)
    assert max(per_tick) <= share + 1
    for times in written.values():
        gaps = [b - a for a, b in itertools.pairwise(times)]
        assert len(times) >= 3
        assert max(gaps) <= CONFIG.refresh_interval + STEP
