"""Sends per second through ``SqlStore.send_message``, with and without group commit.

    uv run python bench/store_sends.py                       # SQLite in a temp dir
    uv run python bench/store_sends.py --url postgresql://postgres@127.0.0.1/bench

``--tasks`` closed-loop senders (each awaits its send before the next) share
``--rooms`` rooms; the figure is stored messages per second of wall time, and the
process CPU time is printed beside it, since client and store share one process.
"""

from __future__ import annotations

import argparse
import asyncio
import tempfile
import time
import uuid
from pathlib import Path

from parley.domain.models import RoomKind, Visibility
from parley.ports import SendRequest
from parley.store import SqlStore, migrate


async def run(url: str, *, group_commit: bool, tasks: int, sends: int, rooms: int) -> None:
    store = SqlStore(url, group_commit=group_commit)
    await store.start()
    try:
        users = [
            await store.create_user(f"b{uuid.uuid4().hex[:12]}", "x", "Bench") for _ in range(tasks)
        ]
        room_ids = []
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
            room_ids.append(room.id)

        async def sender(index: int) -> None:
            user = users[index]
            for i in range(sends):
                room_id = room_ids[(index + i) % rooms]
                await store.send_message(SendRequest(room_id, user.id, "x" * 100, f"{index}-{i}"))

        cpu, wall = time.process_time(), time.perf_counter()
        await asyncio.gather(*(sender(i) for i in range(tasks)))
        wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
        total = tasks * sends
        print(
            f"{store._url.get_backend_name():10} group_commit={group_commit!s:5} "
            f"{tasks} tasks x {sends}: {total / wall:8.0f} sends/s  "
            f"({wall:.2f} s wall, {cpu / total * 1e6:.0f} µs CPU per send)"
        )
    finally:
        await store.close()


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--url", help="database URL (default: a temporary SQLite file)")
    parser.add_argument("--tasks", type=int, default=50)
    parser.add_argument("--sends", type=int, default=40, help="sends per task")
    parser.add_argument("--rooms", type=int, default=1)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        url = args.url or f"sqlite:///{Path(tmp) / 'bench.db'}"
        await migrate(url)
        for group_commit in (False, True):
            await run(
                url,
                group_commit=group_commit,
                tasks=args.tasks,
                sends=args.sends,
                rooms=args.rooms,
            )


if __name__ == "__main__":
    asyncio.run(main())
