"""``parley bench presence``: presence at scale (issue 4's missing figure).

N connected users, each subscribed to S others, a fraction of them changing status
every second: presence frames per second, the server's CPU, and the delay from a
change to its delivery.

Topology
    A ring: user ``i`` watches users ``i+1 .. i+S`` (mod N), so every user has S
    subscriptions and S subscribers. Presence is visible only to users who share a
    room, so the users sit in overlapping rooms of ``2S`` consecutive users, one
    starting every ``S`` users: any two users at most S apart share one (each user
    is in two rooms).

Run
    The parent registers the users and builds the rooms (REST, bounded
    concurrency), then worker processes (pinned to the cores the server is not on)
    open one WebSocket per user on the SDK, subscribe each to its S neighbours
    (``Live.presence_subscribe``: one ``presence.subscribe`` frame per 250 users) and
    wait until every answer says ``online``. During ``--seconds`` each worker makes
    ``--change-rate`` of its users change status per second (a fresh random sample
    each second, the changes spread evenly over it), alternating ``presence.set``
    ``idle`` / ``online`` and noting (user, status, time). Every ``presence`` frame a
    subscriber receives is noted with its arrival time. After a quiet period the
    parent gathers everything.

Accounting
    A frame's delay is its arrival minus the latest change of that user to that
    status at or before the arrival. The server sends at most one update per user
    per second to a subscriber, the newest state, and none if the state came back
    to what it last sent: so for each (subscriber, change) pair the change is
    *delivered* (a frame matched it), *coalesced* (superseded by a later change), or
    *lost* (the subscriber's final view of the user is wrong). ``redundant`` frames
    (repeating what the subscriber already had) and ``unmatched`` ones (no such
    change) are counted too; any lost, redundant or unmatched frame fails the run.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import gc
import json
import math
import multiprocessing as mp
import os
import random
import secrets
import sys
import time
import uuid
from array import array
from bisect import bisect_right
from dataclasses import dataclass, field
from multiprocessing.connection import Connection as Pipe
from pathlib import Path
from typing import Any, Final

import httpx

from parley.cli.bench import (
    SETUP_CONCURRENCY,
    ServerProcess,
    _percentile,
    _pin,
    _recv,
    _register,
    _servers,
    pause_gc,
    plot_two_panels,
    rate_over_time,
)
from parley.client import Backoff, ConnectionLost, Live, ParleyClient, PresenceStatus

STATUSES: Final = ("online", "idle", "offline")
CODE: Final = {s: i for i, s in enumerate(STATUSES)}
ONLINE: Final = 0
IDLE: Final = 1
CONNECT_TIMEOUT: Final = 120.0
SUBSCRIBE_TIMEOUT: Final = 120.0
SETTLE_DELAY: Final = 0.5
"""Seconds between the last connection and the first subscribe: one presence tick,
so most users' entries are written (each subscriber waits anyway until every answer,
or the update after it, says ``online``)."""
QUIET: Final = 2.5
"""Seconds without a presence frame after the last change that end the drain: more
than the coalescing interval plus a tick."""
DRAIN_MAX: Final = 30.0
OPTIONS: Final = frozenset(
    {"users", "subscriptions", "change_rate", "seconds", "processes", "server", "server_cpu"}
)
"""The ``parley bench`` options this scenario reads."""
OTHER_LOAD_WARNING: Final = 10.0
"""Percent of a core used by other processes on our cores that the summary names."""


# the plan: users, the ring, the rooms


def watched(i: int, users: int, subscriptions: int) -> list[int]:
    """The users user ``i`` subscribes to: the next ``subscriptions`` on the ring."""
    return [(i + k) % users for k in range(1, subscriptions + 1)]


def room_members(users: int, subscriptions: int) -> list[list[int]]:
    """Rooms of ``2S`` consecutive users, one starting every ``S``: any two users at
    most ``S`` apart on the ring share one. One room of everybody when that is less."""
    if 2 * subscriptions >= users:
        return [list(range(users))]
    stride = subscriptions
    return [
        list(dict.fromkeys((j * stride + t) % users for t in range(2 * stride)))
        for j in range(math.ceil(users / stride))
    ]


def check_topology(users: int, subscriptions: int, rooms: list[list[int]]) -> None:
    """Every subscription is between users who share a room (else: ``forbidden``)."""
    rooms_of: dict[int, set[int]] = {}
    for r, members in enumerate(rooms):
        for u in members:
            rooms_of.setdefault(u, set()).add(r)
    for i in range(users):
        for j in watched(i, users, subscriptions):
            if not rooms_of[i] & rooms_of[j]:
                raise AssertionError(f"users {i} and {j} share no room")


async def setup(args: argparse.Namespace, url: str) -> tuple[list[str], list[str]]:
    """Register the users and build the rooms; their ids and access tokens."""
    started = time.monotonic()
    rooms = room_members(args.users, args.subscriptions)
    check_topology(args.users, args.subscriptions, rooms)
    limits = httpx.Limits(max_connections=SETUP_CONCURRENCY * 2)
    async with httpx.AsyncClient(timeout=60, limits=limits) as http:
        tag = secrets.token_hex(2)
        clients = await _register(http, url, args.users, f"p{tag}")
        print(
            f"presence: {args.users} users registered in {time.monotonic() - started:.1f} s",
            file=sys.stderr,
        )
        semaphore = asyncio.Semaphore(SETUP_CONCURRENCY)

        async def join(client: ParleyClient, room_id: str) -> None:
            async with semaphore:
                await client.join(room_id)

        async def build(j: int, members: list[int]) -> None:
            async with semaphore:
                room = await clients[members[0]].create_room(f"presence-{tag}-{j}")
            await asyncio.gather(*(join(clients[m], str(room["id"])) for m in members[1:]))

        await asyncio.gather(*(build(j, members) for j, members in enumerate(rooms)))
        print(
            f"presence: {len(rooms)} rooms of up to {max(map(len, rooms))} members "
            f"({time.monotonic() - started:.1f} s)",
            file=sys.stderr,
        )
        ids = [str(c.user_id) for c in clients]  # type: ignore[attr-defined]
        return ids, [str(c.access_token) for c in clients]


@dataclass
class WorkerPlan:
    url: str
    cpus: set[int]
    user_ids: list[str]
    """Every user, by index."""
    local: list[int]
    """The indices of this worker's users."""
    tokens: list[str]
    """Their access tokens, in the same order."""
    subscriptions: int
    change_rate: float
    seconds: float
    phase: float
    """This worker's offset in [0, 1) of a change interval, so workers interleave."""
    seed: int


