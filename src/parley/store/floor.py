"""The store floor: what the database alone costs a send (for ``parley bench``).

The store's own statements for a batch of sends (the membership and repeat lookup,
the room's sequence numbers, the messages and their search index rows, the events)
and its ``COMMIT``, run back to back on one SQLite connection set up as the store's
sends connection: no server, no event loop, no thread hop, messages and events made
before the clock starts. No server with this schema on this disk can store and fsync
a send for less CPU, so a benchmark that measures the floor beside the server tells
the server's own share of a send from the database's and the disk's.
"""

from __future__ import annotations

import asyncio
import os
import resource
import statistics
import tempfile
from pathlib import Path
from typing import Any

from parley.domain.models import Event, RoomId, RoomKind, UserId, Visibility, utc_now
from parley.ports import SendRequest
from parley.store.engine import _raw_cursor, _sqlite_engine, normalize_url
from parley.store.journal import _insert_events
from parley.store.migrations import migrate
from parley.store.search import index_messages
from parley.store.sends import _check_sends, _new_message, _take_seqs_per_room
from parley.store.sql import SqlStore
from parley.store.statements import _RAW_INSERT_MESSAGES


def commit_sizes(sends_per_commit: float, commits: int) -> list[int]:
    """``commits`` whole batch sizes whose mean is ``sends_per_commit`` (2.4: two
    commits of 2 for every three of 3), spread evenly."""
    whole = max(1, int(sends_per_commit))
    extra = max(0.0, sends_per_commit - whole)
    return [whole + int((i + 1) * extra) - int(i * extra) for i in range(commits)]


def measure(
    directory: Path, sends_per_commit: float, *, sends: int = 3000, rounds: int = 3
) -> dict[str, Any]:
    """CPU (user and system, this thread) per send of the store's send statements
    on a fresh database in ``directory`` (the server's disk), in commits of
    ``sends_per_commit`` on average, 100-byte bodies: the median of ``rounds``."""
    with tempfile.TemporaryDirectory(prefix="parley-floor-", dir=directory) as tmp:
        url = f"sqlite:///{Path(tmp) / 'floor.db'}"
        room, sender, seq = asyncio.run(_setup(url))
        engine = _sqlite_engine(normalize_url(url))
        try:
            with engine.connect() as conn:
                cursor = _raw_cursor(conn)
                cursor.execute("PRAGMA foreign_keys = OFF")  # as the store's sends connection
                sizes = commit_sizes(sends_per_commit, max(1, round(sends / sends_per_commit)))
                per_send = []
                for _ in range(rounds + 1):  # the first round warms the caches up
                    batches = []
                    for size in sizes:
                        batches.append(_batch(room, sender, seq, size))
                        seq += size
                    before = resource.getrusage(resource.RUSAGE_THREAD)
                    for keys, messages, events in batches:
                        cursor.execute("BEGIN IMMEDIATE")
                        _check_sends(conn, keys)
                        _take_seqs_per_room(conn, {room: len(keys)}, utc_now())
                        _RAW_INSERT_MESSAGES.executemany(conn, messages)
                        index_messages(conn, [(m["id"], m["room_id"], m["body"]) for m in messages])
                        _insert_events(conn, events, [m["id"] for m in messages])
                        cursor.execute("COMMIT")
                    after = resource.getrusage(resource.RUSAGE_THREAD)
                    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
                    per_send.append(cpu * 1e6 / sum(sizes))
                stored = cursor.execute("SELECT count(*) FROM messages").fetchone()[0]
        finally:
            engine.dispose()
    return {
        "sends_per_commit": sum(sizes) / len(sizes),
        "cpu_us_per_send": statistics.median(per_send[1:]),
        "rounds_us_per_send": per_send[1:],
        "messages_stored": stored,
    }


async def _setup(url: str) -> tuple[str, str, int]:
    """A migrated database with one room and its owner, who sends; the room's
    last ``seq``."""
    await migrate(url)
    store = SqlStore(url)
    await store.start()
    try:
        user = await store.create_user("floor", "x", "Floor")
        room, _ = await store.create_room(
            name="floor", visibility=Visibility.PUBLIC, topic="", kind=RoomKind.ROOM,
            owner_id=user.id,
        )  # fmt: skip
        created = await store.get_room(room.id)
        assert created is not None
        return room.id, user.id, created.last_seq
    finally:
        await store.close()


def _batch(
    room: str, sender: str, last_seq: int, size: int
) -> tuple[list[tuple[str, str, str | None]], list[dict[str, Any]], list[Event]]:
    """One commit's lookup keys, message rows and events, made by the store's own
    ``_new_message``."""
    now = utc_now()
    keys, rows, events = [], [], []
    for seq in range(last_seq + 1, last_seq + size + 1):
        request = SendRequest(RoomId(room), UserId(sender), "x" * 100, os.urandom(12).hex())
        _, row, event = _new_message(request, seq, now)
        keys.append((room, sender, request.client_msg_id))
        rows.append(row)
        events.append(event)
    return keys, rows, events
