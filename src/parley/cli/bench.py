"""``parley bench``: a load generator on the SDK, with a ceiling baseline.

Scenarios
    ``fanout``           one room, R receivers, S senders in a closed loop on acks
    ``dms``              P direct rooms, one sender and one receiver each
    ``idle``             N idle connections: server memory per connection
    ``reconnect-storm``  N clients in one room drop at once and resume
    ``latency``          R rooms of M members, one sender each, paced to a total rate
    ``presence``         N users each watching S others, some changing status (``bench_presence``)
    ``failover``         clients of a cluster behind nginx, one node killed (``bench_cluster``)
    ``rolling-restart``  senders through nginx while every node restarts in turn (``bench_rolling``)
    ``search``           search over N stored messages on SQLite and PostgreSQL (``bench_search``)

``--nodes N --bus URL --database-url postgresql://…`` runs ``fanout`` or ``latency``
against N nodes on this machine instead (``bench_cluster``).

By default it starts its own server (``parley serve`` with ``PARLEY_RATE_LIMITS=off``
and a temp data dir) pinned to one core, and its generator processes pinned to the
others, since one Python client process saturates before the server (measured here).
Each message body carries its send time, so a receipt gives the end-to-end latency;
bodies are keyed (sender, n), so losses and duplicates are counted, not guessed.
It reports sends/s, deliveries/s, latency p50/p90/p99/max, lost and duplicated,
server RSS and CPU (psutil), and the generators' own CPU (to show who was the
bottleneck); the server's commit times, and the fsync times of its disk probed
beside the load (``DiskProbe``: a stalling disk shows in the latency tail), and
the store floor (``parley.store.floor``: the database's own CPU per send at the
commit sizes the server reached, on its core and disk, with no server around it);
then runs the same load against a minimal aiohttp broadcast server
(``bench_baseline``: no auth, no storage) and reports Parley as a ratio of it.
Results go to ``--out`` as JSON and a PNG (latency histogram, deliveries over time).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import gc
import json
import multiprocessing as mp
import os
import random
import secrets
import socket
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections import Counter
from collections.abc import Callable, Coroutine, Iterator
from dataclasses import dataclass, field
from datetime import datetime
from multiprocessing.connection import Connection as Pipe
from pathlib import Path
from typing import Any

import httpx

from parley.cli.bench_lean import LeanReceiver
from parley.client import Backoff, Live, ParleyClient

SCENARIOS = (
    "fanout",
    "dms",
    "idle",
    "reconnect-storm",
    "latency",
    "presence",
    "failover",
    "rolling-restart",
    "search",
)
SETUP_CONCURRENCY = 16
DRAIN_GRACE = 10.0


# processes: the server under test, the baseline, the generators


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _pin(cpus: set[int]) -> None:
    with contextlib.suppress(OSError, AttributeError):
        if cpus:
            os.sched_setaffinity(0, cpus)


SERVER_FILES = 65536
"""Open files for the server under test: ``idle`` holds 20,000 connections and more,
over the hard limit of some machines (raised where the bench may: as root)."""


def _server_limits(cpus: set[int]) -> None:
    _pin(cpus)
    import resource

    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    wanted = max(soft, SERVER_FILES)
    with contextlib.suppress(OSError, ValueError):
        resource.setrlimit(resource.RLIMIT_NOFILE, (wanted, max(hard, wanted)))


@dataclass
class ServerProcess:
    """A server subprocess on one core, measured with psutil (``proc`` is ``None``
    for a server started elsewhere: not measured)."""

    url: str
    proc: subprocess.Popen[bytes] | None
    data_dir: Path | None = None
    """Where its database lives, when the benchmark started it (for ``DiskProbe``)."""

    @classmethod
    def start(cls, argv: list[str], env: dict[str, str], port: int, cpu: set[int]) -> ServerProcess:
        proc = subprocess.Popen(  # noqa: S603 - our own interpreter and module
            argv,
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            preexec_fn=lambda: _server_limits(cpu),
        )
        url = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                raise RuntimeError(f"{argv[2:]} exited with {proc.returncode}")
            with contextlib.suppress(httpx.HTTPError):
                if httpx.get(f"{url}/healthz", timeout=1).status_code == 200:
                    return cls(url, proc)
            time.sleep(0.05)
        proc.kill()
        raise RuntimeError("the server did not start")

    def usage(self) -> tuple[float, int]:
        """CPU seconds so far and RSS bytes."""
        import psutil

        if self.proc is None:
            return 0.0, 0
        process = psutil.Process(self.proc.pid)
        times = process.cpu_times()
        return times.user + times.system, int(process.memory_info().rss)

    def thread_cpu(self) -> dict[int, float]:
        """CPU seconds so far of each thread (the first is the event loop's)."""
        import psutil

        if self.proc is None:
            return {}
        return {t.id: t.user_time + t.system_time for t in psutil.Process(self.proc.pid).threads()}

    def stop(self) -> None:
        if self.proc is None:
            return
        self.proc.terminate()
        try:
            self.proc.wait(15)
        except subprocess.TimeoutExpired:
            self.proc.kill()


def start_parley(data_dir: Path, cpu: set[int]) -> ServerProcess:
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("PARLEY_")} | {
        "PARLEY_DATA_DIR": str(data_dir),
        "PARLEY_PORT": str(port),
        "PARLEY_RATE_LIMITS": "off",
        "PARLEY_LOG_LEVEL": "warning",
        "PARLEY_ARGON2_TIME_COST": "1",
        "PARLEY_ARGON2_MEMORY_KIB": "1024",
        "PARLEY_OUTBOUND_QUEUE": "4096",
    }
    server = ServerProcess.start([sys.executable, "-m", "parley.cli.main", "serve"], env, port, cpu)
    server.data_dir = data_dir
    return server


def start_baseline(cpu: set[int]) -> ServerProcess:
    port = free_port()
    argv = [sys.executable, "-m", "parley.cli.bench_baseline", "--port", str(port)]
    return ServerProcess.start(argv, dict(os.environ), port, cpu)


# the plan: who does what, decided by the parent, carried out by the workers


@dataclass
class Role:
    kind: str  # "sender" | "receiver" | "idle" | "storm"
    token: str
    room: str
    name: str
    expect: int = 0
    messages: int = 0
    rate: float = 0.0  # sends per second, paced (open loop); 0: closed loop on acks
    url: str = ""  # the node this role connects to; "": the plan's


@dataclass
class Plan:
    url: str
    baseline: bool
    size: int
    cpus: set[int]
    roles: list[Role] = field(default_factory=list)
    hold: float = 0.0
    lean: bool = False
    """Receivers on ``bench_lean`` instead of the SDK."""


