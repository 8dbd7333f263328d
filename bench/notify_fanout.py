"""What a mention costs: server CPU per send with no mention, one mention, and
``@room`` in a room of ``--members`` members, each member connected.

    uv run python bench/notify_fanout.py --members 100 --sends 400 --runs 3

One process holds what a node holds: the store (SQLite in a temp dir, text sealed at
rest as ``parley serve`` does) and the hub, its commit hooks wired as ``Runtime``
wires them, with one live connection per member (a task drains each, as a socket
writer would). ``--senders`` closed-loop senders (the room's owner and admins, so
their ``@room`` counts) post ``--sends`` messages per round. ``time.process_time()``
over a round is the node's CPU (every thread); each scenario's figure is the median
of ``--runs`` rounds, per send, after one warm-up round. Every send already reaches
every member's connection as an event; the difference between the scenarios is the
mention's: parsing, the audience query's rows, a notification row per recipient,
and a ``notification`` frame per recipient. JSON on standard output.
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
from typing import Any

from parley.bus.memory import MemoryBus
from parley.delivery.session import Connection
from parley.domain.models import Role, RoomId, RoomKind, User, Visibility
from parley.gateway.hub import Hub
from parley.ports import SendRequest
from parley.settings import Settings
from parley.store import SqlStore, migrate
from parley.store.crypto import KeyRing


async def _room(store: SqlStore, members: int, senders: int) -> tuple[RoomId, list[User]]:
    users = [
        await store.create_user(f"n{uuid.uuid4().hex[:12]}", "x", "Bench") for _ in range(members)
    ]
    room, _ = await store.create_room(
        name="bench",
        visibility=Visibility.PUBLIC,
        topic="",
        kind=RoomKind.ROOM,
        owner_id=users[0].id,
    )
    for index, user in enumerate(users[1:], start=1):
        role = Role.ADMIN if index < senders else Role.MEMBER
        await store.invite(room.id, user.id, role, users[0].id)
    return room.id, users


async def _drain(conn: Connection) -> None:
    while await conn.take():
        pass


async def measure(args: argparse.Namespace, directory: Path) -> dict[str, Any]:
    url = f"sqlite:///{directory / 'bench.db'}"
    await migrate(url)
    store = SqlStore(url, keys=KeyRing(os.urandom(32)), reseal=False)
    settings = Settings.model_validate(
        {"data_dir": directory, "repair_interval": 3600.0, "outbound_queue": 100_000}
    )
    hub = Hub(bus=MemoryBus(), store=store, settings=settings, node_id="bench")
    store.on_events = hub.committed
    store.on_notifications = hub.notified
    await store.start()
    await hub.start()
    drains: list[asyncio.Task[None]] = []
    try:
        room, users = await _room(store, args.members, args.senders)
        for user in users:
            conn = Connection(hub, user.id, transport="sse")
            await hub.attach(conn, lambda rooms: None)
            drains.append(asyncio.create_task(_drain(conn)))
        target = users[-1].username
        scenarios = {
            "no_mention": "x" * 100,
            "one_mention": f"@{target} " + "x" * 90,
            "room_mention": "@room " + "x" * 94,
        }
        per_sender = max(1, args.sends // args.senders)
        out: dict[str, Any] = {}
        for name, body in scenarios.items():
            before = hub.stats.notifications_out

            async def sender(index: int, body: str = body) -> None:
                for _ in range(per_sender):
                    await store.send_message(SendRequest(room, users[index].id, body, None))

            rounds = []
            for run in range(args.runs + 1):
                cpu = time.process_time()
                await asyncio.gather(*(sender(i) for i in range(args.senders)))
                await asyncio.sleep(0.05)  # the queued frames' writers
                spent = time.process_time() - cpu
                if run:
                    rounds.append(spent / (per_sender * args.senders) * 1e6)
            sends = per_sender * args.senders * (args.runs + 1)
            out[name] = {
                "cpu_us_per_send": round(statistics.median(rounds), 1),
                "rounds_us": [round(r, 1) for r in rounds],
                "notifications_per_send": round((hub.stats.notifications_out - before) / sends, 2),
            }
        base = out["no_mention"]["cpu_us_per_send"]
        for name in ("one_mention", "room_mention"):
            extra = out[name]["cpu_us_per_send"] - base
            out[name]["extra_us_per_send"] = round(extra, 1)
            notified = out[name]["notifications_per_send"]
            if notified:
                out[name]["extra_us_per_notification"] = round(extra / notified, 1)
        return {
            "members": args.members,
            "connections": len(users),
            "senders": args.senders,
            "sends_per_round": per_sender * args.senders,
            "runs": args.runs,
            "scenarios": out,
        }
    finally:
        for task in drains:
            task.cancel()
        await hub.close()
        await store.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--members", type=int, default=100)
    parser.add_argument("--senders", type=int, default=5)
    parser.add_argument("--sends", type=int, default=400, help="sends per round")
    parser.add_argument("--runs", type=int, default=3, help="the median of N rounds")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="parley-notify-") as tmp:
        result = asyncio.run(measure(args, Path(tmp)))
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
