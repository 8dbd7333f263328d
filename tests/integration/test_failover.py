"""PostgreSQL failover under load: two ``parley serve`` nodes on a Redis bus reach a
private primary and its synchronous standby (``synchronous_commit = remote_apply``)
by one multi-host URL (``target_session_attrs=read-write``). Senders on both nodes
write without pause; the primary's postmaster is killed with ``kill -9``; while there
is no primary every send is refused with ``unavailable`` (none hangs); the standby is
promoted and the nodes find it without a restart. Every acknowledged message is
stored exactly once with gap-free ``seq``, live receivers get each event once and in
order, and a client resuming from before the failover gets the rest the same way.

Each sender retries a refused message with its ``client_msg_id``: a commit whose
answer was lost with the primary is stored once, acknowledged or not. The window in
which sends failed is printed (``pytest -s``): it is the figure the operations guide
quotes, not an assertion.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from sqlalchemy import text
from sqlalchemy.engine import Connection

from parley.client import ApiError, ParleyClient
from parley.client._live import Live
from parley.store.engine import normalize_url
from parley.store.runners import _PostgresRunner
from parley.testing.cluster import FAST_ARGON2, LocalCluster
from tests.integration.cluster_support import cache_url, require_broker
from tests.integration.pg_replication import (
    Replicated,
    replicated_postgres,
    require_pg_binaries,
)
from tests.integration.test_cluster import (
    check_exactly_once_in_order,
    close_all,
    collect,
    lives,
    members,
    stored_bodies,
    until_ok,
    wait_for,
)
from tests.realtime_support import TIMEOUT

NODE_ENV = {"PARLEY_RATE_LIMITS": "off", "PARLEY_HEARTBEAT_INTERVAL": "2", **FAST_ARGON2}
NO_PRIMARY = 1.0
"""Seconds between the primary's death and the standby's promotion (an operator or
Patroni deciding): sends in this window must be refused, not hang."""
AFTER = 30
"""Messages each sender gets acknowledged after the failover before the test stops."""


@dataclass
class Sender:
    """One sender's record: what was acknowledged, and when sends were refused."""

    tag: str
    acked: list[str] = field(default_factory=list)
    refused: list[float] = field(default_factory=list)
    codes: set[str] = field(default_factory=set)
    recovered: float | None = None


async def keep_sending(live: Live, room_id: str, me: Sender, stop: asyncio.Event) -> None:
    """Messages ``tag:i`` one after another; a refused one is sent again with the same
    ``client_msg_id`` until acknowledged. Each try is bounded: a hang fails the test."""
    i = 0
    while not stop.is_set():
        body = f"{me.tag}:{i}"
        while True:
            try:
                async with asyncio.timeout(TIMEOUT):
                    await live.send(room_id, body, client_msg_id=f"{me.tag}-{i}")
                break
            except ApiError as exc:
                me.codes.add(exc.code)
                me.refused.append(time.monotonic())
                await asyncio.sleep(0.02)
        if me.refused and me.recovered is None:
            me.recovered = time.monotonic()
        me.acked.append(body)
        i += 1


@pytest.fixture
def pair() -> Iterator[Replicated]:
    with replicated_postgres(require_pg_binaries()) as replicated:
        yield replicated


