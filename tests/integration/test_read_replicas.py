"""Read replicas that lag: a private primary and a streaming standby (asynchronous, so
the primary commits while the standby's replay is paused with
``pg_wal_replay_pause()``). History pages read through a store with the standby as
its replica are exactly what the primary alone answers, whatever the lag: no gap, no
missing message, no stale edit; a replica that has caught up (or a full page of
events) serves the read; a replica that is down costs nothing but its fallback.
Then the same through a node: a client pages and resumes across the lag and sees
every event once, in order.
"""

from __future__ import annotations

import itertools
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from parley.domain.models import RoomKind, User, Visibility
from parley.gateway.metrics import HubStats, Metrics
from parley.ports import SendRequest
from parley.store import SqlStore
from parley.store.migrations import migrate
from parley.store.replicas import ReplicaStats
from parley.testing.cluster import FAST_ARGON2, LocalCluster
from tests.integration.pg_replication import (
    Replicated,
    replicated_postgres,
    require_pg_binaries,
)
from tests.integration.test_cluster import check_exactly_once_in_order, collect, lives
from tests.integration.test_failover import all_events
from tests.realtime_support import body_of, room, user


@pytest.fixture(scope="module")
def pair() -> Iterator[Replicated]:
    with replicated_postgres(require_pg_binaries(), synchronous=False) as replicated:
        yield replicated


@pytest.fixture
async def stores(pair: Replicated) -> AsyncIterator[tuple[SqlStore, SqlStore]]:
    """A store reading history from the standby, and one on the primary alone."""
    await migrate(pair.url())
    routed = SqlStore(pair.url(), replica_urls=[pair.standby_url()])
    primary = SqlStore(pair.url())
    await routed.start()
    await primary.start()
    try:
        yield routed, primary
    finally:
        pair.standby.sql("SELECT pg_wal_replay_resume()")
        await routed.close()
        await primary.close()


counter = itertools.count()


def exported(stats: ReplicaStats) -> dict[str, float]:
    """The replica samples ``/metrics`` shows for ``stats`` (name, with the reason
    of a fallback)."""
    metrics = Metrics(HubStats())
    metrics.watch_replicas(stats)
    return replica_samples(metrics.render().decode())


def replica_samples(text: str) -> dict[str, float]:
    return {
        sample.name + "".join(f":{v}" for v in sample.labels.values()): sample.value
        for family in text_string_to_metric_families(text)
        if family.name.startswith("parley_replica_")
        for sample in family.samples
        if sample.name.endswith("_total")
    }


async def new_user(store: SqlStore) -> User:
    return await store.create_user(f"r{next(counter)}-{id(store)}", "hash", "R")


async def same_pages(routed: SqlStore, primary: SqlStore, room_id: Any, head: int) -> None:
    """Every kind of history page answered by both stores, compared."""
    for after, limit in [(0, 1000), (0, 5), (head - 1, 10), (head - 3, 2), (head, 10)]:
        assert await routed.list_events(
            room_id, after_seq=after, limit=limit
        ) == await primary.list_events(room_id, after_seq=after, limit=limit), (after, limit)
    for before, after, limit in [(None, None, 50), (10, None, 5), (None, 2, 50), (None, 5, 3)]:
        assert await routed.list_messages(
            room_id, before_seq=before, after_seq=after, limit=limit
        ) == await primary.list_messages(
            room_id, before_seq=before, after_seq=after, limit=limit
        ), (before, after, limit)


async def test_lagging_replica_never_shows_a_gap_or_a_stale_page(
    pair: Replicated, stores: tuple[SqlStore, SqlStore]
) -> None:
    routed, primary = stores
    stats = routed.replica_stats
    assert stats is not None
    owner = await new_user(primary)
    created, _ = await primary.create_room(
        name="history",
        visibility=Visibility.PUBLIC,
        topic="",
        kind=RoomKind.ROOM,
        owner_id=owner.id,
    )
    room_id = created.id
    sent = [
        await primary.send_message(SendRequest(room_id, owner.id, f"m{i}", None)) for i in range(20)
    ]
    pair.wait_caught_up()
    head = sent[-1].message.seq
    served, reads = stats.served, stats.sent
    await same_pages(routed, primary, room_id, head)
    assert stats.served > served, "a replica that caught up served nothing"
    assert stats.sent - reads == stats.served - served, "every read went to the replica"

    pair.standby.sql("SELECT pg_wal_replay_pause()")
    for i in range(20, 30):
        await primary.send_message(SendRequest(room_id, owner.id, f"m{i}", None))
    edited, _ = await primary.edit_message(room_id, sent[3].message.id, owner.id, "edited", 1)
    await primary.set_reaction(room_id, sent[4].message.id, owner.id, "👍", on=True)
    head = (await primary.room_heads([room_id]))[room_id]
    served, lagged, checks = stats.served, stats.lagged, stats.head_checks
    await same_pages(routed, primary, room_id, head)
    assert stats.lagged > lagged, "the lagging replica was never passed over"
    assert stats.served > served, "a full page of old events should come from the replica"
    assert stats.head_checks - checks >= stats.lagged - lagged
    assert (stats.failed, stats.resting) == (0, 0)
    assert exported(stats) == {
        "parley_replica_reads_total": stats.sent,
        "parley_replica_served_total": stats.served,
        "parley_replica_fallbacks_total:lag": stats.lagged,
        "parley_replica_fallbacks_total:failure": 0,
        "parley_replica_fallbacks_total:resting": 0,
        "parley_replica_head_checks_total": stats.head_checks,
    }
    latest, _ = await routed.list_messages(room_id, before_seq=None, after_seq=None, limit=50)
    assert [m.body for m in latest][-1] == "m29"
    assert edited in latest

    pair.standby.sql("SELECT pg_wal_replay_resume()")
    pair.wait_caught_up()
    lagged = stats.lagged
    await same_pages(routed, primary, room_id, head)
    assert stats.lagged == lagged


