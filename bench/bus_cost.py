"""What the bus costs per event: one publisher and three subscriber buses in one process.

Publishes N events of ~200 bytes in batches (each batch one room's events, as the hub
sends a commit's events, over 100 rooms round-robin) at a steady open-loop rate, to
three subscriber buses that each listen on every room. Reports, per backend, this
process's CPU per event (one publish plus three deliveries, all in this process), the
broker server's CPU per event where its process can be found, and the end-to-end
latency (publish call to handler) at p50/p99, as one JSON line::

    uv run python bench/bus_cost.py --backend all --events 20000 --batch 20 --rate 2000

Network backends use the local services (``--redis``, ``--nats``, ``--amqp`` URLs).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import time
import uuid
from dataclasses import dataclass, field

import psutil

from parley.bus import connect_bus
from parley.bus.memory import MemoryBroker, MemoryBus
from parley.ports import Bus

PORTS = {"redis": 6379, "nats": 4222, "rabbitmq": 5672}


@dataclass
class Receiver:
    """One subscriber bus: how many events it got and their latencies (ns)."""

    expected: int
    got: int = 0
    latencies: list[int] = field(default_factory=list)
    done: asyncio.Event = field(default_factory=asyncio.Event)

    def handle(self, _channel: str, data: bytes) -> None:
        self.latencies.append(time.perf_counter_ns() - int.from_bytes(data[:8], "big"))
        self.got += 1
        if self.got >= self.expected:
            self.done.set()


def broker_process(backend: str) -> psutil.Process | None:
    """The server listening on the backend's port, if this user may see it."""
    port = PORTS.get(backend)
    if port is None:
        return None
    try:
        for conn in psutil.net_connections("tcp"):
            if conn.status == psutil.CONN_LISTEN and conn.laddr.port == port and conn.pid:
                return psutil.Process(conn.pid)
    except psutil.Error:
        return None
    return None


def cpu_seconds(proc: psutil.Process | None) -> float | None:
    if proc is None:
        return None
    times = proc.cpu_times()
    return float(times.user + times.system)


async def drop_exchange(url: str, name: str) -> None:
    """The bus's exchange is not durable, but would outlive the run on the broker."""
    import aio_pika

    conn = await aio_pika.connect(url)
    async with conn:
        channel = await conn.channel()
        await channel.exchange_delete(name)


def make_buses(backend: str, urls: dict[str, str], prefix: str) -> list[Bus]:
    if backend == "memory":
        broker = MemoryBroker()
        return [MemoryBus(broker) for _ in range(4)]
    url = urls[backend]
    joiner = "&" if "?" in url else "?"
    return [connect_bus(f"{url}{joiner}prefix={prefix}", node_id=f"bench-{i}") for i in range(4)]


async def run(
    backend: str, urls: dict[str, str], events: int, batch: int, rate: float
) -> dict[str, object]:
    prefix = f"bench{uuid.uuid4().hex[:8]}"
    pub, *subs = make_buses(backend, urls, prefix)
    rooms = [f"room.{uuid.uuid4()}" for _ in range(100)]
    receivers = [Receiver(events) for _ in subs]
    await pub.start(lambda _c, _d: None)
    for bus, receiver in zip(subs, receivers, strict=True):
        await bus.start(receiver.handle)
        for room in rooms:
            await bus.subscribe(room)
    filler = b"x" * 192
    broker = broker_process(backend)
    interval = batch / rate
    loop = asyncio.get_running_loop()
    cpu0, broker0, wall0 = time.process_time(), cpu_seconds(broker), loop.time()
    sent = 0
    next_at = wall0
    while sent < events:
        room = rooms[(sent // batch) % len(rooms)]
        size = min(batch, events - sent)
        stamp = time.perf_counter_ns().to_bytes(8, "big")
        if size == 1:
            await pub.publish(room, stamp + filler)
        else:
            await pub.publish_batch([(room, stamp + filler)] * size)
        sent += size
        next_at += interval
        delay = next_at - loop.time()
        if delay > 0:
            await asyncio.sleep(delay)
    try:
        async with asyncio.timeout(30):
            for receiver in receivers:
                await receiver.done.wait()
    except TimeoutError:
        pass
    cpu = time.process_time() - cpu0
    broker1 = cpu_seconds(broker)
    wall = loop.time() - wall0
    for bus in (pub, *subs):
        await bus.close()
    if backend == "rabbitmq":
        await drop_exchange(urls[backend], f"parley.bus.{prefix}")
    latencies = sorted(x for r in receivers for x in r.latencies)
    p99 = latencies[int(len(latencies) * 0.99) - 1] if latencies else 0
    return {
        "backend": backend,
        "events": events,
        "batch": batch,
        "rate": rate,
        "received": [r.got for r in receivers],
        "seconds": round(wall, 2),
        "process_cpu_us_per_event": round(cpu / events * 1e6, 1),
        "broker_cpu_us_per_event": None
        if broker0 is None or broker1 is None
        else round((broker1 - broker0) / events * 1e6, 1),
        "latency_p50_ms": round(statistics.median(latencies) / 1e6, 3) if latencies else None,
        "latency_p99_ms": round(p99 / 1e6, 3),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--backend", default="all", choices=["all", "memory", *PORTS])
    parser.add_argument("--events", type=int, default=20_000)
    parser.add_argument("--batch", type=int, default=20)
    parser.add_argument("--rate", type=float, default=2000.0, help="events per second")
    parser.add_argument("--redis", default="redis://127.0.0.1:6379/0")
    parser.add_argument("--nats", default="nats://127.0.0.1:4222")
    parser.add_argument("--amqp", default="amqp://guest:guest@127.0.0.1:5672/")
    parser.add_argument("--uvloop", action="store_true", help="run on uvloop")
    args = parser.parse_args()
    urls = {"redis": args.redis, "nats": args.nats, "rabbitmq": args.amqp}
    backends = ["memory", *PORTS] if args.backend == "all" else [args.backend]
    if args.uvloop:
        import uvloop

        uvloop.install()
    for backend in backends:
        result = asyncio.run(run(backend, urls, args.events, args.batch, args.rate))
        print(json.dumps(result), flush=True)


if __name__ == "__main__":
    main()
