"""Store throughput and CPU cost: sends (with and without group commit) and reads.

    uv run python bench/store_sends.py                       # SQLite in a temp dir
    uv run python bench/store_sends.py --url postgresql://postgres@127.0.0.1/bench

Sends: ``--tasks`` closed-loop senders (each awaits its send before the next) share
``--rooms`` rooms; then one sender alone (the latency of a lone send). Reads: each
call ``--reads`` times in a row from one task. Everything runs in this process, so
``time.process_time()`` (every thread, the store's included) is the server's CPU,
plus the few microseconds the benchmark's own tasks cost. A PostgreSQL server's CPU
is another process and is not counted. Each figure is the round with the least CPU of
``--rounds`` (shared machines are noisy).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import tempfile
import time
import uuid
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from parley.domain.models import Room, RoomKind, User, Visibility
from parley.ports import SendRequest
from parley.store import SqlStore, migrate
from parley.store.crypto import KeyRing


async def _setup(store: SqlStore, members: int, rooms: int) -> tuple[list[User], list[Room]]:
    users = [
        await store.create_user(f"b{uuid.uuid4().hex[:12]}", "x", "Bench") for _ in range(members)
    ]
    made = []
    for _ in range(rooms):
        room, _ = await store.create_room(
            name="bench",
            visibility=Visibility.PUBLIC,
            topic="",
            kind=RoomKind.ROOM,
            owner_id=users[0].id,
        )
        for user in users[1:]:
            await store.join_room(room.id, user.id)
        made.append(room)
    return users, made


def _batches(store: SqlStore) -> int:
    stats = getattr(store, "stats", None)
    return int(stats.commits) if stats is not None else 0


def _keys(master_key: bytes | None) -> KeyRing | None:
    return KeyRing(master_key) if master_key is not None else None


async def sends(
    url: str,
    *,
    group_commit: bool,
    tasks: int,
    count: int,
    rooms: int,
    rounds: int,
    master_key: bytes | None = None,
) -> None:
    store = SqlStore(url, group_commit=group_commit, keys=_keys(master_key), reseal=False)
    await store.start()
    try:
        users, room_list = await _setup(store, tasks, rooms)
        tag = uuid.uuid4().hex[:6]

        async def sender(index: int, n: int) -> None:
            user = users[index]
            for i in range(n):
                room = room_list[(index + i) % rooms]
                await store.send_message(
                    SendRequest(room.id, user.id, "x" * 100, f"{tag}-{index}-{i}")
                )

        backend = store._url.get_backend_name()
        for label, n_tasks, n_sends in (("concurrent", tasks, count), ("alone", 1, 200)):
            total = n_tasks * n_sends
            best: tuple[float, float, int] | None = None  # the round with the least CPU
            for _ in range(rounds):
                tag = uuid.uuid4().hex[:6]
                commits = _batches(store)
                cpu, wall = time.process_time(), time.perf_counter()
                await asyncio.gather(*(sender(i, n_sends) for i in range(n_tasks)))
                wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
                if best is None or cpu < best[0]:
                    best = (cpu, wall, _batches(store) - commits)
            assert best is not None
            cpu, wall, commits = best
            per_commit = f"{total / commits:5.1f}/commit" if commits else ""
            print(
                f"{backend:10} group_commit={group_commit!s:5} sends {label:10} "
                f"{n_tasks:3} x {n_sends}: {total / wall:7.0f}/s  "
                f"{wall / total * 1e6 * n_tasks:7.0f} µs latency  "
                f"{cpu / total * 1e6:5.0f} µs CPU/send  {per_commit}"
            )
    finally:
        await store.close()


async def reads(url: str, *, repeat: int, rounds: int, master_key: bytes | None = None) -> None:
    store = SqlStore(url, keys=_keys(master_key), reseal=False)
    await store.start()
    try:
        users, [room] = await _setup(store, 2, 1)
        for i in range(120):
            await store.send_message(SendRequest(room.id, users[i % 2].id, "x" * 100, None))
        for _ in range(9):  # a user with ten rooms
            await _setup_room(store, users[0])
        user = users[0]
        backend = store._url.get_backend_name()
        calls: list[tuple[str, Callable[[], Awaitable[Any]]]] = [
            ("get_user", lambda: store.get_user(user.id)),
            ("get_membership", lambda: store.get_membership(room.id, user.id)),
            ("list_events 100", lambda: store.list_events(room.id, after_seq=0, limit=100)),
            ("list_user_rooms 10", lambda: store.list_user_rooms(user.id)),
        ]
        for name, call in calls:
            for _ in range(20):
                await call()
            cpu, wall = float("inf"), 0.0
            for _ in range(rounds):
                started, clock = time.process_time(), time.perf_counter()
                for _ in range(repeat):
                    await call()
                if time.process_time() - started < cpu:
                    cpu, wall = time.process_time() - started, time.perf_counter() - clock
            print(
                f"{backend:10} read {name:20} {wall / repeat * 1e6:7.0f} µs latency  "
                f"{cpu / repeat * 1e6:5.0f} µs CPU/call"
            )
    finally:
        await store.close()


async def _setup_room(store: SqlStore, owner: User) -> None:
    await store.create_room(
        name="other",
        visibility=Visibility.PUBLIC,
        topic="",
        kind=RoomKind.ROOM,
        owner_id=owner.id,
    )


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--url", help="database URL (default: a temporary SQLite file)")
    parser.add_argument("--tasks", type=int, default=50)
    parser.add_argument("--sends", type=int, default=40, help="sends per task")
    parser.add_argument("--rooms", type=int, default=1)
    parser.add_argument("--reads", type=int, default=2000, help="calls per read benchmark")
    parser.add_argument("--rounds", type=int, default=3, help="report the best of N rounds")
    parser.add_argument("--uvloop", action="store_true", help="run on uvloop (as the server)")
    parser.add_argument(
        "--encrypt", action="store_true", help="seal message text at rest (as the server)"
    )
    return parser.parse_args()


async def run(args: argparse.Namespace) -> None:
    master_key = os.urandom(32) if args.encrypt else None
    with tempfile.TemporaryDirectory() as tmp:
        url = args.url or f"sqlite:///{Path(tmp) / 'bench.db'}"
        await migrate(url)
        for group_commit in (False, True):
            await sends(
                url,
                group_commit=group_commit,
                tasks=args.tasks,
                count=args.sends,
                rooms=args.rooms,
                rounds=args.rounds,
                master_key=master_key,
            )
        await reads(url, repeat=args.reads, rounds=args.rounds, master_key=master_key)


def main() -> None:
    args = parse_args()
    if args.uvloop:
        import uvloop

        uvloop.run(run(args))
    else:
        asyncio.run(run(args))


if __name__ == "__main__":
    main()
