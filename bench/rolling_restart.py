"""Throughput during a rolling restart against steady state.

Three nodes (PostgreSQL, a broker, Redis) behind nginx; ``--senders`` SDK clients
send one message after another through nginx (each waits for its ack) while the
script counts acknowledged sends per second: for ``--steady`` seconds, then during a
rolling restart of every node (``LocalCluster.rolling_restart``: each drains with
1012, comes back ready, then the next), then for ``--steady`` seconds after. It
checks that every acknowledged message is stored once, and prints JSON::

    uv run python bench/rolling_restart.py --bus redis://127.0.0.1:6379/0 \\
        --database-url postgresql://postgres@127.0.0.1:5432/test
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

from parley.client import ParleyClient
from parley.testing.cluster import FAST_ARGON2, LocalCluster
from parley.testing.postgres import fresh_database

PASSWORD = "a long bench password"


async def _user(url: str) -> ParleyClient:
    client = ParleyClient(url)
    name = f"r{uuid.uuid4().hex[:10]}"
    await client.register(name, PASSWORD)
    await client.login(name, PASSWORD)
    return client


async def _run(cluster: LocalCluster, senders: int, steady: float) -> dict[str, Any]:
    owner = await _user(cluster.url)
    room = (await owner.create_room(f"roll-{uuid.uuid4().hex[:6]}", visibility="public"))["id"]
    clients = [await _user(cluster.url) for _ in range(senders)]
    for client in clients:
        await client.join(room)
    acked: list[tuple[float, str]] = []
    stop = asyncio.Event()

    async def send(client: ParleyClient, tag: int) -> None:
        async with client.live() as live:
            i = 0
            while not stop.is_set():
                body = f"s{tag}:{i}"
                await live.send(room, body)
                acked.append((time.monotonic(), body))
                i += 1

    tasks = [asyncio.create_task(send(c, n)) for n, c in enumerate(clients)]
    await asyncio.sleep(2.0)  # connected and warm
    t0 = time.monotonic()
    await asyncio.sleep(steady)
    t1 = time.monotonic()
    outs = await asyncio.to_thread(lambda: list(cluster.rolling_restart()))
    t2 = time.monotonic()
    await asyncio.sleep(steady)
    t3 = time.monotonic()
    stop.set()
    await asyncio.gather(*tasks)

    def rate(start: float, end: float) -> float:
        return sum(1 for t, _ in acked if start <= t < end) / (end - start)

    per_second = [rate(t1 + s, t1 + s + 1) for s in range(int(t2 - t1))]
    stored: list[str] = []
    after = 0
    while True:
        events, more = await owner.events(room, after_seq=after, limit=200)
        for event in events:
            after = event["seq"]
            if event.get("type") == "message.created":
                stored.append(str(event["message"]["body"]))
        if not events or not more:
            break
    bodies = [b for _, b in acked]
    for client in (owner, *clients):
        await client.aclose()
    return {
        "senders": senders,
        "steady_before_sends_per_s": rate(t0, t1),
        "rolling_restart_sends_per_s": rate(t1, t2),
        "rolling_restart_worst_second": min(per_second) if per_second else None,
        "rolling_restart_median_second": statistics.median(per_second) if per_second else None,
        "steady_after_sends_per_s": rate(t2, t3),
        "restart_seconds": t2 - t1,
        "nodes": [{"node": n.index + 1, "exit": code, "out_s": round(s, 2)} for n, code, s in outs],
        "acked": len(bodies),
        "acked_not_stored": len(set(bodies) - set(stored)),
        "stored_twice": len(stored) - len(set(stored)),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--bus", required=True)
    parser.add_argument("--database-url", required=True, help="a server to make a database on")
    parser.add_argument("--cache-url", default="redis://127.0.0.1:6379/0")
    parser.add_argument("--senders", type=int, default=8)
    parser.add_argument("--steady", type=float, default=8.0, help="seconds before and after")
    args = parser.parse_args()
    prefix = f"?prefix=roll{uuid.uuid4().hex[:8]}"
    env = {"PARLEY_RATE_LIMITS": "off", "PARLEY_DRAIN_SECONDS": "10", **FAST_ARGON2}
    with (
        fresh_database(args.database_url, "parley_roll") as database,
        tempfile.TemporaryDirectory(prefix="parley-roll-") as work,
        LocalCluster(
            Path(work),
            nodes_count=3,
            database_url=database,
            bus_url=args.bus + prefix,
            cache_url=args.cache_url + prefix,
            extra_env=env,
        ) as cluster,
    ):
        print(json.dumps(asyncio.run(_run(cluster, args.senders, args.steady)), indent=2))


if __name__ == "__main__":
    main()