# the worker side


SET_STATUS: Final[dict[int, PresenceStatus]] = {ONLINE: "online", IDLE: "idle"}
"""The ``presence.set`` status of each status code."""


@dataclass
class Recorder:
    """What one worker saw: presence frames (subscriber, user, status, arrival) and
    the changes it made (user, status, time), as compact arrays."""

    recording: bool = False
    sub: array[int] = field(default_factory=lambda: array("i"))
    user: array[int] = field(default_factory=lambda: array("i"))
    status: array[int] = field(default_factory=lambda: array("b"))
    at: array[int] = field(default_factory=lambda: array("q"))
    change_user: array[int] = field(default_factory=lambda: array("i"))
    change_status: array[int] = field(default_factory=lambda: array("b"))
    change_at: array[int] = field(default_factory=lambda: array("q"))
    errors: list[str] = field(default_factory=list)
    last_frame_ns: int = 0


class Watcher:
    """One user's connection: subscribes to its ring neighbours, notes their frames,
    and changes its own status when told."""

    def __init__(
        self,
        index: int,
        token: str,
        plan: WorkerPlan,
        index_of: dict[str, int],
        http: httpx.AsyncClient,
        rec: Recorder,
    ) -> None:
        self.index = index
        self.rec = rec
        self.index_of = index_of
        self.watching = watched(index, len(plan.user_ids), plan.subscriptions)
        self.user_ids = [plan.user_ids[u] for u in self.watching]
        self.state: dict[int, int] = {}
        self.online = 0
        self.status = ONLINE
        self.settled = asyncio.Event()
        client = ParleyClient(plan.url, access_token=token, http=http)
        self.live: Live = client.live(
            on_frame=self.on_frame,
            ping_interval=None,
            queue_size=1 << 16,
            backoff=Backoff(base=0.2, cap=5.0),
        )

    def on_frame(self, frame: dict[str, Any]) -> None:
        kind = frame.get("type")
        if kind != "presence":
            if kind == "error":
                self.rec.errors.append(json.dumps(frame)[:300])
            return
        now = time.time_ns()
        rec = self.rec
        user = self.index_of.get(str(frame.get("user_id")), -1)
        code = CODE.get(str(frame.get("status")), -1)
        if rec.recording:
            rec.sub.append(self.index)
            rec.user.append(user)
            rec.status.append(code)
            rec.at.append(now)
            rec.last_frame_ns = now
        old = self.state.get(user)
        self.state[user] = code
        self.online += (code == ONLINE) - (old == ONLINE)
        if self.online == len(self.watching):
            self.settled.set()

    async def subscribe(self) -> None:
        await self.live.presence_subscribe(self.user_ids)
        await self.settled.wait()

    async def change(self) -> None:
        """Flip between idle and online; a change that cannot be sent (the
        connection is down) is not made, and raises ``ConnectionLost``. (One whose
        socket dies during the send is made: the SDK sets ``idle`` again when it
        reconnects.)"""
        if not self.live.connected:
            raise ConnectionLost("not connected")
        new = IDLE if self.status == ONLINE else ONLINE
        now = time.time_ns()
        await self.live.set_presence(SET_STATUS[new])
        self.status = new
        self.rec.change_user.append(self.index)
        self.rec.change_status.append(new)
        self.rec.change_at.append(now)


