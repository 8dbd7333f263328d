"""``parley bench`` against a cluster of nodes on this machine.

``fanout`` and ``latency`` with ``--nodes N --bus URL --database-url postgresql://…``
start N ``parley serve`` processes (``parley.testing.cluster.LocalCluster``, no nginx)
on one PostgreSQL database and one broker, and deal the clients round-robin over the
nodes, connecting to each node directly: the figure is the nodes' cost, not nginx's.
``latency`` puts each room's receivers on nodes other than its sender's, so every
delivery it times crosses the bus. The server's CPU is summed over the nodes (psutil
on each pid) and given per node, beside the broker server's own CPU (the process
listening on the bus URL's port, when it is on this machine) and PostgreSQL's (every
``postgres`` process: other users' queries included). Unless ``--no-bus-reference``,
the same load then runs against one node on the same database with the in-process
bus: what a send costs the cluster beyond that run is the bus's cost per event
(its client on every node, the envelope, the nodes' own repair and dispatch).

``failover`` starts N nodes behind nginx, connects ``--clients`` SDK clients through
it (several generator processes), sends a few messages, ``kill -9``'s one node and
times each of its clients from the kill to the ``resumed`` answer on its new
connection; a few messages sent right after the kill and a few once all are back
must reach every client exactly once, and be in the database once.

Every run adds a ``?prefix=`` of its own to the bus and cache URLs, and
``--fresh-database`` creates a database of its own beside ``--database-url``'s
(asyncpg), dropped after the run.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import multiprocessing as mp
import os
import secrets
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from multiprocessing.connection import Connection as Pipe
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

import httpx

from parley.cli.bench import (
    Role,
    ServerProcess,
    _percentile,
    _recv,
    _register,
    _summary,
    plan_parley,
    run_baseline,
    run_load,
    write_plot,
)
from parley.client import ParleyClient
from parley.testing.cluster import FAST_ARGON2, LocalCluster, Node
from parley.testing.postgres import fresh_database

NODE_ENV = FAST_ARGON2 | {"PARLEY_RATE_LIMITS": "off", "PARLEY_OUTBOUND_QUEUE": "4096"}
"""What ``bench.start_parley`` gives its one node, for every node."""

BROKER_PORTS = {"redis": 6379, "rediss": 6379, "nats": 4222, "amqp": 5672, "amqps": 5671}
FAILOVER_MESSAGES = 5
"""Messages sent in each phase of ``failover``: before the kill, right after it, and
once every client is back."""
FAILOVER_TIMEOUT = 60.0
LOOPBACK = ("127.0.0.1", "localhost", "::1", "")


def with_prefix(url: str, prefix: str) -> str:
    """``url`` with ``?prefix=prefix`` unless it names one already (``memory://``
    reaches one process only and takes none)."""
    parts = urlsplit(url)
    if parts.scheme == "memory":
        return url
    query = parse_qsl(parts.query, keep_blank_values=True)
    if any(k == "prefix" for k, _ in query):
        return url
    return urlunsplit(parts._replace(query=urlencode([*query, ("prefix", prefix)])))


def cache_for(args: argparse.Namespace, prefix: str) -> str:
    """``--cache-url``, or the bus's Redis when the bus is one; ``memory://`` for one
    node (``LocalCluster.check`` refuses it for more)."""
    if args.cache_url:
        return with_prefix(args.cache_url, prefix)
    if args.bus and urlsplit(args.bus).scheme in ("redis", "rediss"):
        parts = urlsplit(args.bus)
        return str(urlunsplit(parts._replace(query=urlencode([("prefix", prefix)]))))
    return "memory://"


@contextlib.contextmanager
def database(url: str | None, fresh: bool) -> Iterator[str | None]:
    """``url``, or with ``fresh`` a new database on its server, dropped after."""
    if not fresh or not url:
        yield url
        return
    with fresh_database(url, "parley_bench") as fresh_url:
        yield fresh_url


def pin_process(pid: int, cpus: set[int]) -> None:
    """Every thread of ``pid`` on ``cpus`` (affinity is a thread's, and a node has
    started its threads by the time it is ready)."""
    if not cpus:
        return
    with contextlib.suppress(OSError):
        for tid in os.listdir(f"/proc/{pid}/task"):
            with contextlib.suppress(OSError):
                os.sched_setaffinity(int(tid), cpus)


def broker_process(bus_url: str) -> Any:
    """The ``psutil.Process`` listening on the bus URL's port on this machine (the
    redis-server, nats-server or beam.smp), or ``None``."""
    import psutil

    parts = urlsplit(bus_url)
    if parts.hostname not in LOOPBACK:
        return None
    port = parts.port or BROKER_PORTS.get(parts.scheme)
    with contextlib.suppress(psutil.Error, OSError):
        for conn in psutil.net_connections(kind="tcp"):
            if conn.status == psutil.CONN_LISTEN and conn.laddr.port == port and conn.pid:
                return psutil.Process(conn.pid)
    return None


def _cpu(process: Any) -> float:
    import psutil

    try:
        times = process.cpu_times()
    except psutil.Error:
        return 0.0
    return float(times.user + times.system)


def _postgres_cpu() -> dict[int, float]:
    """CPU seconds so far of every ``postgres`` process (the server's and every
    connection's backend)."""
    import psutil

    found: dict[int, float] = {}
    for process in psutil.process_iter(["name"]):
        if process.info["name"] == "postgres":
            with contextlib.suppress(psutil.Error):
                found[process.pid] = _cpu(process)
    return found


@dataclass
class _Snapshot:
    nodes: list[float]
    broker: float | None
    postgres: dict[int, float]


class ClusterServers(ServerProcess):
    """The nodes of a cluster as one server for ``bench.run_load``: CPU and RSS summed
    over the nodes. Each ``usage()`` also keeps a snapshot of each node's CPU, the
    broker's and PostgreSQL's, so ``window`` splits the measured window's CPU."""

    def __init__(self, nodes: list[Node], broker: Any) -> None:
        import psutil

        super().__init__(nodes[0].url, None)
        self.node_processes = [psutil.Process(n.proc.pid) for n in nodes if n.proc is not None]
        self.broker = broker
        self.snapshots: list[_Snapshot] = []

    def usage(self) -> tuple[float, int]:
        cpu = [_cpu(p) for p in self.node_processes]
        self.snapshots.append(
            _Snapshot(
                cpu,
                None if self.broker is None else _cpu(self.broker),
                _postgres_cpu(),
            )
        )
        rss = 0
        for process in self.node_processes:
            with contextlib.suppress(Exception):
                rss += int(process.memory_info().rss)
        return sum(cpu), rss

    def window(self, run: dict[str, Any]) -> dict[str, Any]:
        """The measured window's CPU split: per node, the broker's, PostgreSQL's.

        ``run_load`` calls ``usage()`` four times: idle, at go, at the last send and
        at the end; its ``server_cpu_s`` is from the second to the last."""
        if len(self.snapshots) < 2:
            return {}
        start, end = self.snapshots[1], self.snapshots[-1]
        sends, deliveries = run["sends"], run["deliveries"]
        per_node = [b - a for a, b in zip(start.nodes, end.nodes, strict=True)]
        figures: dict[str, Any] = {
            "nodes": len(per_node),
            "node_cpu_s": per_node,
            "node_cpu_us_per_delivery": [
                cpu * 1e6 / deliveries if deliveries else None for cpu in per_node
            ],
            "server_histograms_of": "node 1",
        }
        if start.broker is not None and end.broker is not None:
            broker = end.broker - start.broker
            figures["broker_cpu_s"] = broker
            figures["broker_cpu_us_per_send"] = broker * 1e6 / sends if sends else None
        postgres = sum(cpu - start.postgres.get(pid, 0.0) for pid, cpu in end.postgres.items())
        figures["postgres_cpu_s"] = postgres
        figures["postgres_cpu_us_per_send"] = postgres * 1e6 / sends if sends else None
        return figures


def spread(roles: list[Role], urls: list[str], *, apart: bool) -> None:
    """Deal senders and receivers round-robin over the nodes' ``urls``; ``apart``
    keeps each room's receivers off its sender's node (every delivery crosses)."""
    senders = [r for r in roles if r.kind == "sender"]
    for i, role in enumerate(senders):
        role.url = urls[i % len(urls)]
    sender_node = {r.room: r.url for r in senders}
    others = [r for r in roles if r.kind != "sender"]
    for i, role in enumerate(others):
        choices = urls
        if apart and len(urls) > 1:
            choices = [u for u in urls if u != sender_node.get(role.room)]
        role.url = choices[i % len(choices)]


def _cpus(args: argparse.Namespace) -> tuple[set[int], list[int]]:
    """The nodes' core and the generators' cores, as ``bench.cmd_bench`` splits them;
    none with ``--no-pin`` (every process where the kernel puts it)."""
    if args.no_pin:
        return set(), []
    cpus = sorted(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else []
    server = {cpus[args.server_cpu % len(cpus)]} if len(cpus) > 1 else set()
    return server, [c for c in cpus if c not in server] if len(cpus) > 1 else []


def cluster_run(
    args: argparse.Namespace,
    *,
    nodes: int,
    bus_url: str,
    database_url: str | None,
    cache_url: str,
    label: str,
) -> dict[str, Any]:
    """One load against ``nodes`` fresh nodes, pinned to the server core; its figures."""
    server_cpu, gen_cpus = _cpus(args)
    with tempfile.TemporaryDirectory(prefix="parley-bench-cluster-") as work:
        cluster = LocalCluster(
            Path(work),
            nodes_count=nodes,
            database_url=database_url,
            bus_url=bus_url,
            cache_url=cache_url,
            nginx=False,
            extra_env=NODE_ENV,
        )
        with cluster:
            for node in cluster.nodes:
                if node.proc is not None:
                    pin_process(node.proc.pid, server_cpu)
            servers = ClusterServers(cluster.nodes, broker_process(bus_url))
            roles = asyncio.run(plan_parley(args, cluster.nodes[0].url))
            spread(roles, [n.url for n in cluster.nodes], apart=args.scenario == "latency")
            print(f"{label}: {len(roles)} connections, {args.scenario}", file=sys.stderr)
            run = run_load(servers, roles, args, baseline=False, gen_cpus=gen_cpus)
            run["server"] = label
            run["bus"] = urlsplit(bus_url).scheme
            run.update(servers.window(run))
    return run


def _cluster_line(run: dict[str, Any]) -> str:
    per_node = " + ".join(f"{x:.1f}" for x in run.get("node_cpu_us_per_delivery") or () if x)
    broker = run.get("broker_cpu_us_per_send")
    postgres = run.get("postgres_cpu_us_per_send")
    return (
        f"{run['server']:>8}: nodes {per_node} µs/delivery"
        + (f"  broker {broker:.0f} µs/send" if broker is not None else "")
        + (f"  postgres {postgres:.0f} µs/send" if postgres is not None else "")
    )


def run(args: argparse.Namespace) -> int:
    """``parley bench`` with ``--nodes``/``--bus``, or ``failover``."""
    if args.scenario not in ("fanout", "latency", "failover"):
        print(
            f"parley bench: a cluster runs fanout, latency and failover, not {args.scenario}",
            file=sys.stderr,
        )
        return 2
    if not args.bus:
        print("parley bench: a cluster needs --bus (redis://, nats:// or amqp://)", file=sys.stderr)
        return 2
    nodes = args.nodes or (3 if args.scenario == "failover" else 1)
    prefix = f"bench{secrets.token_hex(5)}"
    bus_url = with_prefix(args.bus, prefix)
    cache_url = cache_for(args, prefix)
    try:
        LocalCluster(
            Path("."),
            nodes_count=nodes,
            database_url=args.database_url,
            bus_url=bus_url,
            cache_url=cache_url,
            nginx=args.scenario == "failover",
        ).check()
    except ValueError as exc:
        print(f"parley bench: {exc}", file=sys.stderr)
        return 2
    if args.scenario == "failover":
        with database(args.database_url, args.fresh_database) as db:
            result = failover(args, nodes, bus_url, db, cache_url)
        _write(args, result, [])
        failed = result["lost"] or result["duplicated"] or result["stored_duplicates"]
        return 1 if failed or result["all_back_s"] is None else 0
    runs: list[dict[str, Any]] = []
    scheme = urlsplit(bus_url).scheme
    with database(args.database_url, args.fresh_database) as db:
        runs.append(
            cluster_run(
                args,
                nodes=nodes,
                bus_url=bus_url,
                database_url=db,
                cache_url=cache_url,
                label=f"parley {nodes}x{scheme}",
            )
        )
        print(_summary(runs[-1]))
        print(_cluster_line(runs[-1]))
        if not args.no_bus_reference:
            runs.append(
                cluster_run(
                    args,
                    nodes=1,
                    bus_url="memory://",
                    database_url=db,
                    cache_url="memory://",
                    label="parley 1xmemory",
                )
            )
            print(_summary(runs[-1]))
            print(_cluster_line(runs[-1]))
    if not args.no_baseline:
        server_cpu, gen_cpus = _cpus(args)
        runs.extend(run_baseline(args, server_cpu, gen_cpus))
    report: dict[str, Any] = {
        "scenario": args.scenario,
        "options": _options(args),
        "machine": {"cpus": os.cpu_count(), "server_cpus": sorted(_cpus(args)[0])},
        "runs": [{k: v for k, v in r.items() if not k.startswith("_")} for r in runs],
    }
    report.update(compare(runs))
    for key in ("bus_cost", "ratio_to_ceiling"):
        if key in report:
            print(f"{key}: {json.dumps(report[key])}")
    failed = any(r["lost"] or r["duplicated"] for r in runs if r["server"] != "baseline")
    _write(args, report, runs)
    return 1 if failed else 0


def compare(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """The cluster's run against the in-process bus's (``bus_cost``) and the
    ceiling's (``ratio_to_ceiling``), per delivery and per send."""
    by = {r["server"]: r for r in runs}
    cluster = runs[0]
    out: dict[str, Any] = {}
    reference = by.get("parley 1xmemory")
    if reference is not None and reference is not cluster:
        cost: dict[str, Any] = {}
        for unit in ("send", "delivery"):
            mine, theirs = (r[f"server_cpu_us_per_{unit}"] for r in (cluster, reference))
            if mine and theirs:
                cost[f"nodes_us_per_{unit}_over_in_process"] = mine - theirs
                cost[f"nodes_ratio_per_{unit}_to_in_process"] = mine / theirs
        if cluster.get("broker_cpu_us_per_send") is not None:
            cost["broker_us_per_event"] = cluster["broker_cpu_us_per_send"]
        out["bus_cost"] = cost
    baseline = by.get("baseline")
    if baseline is not None:
        ratio: dict[str, float] = {}
        for r in runs[:-1]:
            if r["server_cpu_us_per_delivery"] and baseline["server_cpu_us_per_delivery"]:
                ratio[r["server"]] = (
                    r["server_cpu_us_per_delivery"] / baseline["server_cpu_us_per_delivery"]
                )
        out["ratio_to_ceiling"] = {"server_cpu_per_delivery": ratio}
    return out


def _options(args: argparse.Namespace) -> dict[str, Any]:
    hidden = ("func", "out", "database_url", "bus", "cache_url")
    options = {k: v for k, v in vars(args).items() if k not in hidden}
    # the scheme and host only: a URL may carry a password
    for key in ("bus", "database_url", "cache_url"):
        value = getattr(args, key, None)
        if value:
            parts = urlsplit(value)
            options[key] = f"{parts.scheme}://{parts.hostname}:{parts.port or ''}"
    return options


def _write(args: argparse.Namespace, report: dict[str, Any], runs: list[dict[str, Any]]) -> None:
    args.out.mkdir(parents=True, exist_ok=True)
    nodes = report.get("runs", [{}])[0].get("nodes") or report.get("nodes")
    stem = args.out / (
        f"{args.scenario}-{nodes}nodes-{time.strftime('%Y%m%d-%H%M%S')}-{uuid.uuid4().hex[:4]}"
    )
    stem.with_suffix(".json").write_text(json.dumps(report, indent=2))
    plotted = bool(runs) and write_plot(stem.with_suffix(".png"), runs)
    print(f"wrote {stem}.json" + (f" and {stem}.png" if plotted else ""), file=sys.stderr)


# failover


@dataclass
class FailoverPlan:
    url: str
    room: str
    tokens: list[str]
    cpus: set[int]


def failover_worker(plan: FailoverPlan, pipe: Pipe) -> None:
    """A generator process of ``failover``: its share of the clients."""
    with contextlib.suppress(OSError, AttributeError):
        if plan.cpus:
            os.sched_setaffinity(0, plan.cpus)
    import uvloop

    uvloop.run(_failover_worker(plan, pipe))


class _Watcher:
    """One SDK client in the room: what it received, each body once."""

    def __init__(self, client: ParleyClient) -> None:
        self.live = client.live(queue_size=1 << 16)
        self.seen: set[str] = set()
        self.duplicates = 0
        self.want = 0

    async def read(self) -> None:
        while True:
            event = await self.live.next_event()
            message = event.get("message")
            if event.get("type") == "message.created" and isinstance(message, dict):
                body = str(message["body"])
                if body in self.seen:
                    self.duplicates += 1
                self.seen.add(body)

    def back(self, killed_at: float | None) -> bool:
        """Everything wanted arrived and, if this client lost its node, it was
        answered ``resumed`` on its new connection."""
        if len(self.seen) < self.want:
            return False
        if killed_at is None or self.live.connects <= 1:
            return True
        resumed = self.live.resumed_at
        return resumed is not None and resumed > killed_at


async def _failover_worker(plan: FailoverPlan, pipe: Pipe) -> None:
    limits = httpx.Limits(max_connections=64)
    async with httpx.AsyncClient(timeout=60, limits=limits) as http:
        watchers = [
            _Watcher(ParleyClient(plan.url, access_token=t, http=http)) for t in plan.tokens
        ]
        semaphore = asyncio.Semaphore(32)

        async def start(w: _Watcher) -> None:
            async with semaphore:
                async with asyncio.timeout(FAILOVER_TIMEOUT):
                    await w.live.start()

        await asyncio.gather(*(start(w) for w in watchers))
        readers = [asyncio.create_task(w.read()) for w in watchers]
        pipe.send(("ready", len(watchers)))
        while True:
            command = await _recv(pipe)
            if command[0] == "close":
                break
            _, want, killed_at = command
            for w in watchers:
                w.want = want
            deadline = time.monotonic() + FAILOVER_TIMEOUT
            # the SDK keeps the time of its resumed answer, not an event to await
            while time.monotonic() < deadline and not all(w.back(killed_at) for w in watchers):  # noqa: ASYNC110
                await asyncio.sleep(0.005)
            moved = [w for w in watchers if killed_at is not None and w.live.connects > 1]
            pipe.send(
                (
                    "state",
                    {
                        "clients": len(watchers),
                        "complete": sum(w.back(killed_at) for w in watchers),
                        "moved": len(moved),
                        "back_s": [
                            w.live.resumed_at - killed_at
                            for w in moved
                            if killed_at is not None
                            and w.live.resumed_at is not None
                            and w.live.resumed_at > killed_at
                        ],
                        "unique": sum(len(w.seen) for w in watchers),
                        "missing": sum(max(0, want - len(w.seen)) for w in watchers),
                        "duplicates": sum(w.duplicates for w in watchers),
                    },
                )
            )
        for task in readers:
            task.cancel()
        with contextlib.suppress(Exception):
            async with asyncio.timeout(10):
                await asyncio.gather(*(w.live.close() for w in watchers), return_exceptions=True)
    pipe.send(("closed", None))


async def _failover_setup(url: str, clients: int) -> tuple[str, list[str], ParleyClient]:
    """A room, a sender, and ``clients`` access tokens of members (five connections
    a user, as one user's devices)."""
    per_user = 5
    async with httpx.AsyncClient(timeout=60) as http:
        tag = secrets.token_hex(2)
        users = await _register(http, url, max(1, -(-clients // per_user)) + 1, tag)
        owner = users[0]
        room = str((await owner.create_room(f"failover-{tag}"))["id"])
        semaphore = asyncio.Semaphore(16)

        async def join(client: ParleyClient) -> None:
            async with semaphore:
                await client.join(room)

        await asyncio.gather(*(join(u) for u in users[1:]))
        members = users[1:]
        tokens = [str(members[i % len(members)].access_token) for i in range(clients)]
        return room, tokens, owner


async def _send_phase(url: str, token: str, room: str, phase: int) -> None:
    """``FAILOVER_MESSAGES`` messages over REST through nginx, each retried with its
    ``client_msg_id`` until stored (a request may meet the killed node)."""
    async with httpx.AsyncClient(timeout=10) as http:
        sender = ParleyClient(url, access_token=token, http=http)
        for n in range(FAILOVER_MESSAGES):
            msg_id = f"failover-{phase}-{n}-{uuid.uuid4().hex[:8]}"
            for attempt in range(50):
                try:
                    await sender.post_message(room, f"phase{phase} {n}", client_msg_id=msg_id)
                    break
                except Exception:
                    if attempt == 49:
                        raise
                    await asyncio.sleep(0.1)


async def _stored(url: str, token: str, room: str) -> list[str]:
    """Every message body in the room, from the database (through nginx)."""
    async with httpx.AsyncClient(timeout=30) as http:
        reader = ParleyClient(url, access_token=token, http=http)
        bodies: list[str] = []
        after = 0
        while True:
            events, more = await reader.events(room, after_seq=after, limit=200)
            for event in events:
                after = max(after, int(event["seq"]))
                message = event.get("message")
                if event.get("type") == "message.created" and isinstance(message, dict):
                    bodies.append(str(message["body"]))
            if not more or not events:
                return bodies


def failover(
    args: argparse.Namespace, nodes: int, bus_url: str, database_url: str | None, cache_url: str
) -> dict[str, Any]:
    """N nodes behind nginx, ``--clients`` clients through it, one node killed
    (``--drain``: stopped with SIGTERM, so that it drains and closes with 1012)."""
    processes = args.processes or 2
    with tempfile.TemporaryDirectory(prefix="parley-bench-failover-") as work:
        cluster = LocalCluster(
            Path(work),
            nodes_count=nodes,
            database_url=database_url,
            bus_url=bus_url,
            cache_url=cache_url,
            nginx=True,
            extra_env=NODE_ENV,
        )
        with cluster:
            room, tokens, owner = asyncio.run(_failover_setup(cluster.url, args.clients))
            ctx = mp.get_context("spawn")
            workers = []
            for i in range(processes):
                share = tokens[i::processes]
                if not share:
                    continue
                parent, child = ctx.Pipe()
                plan = FailoverPlan(cluster.url, room, share, set())
                proc = ctx.Process(target=failover_worker, args=(plan, child), daemon=True)
                proc.start()
                child.close()
                workers.append((proc, parent))
            try:
                started = time.monotonic()
                connected = sum(pipe.recv()[1] for _, pipe in workers)
                connect_s = time.monotonic() - started
                print(
                    f"failover: {connected} clients connected in {connect_s:.1f} s", file=sys.stderr
                )
                token = str(owner.access_token)

                def phase(n: int, killed_at: float | None) -> dict[str, Any]:
                    for _, pipe in workers:
                        pipe.send(("wait", n * FAILOVER_MESSAGES, killed_at))
                    states = [pipe.recv()[1] for _, pipe in workers]
                    return {
                        "clients": sum(s["clients"] for s in states),
                        "complete": sum(s["complete"] for s in states),
                        "moved": sum(s["moved"] for s in states),
                        "back_s": sorted(x for s in states for x in s["back_s"]),
                        "missing": sum(s["missing"] for s in states),
                        "duplicates": sum(s["duplicates"] for s in states),
                        "unique": sum(s["unique"] for s in states),
                    }

                asyncio.run(_send_phase(cluster.url, token, room, 1))
                before = phase(1, None)
                victim = cluster.nodes[-1]
                killed_at = time.monotonic()
                stopped: int | None = None
                if args.drain:
                    stopped = cluster.stop_node(victim)
                else:
                    cluster.kill_node(victim)
                asyncio.run(_send_phase(cluster.url, token, room, 2))
                during = phase(2, killed_at)
                all_back_s = time.monotonic() - killed_at
                asyncio.run(_send_phase(cluster.url, token, room, 3))
                after = phase(3, killed_at)
                stored = asyncio.run(_stored(cluster.url, token, room))
                for _, pipe in workers:
                    pipe.send(("close",))
                for _, pipe in workers:
                    with contextlib.suppress(EOFError):
                        pipe.recv()
            finally:
                for proc, _ in workers:
                    proc.join(30)
                    if proc.is_alive():
                        proc.kill()
    backs = [int(x * 1e9) for x in during["back_s"]]
    expected = 3 * FAILOVER_MESSAGES
    report: dict[str, Any] = {
        "scenario": "failover",
        "options": _options(args),
        "stop": "drain" if args.drain else "kill -9",
        "drained_exit": stopped,
        "nodes": nodes,
        "clients": connected,
        "generator_processes": len(workers),
        "connect_s": connect_s,
        "killed_node_clients": during["moved"],
        "back_ms": {
            "count": len(backs),
            "p50": _percentile(backs, 50),
            "p99": _percentile(backs, 99),
            "max": _percentile(backs, 100),
        },
        # from the kill until every client had the messages sent after it and every
        # client of the killed node had its resumed answer (polled every 5 ms)
        "all_back_s": all_back_s if during["complete"] == during["clients"] else None,
        "not_back": during["clients"] - during["complete"],
        "phases": {"before": before, "during": during, "after": after},
        "lost": after["missing"],
        "duplicated": after["duplicates"],
        "stored_messages": len(stored),
        "stored_duplicates": len(stored) - len(set(stored)),
        "stored_expected": expected,
    }
    for name in ("before", "during", "after"):
        report["phases"][name].pop("back_s", None)
    back = report["back_ms"]
    print(
        f"failover: {nodes} nodes, {connected} clients, {during['moved']} on the killed node;"
        f" back (kill → resumed) p50 {back['p50']:.0f} p99 {back['p99']:.0f}"
        f" max {back['max']:.0f} ms; all back in "
        + (f"{all_back_s:.2f} s" if report["all_back_s"] is not None else "never")
        + f"; lost {report['lost']} dup {report['duplicated']};"
        f" stored {len(stored)} of {expected} ({report['stored_duplicates']} twice)"
    )
    return report
