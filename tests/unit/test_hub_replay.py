"""Replays that wait for a room's head: the head comes, or the room is dropped."""

from __future__ import annotations

import asyncio
from pathlib import Path

from parley.bus.memory import MemoryBus
from parley.delivery.session import Connection
from parley.domain.models import UserId
from parley.gateway.hub import Hub
from parley.protocol.session import RoomCursor
from parley.settings import Settings


async def test_a_replay_waiting_for_a_dropped_rooms_head_ends(tmp_path: Path) -> None:
    """The channel's head is never read (the store was down): dropping the channel
    wakes the replay, which ends instead of waiting again on a ``ready`` that stays
    set (which would spin the event loop)."""
    hub = Hub(bus=MemoryBus(), store=None, settings=Settings(data_dir=tmp_path), node_id="n")  # type: ignore[arg-type]
    channel = hub._open_channel("r", None)
    conn = Connection(hub, UserId("u"), transport="ws")
    cursor = conn.rooms["r"] = RoomCursor("r", 0)
    cursor.replaying = True
    replay = asyncio.create_task(hub._replay_room(conn, "r", cursor))
    await asyncio.sleep(0)
    assert not replay.done()
    hub._drop_channel(channel, "store unavailable; resume later")
    async with asyncio.timeout(5):
        await replay
    assert cursor.replaying
