"""REST sends per second into one room from C concurrent clients, with group commit
on and off: the figure that shows what group commit buys on the embedded default.

Starts its own ``parley serve`` (SQLite, rate limits off) pinned to core 0, drives it
from P generator processes pinned to the other cores, and reports the median of R
runs as JSON (and a PNG plot when matplotlib is installed)::

    uv run python bench/rest_sends.py --clients 50 --seconds 8 --runs 3
"""

from __future__ import annotations

import argparse
import asyncio
import json
import multiprocessing as mp
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx
import psutil


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def start_server(data_dir: Path, port: int, group_commit: bool) -> subprocess.Popen[bytes]:
    env = os.environ | {
        "PARLEY_DATA_DIR": str(data_dir),
        "PARLEY_PORT": str(port),
        "PARLEY_RATE_LIMITS": "off",
        "PARLEY_GROUP_COMMIT": "true" if group_commit else "false",
        "PARLEY_LOG_LEVEL": "warning",
        "PARLEY_ARGON2_MEMORY_KIB": "1024",
        "PARLEY_ARGON2_TIME_COST": "1",
    }
    cmd = [sys.executable, "-m", "parley.cli.main", "serve"]
    if hasattr(os, "sched_setaffinity") and (os.cpu_count() or 1) > 1:
        cmd = ["taskset", "-c", "0", *cmd]
    proc = subprocess.Popen(cmd, env=env)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            if httpx.get(f"http://127.0.0.1:{port}/readyz", timeout=1).status_code == 200:
                return proc
        except httpx.HTTPError:
            pass
        time.sleep(0.1)
    proc.kill()
    raise RuntimeError("server did not start")


def setup(base: str, clients: int) -> tuple[str, list[str]]:
    """Register ``clients`` users, put them in one room; return (room, tokens)."""
    tokens: list[str] = []
    ids: list[str] = []
    with httpx.Client(base_url=base, timeout=30) as http:
        for i in range(clients):
            name = f"bench{i}"
            http.post("/api/v1/auth/register", json={"username": name, "password": "x" * 12})
            r = http.post(
                "/api/v1/auth/token",
                data={"grant_type": "password", "username": name, "password": "x" * 12},
            )
            tokens.append(r.json()["access_token"])
            me = http.get("/api/v1/users/me", headers={"Authorization": f"Bearer {tokens[-1]}"})
            ids.append(me.json()["id"])
        owner = {"Authorization": f"Bearer {tokens[0]}"}
        room = http.post("/api/v1/rooms", json={"name": "bench"}, headers=owner).json()["id"]
        for user_id in ids[1:]:
            http.post(f"/api/v1/rooms/{room}/members", json={"user_id": user_id}, headers=owner)
    return room, tokens


def generator(base: str, room: str, tokens: list[str], seconds: float, out: Any) -> None:
    """One generator process: each client sends in a closed loop for ``seconds``."""

    async def client(token: str, stop: float, latencies: list[float]) -> None:
        headers = {"Authorization": f"Bearer {token}"}
        async with httpx.AsyncClient(base_url=base, headers=headers, timeout=30) as http:
            i = 0
            while time.monotonic() < stop:
                t0 = time.perf_counter()
                r = await http.post(
                    f"/api/v1/rooms/{room}/messages", json={"body": f"bench message {i:06d}"}
                )
                if r.status_code == 201:
                    latencies.append(time.perf_counter() - t0)
                i += 1

    async def main() -> list[float]:
        latencies: list[float] = []
        stop = time.monotonic() + seconds
        await asyncio.gather(*(client(t, stop, latencies) for t in tokens))
        return latencies

    cpu0 = time.process_time()
    latencies = asyncio.run(main())
    out.put((latencies, time.process_time() - cpu0))


def run_once(args: argparse.Namespace, group_commit: bool) -> dict[str, Any]:
    with tempfile.TemporaryDirectory() as tmp:
        port = free_port()
        proc = start_server(Path(tmp), port, group_commit)
        base = f"http://127.0.0.1:{port}"
        try:
            room, tokens = setup(base, args.clients)
            server = psutil.Process(proc.pid)
            cpu_before = server.cpu_times()
            queue: mp.Queue[Any] = mp.Queue()
            shares = [tokens[i :: args.procs] for i in range(args.procs)]
            procs = [
                mp.Process(target=generator, args=(base, room, share, args.seconds, queue))
                for share in shares
            ]
            started = time.perf_counter()
            for p in procs:
                p.start()
                if hasattr(os, "sched_setaffinity") and (os.cpu_count() or 1) > 1 and p.pid:
                    os.sched_setaffinity(p.pid, set(range(1, os.cpu_count() or 2)))
            results = [queue.get() for _ in procs]
            elapsed = time.perf_counter() - started
            for p in procs:
                p.join()
            cpu_after = server.cpu_times()
        finally:
            proc.terminate()
            proc.wait(30)
    latencies = sorted(x for lat, _ in results for x in lat)
    sends = len(latencies)
    server_cpu = (cpu_after.user - cpu_before.user) + (cpu_after.system - cpu_before.system)
    return {
        "group_commit": group_commit,
        "sends": sends,
        "sends_per_s": sends / elapsed,
        "p50_ms": 1000 * latencies[len(latencies) // 2],
        "p99_ms": 1000 * latencies[int(len(latencies) * 0.99)],
        "server_cpu_us_per_send": 1e6 * server_cpu / max(1, sends),
        "generator_cpu_s": sum(cpu for _, cpu in results),
        "elapsed_s": elapsed,
    }


def median_of(runs: list[dict[str, Any]]) -> dict[str, Any]:
    keys = ["sends_per_s", "p50_ms", "p99_ms", "server_cpu_us_per_send", "generator_cpu_s"]
    return {k: round(statistics.median(r[k] for r in runs), 2) for k in keys}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--clients", type=int, default=50)
    parser.add_argument("--procs", type=int, default=2, help="generator processes")
    parser.add_argument("--seconds", type=float, default=8.0)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--out", type=Path, default=Path("bench/results"))
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    report: dict[str, Any] = {"clients": args.clients, "runs": {}, "median": {}}
    for group_commit in (True, False):
        label = "group_commit" if group_commit else "no_group_commit"
        runs = [run_once(args, group_commit) for _ in range(args.runs)]
        report["runs"][label] = runs
        report["median"][label] = median_of(runs)
        print(label, json.dumps(report["median"][label]), flush=True)
    path = args.out / "rest_sends.json"
    path.write_text(json.dumps(report, indent=2))
    print(f"wrote {path}")
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return
    fig, (a, b) = plt.subplots(1, 2, figsize=(9, 3.5))
    labels = list(report["median"])
    a.bar(labels, [report["median"][k]["sends_per_s"] for k in labels])
    a.set_title(f"REST sends/s, {args.clients} clients, one room")
    b.bar(labels, [report["median"][k]["p99_ms"] for k in labels], label="p99")
    b.bar(labels, [report["median"][k]["p50_ms"] for k in labels], label="p50")
    b.set_title("send latency (ms)")
    b.legend()
    fig.tight_layout()
    fig.savefig(args.out / "rest_sends.png", dpi=100)
    print(f"wrote {args.out / 'rest_sends.png'}")


if __name__ == "__main__":
    main()
