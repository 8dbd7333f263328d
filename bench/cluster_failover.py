"""How long a killed node's clients take to be back and resumed on another node.

Starts three ``parley serve`` nodes on PostgreSQL and a broker (``LocalCluster``, no
nginx), then N SDK clients (``Live``) in one room, all reaching node 1 through a TCP
proxy of this process that plays the load balancer. Once every client is ready and a
few messages flow, node 1 is killed (SIGKILL) and the proxy points at node 2 from then
on: every client reconnects there (with the SDK's jittered backoff) and resumes from
its cursors. Reported: seconds from the kill until the last client's ``resume`` was
answered, and until every client had every message sent meanwhile; medians of
``--runs``. The generator's own CPU is reported too: on 2 cores it competes with the
nodes.

    python bench/cluster_failover.py --clients 1000 --bus redis://127.0.0.1:6379/0

The nodes get a database of their own, created through ``--postgres`` (an admin
connection) and dropped at the end.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import tempfile
import time
import uuid
from pathlib import Path

from parley.client import ParleyClient
from parley.client._live import Backoff, Live
from parley.testing.cluster import FAST_ARGON2, LocalCluster
from parley.testing.proxy import TcpProxy

PER_USER = 10
"""Connections per user: registering 1,000 users would time the hashing."""


class _Balancer(TcpProxy):
    """The proxy with a listen backlog for a reconnect storm: asyncio's default of 100
    drops SYNs past it, and each dropped one costs its client a 1 s TCP retransmit
    (nginx listens with 511, uvicorn with 2048)."""

    async def restore(self) -> None:
        if self._server is None:
            self._server = await asyncio.start_server(
                self._accept, "127.0.0.1", self.port, reuse_address=True, backlog=4096
            )


async def run_once(cluster: LocalCluster, clients: int) -> tuple[float, float, float, float]:
    victim, heir = cluster.nodes[0], cluster.nodes[1]
    proxy = await _Balancer("127.0.0.1", victim.port).start()
    url = f"http://127.0.0.1:{proxy.port}"
    owner = ParleyClient(heir.url)
    name = f"owner{uuid.uuid4().hex[:8]}"
    await owner.register(name, "correct horse battery")
    await owner.login(name, "correct horse battery")
    room_id = (await owner.create_room(f"failover-{uuid.uuid4().hex[:6]}"))["id"]
    users: list[ParleyClient] = []
    for _ in range((clients + PER_USER - 1) // PER_USER):
        c = ParleyClient(url)
        n = f"u{uuid.uuid4().hex[:10]}"
        registered = await c.register(n, "correct horse battery")
        await c.login(n, "correct horse battery")
        await owner.add_member(room_id, registered["id"])
        users.append(c)
    lives: list[Live] = []
    for i in range(clients):
        live = users[i // PER_USER].live(backoff=Backoff(base=0.1, cap=2.0))
        await live.start()
        lives.append(live)
    async with asyncio.timeout(120):
        await asyncio.gather(*(live.wait_ready() for live in lives))
    await owner.post_message(room_id, "before")
    cpu0 = time.process_time()
    assert heir.proc is not None
    heir_cpu0 = _cpu_seconds(heir.proc.pid)
    cluster.kill_node(victim)
    killed = time.monotonic()
    proxy.target_port = heir.port
    await proxy.cut()  # what the kill left half-open, reset now, as a dead host's RST
    await proxy.restore()
    for i in range(5):
        await owner.post_message(room_id, f"during {i}")
    resumed = 0.0
    async with asyncio.timeout(120):
        while True:
            done = [live.resumed_at for live in lives]
            if all(t is not None and t > killed for t in done):
                resumed = max(t for t in done if t is not None) - killed
                break
            await asyncio.sleep(0.01)
        for live in lives:
            bodies: list[str] = []
            while "during 4" not in bodies:
                event = await live.next_event()
                if event.get("type") == "message.created":
                    bodies.append(event["message"]["body"])
    caught_up = time.monotonic() - killed
    cpu = time.process_time() - cpu0
    heir_cpu = _cpu_seconds(heir.proc.pid) - heir_cpu0
    for live in lives:
        await live.close()
    for c in [owner, *users]:
        await c.aclose()
    await proxy.close()
    cluster.start_node(victim)
    return resumed, caught_up, cpu, heir_cpu


def _cpu_seconds(pid: int) -> float:
    """User and system CPU of a process so far (Linux ``/proc``)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--clients", type=int, default=1000)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--bus", required=True)
    parser.add_argument(
        "--postgres",
        default="postgresql://postgres@127.0.0.1:5432/postgres",
        help="an admin URL: the run creates and drops a database of its own through it",
    )
    parser.add_argument("--cache-url", default="redis://127.0.0.1:6379/0")
    args = parser.parse_args()
    prefix = f"b{uuid.uuid4().hex[:8]}"
    database = f"parley_failover_{uuid.uuid4().hex[:10]}"
    await _admin(args.postgres, f'CREATE DATABASE "{database}"')
    try:
        await _run(args, prefix, f"{args.postgres.rsplit('/', 1)[0]}/{database}")
    finally:
        await _admin(args.postgres, f'DROP DATABASE IF EXISTS "{database}" WITH (FORCE)')


async def _admin(url: str, sql: str) -> None:
    import asyncpg  # type: ignore[import-untyped]

    conn = await asyncpg.connect(url)
    try:
        await conn.execute(sql)
    finally:
        await conn.close()


async def _run(args: argparse.Namespace, prefix: str, database_url: str) -> None:
    sep = "&" if "?" in args.bus else "?"
    cluster = LocalCluster(
        Path(tempfile.mkdtemp(prefix="parley-failover-")),
        nodes_count=3,
        database_url=database_url,
        bus_url=f"{args.bus}{sep}prefix={prefix}",
        cache_url=f"{args.cache_url}?prefix={prefix}",
        nginx=False,
        extra_env={
            "PARLEY_RATE_LIMITS": "off",
            "PARLEY_MAX_CONNECTIONS_PER_IP": str(args.clients * 2),
            "PARLEY_MAX_UNAUTHENTICATED_WS_PER_IP": str(args.clients * 2),
            **FAST_ARGON2,
        },
    )
    results = []
    with cluster:
        for run in range(args.runs):
            resumed, caught_up, cpu, heir_cpu = await run_once(cluster, args.clients)
            results.append((resumed, caught_up, cpu, heir_cpu))
            print(
                f"run {run + 1}: all {args.clients} resumed {resumed:.2f} s after the kill, "
                f"every message in {caught_up:.2f} s (CPU: generator {cpu:.2f} s, "
                f"the node taking them over {heir_cpu:.2f} s)",
                flush=True,
            )
    med = [statistics.median(r[i] for r in results) for i in range(4)]
    print(
        f"median of {args.runs}: resumed {med[0]:.2f} s, caught up {med[1]:.2f} s, "
        f"CPU: generator {med[2]:.2f} s, taking node {med[3]:.2f} s ({os.cpu_count()} cores)"
    )


if __name__ == "__main__":
    asyncio.run(main())