async def _register(http: httpx.AsyncClient, url: str, count: int, tag: str) -> list[ParleyClient]:
    """``count`` users, registered and logged in."""
    semaphore = asyncio.Semaphore(SETUP_CONCURRENCY)
    password = secrets.token_urlsafe(16)  # throwaway accounts of this run

    async def one(i: int) -> ParleyClient:
        async with semaphore:
            client = ParleyClient(url, http=http)
            name = f"b{tag}{i}x{secrets.token_hex(3)}"
            user = await client.register(name, password)
            await client.login(name, password)
            client.user_id = user["id"]  # type: ignore[attr-defined]
            return client

    return list(await asyncio.gather(*(one(i) for i in range(count))))


async def plan_parley(args: argparse.Namespace, url: str) -> list[Role]:
    """Users and rooms on the server under test, as roles for the workers."""
    async with httpx.AsyncClient(timeout=60) as http:
        tag = secrets.token_hex(2)
        if args.scenario == "fanout":
            users = await _register(http, url, args.receivers + args.senders + 1, tag)
            owner, receivers, senders = (
                users[0],
                users[1 : 1 + args.receivers],
                users[1 + args.receivers :],
            )
            room = (await owner.create_room(f"bench-{tag}"))["id"]
            await asyncio.gather(*(u.join(room) for u in users[1:]))
            expect = args.senders * args.messages
            return [
                Role("receiver", str(u.access_token), room, f"r{i}", expect=expect)
                for i, u in enumerate(receivers)
            ] + [
                Role("sender", str(u.access_token), room, f"s{i}", messages=args.messages)
                for i, u in enumerate(senders)
            ]
        if args.scenario == "dms":
            users = await _register(http, url, 2 * args.pairs, tag)
            roles = []
            for i in range(args.pairs):
                a, b = users[2 * i], users[2 * i + 1]
                dm = (await a.open_dm(b.user_id))["id"]  # type: ignore[attr-defined]
                roles.append(
                    Role("sender", str(a.access_token), dm, f"s{i}", messages=args.messages)
                )
                roles.append(
                    Role("receiver", str(b.access_token), dm, f"r{i}", expect=args.messages)
                )
            return roles
        if args.scenario == "latency":
            return await _plan_latency(http, url, args, tag)
        if args.scenario == "idle":
            per_user = 20
            users = await _register(http, url, max(1, args.connections // per_user), tag)
            return [
                Role("idle", str(users[i % len(users)].access_token), "", f"i{i}")
                for i in range(args.connections)
            ]
        users = await _register(http, url, args.clients + 1, tag)
        room = (await users[0].create_room(f"storm-{tag}"))["id"]
        await asyncio.gather(*(u.join(room) for u in users[1:]))
        expect = args.messages
        return [
            Role("storm", str(u.access_token), room, f"c{i}", expect=expect)
            for i, u in enumerate(users[1:])
        ] + [Role("sender", str(users[0].access_token), room, "s0", messages=args.messages)]


def _latency_shape(args: argparse.Namespace) -> tuple[float, int]:
    """Each room's sender: its rate, and how many messages it sends."""
    rate = args.rate / args.rooms
    return rate, max(1, round(rate * args.seconds))


async def _plan_latency(
    http: httpx.AsyncClient, url: str, args: argparse.Namespace, tag: str
) -> list[Role]:
    """``rooms`` rooms of ``members``: the first member sends, the others receive."""
    users = await _register(http, url, args.rooms * args.members, tag)
    rate, messages = _latency_shape(args)
    semaphore = asyncio.Semaphore(SETUP_CONCURRENCY)
    roles: list[Role] = []

    async def join(client: ParleyClient, room: str) -> None:
        async with semaphore:
            await client.join(room)

    for r in range(args.rooms):
        group = users[r * args.members : (r + 1) * args.members]
        room = (await group[0].create_room(f"latency-{tag}-{r}"))["id"]
        await asyncio.gather(*(join(u, room) for u in group[1:]))
        roles.append(
            Role("sender", str(group[0].access_token), room, f"s{r}", messages=messages, rate=rate)
        )
        roles.extend(
            Role("receiver", str(u.access_token), room, f"r{r}x{i}", expect=messages)
            for i, u in enumerate(group[1:])
        )
    return roles


def plan_baseline(args: argparse.Namespace) -> list[Role]:
    """The same load for the baseline: rooms are names, there are no users."""
    if args.scenario == "fanout":
        expect = args.senders * args.messages
        return [
            Role("receiver", "", "main", f"r{i}", expect=expect) for i in range(args.receivers)
        ] + [
            Role("sender", "", "main", f"s{i}", messages=args.messages) for i in range(args.senders)
        ]
    if args.scenario == "latency":
        rate, messages = _latency_shape(args)
        roles = []
        for r in range(args.rooms):
            roles.append(Role("sender", "", f"room{r}", f"s{r}", messages=messages, rate=rate))
            roles.extend(
                Role("receiver", "", f"room{r}", f"r{r}x{i}", expect=messages)
                for i in range(args.members - 1)
            )
        return roles
    if args.scenario == "dms":
        roles = []
        for i in range(args.pairs):
            roles.append(Role("sender", "", f"dm{i}", f"s{i}", messages=args.messages))
            roles.append(Role("receiver", "", f"dm{i}", f"r{i}", expect=args.messages))
        return roles
    return [Role("idle", "", "main", f"i{i}") for i in range(args.connections)]


# the worker side


class Recorder:
    """Receipts of one worker: latency, arrival time, and per-receiver (sender, n)."""

    def __init__(self) -> None:
        self.latency_ns: list[int] = []
        self.arrivals_ns: list[int] = []
        self.ack_ns: list[int] = []
        self.to_store_ns: list[int] = []
        self.from_store_ns: list[int] = []
        self.sent = 0
        self.unique = 0
        self.duplicates = 0
        self.expected = 0
        self.errors: list[str] = []

    def receipt(self, seen: set[tuple[str, int]], body: str, stored_at: str | None = None) -> bool:
        """Record a received message body; False when ``seen`` had it already.

        ``stored_at``, the message's ``created_at`` (the server's clock, the same
        machine's, as the store took it up, before its commit), splits the latency in
        two: the way in (the sender, its connection, the server's reading and the wait
        for a commit) and the way out (the commit, the fan-out, the receiver)."""
        now = time.time_ns()
        stamp, sender, n, _ = body.split(" ", 3)
        key = (sender, int(n))
        if key in seen:
            self.duplicates += 1
            return False
        seen.add(key)
        self.unique += 1
        sent = int(stamp)
        self.latency_ns.append(now - sent)
        self.arrivals_ns.append(now)
        if stored_at is not None:
            stored = datetime.fromisoformat(stored_at).timestamp()
            stored_ns = int(stored * 1e9)
            self.to_store_ns.append(stored_ns - sent)
            self.from_store_ns.append(now - stored_ns)
        return True


def _body(role: Role, n: int, size: int) -> str:
    head = f"{time.time_ns()} {role.name} {n} "
    return head + "x" * max(1, size - len(head))


async def _paced(role: Role, send: Callable[[int], Coroutine[Any, Any, None]]) -> None:
    """Open loop: message ``n`` starts at ``n / rate`` (after a random phase, so
    senders do not all fire at once), whether or not earlier ones were acked."""
    loop = asyncio.get_running_loop()
    interval = 1.0 / role.rate
    start = loop.time() + random.uniform(0, interval)
    pending: set[asyncio.Task[None]] = set()
    for n in range(role.messages):
        delay = start + n * interval - loop.time()
        if delay > 0:
            await asyncio.sleep(delay)
        task = asyncio.create_task(send(n))
        pending.add(task)
        task.add_done_callback(pending.discard)
    if pending:
        await asyncio.gather(*pending)


class _Actor:
    """What every kind of actor keeps: its role, the plan, the worker's recorder, and
    the (sender, n) keys it received."""

    def __init__(self, role: Role, plan: Plan, rec: Recorder) -> None:
        self.role = role
        self.plan = plan
        self.rec = rec
        self.seen: set[tuple[str, int]] = set()
        self.done = asyncio.Event()


class ParleyActor(_Actor):
    """One role on the SDK."""

    def __init__(self, role: Role, plan: Plan, http: httpx.AsyncClient, rec: Recorder) -> None:
        super().__init__(role, plan, rec)
        self.client = ParleyClient(role.url or plan.url, access_token=role.token, http=http)
        self.live: Live = self.client.live(
            ping_interval=None, queue_size=1 << 20, backoff=Backoff(base=0.2, cap=5.0)
        )
        self.dropped_at: float | None = None

    async def connect(self) -> None:
        await self.live.start()

    async def send_all(self) -> None:
        if self.role.rate:
            await _paced(self.role, self._send_one)
            return
        for n in range(self.role.messages):
            await self._send_one(n)

    async def _send_one(self, n: int) -> None:
        started = time.time_ns()
        await self.live.send(self.role.room, _body(self.role, n, self.plan.size))
        self.rec.ack_ns.append(time.time_ns() - started)
        self.rec.sent += 1

    async def receive_all(self) -> None:
        got = 0
        while got < self.role.expect:
            event = await self.live.next_event()
            message = event.get("message")
            if event.get("type") == "message.created" and isinstance(message, dict):
                stored_at = message.get("created_at")
                got += self.rec.receipt(
                    self.seen,
                    str(message["body"]),
                    stored_at if isinstance(stored_at, str) else None,
                )
        if self.role.kind == "storm":
            # Every message may have arrived before the drop: still wait to be back.
            while self.back_ns() is None:  # noqa: ASYNC110 (the SDK keeps a time, not an event)
                await asyncio.sleep(0.01)
        self.done.set()

    def drop(self) -> None:
        self.dropped_at = time.monotonic()
        self.live.drop()

    def back_ns(self) -> int | None:
        """From the drop to the ``resumed`` answer on the new connection."""
        resumed = self.live.resumed_at
        if self.dropped_at is None or resumed is None or resumed < self.dropped_at:
            return None
        return int((resumed - self.dropped_at) * 1e9)

    async def close(self) -> None:
        await self.live.close()


class LeanActor(_Actor):
    """A receiver on ``bench_lean.LeanReceiver`` (``--lean-receivers``), against
    either server: both send the same ``event`` frames."""

    def __init__(self, role: Role, plan: Plan, rec: Recorder) -> None:
        super().__init__(role, plan, rec)
        self.got = 0
        self.receiver: LeanReceiver | None = None

    async def connect(self) -> None:
        if self.plan.baseline:
            path, token = f"/ws?room={self.role.room}", None
        else:
            path, token = "/api/v1/ws", self.role.token
        url = self.role.url or self.plan.url
        self.receiver = await LeanReceiver.connect(url, path, token, self._body)

    def _body(self, body: str) -> None:
        self.got += self.rec.receipt(self.seen, body)
        if self.got >= self.role.expect:
            self.done.set()

    async def receive_all(self) -> None:
        await self.done.wait()

    def drop(self) -> None:
        if self.receiver is not None:
            self.receiver.abort()

    async def close(self) -> None:
        if self.receiver is not None:
            self.rec.errors.extend(self.receiver.errors)
            await self.receiver.close()


class BaselineActor(_Actor):
    """One role against the baseline server, on raw WebSockets."""

    def __init__(self, role: Role, plan: Plan, rec: Recorder) -> None:
        super().__init__(role, plan, rec)
        self.ws: Any = None
        self.acks: asyncio.Queue[None] = asyncio.Queue()

    async def connect(self) -> None:
        from websockets.asyncio.client import connect

        url = self.plan.url.replace("http://", "ws://") + f"/ws?room={self.role.room}"
        self.ws = await connect(url, compression=None, ping_interval=None, max_queue=None)

    async def send_all(self) -> None:
        if self.role.rate:
            await self._send_paced()
            return
        reader = asyncio.create_task(self._read_acks())
        for n in range(self.role.messages):
            started = time.time_ns()
            frame = {"type": "send", "id": n, "body": _body(self.role, n, self.plan.size)}
            await self.ws.send(json.dumps(frame))
            await self.acks.get()
            self.rec.ack_ns.append(time.time_ns() - started)
            self.rec.sent += 1
        reader.cancel()

    async def _read_acks(self) -> None:
        async for raw in self.ws:
            if json.loads(raw).get("type") == "ack":
                self.acks.put_nowait(None)

    async def _send_paced(self) -> None:
        sent_at: dict[int, int] = {}
        done = asyncio.Event()

        async def acks() -> None:
            async for raw in self.ws:
                frame = json.loads(raw)
                if frame.get("type") == "ack" and frame.get("id") in sent_at:
                    self.rec.ack_ns.append(time.time_ns() - sent_at.pop(frame["id"]))
                    self.rec.sent += 1
                    if self.rec.sent >= self.role.messages:
                        done.set()

        async def send(n: int) -> None:
            sent_at[n] = time.time_ns()
            frame = {"type": "send", "id": n, "body": _body(self.role, n, self.plan.size)}
            await self.ws.send(json.dumps(frame))

        reader = asyncio.create_task(acks())
        await _paced(self.role, send)
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(DRAIN_GRACE):
                await done.wait()
        reader.cancel()

    async def receive_all(self) -> None:
        got = 0
        async for raw in self.ws:
            frame = json.loads(raw)
            if frame.get("type") != "event":
                continue
            got += self.rec.receipt(self.seen, frame["event"]["message"]["body"])
            if got >= self.role.expect:
                break
        self.done.set()

    def drop(self) -> None:
        self.ws.transport.abort()

    async def close(self) -> None:
        await self.ws.close()


def pause_gc() -> None:
    """No collections while measuring (``gc.enable()`` after): a full one stalled
    a generator process for 50-110 ms (its clients' frames), which read as the
    server's latency tail. What lives now is frozen out of the next one's sight."""
    gc.collect()
    gc.freeze()
    gc.disable()


def worker_main(plan: Plan, pipe: Pipe) -> None:
    """A generator process: its share of the roles, driven by the parent."""
    _pin(plan.cpus)
    import uvloop

    uvloop.run(_worker(plan, pipe))


def _floor_main(directory: Path, sends_per_commit: float, cpus: set[int], pipe: Pipe) -> None:
    """The store floor (``parley.store.floor``), on the server's core and disk."""
    _pin(cpus)
    from parley.store import floor

    pipe.send(floor.measure(directory, sends_per_commit))


def store_floor(
    server: ServerProcess, run: dict[str, Any], cpus: set[int]
) -> dict[str, Any] | None:
    """The database's own CPU per send at the commit sizes the server reached in
    ``run``, measured beside it in a process of its own; None when the bench did
    not start the server (its disk is unknown) or nothing was committed."""
    commits = (run.get("server_commit_ms") or {}).get("count")
    if server.data_dir is None or not commits or not run["sends"]:
        return None
    ctx = mp.get_context("spawn")
    parent, child = ctx.Pipe()
    proc = ctx.Process(
        target=_floor_main, args=(server.data_dir, run["sends"] / commits, cpus, child)
    )
    proc.start()
    child.close()  # so that a child that fails (its traceback on stderr) ends recv
    try:
        figures: dict[str, Any] = parent.recv()
    except EOFError:
        figures = {}
    proc.join(60)
    return figures or None


async def _loop_lag(lags: list[float], every: float = 0.01) -> None:
    """How late this generator's loop runs a timer, while sending: a generator
    that stalls (its core taken, a long callback) delays every receipt and send
    in it, and that reads as the server's latency."""
    loop = asyncio.get_running_loop()
    while True:
        due = loop.time() + every
        await asyncio.sleep(every)
        lags.append(loop.time() - due)


async def _recv(pipe: Pipe) -> Any:
    return await asyncio.get_running_loop().run_in_executor(None, pipe.recv)


async def _worker(plan: Plan, pipe: Pipe) -> None:
    rec = Recorder()
    limits = httpx.Limits(max_connections=64)
    async with httpx.AsyncClient(timeout=60, limits=limits) as http:
        actors: list[ParleyActor | BaselineActor | LeanActor] = [
            LeanActor(r, plan, rec)
            if plan.lean and r.kind == "receiver"
            else BaselineActor(r, plan, rec)
            if plan.baseline
            else ParleyActor(r, plan, http, rec)
            for r in plan.roles
        ]
        semaphore = asyncio.Semaphore(64)

        async def connect(actor: ParleyActor | BaselineActor | LeanActor) -> None:
            async with semaphore:
                await actor.connect()

        await asyncio.gather(*(connect(a) for a in actors))
        rec.expected = sum(a.role.expect for a in actors)
        pause_gc()
        pipe.send(("ready", len(actors)))
        command = await _recv(pipe)
        assert command[0] == "go"
        go_times, go_wall = os.times(), time.perf_counter()
        lags: list[float] = []
        lag_probe = asyncio.create_task(_loop_lag(lags))
        receivers = [
            asyncio.create_task(a.receive_all())
            for a in actors
            if a.role.kind in ("receiver", "storm") and a.role.expect
        ]
        senders = [
            a.send_all() for a in actors if a.role.kind == "sender" and not isinstance(a, LeanActor)
        ]
        storm = [a for a in actors if a.role.kind == "storm"]
        dropped = asyncio.Event()

        def drop() -> None:
            for actor in storm:
                actor.drop()
            dropped.set()

        if storm:
            asyncio.get_running_loop().call_later(command[1], drop)
        await asyncio.gather(*senders)
        if storm:
            await dropped.wait()
        if plan.hold:
            await asyncio.sleep(plan.hold)  # idle: what keeping connections costs
        lag_probe.cancel()
        sent_times = os.times()
        sending = (
            sent_times.user + sent_times.system - go_times.user - go_times.system,
            time.perf_counter() - go_wall,
        )
        pipe.send(("sent", rec.sent))
        command = await _recv(pipe)
        assert command[0] == "drain"
        if receivers:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(command[1]):
                    await asyncio.gather(*receivers)
        for task in receivers:
            task.cancel()
        gc.enable()
        connects = [a.live.connects for a in actors if isinstance(a, ParleyActor)]
        # What the SDK mended on its own: a gap costs a REST round trip before the
        # events behind it are delivered (a server that skips or reorders a seq).
        mended = [
            (a.live.gaps_repaired, a.live.duplicates) for a in actors if isinstance(a, ParleyActor)
        ]
        backs = [a.back_ns() for a in storm if isinstance(a, ParleyActor)]
        with contextlib.suppress(Exception):
            async with asyncio.timeout(10):
                await asyncio.gather(*(a.close() for a in actors), return_exceptions=True)
    times = os.times()
    pipe.send(
        (
            "result",
            {
                "latency_ns": rec.latency_ns,
                "arrivals_ns": rec.arrivals_ns,
                "ack_ns": rec.ack_ns,
                "to_store_ns": rec.to_store_ns,
                "from_store_ns": rec.from_store_ns,
                "sent": rec.sent,
                "unique": rec.unique,
                "duplicates": rec.duplicates,
                "expected": rec.expected,
                "reconnects": sum(max(0, c - 1) for c in connects),
                "sdk_gaps_repaired": sum(g for g, _ in mended),
                "sdk_duplicates_dropped": sum(d for _, d in mended),
                "back_ns": [b for b in backs if b is not None],
                "not_back": sum(b is None for b in backs),
                "errors": rec.errors,
                "cpu_s": times.user + times.system,
                "sending_cpu_s": sending[0],
                "sending_s": sending[1],
                "loop_lag_s": lags,
            },
        )
    )


# the parent: run one load against one server


def _split(roles: list[Role], n: int) -> list[list[Role]]:
    """Deal roles round-robin, senders and receivers spread evenly."""
    shares: list[list[Role]] = [[] for _ in range(n)]
    for i, role in enumerate(sorted(roles, key=lambda r: r.kind)):
        shares[i % n].append(role)
    return [s for s in shares if s]


def _percentile(sorted_values: list[int], p: float) -> float:
    if not sorted_values:
        return float("nan")
    index = min(len(sorted_values) - 1, round(p / 100 * (len(sorted_values) - 1)))
    return sorted_values[index] / 1e6


class DiskProbe:
    """An fsync'd 4 KiB write every ``interval`` on the server's disk, timed, beside
    the load: the disk's own stalls. An acknowledged send waits for its commit's
    fsync, so a disk that stalls for 300 ms puts 300 ms into the latency tail
    whatever the server does; the probe tells such a run from a slow server."""

    def __init__(self, directory: Path, interval: float = 0.02) -> None:
        self.path = directory / f"disk-probe-{uuid.uuid4().hex[:8]}"
        self.interval = interval
        self.ns: list[int] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="parley-bench-disk", daemon=True)

    def start(self) -> DiskProbe:
        self._thread.start()
        return self

    def stop(self) -> dict[str, float] | None:
        """Stop; the fsync latencies seen (ms): p50, p99, max, and how many took
        over 50 ms."""
        self._stop.set()
        self._thread.join()
        done = sorted(self.ns)
        if not done:
            return None
        return {
            "count": len(done),
            "p50": _percentile(done, 50),
            "p99": _percentile(done, 99),
            "max": _percentile(done, 100),
            "over_50ms": sum(1 for x in done if x > 50_000_000),
        }

    def _run(self) -> None:
        page = os.urandom(4096)
        try:
            fd = os.open(self.path, os.O_WRONLY | os.O_CREAT, 0o600)
        except OSError as exc:
            print(f"disk probe skipped: {exc}", file=sys.stderr)
            return
        try:
            while True:
                started = time.perf_counter_ns()
                os.pwrite(fd, page, 0)
                os.fdatasync(fd)
                self.ns.append(time.perf_counter_ns() - started)
                if self._stop.wait(self.interval):
                    break
        except OSError as exc:  # a full disk, say: the figures so far stand
            print(f"disk probe stopped: {exc}", file=sys.stderr)
        finally:
            os.close(fd)
            self.path.unlink(missing_ok=True)


def run_load(
    server: ServerProcess,
    roles: list[Role],
    args: argparse.Namespace,
    *,
    baseline: bool,
    gen_cpus: list[int],
) -> dict[str, Any]:
    """Drive ``roles`` against ``server`` from worker processes; the figures."""
    processes = args.processes or max(1, len(gen_cpus))
    ctx = mp.get_context("spawn")
    workers = []
    for i, share in enumerate(_split(roles, processes)):
        cpus = {gen_cpus[i % len(gen_cpus)]} if gen_cpus else set()
        hold = args.hold if args.scenario == "idle" else 0.0
        plan = Plan(
            server.url, baseline, args.size, cpus, share, hold=hold, lean=args.lean_receivers
        )
        parent, child = ctx.Pipe()
        proc = ctx.Process(target=worker_main, args=(plan, child), daemon=True)
        proc.start()
        workers.append((proc, parent))
    probe: DiskProbe | None = None
    try:
        _, rss_idle = server.usage()
        for _, pipe in workers:
            kind, _ = pipe.recv()
            assert kind == "ready"
        resumes0 = None if baseline else _histogram(server.url, "parley_resume_seconds")
        sends0 = None if baseline else _histogram(server.url, "parley_send_seconds")
        lags0 = None if baseline else _histogram(server.url, "parley_loop_lag_seconds")
        commits0 = None if baseline else _histogram(server.url, "parley_store_commit_seconds")
        probe = DiskProbe(server.data_dir).start() if server.data_dir is not None else None
        cpu0, rss_connected = server.usage()
        threads0 = server.thread_cpu()
        t0 = time.time_ns()
        for _, pipe in workers:
            pipe.send(("go", args.storm_after))
        sent = sum(pipe.recv()[1] for _, pipe in workers)
        t_sent = time.time_ns()
        cpu_sent, _ = server.usage()
        # While sending (idle: holding), not while the clients disconnect at the end.
        lags1 = None if baseline else _histogram(server.url, "parley_loop_lag_seconds")
        commits1 = None if baseline else _histogram(server.url, "parley_store_commit_seconds")
        disk = probe.stop() if probe is not None else None
        for _, pipe in workers:
            pipe.send(("drain", DRAIN_GRACE))
        results = [pipe.recv()[1] for _, pipe in workers]
        cpu1, rss_end = server.usage()
        threads1 = server.thread_cpu()
        t_end = time.time_ns()
        resumes1 = None if baseline else _histogram(server.url, "parley_resume_seconds")
        sends1 = None if baseline else _histogram(server.url, "parley_send_seconds")
    finally:
        if probe is not None:
            probe.stop()
        for proc, _ in workers:
            proc.join(30)
            if proc.is_alive():
                proc.kill()
    latency = sorted(x for r in results for x in r["latency_ns"])
    arrivals = sorted(x for r in results for x in r["arrivals_ns"])
    acks = sorted(x for r in results for x in r["ack_ns"])
    to_store = sorted(x for r in results for x in r["to_store_ns"])
    from_store = sorted(x for r in results for x in r["from_store_ns"])
    deliveries = len(latency)
    t_last = arrivals[-1] if arrivals else t_sent
    expected = sum(r["expected"] for r in results)
    server_cpu = cpu1 - cpu0
    connections = len(roles)
    figures: dict[str, Any] = {
        "server": "baseline" if baseline else "parley",
        "connections": connections,
        "sends": sent,
        "sends_per_s": sent / max(1e-9, (t_sent - t0) / 1e9),
        "deliveries": deliveries,
        "deliveries_per_s": deliveries / max(1e-9, (t_last - t0) / 1e9),
        "latency_ms": {
            "p50": _percentile(latency, 50),
            "p90": _percentile(latency, 90),
            "p99": _percentile(latency, 99),
            "p99.9": _percentile(latency, 99.9),
            "max": latency[-1] / 1e6 if latency else float("nan"),
        },
        "ack_ms": {"p50": _percentile(acks, 50), "p99": _percentile(acks, 99)},
        # The latency split at the server's created_at (SDK receivers only).
        "latency_split_ms": {
            "to_store": {"p50": _percentile(to_store, 50), "p99": _percentile(to_store, 99)},
            "from_store": {"p50": _percentile(from_store, 50), "p99": _percentile(from_store, 99)},
        }
        if to_store
        else None,
        "lost": expected - deliveries,
        "duplicated": sum(r["duplicates"] for r in results),
        "reconnects": sum(r["reconnects"] for r in results),
        "sdk_gaps_repaired": sum(r["sdk_gaps_repaired"] for r in results),
        "sdk_duplicates_dropped": sum(r["sdk_duplicates_dropped"] for r in results),
        "client_back_ms": _client_backs(results),
        # What a correct server never sends (lean receivers check seqs and opcodes).
        "protocol_errors": sum(len(r["errors"]) for r in results),
        "protocol_error_samples": [e for r in results for e in r["errors"]][:10],
        "server_cpu_s": server_cpu,
        "server_resume_ms": _bucket_quantiles(resumes0, resumes1),
        # Send frame to ack inside the server: what the client's latency owes to it.
        "server_send_ms": _bucket_quantiles(sends0, sends1),
        "server_loop_lag_ms": _bucket_quantiles(lags0, lags1),
        # Each group commit's transaction, its fsync included, while sending.
        "server_commit_ms": _bucket_quantiles(commits0, commits1),
        # The disk under the server's database, probed while sending: its stalls are
        # the floor of the latency tail of a durable ack.
        "disk_fsync_ms": disk,
        "server_cpu_percent_of_core": 100 * server_cpu / max(1e-9, (t_end - t0) / 1e9),
        # From go to the last send (idle: the whole hold, heartbeats only, before
        # the clients close their connections).
        "server_cpu_percent_while_sending": 100
        * (cpu_sent - cpu0)
        / max(1e-9, (t_sent - t0) / 1e9),
        "server_thread_cpu_s": _thread_split(server, threads0, threads1),
        "server_cpu_us_per_delivery": server_cpu * 1e6 / deliveries if deliveries else None,
        # Everything the server did for a send, its deliveries included.
        "server_cpu_us_per_send": server_cpu * 1e6 / sent if sent else None,
        "server_rss_mib": {
            "idle": rss_idle / 2**20,
            "connected": rss_connected / 2**20,
            "end": rss_end / 2**20,
        },
        "memory_per_connection_kib": (rss_connected - rss_idle) / 1024 / max(1, connections),
        "generator_cpu_s": [r["cpu_s"] for r in results],
        # Each generator's own loop lag while sending (ms): its stalls, not the server's.
        "generator_loop_lag_ms": [
            {"p99": _percentile(lag, 99), "max": _percentile(lag, 100)} if lag else None
            for lag in (sorted(int(x * 1e9) for x in r["loop_lag_s"]) for r in results)
        ],
        # Each generator process's share of a core from go to its last ack: where
        # they share one core, a sum near 100 means the generator was the bottleneck.
        "generator_cpu_percent_while_sending": [
            100 * r["sending_cpu_s"] / max(1e-9, r["sending_s"]) for r in results
        ],
        "duration_s": (t_last - t0) / 1e9,
        "_arrivals_ns": [a - t0 for a in arrivals],
        "_latency_ns": latency,
    }
    return figures


def _histogram(url: str, name: str) -> dict[float, float] | None:
    """A histogram's cumulative bucket counts from the server's ``/metrics``."""
    from prometheus_client.parser import text_string_to_metric_families

    try:
        text = httpx.get(f"{url}/metrics", timeout=10).text
    except httpx.HTTPError:
        return None
    for family in text_string_to_metric_families(text):
        if family.name == name:
            return {
                float(sample.labels["le"]): sample.value
                for sample in family.samples
                if sample.name.endswith("_bucket")
            }
    return None


def _bucket_quantiles(
    before: dict[float, float] | None, after: dict[float, float] | None
) -> dict[str, float] | None:
    """Server-side quantiles of what happened in the window, as bucket bounds: the
    p99 is at most the ``p99_le_ms`` value."""
    if not before or not after:
        return None
    counts = sorted((le, after[le] - before.get(le, 0.0)) for le in after)
    total = counts[-1][1]
    if not total:
        return None

    def bound(q: float) -> float:
        return next(le for le, n in counts if n >= q * total) * 1e3

    return {
        "count": total,
        "p50_le_ms": bound(0.5),
        "p99_le_ms": bound(0.99),
        "max_le_ms": bound(1.0),
    }


def _thread_split(
    server: ServerProcess, before: dict[int, float], after: dict[int, float]
) -> dict[str, float]:
    """Server CPU in the window: the event loop's thread, and all the others (the
    store's writer and readers, password hashing)."""
    if server.proc is None or not after:
        return {}
    spent = {tid: cpu - before.get(tid, 0.0) for tid, cpu in after.items()}
    loop = spent.pop(server.proc.pid, 0.0)
    return {"event_loop": loop, "other_threads": sum(spent.values())}


# reporting


def rate_over_time(
    times_ns: list[int], width: float, scale: float = 1.0
) -> tuple[list[float], list[float]]:
    """Events per second in bins of ``width`` seconds, for a plot: (x, y)."""
    bins = Counter(int(t / 1e9 / width) for t in times_ns if t >= 0)
    if not bins:
        return [], []
    xs = [i * width for i in range(max(bins) + 1)]
    return xs, [bins.get(i, 0) * scale / width for i in range(len(xs))]


def plot_two_panels(
    path: Path,
    draw: Callable[[Any, Any], None],
    hist_labels: tuple[str, str],
    rate_labels: tuple[str, str],
) -> bool:
    """A PNG of a histogram beside a rate over time, as every scenario draws them:
    ``draw(hist, rate)`` fills the two axes. False without matplotlib."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return False
    fig, (hist, rate) = plt.subplots(1, 2, figsize=(12, 4.5))
    draw(hist, rate)
    for axes, (xlabel, ylabel) in ((hist, hist_labels), (rate, rate_labels)):
        axes.set_xlabel(xlabel)
        axes.set_ylabel(ylabel)
        if axes.get_legend_handles_labels()[0]:
            axes.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return True


def write_plot(path: Path, runs: list[dict[str, Any]]) -> bool:
    def draw(hist: Any, rate: Any) -> None:
        for run in runs:
            lat = [x / 1e6 for x in run["_latency_ns"]]
            if lat:
                hist.hist(lat, bins=60, alpha=0.6, label=run["server"], log=True)
            arrivals = run["_arrivals_ns"]
            if arrivals:
                rate.plot(*rate_over_time(arrivals, 0.1), label=run["server"])

    return plot_two_panels(
        path,
        draw,
        ("end-to-end latency (ms)", "deliveries"),
        ("time since start (s)", "deliveries per second"),
    )


def _client_backs(results: list[dict[str, Any]]) -> dict[str, float] | None:
    """reconnect-storm, as the clients saw it: from the drop to ``resumed`` (the
    SDK's backoff, the new handshake, the replay), and how many never got there."""
    backs = sorted(x for r in results for x in r.get("back_ns", ()))
    missing = sum(r.get("not_back", 0) for r in results)
    if not backs and not missing:
        return None
    return {
        "count": len(backs),
        "not_back": missing,
        "p50": _percentile(backs, 50),
        "p99": _percentile(backs, 99),
        "max": backs[-1] / 1e6 if backs else float("nan"),
    }


def _bounds(label: str, quantiles: dict[str, float] | None, *which: str) -> str:
    """Server-side quantiles as their bucket bounds (``_bucket_quantiles``), or
    nothing when the server reported none."""
    if not quantiles:
        return ""
    return f"  {label} " + " ".join(f"{q} ≤ {quantiles[f'{q}_le_ms']:g} ms" for q in which)


def run_baseline(
    args: argparse.Namespace, server_cpu: set[int], gen_cpus: list[int]
) -> list[dict[str, Any]]:
    """The same load against the aiohttp ceiling, if it can start: its run, or none."""
    try:
        baseline = start_baseline(server_cpu)
    except (RuntimeError, OSError) as exc:
        print(f"baseline skipped: {exc} (install parley[bench])", file=sys.stderr)
        return []
    try:
        run = run_load(baseline, plan_baseline(args), args, baseline=True, gen_cpus=gen_cpus)
    finally:
        baseline.stop()
    print(_summary(run))
    return [run]


def _summary(run: dict[str, Any]) -> str:
    lat = run["latency_ms"]
    cpu = run["server_cpu_us_per_delivery"]
    return (
        f"{run['server']:>8}: {run['sends_per_s']:9.0f} sends/s {run['deliveries_per_s']:10.0f} "
        f"deliveries/s  p50 {lat['p50']:.1f} p90 {lat['p90']:.1f} p99 {lat['p99']:.1f} "
        f"p99.9 {lat['p99.9']:.1f} max {lat['max']:.1f} ms  "
        f"lost {run['lost']} dup {run['duplicated']}  "
        + (f"protocol errors {n}  " if (n := run.get("protocol_errors")) else "")
        + (f"SDK gaps repaired {n}  " if (n := run.get("sdk_gaps_repaired")) else "")
        + (f"SDK duplicates dropped {n}  " if (n := run.get("sdk_duplicates_dropped")) else "")
        + f"server CPU {run['server_cpu_s']:.2f} s"
        f" ({run['server_cpu_percent_of_core']:.1f}% of a core;"
        f" {run['server_cpu_percent_while_sending']:.1f}% while sending or holding)"
        + (f" ({cpu:.1f} µs/delivery)" if cpu else "")
        + (f" ({per_send:.0f} µs/send)" if (per_send := run.get("server_cpu_us_per_send")) else "")
        + "".join(f" {k} {v:.2f} s" for k, v in run.get("server_thread_cpu_s", {}).items())
        + "  generators "
        + " + ".join(f"{p:.0f}%" for p in run.get("generator_cpu_percent_while_sending", []))
        + " of a core while sending"
        + (
            " (loop lag max " + " + ".join(f"{g['max']:.0f}" if g else "-" for g in lags) + " ms)"
            if (lags := run.get("generator_loop_lag_ms"))
            else ""
        )
        + f"  RSS {run['server_rss_mib']['end']:.0f} MiB"
        + f"  {run['memory_per_connection_kib']:.1f} KiB/conn"
        + (
            f"  server resume p50 ≤ {resume['p50_le_ms']:g} ms p99 ≤ {resume['p99_le_ms']:g} ms"
            f" ({resume['count']:.0f})"
            if (resume := run.get("server_resume_ms"))
            else ""
        )
        + (
            f"  clients back (drop→resumed) p50 {back['p50']:.0f} p99 {back['p99']:.0f}"
            f" max {back['max']:.0f} ms ({back['count']}, {back['not_back']} not back)"
            if (back := run.get("client_back_ms"))
            else ""
        )
        + _bounds("server send→ack", run.get("server_send_ms"), "p50", "p99")
        + _bounds("loop lag", run.get("server_loop_lag_ms"), "p99", "max")
        + (
            f"  latency to the store p50 {split['to_store']['p50']:.1f} p99"
            f" {split['to_store']['p99']:.1f}, from it p50 {split['from_store']['p50']:.1f}"
            f" p99 {split['from_store']['p99']:.1f} ms"
            if (split := run.get("latency_split_ms"))
            else ""
        )
        + _bounds("commits", run.get("server_commit_ms"), "p99", "max")
        + (
            f"  store floor {floor['cpu_us_per_send']:.0f} µs/send"
            f" at {floor['sends_per_commit']:.1f} sends/commit"
            if (floor := run.get("store_floor"))
            else ""
        )
        + (
            f"  disk fsync p99 {disk['p99']:.1f} max {disk['max']:.0f} ms"
            f" ({disk['over_50ms']} over 50 ms)"
            if (disk := run.get("disk_fsync_ms"))
            else ""
        )
    )


@contextlib.contextmanager
def _servers(args: argparse.Namespace, server_cpu: set[int]) -> Iterator[ServerProcess]:
    if args.server:
        yield ServerProcess(args.server.rstrip("/"), None)
        return
    with tempfile.TemporaryDirectory(prefix="parley-bench-") as data:
        server = start_parley(Path(data), server_cpu)
        try:
            yield server
        finally:
            server.stop()


def cmd_bench(args: argparse.Namespace) -> int:
    if args.scenario == "search":
        from parley.cli import bench_search

        return bench_search.run(args)
    if args.scenario == "presence":
        from parley.cli import bench_presence

        return bench_presence.run(args)
    if args.scenario == "rolling-restart":
        from parley.cli import bench_rolling

        return bench_rolling.run(args)
    if args.scenario == "failover" or args.nodes or args.bus:
        from parley.cli import bench_cluster

        return bench_cluster.run(args)
    cpus = sorted(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else []
    server_cpu = {cpus[args.server_cpu % len(cpus)]} if len(cpus) > 1 else set()
    gen_cpus = [c for c in cpus if c not in server_cpu] if len(cpus) > 1 else []
    runs: list[dict[str, Any]] = []
    with _servers(args, server_cpu) as server:
        roles = asyncio.run(plan_parley(args, server.url))
        print(f"parley: {len(roles)} connections, {args.scenario}", file=sys.stderr)
        runs.append(run_load(server, roles, args, baseline=False, gen_cpus=gen_cpus))
        runs[-1]["store_floor"] = store_floor(server, runs[-1], server_cpu)
        print(_summary(runs[-1]))
    if not args.no_baseline and args.scenario != "reconnect-storm":
        runs.extend(run_baseline(args, server_cpu, gen_cpus))
    report: dict[str, Any] = {
        "scenario": args.scenario,
        "options": {k: v for k, v in vars(args).items() if k not in ("func", "out")},
        "machine": {"cpus": os.cpu_count(), "server_cpus": sorted(server_cpu)},
        "runs": [{k: v for k, v in run.items() if not k.startswith("_")} for run in runs],
    }
    if len(runs) == 2:
        parley, ceiling = runs
        ratio: dict[str, float] = {
            "sends_per_s": parley["sends_per_s"] / max(1e-9, ceiling["sends_per_s"])
        }
        if ceiling["deliveries_per_s"]:
            ratio["deliveries_per_s"] = parley["deliveries_per_s"] / ceiling["deliveries_per_s"]
        if parley["server_cpu_us_per_delivery"] and ceiling["server_cpu_us_per_delivery"]:
            ratio["server_cpu_per_delivery"] = (
                parley["server_cpu_us_per_delivery"] / ceiling["server_cpu_us_per_delivery"]
            )
        report["ratio_to_ceiling"] = ratio
        print("ratio to ceiling: " + json.dumps(ratio))
        if parley["server_cpu_us_per_send"] and ceiling["server_cpu_us_per_send"]:
            # What a send costs Parley beyond the ceiling's read-and-broadcast of it, the
            # same deliveries on both: authentication, the durable store, the ack.
            extra = parley["server_cpu_us_per_send"] - ceiling["server_cpu_us_per_send"]
            report["server_cpu_us_per_send_over_ceiling"] = extra
            print(f"server CPU per send over the ceiling's: {extra:.0f} µs")
            if floor := parley.get("store_floor"):
                # Less the database's own floor too: what Parley's code costs a send.
                own = extra - floor["cpu_us_per_send"]
                report["server_cpu_us_per_send_over_ceiling_and_store_floor"] = own
                print(f"... and over the ceiling's and the store floor's: {own:.0f} µs")
    args.out.mkdir(parents=True, exist_ok=True)
    stem = args.out / f"{args.scenario}-{time.strftime('%Y%m%d-%H%M%S')}-{uuid.uuid4().hex[:4]}"
    stem.with_suffix(".json").write_text(json.dumps(report, indent=2))
    plotted = write_plot(stem.with_suffix(".png"), runs)
    print(f"wrote {stem}.json" + (f" and {stem}.png" if plotted else ""), file=sys.stderr)
    failed = any(run["lost"] or run["duplicated"] for run in runs if run["server"] == "parley")
    return 1 if failed else 0


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add ``parley bench`` to the CLI."""
    bench = subparsers.add_parser(
        "bench",
        help="load-test a server or a local cluster: fanout, dms, idle, reconnect-storm, latency,"
        " presence, failover, rolling-restart; or search",
    )
    bench.add_argument("scenario", choices=SCENARIOS)
    bench.add_argument(
        "--server",
        help="an existing server's URL (its rate limits must be off); default: start one",
    )
    bench.add_argument("--receivers", type=int, default=50, help="fanout: receivers")
    bench.add_argument("--senders", type=int, default=5, help="fanout, rolling-restart: senders")
    bench.add_argument("--messages", type=int, default=200, help="per sender (or per pair)")
    bench.add_argument("--size", type=int, default=100, help="message body, bytes")
    bench.add_argument("--pairs", type=int, default=100, help="dms: direct rooms")
    bench.add_argument("--connections", type=int, default=2000, help="idle: connections")
    bench.add_argument(
        "--hold",
        type=float,
        default=25.0,
        help="idle: seconds to hold the connections (server CPU then is the heartbeats')",
    )
    bench.add_argument(
        "--clients", type=int, default=200, help="reconnect-storm, failover: clients"
    )
    bench.add_argument(
        "--storm-after", type=float, default=0.5, help="reconnect-storm: seconds before the drop"
    )
    bench.add_argument("--users", type=int, default=2000, help="presence: connected users")
    bench.add_argument(
        "--subscriptions", type=int, default=100, help="presence: users each one watches"
    )
    bench.add_argument(
        "--change-rate", type=float, default=0.1, help="presence: share changing per second"
    )
    bench.add_argument(
        "--seconds",
        type=float,
        default=20,
        help="presence, latency: measured seconds; rolling-restart: steady seconds before"
        " and after the restart",
    )
    bench.add_argument(
        "--runs", type=int, default=3, help="rolling-restart: runs (medians are reported)"
    )
    bench.add_argument("--rooms", type=int, default=50, help="latency: rooms")
    bench.add_argument("--members", type=int, default=10, help="latency: members per room")
    bench.add_argument(
        "--rate", type=float, default=1000, help="latency: sends per second, all rooms together"
    )
    bench.add_argument("--processes", type=int, default=0, help="generator processes")
    bench.add_argument("--server-cpu", type=int, default=0, help="core index for the server")
    bench.add_argument("--no-baseline", action="store_true", help="skip the aiohttp ceiling")
    bench.add_argument(
        "--lean-receivers",
        action="store_true",
        help="receivers parse frames themselves (bench_lean), not on the SDK: ~2 µs a"
        " frame against ~15-20, so that the generator is not the bottleneck",
    )
    cluster = bench.add_argument_group(
        "a cluster on this machine (fanout, latency, failover, rolling-restart)"
    )
    cluster.add_argument(
        "--nodes", type=int, default=0, help="start N nodes (default: one node, no broker)"
    )
    cluster.add_argument("--bus", help="the nodes' broker: redis://…, nats://… or amqp://…")
    cluster.add_argument("--database-url", help="postgresql://… shared by the nodes")
    cluster.add_argument("--cache-url", help="redis://… (default: the bus's Redis, if it is one)")
    cluster.add_argument(
        "--drain",
        action="store_true",
        help="failover: stop the node with SIGTERM (it drains: 1012) instead of kill -9",
    )
    cluster.add_argument(
        "--fresh-database",
        action="store_true",
        help="create a database of the run's own beside --database-url's, drop it after",
    )
    cluster.add_argument(
        "--no-bus-reference",
        action="store_true",
        help="skip the reference run on one node with the in-process bus",
    )
    cluster.add_argument(
        "--no-pin",
        action="store_true",
        help="pin neither the nodes to --server-cpu nor the generators to the other cores",
    )
    search = bench.add_argument_group("search (the database: --database-url, or the local one)")
    search.add_argument(
        "--search-messages", type=int, default=1_000_000, help="search: messages stored"
    )
    search.add_argument("--search-rooms", type=int, default=1000, help="search: rooms")
    search.add_argument("--queries", type=int, default=100, help="search: queries of each kind")
    search.add_argument(
        "--searcher-rooms", type=int, default=100, help="search: rooms the searching user is in"
    )
    search.add_argument(
        "--send-messages", type=int, default=3000, help="search: sends per send-cost run"
    )
    search.add_argument(
        "--databases", default="sqlite,postgres", help="search: sqlite, postgres or both"
    )
    bench.add_argument("--out", type=Path, default=Path("bench/results"), help="output dir")
    bench.set_defaults(func=cmd_bench)