def worker_main(plan: WorkerPlan, pipe: Pipe) -> None:
    """A generator process: its share of the users, driven by the parent."""
    _pin(plan.cpus)
    import uvloop

    uvloop.run(_worker(plan, pipe))


def _cpu() -> float:
    times = os.times()
    return times.user + times.system


async def _changes(
    plan: WorkerPlan, watchers: list[Watcher], rec: Recorder, start_ns: int
) -> list[int]:
    """Make the changes on schedule; how late each one was, sorted (ns): a busy
    event loop (a saturated generator) shows here first."""
    rng = random.Random(plan.seed)
    per_second = max(1, round(plan.change_rate * len(watchers)))
    per_second = min(per_second, len(watchers))
    total = int(plan.seconds * per_second)
    interval = 1.0 / per_second
    start = start_ns / 1e9
    lags: list[int] = []
    batch: list[int] = []
    for j in range(total):
        if not batch:  # a fresh sample every second: some users change twice in a row
            batch = rng.sample(range(len(watchers)), per_second)
        due = start + (j + plan.phase) * interval
        delay = due - time.time()
        if delay > 0:
            await asyncio.sleep(delay)
        lags.append(max(0, int((time.time() - due) * 1e9)))
        try:
            await watchers[batch.pop()].change()
        except ConnectionLost as exc:
            rec.errors.append(f"change not sent: {exc}")
    return sorted(lags)


