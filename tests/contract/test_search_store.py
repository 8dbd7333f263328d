# ruff: noqa: F811  (the fixtures of test_store.py, imported, are parameters here)
"""The search index behind the ``Store`` port, on SQLite and PostgreSQL: the backfill of
messages stored before it, its key across rotations, and what it stores."""

from __future__ import annotations

import asyncio

from parley.domain.models import UserId
from parley.domain.search import SearchFilters, parse_query
from parley.store import SqlStore
from tests.contract.test_store import (  # noqa: F401  (fixtures)
    key_ring,
    new_room,
    new_user,
    pg_url,
    raw_execute,
    send,
    sqlite_template,
    store,
    store_url,
)


async def bodies(store: SqlStore, user: UserId, q: str) -> list[str]:
    hits = await store.search(user, parse_query(q), SearchFilters(), after=None, limit=100)
    return sorted(hit.message.body for hit in hits)


async def test_reindex_fills_in_what_was_stored_before_the_index(store_url: str) -> None:
    store = SqlStore(store_url, keys=key_ring())
    await store.start()
    try:
        owner = await new_user(store)
        room = await new_room(store, owner)
        sent = [await store.send_message(send(room, owner, f"backfill {i}")) for i in range(7)]
        await store.delete_message(room.id, sent[0].message.id, owner.id, any_sender=False)
        expected = [f"backfill {i}" for i in range(1, 7)]
        assert await bodies(store, owner.id, "backfill") == expected
        # as if stored before the migration
        await raw_execute(
            store_url,
            "DELETE FROM search_docs WHERE message_id IN "
            "(SELECT id FROM messages WHERE room_id = :room)",
            {"room": room.id},
        )
        assert await bodies(store, owner.id, "backfill") == []
        assert await store.reindex_search(page=2) >= 6
        assert await bodies(store, owner.id, "backfill") == expected
        assert await store.reindex_search() == 0  # nothing left to do
        await store.reindex_search(rebuild=True)
        assert await bodies(store, owner.id, "backfill") == expected
    finally:
        await store.close()


async def test_the_index_key_survives_a_data_key_rotation(store: SqlStore, store_url: str) -> None:
    owner = await new_user(store)
    room = await new_room(store, owner)
    await store.send_message(send(room, owner, "before rotation"))
    await store.rotate_key()
    await store.send_message(send(room, owner, "after rotation"))
    assert await bodies(store, owner.id, "rotation") == ["after rotation", "before rotation"]
    other = SqlStore(store_url, keys=key_ring())
    await other.start()  # another node with the same master key
    try:
        assert await bodies(other, owner.id, "rotation") == ["after rotation", "before rotation"]
    finally:
        await other.close()


async def test_concurrent_sends_are_all_indexed(store: SqlStore) -> None:
    owner = await new_user(store)
    room = await new_room(store, owner)
    await asyncio.gather(
        *(store.send_message(send(room, owner, f"burst {i}", f"c{i}")) for i in range(40))
    )
    assert len(await bodies(store, owner.id, "burst")) == 40
