"""Server CPU per inbound WebSocket frame: ``ping`` frames in a closed loop.

Starts ``parley serve`` (as ``parley bench`` does: SQLite, rate limits off, pinned
to the first core), opens C WebSockets for one user from this process (pinned to
the other cores) and has each send N ``ping`` frames, one at a time, each waiting
for its ``pong``. A ping is the cheapest frame the server carries out (judged,
answered, no store, no fan-out), so its CPU is the gateway's own cost of a frame:
reading, parsing, answering, writing. The median of R runs::

    uv run python bench/ws_pings.py --connections 5 --pings 4000 --runs 3
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import tempfile
import time
import uuid
from pathlib import Path

import httpx
from websockets.asyncio.client import ClientConnection, connect

from parley.cli.bench import ServerProcess, start_parley


async def _pings(
    server: ServerProcess, token: str, connections: int, pings: int
) -> tuple[float, float]:
    """Seconds and server CPU seconds for every connection's pings, once all are
    open and warm."""
    ws_url = server.url.replace("http://", "ws://") + "/api/v1/ws"
    headers = {"Authorization": f"Bearer {token}"}
    sockets = [
        await connect(ws_url, additional_headers=headers, compression=None)
        for _ in range(connections)
    ]
    for ws in sockets:
        await ws.recv()  # ready

    async def loop(ws: ClientConnection, count: int) -> None:
        for i in range(count):
            await ws.send(f'{{"type":"ping","id":{i}}}')
            await ws.recv()

    await asyncio.gather(*(loop(ws, 100) for ws in sockets))
    cpu0, started = server.usage()[0], time.perf_counter()
    await asyncio.gather(*(loop(ws, pings) for ws in sockets))
    took, used = time.perf_counter() - started, server.usage()[0] - cpu0
    for ws in sockets:
        await ws.close()
    return took, used


def _login(url: str) -> str:
    name, password = f"ping{uuid.uuid4().hex[:8]}", "correct horse battery"
    httpx.post(f"{url}/api/v1/auth/register", json={"username": name, "password": password})
    token = httpx.post(
        f"{url}/api/v1/auth/token",
        data={"grant_type": "password", "username": name, "password": password},
    ).json()["access_token"]
    return str(token)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--connections", type=int, default=5)
    parser.add_argument("--pings", type=int, default=4000, help="per connection")
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args()
    cpus = sorted(os.sched_getaffinity(0))
    server_cpu = {cpus[0]} if len(cpus) > 1 else set()
    if server_cpu:
        os.sched_setaffinity(0, set(cpus) - server_cpu)
    results = []
    for _ in range(args.runs):
        with tempfile.TemporaryDirectory(prefix="parley-pings-") as data:
            server = start_parley(Path(data), server_cpu)
            try:
                token = _login(server.url)
                took, used = asyncio.run(_pings(server, token, args.connections, args.pings))
            finally:
                server.stop()
        frames = args.connections * args.pings
        results.append({"us_per_ping": used * 1e6 / frames, "pings_per_s": frames / took})
        print(json.dumps(results[-1]))
    print(
        json.dumps(
            {
                "connections": args.connections,
                "pings": args.pings,
                "median_us_per_ping": statistics.median(r["us_per_ping"] for r in results),
                "median_pings_per_s": statistics.median(r["pings_per_s"] for r in results),
            }
        )
    )


if __name__ == "__main__":
    main()