async def _worker(plan: WorkerPlan, pipe: Pipe) -> None:
    rec = Recorder()
    index_of = {u: i for i, u in enumerate(plan.user_ids)}
    result: dict[str, Any] = {}
    limits = httpx.Limits(max_connections=64)
    async with httpx.AsyncClient(timeout=60, limits=limits) as http:
        watchers = [
            Watcher(i, t, plan, index_of, http, rec)
            for i, t in zip(plan.local, plan.tokens, strict=True)
        ]
        semaphore = asyncio.Semaphore(64)

        async def connect(w: Watcher) -> None:
            async with semaphore:
                await w.live.start()

        try:
            async with asyncio.timeout(CONNECT_TIMEOUT):
                await asyncio.gather(*(connect(w) for w in watchers))
        except TimeoutError:
            # The SDK retries a refused upgrade forever; say so instead of hanging.
            up = sum(w.live.connected for w in watchers)
            pipe.send(("failed", f"{up}/{len(watchers)} connected after {CONNECT_TIMEOUT:.0f} s"))
            return
        pipe.send(("connected", len(watchers)))
        assert (await _recv(pipe))[0] == "subscribe"

        async def subscribe(w: Watcher) -> None:
            async with semaphore:
                await w.subscribe()

        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(SUBSCRIBE_TIMEOUT):
                await asyncio.gather(*(subscribe(w) for w in watchers))
        settled = sum(w.settled.is_set() for w in watchers)
        pause_gc()
        pipe.send(("subscribed", settled, list(rec.errors)))
        command = await _recv(pipe)
        assert command[0] == "go"
        start_ns: int = command[1]
        rec.recording = True
        await asyncio.sleep(max(0.0, start_ns / 1e9 - time.time()))
        cpu0 = _cpu()
        lags = await _changes(plan, watchers, rec, start_ns)
        await asyncio.sleep(max(0.0, start_ns / 1e9 + plan.seconds - time.time()))
        cpu1 = _cpu()
        gc.enable()
        pipe.send(("changed", len(rec.change_at)))
        last_change = rec.change_at[-1] if rec.change_at else 0
        deadline = time.monotonic() + DRAIN_MAX
        while time.monotonic() < deadline:
            if time.time() - max(rec.last_frame_ns, last_change) / 1e9 >= QUIET:
                break
            await asyncio.sleep(0.1)
        rec.recording = False
        cpu2 = _cpu()
        result = {
            "connections": len(watchers),
            "reconnects": sum(max(0, w.live.connects - 1) for w in watchers),
            "lag_ms": {
                "p50": _percentile(lags, 50),
                "p99": _percentile(lags, 99),
                "max": lags[-1] / 1e6 if lags else float("nan"),
            },
            "cpu_window_s": cpu1 - cpu0,
            "cpu_drain_s": cpu2 - cpu1,
            "errors": rec.errors[:20],
            "error_count": len(rec.errors),
            "frames": (rec.sub, rec.user, rec.status, rec.at),
            "changes": (rec.change_user, rec.change_status, rec.change_at),
        }
        with contextlib.suppress(Exception):
            async with asyncio.timeout(10):
                await asyncio.gather(*(w.live.close() for w in watchers), return_exceptions=True)
    result["cpu_total_s"] = _cpu()
    pipe.send(("result", result))


# the parent: accounting


@dataclass
class Tally:
    delays_ns: list[int]
    arrivals_ns: list[int]
    delivered: int
    expected: int
    lost: int
    redundant: int
    unmatched: int


def account(
    users: int,
    subscriptions: int,
    frames: list[tuple[array[int], array[int], array[int], array[int]]],
    changes: list[tuple[array[int], array[int], array[int]]],
    start_ns: int,
) -> Tally:
    """Match every frame to the change it delivers (see the module doc)."""
    # per user and status: the change times, sorted
    times: list[tuple[list[int], list[int]]] = [([], []) for _ in range(users)]
    last: dict[int, tuple[int, int]] = {}  # user -> (time, status) of its last change
    count = [0] * users
    for c_user, c_status, c_at in changes:
        for u, s, t in zip(c_user, c_status, c_at, strict=True):
            times[u][s].append(t)
            count[u] += 1
            if u not in last or t > last[u][0]:
                last[u] = (t, s)
    for pair in times:
        pair[0].sort()
        pair[1].sort()
    seen: dict[tuple[int, int], int] = {}  # (subscriber, user) -> status it last got
    delivered: set[tuple[int, int, int, int]] = set()
    delays: list[int] = []
    arrivals: list[int] = []
    redundant = unmatched = 0
    for f_sub, f_user, f_status, f_at in frames:
        for s, u, st, t in zip(f_sub, f_user, f_status, f_at, strict=True):
            arrivals.append(t - start_ns)
            key = (s, u)
            if seen.get(key, ONLINE) == st:
                redundant += 1
                continue
            seen[key] = st
            if u < 0 or st not in (ONLINE, IDLE):
                unmatched += 1
                continue
            at = times[u][st]
            k = bisect_right(at, t) - 1
            if k < 0:
                unmatched += 1
                continue
            delivered.add((s, u, st, k))
            delays.append(t - at[k])
    expected = sum(count) * subscriptions
    lost = 0
    for i in range(users):
        for u in watched(i, users, subscriptions):
            final = last[u][1] if u in last else ONLINE
            if seen.get((i, u), ONLINE) != final:
                lost += 1
    delays.sort()
    arrivals.sort()
    return Tally(delays, arrivals, len(delivered), expected, lost, redundant, unmatched)


