"""The hub's write turn: each connection's frames in one write, acks first."""

from __future__ import annotations

import asyncio
from pathlib import Path

from parley.delivery.session import Connection
from parley.domain.models import UserId
from parley.gateway.hub import Hub
from parley.settings import Settings


async def test_urgent_connections_are_written_first_and_each_once(tmp_path: Path) -> None:
    hub = Hub(bus=None, store=None, settings=Settings(data_dir=tmp_path), node_id="n")  # type: ignore[arg-type]
    writes: list[tuple[str, list[object]]] = []
    conns = {}
    for name in ("a", "b", "c"):
        conn = conns[name] = Connection(hub, UserId(name), transport="ws")
        conn.flusher = lambda conn=conn, name=name: writes.append((name, conn.take_now()))
    for name in ("a", "b", "c"):
        conns[name].push(b"event")  # a fan-out reaches a, b, c in that order
    conns["c"].push(b"ack", urgent=True)
    await asyncio.sleep(0)
    assert [(name, items) for name, items in writes if items] == [
        ("c", [b"event", b"ack"]),
        ("a", [b"event"]),
        ("b", [b"event"]),
    ]
    writes.clear()
    conns["b"].push(b"later")
    await asyncio.sleep(0)
    assert writes == [("b", [b"later"])]
