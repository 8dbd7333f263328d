"""Draining nodes of a cluster under load (three nodes, Redis bus and cache,
PostgreSQL, nginx): SIGTERM on one node moves its clients to the others with 1012
and nothing lost or repeated, and a rolling restart of every node under continuous
sending loses and repeats nothing either."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator

import httpx
import pytest

from parley.testing.cluster import FAST_ARGON2, LocalCluster
from tests.integration.cluster_support import (
    cache_url,
    fresh_database,
    require_broker,
    require_nginx,
)
from tests.integration.test_cluster import (
    check_exactly_once_in_order,
    close_all,
    collect,
    lives,
    members,
    stored_bodies,
    wait_for,
)
from tests.realtime_support import TIMEOUT

pytestmark = pytest.mark.xdist_group("cluster-drain")

DRAIN = 8.0
NODE_ENV = {
    "PARLEY_RATE_LIMITS": "off",
    "PARLEY_HEARTBEAT_INTERVAL": "2",
    "PARLEY_DRAIN_SECONDS": str(DRAIN),
    "PARLEY_LOG_LEVEL": "info",  # a node slow to stop says where it was
    **FAST_ARGON2,
}


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalCluster]:
    require_nginx()
    bus_url = require_broker("redis")
    with (
        fresh_database() as database,
        LocalCluster(
            tmp_path_factory.mktemp("drain"),
            nodes_count=3,
            database_url=database,
            bus_url=bus_url,
            cache_url=cache_url(),
            extra_env=NODE_ENV,
        ) as running,
    ):
        yield running


async def _send_until(
    live: object, room_id: str, tag: str, acked: list[str], stop: asyncio.Event
) -> None:
    """Send ``tag:i`` one after another until ``stop``; the SDK retries each across
    reconnects with its ``client_msg_id`` until acknowledged."""
    i = 0
    while not stop.is_set():
        body = f"{tag}:{i}"
        await live.send(room_id, body)  # type: ignore[attr-defined]
        acked.append(body)
        i += 1
        await asyncio.sleep(0.01)


async def _under_load(cluster: LocalCluster, disturb: object) -> None:
    """Two senders and three receivers through nginx (round robin: every node has
    clients) while ``disturb()`` runs; then every receiver has every stored message
    once and in order, and every acknowledged message is stored, once."""
    owner, people, room_id = await members(cluster.url, 5)
    senders, receivers = people[:2], people[2:]
    try:
        async with (
            lives(*((s, cluster.url) for s in senders)) as send_lives,
            lives(*((r, cluster.url) for r in receivers)) as recv_lives,
        ):
            acked: list[str] = []
            stop = asyncio.Event()
            sending = [
                asyncio.create_task(_send_until(live, room_id, f"s{i}", acked, stop))
                for i, live in enumerate(send_lives)
            ]
            await wait_for(lambda: len(acked) >= 20)
            await disturb()  # type: ignore[operator]
            count = len(acked)
            await wait_for(lambda: len(acked) >= count + 20)
            stop.set()
            async with asyncio.timeout(TIMEOUT):
                await asyncio.gather(*sending)
            stored = await stored_bodies(owner, room_id)
            assert set(acked) <= set(stored), "an acknowledged message is not stored"
            assert len(stored) == len(set(stored)), "a message was stored twice"
            by_sender = {f"s{i}": [b for b in stored if b.startswith(f"s{i}:")] for i in range(2)}
            for live in recv_lives:
                seen = await collect(live, room_id, set(stored))
                check_exactly_once_in_order(seen, by_sender)
            assert sum(live.connects for live in (*send_lives, *recv_lives)) > 5
    finally:
        await close_all(owner, *people)


async def test_a_draining_node_hands_its_clients_to_the_others(cluster: LocalCluster) -> None:
    victim = cluster.nodes[1]
    exits: list[tuple[int | None, float]] = []

    async def drain_one() -> None:
        started = time.monotonic()
        code = await asyncio.to_thread(cluster.stop_node, victim, DRAIN + 10)
        exits.append((code, time.monotonic() - started))

    try:
        await _under_load(cluster, drain_one)
        [(code, took)] = exits
        assert code == 0
        assert took < DRAIN + 2, took
    finally:
        if not victim.alive:
            await asyncio.to_thread(cluster.start_node, victim)


async def test_a_rolling_restart_loses_and_repeats_nothing(cluster: LocalCluster) -> None:
    async def roll() -> None:
        for node in cluster.nodes:
            assert await asyncio.to_thread(cluster.stop_node, node, DRAIN + 10) == 0
            await asyncio.to_thread(cluster.start_node, node)

    await _under_load(cluster, roll)
    async with httpx.AsyncClient(timeout=TIMEOUT) as http:
        for node in cluster.nodes:
            assert (await http.get(f"{node.url}/readyz")).json()["status"] == "ready"