def core_times() -> list[tuple[float, float]]:
    """Busy and total CPU seconds of each core so far (to see other processes)."""
    import psutil

    out = []
    for t in psutil.cpu_times(percpu=True):
        total = float(sum(t))
        out.append((total - t.idle - getattr(t, "iowait", 0.0), total))
    return out


def scrape(url: str) -> dict[str, float]:
    """The server's counters from ``/metrics`` (empty when unreachable)."""
    try:
        text = httpx.get(f"{url}/metrics", timeout=5).text
    except httpx.HTTPError:
        return {}
    out: dict[str, float] = {}
    for line in text.splitlines():
        if line.startswith("parley_") and "_bucket" not in line and "_created" not in line:
            name, _, value = line.rpartition(" ")
            with contextlib.suppress(ValueError):
                out[name] = float(value)
    return out


def run(args: argparse.Namespace) -> int:
    """``parley bench presence``."""
    if not 1 <= args.subscriptions < args.users or args.subscriptions > 1000:
        print("presence: need 1 <= --subscriptions < --users, and at most 1000", file=sys.stderr)
        return 2
    cpus = sorted(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else []
    server_cpu = {cpus[args.server_cpu % len(cpus)]} if len(cpus) > 1 else set()
    gen_cpus = [c for c in cpus if c not in server_cpu] if len(cpus) > 1 else []
    with _servers(args, server_cpu) as server:
        _, rss_idle = server.usage()
        t_setup = time.monotonic()
        user_ids, tokens = asyncio.run(setup(args, server.url))
        setup_s = time.monotonic() - t_setup
        try:
            figures = drive(args, server, user_ids, tokens, server_cpu, gen_cpus)
        except RuntimeError as exc:
            print(f"presence: {exc}", file=sys.stderr)
            return 1
        figures["setup_s"] = setup_s
        figures["server_rss_mib"]["idle"] = rss_idle / 2**20
    report: dict[str, Any] = {
        "scenario": "presence",
        "options": {k: v for k, v in vars(args).items() if k in OPTIONS},
        "machine": {
            "cpus": os.cpu_count(),
            "server_cpus": sorted(server_cpu),
            "generator_cpus": gen_cpus,
        },
        "run": {k: v for k, v in figures.items() if not k.startswith("_")},
    }
    print(summary(figures))
    args.out.mkdir(parents=True, exist_ok=True)
    stem = args.out / f"presence-{time.strftime('%Y%m%d-%H%M%S')}-{uuid.uuid4().hex[:4]}"
    stem.with_suffix(".json").write_text(json.dumps(report, indent=2, default=str))
    plotted = write_plot(stem.with_suffix(".png"), figures)
    print(f"wrote {stem}.json" + (f" and {stem}.png" if plotted else ""), file=sys.stderr)
    bad = (
        figures["lost"]
        or figures["redundant"]
        or figures["unmatched"]
        or figures["errors"]
        or figures["unsettled"]
    )
    return 1 if bad else 0


def drive(
    args: argparse.Namespace,
    server: ServerProcess,
    user_ids: list[str],
    tokens: list[str],
    server_cpus: set[int],
    gen_cpus: list[int],
) -> dict[str, Any]:
    """Run the load from worker processes; the figures."""
    processes = max(1, min(args.processes or max(1, len(gen_cpus)), args.users))
    ctx = mp.get_context("spawn")
    workers = []
    for w in range(processes):
        local = list(range(w, args.users, processes))
        plan = WorkerPlan(
            url=server.url,
            cpus={gen_cpus[w % len(gen_cpus)]} if gen_cpus else set(),
            user_ids=user_ids,
            local=local,
            tokens=[tokens[i] for i in local],
            subscriptions=args.subscriptions,
            change_rate=args.change_rate,
            seconds=args.seconds,
            phase=(w + 0.5) / processes,
            seed=w,
        )
        parent, child = ctx.Pipe()
        proc = ctx.Process(target=worker_main, args=(plan, child), daemon=True)
        proc.start()
        workers.append((proc, parent))
    try:
        for _, pipe in workers:
            kind, detail = pipe.recv()
            if kind != "connected":
                raise RuntimeError(f"a generator could not connect: {detail}")
        _, rss_connected = server.usage()
        print(f"presence: {args.users} connected", file=sys.stderr)
        time.sleep(SETTLE_DELAY)
        t_sub = time.monotonic()
        for _, pipe in workers:
            pipe.send(("subscribe",))
        settled, setup_errors = 0, []
        for _, pipe in workers:
            kind, n, errors = pipe.recv()
            assert kind == "subscribed"
            settled += n
            setup_errors.extend(errors)
        subscribe_s = time.monotonic() - t_sub
        _, rss_subscribed = server.usage()
        print(
            f"presence: {settled}/{args.users} subscribed and settled in {subscribe_s:.1f} s",
            file=sys.stderr,
        )
        metrics0 = scrape(server.url)
        start_ns = time.time_ns() + 500_000_000
        for _, pipe in workers:
            pipe.send(("go", start_ns))
        time.sleep(max(0.0, start_ns / 1e9 - time.time()))
        cpu0, _ = server.usage()
        cores0 = core_times()
        for _, pipe in workers:  # each says so at start + seconds, or later if it lagged
            kind, _ = pipe.recv()
            assert kind == "changed"
        cpu1, _ = server.usage()
        cores1 = core_times()
        end_ns = time.time_ns()
        metrics1 = scrape(server.url)
        results = [pipe.recv()[1] for _, pipe in workers]
        _, rss_end = server.usage()
    finally:
        for proc, _ in workers:
            proc.join(30)
            if proc.is_alive():
                proc.kill()
    tally = account(
        args.users,
        args.subscriptions,
        [r["frames"] for r in results],
        [r["changes"] for r in results],
        start_ns,
    )
    window = (end_ns - start_ns) / 1e9
    in_window = bisect_right(tally.arrivals_ns, end_ns - start_ns)
    changes = sum(len(r["changes"][2]) for r in results)
    server_cpu = cpu1 - cpu0
    delays = tally.delays_ns
    busy = {
        c: 100 * (b1 - b0) / max(1e-9, t1 - t0)
        for c, ((b0, t0), (b1, t1)) in enumerate(zip(cores0, cores1, strict=True))
    }
    gen_pct = sum(100 * r["cpu_window_s"] / window for r in results)
    others = {
        "server_core": sum(busy.get(c, 0.0) for c in server_cpus) - 100 * server_cpu / window,
        "generator_cores": sum(busy.get(c, 0.0) for c in gen_cpus) - gen_pct,
    }
    deltas = {
        k.removeprefix("parley_"): metrics1[k] - metrics0.get(k, 0.0)
        for k in metrics1
        if "frames" in k or "presence" in k or "deliveries" in k
    }
    return {
        "users": args.users,
        "subscriptions": args.subscriptions,
        "change_rate": args.change_rate,
        "processes": processes,
        "subscribe_s": subscribe_s,
        "unsettled": args.users - settled,
        "window_s": window,
        "changes": changes,
        "changes_per_s": changes / window,
        "frames": len(tally.arrivals_ns),
        "frames_in_window": in_window,
        "frames_per_s": in_window / window,
        "frames_per_s_per_subscriber": in_window / window / args.users,
        "change_deliveries": {
            "expected": tally.expected,
            "delivered": tally.delivered,
            "coalesced": tally.expected - tally.delivered - tally.lost,
        },
        "lost": tally.lost,
        "redundant": tally.redundant,
        "unmatched": tally.unmatched,
        "delay_ms": {
            "p50": _percentile(delays, 50),
            "p90": _percentile(delays, 90),
            "p99": _percentile(delays, 99),
            "max": delays[-1] / 1e6 if delays else float("nan"),
        },
        "server_cpu_s": server_cpu,
        "server_cpu_pct": 100 * server_cpu / window if server.proc else None,
        "server_cpu_us_per_frame": server_cpu * 1e6 / in_window if in_window else None,
        "server_rss_mib": {
            "connected": rss_connected / 2**20,
            "subscribed": rss_subscribed / 2**20,
            "end": rss_end / 2**20,
        },
        "server_metrics_delta": deltas,
        "generators": [
            {
                "connections": r["connections"],
                "cpu_window_s": r["cpu_window_s"],
                "cpu_pct": 100 * r["cpu_window_s"] / window,
                "cpu_drain_s": r["cpu_drain_s"],
                "cpu_total_s": r["cpu_total_s"],
                "schedule_lag_ms": r["lag_ms"],
            }
            for r in results
        ],
        "generator_cpus_shared": len(gen_cpus) < processes,
        "core_busy_pct": busy,
        "other_load_pct": others if server.proc and server_cpus and gen_cpus else None,
        "reconnects": sum(r["reconnects"] for r in results),
        "errors": len(setup_errors) + sum(r["error_count"] for r in results),
        "error_samples": (setup_errors + [e for r in results for e in r["errors"]])[:10],
        "_delays_ns": delays,
        "_arrivals_ns": tally.arrivals_ns,
        "_changes_ns": sorted(t - start_ns for r in results for t in r["changes"][2]),
    }


# reporting


def summary(run: dict[str, Any]) -> str:
    d = run["delay_ms"]
    cpu = run["server_cpu_pct"]
    per_frame = run["server_cpu_us_per_frame"]
    gens = " ".join(
        f"{g['cpu_pct']:.0f}% (late p99 {g['schedule_lag_ms']['p99']:.0f} ms)"
        for g in run["generators"]
    )
    counts = run["change_deliveries"]
    return (
        f"presence: {run['users']} users × {run['subscriptions']}: "
        f"{run['changes_per_s']:.0f} changes/s, {run['frames_per_s']:.0f} frames/s "
        f"({run['frames_per_s_per_subscriber']:.1f}/subscriber)  "
        f"delay p50 {d['p50']:.0f} p90 {d['p90']:.0f} p99 {d['p99']:.0f} max {d['max']:.0f} ms  "
        f"delivered {counts['delivered']} coalesced {counts['coalesced']} lost {run['lost']}  "
        f"server CPU {run['server_cpu_s']:.2f} s"
        + (f" ({cpu:.0f}% of a core)" if cpu is not None else "")
        + (f" {per_frame:.1f} µs/frame" if per_frame else "")
        + f"  RSS {run['server_rss_mib']['end']:.0f} MiB  generators {gens}"
        + "".join(
            f"  (other processes: {pct:.0f}% on the {where.replace('_', ' ')})"
            for where, pct in (run["other_load_pct"] or {}).items()
            if pct >= OTHER_LOAD_WARNING
        )
    )


def write_plot(path: Path, run: dict[str, Any]) -> bool:
    def draw(hist: Any, rate: Any) -> None:
        delays = [x / 1e6 for x in run["_delays_ns"]]
        if delays:
            hist.hist(delays, bins=60, log=True)
        for key, label, scale in (
            ("_arrivals_ns", "frames received", 1),
            ("_changes_ns", f"changes × {run['subscriptions']}", run["subscriptions"]),
        ):
            times = [t for t in run[key] if t >= 0]
            if times:
                xs, ys = rate_over_time(times, 0.5, scale)
                rate.plot(xs, ys, label=label, linestyle="-" if scale == 1 else "--")

    return plot_two_panels(
        path,
        draw,
        ("change → delivery delay (ms)", "presence frames"),
        ("time since start (s)", "per second"),
    )
