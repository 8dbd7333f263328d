"""Notifications between nodes, in one process (the two-node rig of
``test_cluster_delivery``): a notification made by a send on one node reaches the
user's connections on every node, once each, and not other users'."""

from __future__ import annotations

import asyncio
import json

from parley.domain.models import UserId
from tests.component.test_cluster_delivery import TIMEOUT, Reader, cluster, room_of, users

__all__ = ["cluster"]


def notifications(reader: Reader) -> list[dict[str, object]]:
    frames = [json.loads(line) for line in reader.log if line.startswith("{")]
    return [f["notification"] for f in frames if f["type"] == "notification"]


async def wait_notifications(reader: Reader, count: int) -> None:
    async with asyncio.timeout(TIMEOUT):
        while len(notifications(reader)) < count:
            reader._changed.clear()
            await reader._changed.wait()


async def test_a_notification_reaches_the_user_on_every_node(cluster) -> None:  # type: ignore[no-untyped-def]
    a, b = await cluster()
    alice, bob, carol = await users(a, 3)
    room = await room_of(a, alice, bob, carol)
    names = await a.store.get_users([bob])
    on_a, on_b, carol_b = await a.connect(bob), await b.connect(bob), await b.connect(carol)
    # Attaching subscribes to the room's channel in a task: subscribe now (the same
    # call, idempotent) so the first send cannot outrun it.
    await b.bus.subscribe(f"room.{room}")
    name = names[UserId(bob)].username
    for body in ("no one", f"@{name} one", f"@{name} two"):
        await a.send(room, alice, body)
    await wait_notifications(on_a, 2)
    await wait_notifications(on_b, 2)
    await carol_b.wait_seqs(3)
    assert notifications(on_a) == notifications(on_b)
    assert [n["message"]["body"] for n in notifications(on_b)][-1].endswith("two")  # type: ignore[index]
    assert notifications(carol_b) == []
    assert a.hub.stats.notifications_out == 2 and b.hub.stats.notifications_out == 2
    for reader in (on_a, on_b, carol_b):
        reader.stop()