async def test_primary_killed_and_standby_promoted_loses_and_repeats_nothing(
    pair: Replicated, tmp_path: Path
) -> None:
    cluster = LocalCluster(
        tmp_path,
        nodes_count=2,
        database_url=pair.url(),
        bus_url=require_broker("redis"),
        cache_url=cache_url(),
        nginx=False,
        extra_env=NODE_ENV,
    )
    with cluster:
        a, b = (n.url for n in cluster.nodes)
        owner, people, room_id = await members(a, 4)
        senders, receivers = people[:2], people[2:]
        record = [Sender("s0"), Sender("s1")]
        stop = asyncio.Event()
        try:
            async with (
                lives((senders[0], a), (senders[1], b)) as send_lives,
                lives((receivers[0], a), (receivers[1], b)) as recv_lives,
            ):
                tasks = [
                    asyncio.create_task(keep_sending(live, room_id, me, stop))
                    for live, me in zip(send_lives, record, strict=True)
                ]
                await wait_for(lambda: min(len(me.acked) for me in record) >= 20)
                before = {me.tag: len(me.acked) for me in record}
                killed = time.monotonic()
                await asyncio.to_thread(pair.primary.kill)
                await asyncio.sleep(NO_PRIMARY)
                refused_without_primary = {me.tag: len(me.refused) for me in record}
                await asyncio.to_thread(
                    pair.standby.run, "pg_ctl", "-D", str(pair.standby.data), "-w", "promote"
                )
                promoted = time.monotonic()
                await wait_for(
                    lambda: min(len(me.acked) - before[me.tag] for me in record) >= AFTER,
                    TIMEOUT * 2,
                )
                stop.set()
                async with asyncio.timeout(TIMEOUT):
                    await asyncio.gather(*tasks)

                for me in record:
                    assert me.codes <= {"unavailable"}, me.codes
                    assert refused_without_primary[me.tag] > 0, "a send went through unrefused"
                    assert me.recovered is not None
                windows = [me.recovered - me.refused[0] for me in record if me.recovered]
                print(
                    f"\nfailover: primary killed, standby promoted {promoted - killed:.2f} s "
                    f"later; sends failed for {max(windows):.2f} s (per sender: "
                    + ", ".join(f"{w:.2f}" for w in windows)
                    + f"); last refusal {max(me.refused[-1] for me in record) - promoted:.2f} s "
                    f"after the promotion; acked {sum(len(me.acked) for me in record)}, "
                    f"refused tries {sum(len(me.refused) for me in record)}"
                )

                acked = {body for me in record for body in me.acked}
                stored = await until_ok(lambda: stored_bodies(owner, room_id))
                lost = acked - set(stored)
                duplicated = len(stored) - len(set(stored))
                print(f"failover: lost {len(lost)}, duplicated {duplicated}")
                assert not lost, f"acknowledged but not stored: {sorted(lost)[:5]}"
                assert duplicated == 0
                events = await all_events(owner, room_id)
                seqs = [e["seq"] for e in events]
                assert seqs == list(range(1, len(seqs) + 1)), "seq has a gap"

                sent = {me.tag: [b for b in stored if b.startswith(f"{me.tag}:")] for me in record}
                for live in recv_lives:
                    check_exactly_once_in_order(await collect(live, room_id, acked), sent)

                first = next(e for e in events if e.get("type") == "message.created")
                async with lives((receivers[0], b), cursors={room_id: first["seq"]}) as [again]:
                    resumed = await collect(again, room_id, acked - {_body(first)})
                    check_exactly_once_in_order(resumed, sent)
                    assert resumed[0]["seq"] > first["seq"]
        finally:
            stop.set()
            await close_all(owner, *people)


def _body(event: dict[str, object]) -> str:
    from tests.realtime_support import body_of

    return str(body_of(event))


async def all_events(client: ParleyClient, room_id: str) -> list[dict[str, object]]:
    out: list[dict[str, object]] = []
    after = 0
    while True:
        page, more = await client.events(room_id, after_seq=after, limit=200)
        out += page
        if not page or not more:
            return out
        after = int(page[-1]["seq"])  # type: ignore[call-overload]


async def test_commit_waiting_for_a_lost_synchronous_standby_fails_then_recovers(
    pair: Replicated,
) -> None:
    """The standby stops: the primary holds each commit until a synchronous standby
    confirms it. The write fails after the runner's write timeout instead of hanging,
    and once the standby is back the next write succeeds on a fresh connection."""
    runner = _PostgresRunner(normalize_url(pair.url()), 1, write_timeout=1.0)

    def insert(value: int) -> Callable[[Connection], None]:
        def run(conn: Connection) -> None:
            conn.execute(text("INSERT INTO t VALUES (:v)"), {"v": value})
            conn.commit()

        return run

    def create(conn: Connection) -> None:
        conn.execute(text("CREATE TABLE t (v int)"))
        conn.commit()

    try:
        await runner.write(create)
        await runner.write(insert(1))
        await asyncio.to_thread(
            pair.standby.run, "pg_ctl", "-D", str(pair.standby.data), "-m", "fast", "-w", "stop"
        )
        with pytest.raises(TimeoutError):
            async with asyncio.timeout(TIMEOUT):
                await runner.write(insert(2))
        await asyncio.to_thread(pair.standby.start)
        await asyncio.to_thread(pair.wait_sync)
        async with asyncio.timeout(TIMEOUT):
            await runner.write(insert(3))
        stored = await runner.read(
            lambda conn: [r[0] for r in conn.execute(text("SELECT v FROM t ORDER BY v"))],
            snapshot=False,
        )
        assert stored == [1, 2, 3], "the timed-out commit was committed locally all along"
    finally:
        await runner.close()
