"""What slow and idle clients cost a node, and whether it keeps serving.

Starts ``parley serve`` (defaults but for the data directory), then opens N raw
TCP connections that never finish a request: a third say nothing, a third send a
partial header and go silent, a third trickle a header a byte every half second.
They come from 20 loopback addresses (127.0.1.1-20) so that the per-address cap
(256) lets them in; a normal client on 127.0.0.2 meanwhile asks ``/healthz``
every 50 ms. Reported: the node's memory (RSS) before and at its peak, its CPU
seconds over the run, the normal client's latencies and failures, connections
refused, and when the last slow connection was closed by the node.

    python bench/slow_clients.py --connections 2000
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx

SOURCES = 20
TRICKLE_EVERY = 0.5


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


async def attacker(i: int, port: int, closed_at: list[float], refused: list[int]) -> None:
    source = f"127.0.1.{i % SOURCES + 1}"
    try:
        reader, writer = await asyncio.open_connection("127.0.0.1", port, local_addr=(source, 0))
    except OSError:
        refused.append(i)
        return
    kind = i % 3
    try:
        if kind == 1:
            writer.write(b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Slow: ")
        if kind == 2:
            header = b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Pad: " + b"a" * 10_000
            for byte in header:
                writer.write(bytes([byte]))
                await writer.drain()
                try:
                    said = await asyncio.wait_for(reader.read(4096), TRICKLE_EVERY)
                except TimeoutError:
                    continue
                if said.startswith(b"HTTP/1.1 503"):
                    refused.append(i)
                break
        else:
            said = await reader.read(4096)
            if said.startswith(b"HTTP/1.1 503"):
                refused.append(i)
            while await reader.read(4096):
                pass
    except OSError:
        pass
    closed_at.append(time.monotonic())
    writer.close()


async def normal_client(url: str, stop: asyncio.Event, latencies: list[float]) -> int:
    failures = 0
    transport = httpx.AsyncHTTPTransport(local_address="127.0.0.2")
    async with httpx.AsyncClient(base_url=url, transport=transport, timeout=10) as http:
        while not stop.is_set():
            start = time.perf_counter()
            try:
                ok = (await http.get("/healthz")).status_code == 200
            except httpx.HTTPError:
                ok = False
            if ok:
                latencies.append(time.perf_counter() - start)
            else:
                failures += 1
            await asyncio.sleep(0.05)
    return failures


async def run(port: int, pid: int, count: int) -> None:
    url = f"http://127.0.0.1:{port}"
    rss_before, cpu_before = rss_kib(pid), cpu_seconds(pid)
    peak = rss_before
    stop = asyncio.Event()
    latencies: list[float] = []
    checker = asyncio.create_task(normal_client(url, stop, latencies))
    closed_at: list[float] = []
    refused: list[int] = []
    started = time.monotonic()
    attack = asyncio.gather(*(attacker(i, port, closed_at, refused) for i in range(count)))
    while not attack.done():
        peak = max(peak, rss_kib(pid))
        await asyncio.sleep(0.2)
    await attack
    stop.set()
    failures = await checker
    cpu = cpu_seconds(pid) - cpu_before
    latencies.sort()
    print(f"slow connections attempted: {count} ({len(refused)} refused with 503)")
    print(f"node RSS: {rss_before / 1024:.1f} MiB before, peak {peak / 1024:.1f} MiB")
    print(f"node CPU over the run: {cpu:.2f} s in {time.monotonic() - started:.1f} s")
    print(f"last slow connection closed {max(closed_at) - started:.1f} s after the start")
    if latencies:
        p50 = statistics.median(latencies) * 1000
        p99 = latencies[int(len(latencies) * 0.99)] * 1000
        print(
            f"normal client: {len(latencies)} /healthz OK, {failures} failed, "
            f"p50 {p50:.1f} ms, p99 {p99:.1f} ms, max {latencies[-1] * 1000:.1f} ms"
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--connections", type=int, default=2000)
    args = parser.parse_args()
    port = free_port()
    with tempfile.TemporaryDirectory() as data_dir:
        env = {k: v for k, v in os.environ.items() if not k.startswith("PARLEY_")}
        env |= {"PARLEY_DATA_DIR": data_dir, "PARLEY_LOG_LEVEL": "warning"}
        cmd = [sys.executable, "-m", "parley.cli.main", "serve", "--port", str(port)]
        proc = subprocess.Popen(cmd, env=env)
        try:
            deadline = time.monotonic() + 60
            while True:
                with contextlib.suppress(httpx.HTTPError):
                    if httpx.get(f"http://127.0.0.1:{port}/readyz").status_code == 200:
                        break
                if time.monotonic() > deadline or proc.poll() is not None:
                    raise SystemExit("parley serve did not start")
                time.sleep(0.1)
            asyncio.run(run(port, proc.pid, args.connections))
        finally:
            proc.terminate()
            proc.wait(30)


if __name__ == "__main__":
    main()