async def test_replica_down_falls_back_to_the_primary(tmp_path: Path) -> None:
    """A replica nobody listens on: every page still comes, from the primary."""
    with replicated_postgres(require_pg_binaries(), synchronous=False) as pair:
        await migrate(pair.url())
        routed = SqlStore(pair.url(), replica_urls=[pair.standby_url()])
        await routed.start()
        try:
            owner = await new_user(routed)
            created, _ = await routed.create_room(
                name="r",
                visibility=Visibility.PUBLIC,
                topic="",
                kind=RoomKind.ROOM,
                owner_id=owner.id,
            )
            await routed.send_message(SendRequest(created.id, owner.id, "hello", None))
            pair.standby.stop()
            page, more = await routed.list_events(created.id, after_seq=0, limit=10)
            assert [e.seq for e in page] == list(range(1, len(page) + 1)) and not more
            stats = routed.replica_stats
            assert stats is not None and stats.failed == 1
            page_again, _ = await routed.list_events(created.id, after_seq=0, limit=10)
            assert page_again == page
            assert stats.failed == 1, "a failed replica is rested, not retried"
            assert (stats.resting, stats.lagged, stats.served) == (1, 0, 0)
            samples = exported(stats)
            assert samples["parley_replica_fallbacks_total:failure"] == 1
            assert samples["parley_replica_fallbacks_total:resting"] == 1
            assert samples["parley_replica_reads_total"] == 1
        finally:
            await routed.close()


async def test_clients_page_and_resume_across_a_lagging_replica(
    pair: Replicated, tmp_path: Path
) -> None:
    """A node with the standby as its read replica; replay paused while a client
    sends. Paging over REST and a live resume from an old cursor both see every
    message once, in order, up to the last one sent."""
    cluster = LocalCluster(
        tmp_path,
        nodes_count=1,
        database_url=pair.url(),
        bus_url="memory://",
        nginx=False,
        extra_env={
            "PARLEY_RATE_LIMITS": "off",
            "PARLEY_DATABASE_REPLICA_URLS": pair.standby_url(),
            **FAST_ARGON2,
        },
    )
    with cluster:
        url = cluster.nodes[0].url
        owner = await user(url, "owner")
        other = await user(url, "other")
        try:
            room_id = await room(owner, other)
            bodies = [f"o:{i}" for i in range(40)]
            for body in bodies[:20]:
                await owner.post_message(room_id, body)
            pair.wait_caught_up()
            assert len(await all_events(other, room_id)) >= 20  # a page the replica serves
            pair.standby.sql("SELECT pg_wal_replay_pause()")
            for body in bodies[20:]:
                await owner.post_message(room_id, body)
            events = await all_events(other, room_id)
            seqs = [e["seq"] for e in events]
            assert seqs == list(range(1, len(seqs) + 1))
            paged = [str(body_of(e)) for e in events if e.get("type") == "message.created"]
            assert paged == bodies
            latest, _ = await other.messages(room_id, limit=50)
            assert [m["body"] for m in latest][-20:] == bodies[20:]
            cursor = next(e["seq"] for e in events if body_of(e) == "o:4")
            async with lives((other, url), cursors={room_id: cursor}) as [live]:
                seen = await collect(live, room_id, set(bodies[5:]))
                check_exactly_once_in_order(seen, {"o": bodies[5:]})
            async with httpx.AsyncClient(timeout=10) as http:
                samples = replica_samples((await http.get(f"{url}/metrics")).text)
            assert samples["parley_replica_reads_total"] > 0
            assert samples["parley_replica_fallbacks_total:lag"] > 0, "the pause went unseen"
            assert samples["parley_replica_served_total"] > 0
        finally:
            pair.standby.sql("SELECT pg_wal_replay_resume()")
            await owner.aclose()
            await other.aclose()
