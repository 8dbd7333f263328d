"""The store's threads on every backend (the fixtures of ``test_store``): a batch of
sends holding replies resolves their roots in one query and writes their summaries
in one statement, whatever its size; refusals in a batch change nothing of the
others; group direct rooms are one per set of people."""

# The fixtures are test_store's, imported by name: the tests' parameters name them.
# ruff: noqa: F811

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from sqlalchemy import event as sa_event

from parley.domain.models import MessageId, RoomId, RoomKind, UserId
from parley.errors import NotFound
from parley.ports import SendRequest
from parley.store import SqlStore
from tests.contract.test_store import (  # noqa: F401
    assert_contiguous,
    backend,
    new_room,
    new_user,
    payload,
    pg_url,
    sqlite_template,
    store,
    store_url,
)


async def test_a_batch_of_replies_costs_two_statements_whatever_its_size(
    store: SqlStore,
) -> None:
    people = [await new_user(store) for _ in range(8)]
    room = await new_room(store, *people)
    roots = [
        (await store.send_message(SendRequest(room.id, people[0].id, f"root {i}", None))).message
        for i in range(3)
    ]
    statements: list[str] = []

    def record(conn: Any, cursor: Any, statement: str, *_: Any) -> None:
        if "thread" in statement:
            statements.append(statement.split()[0])

    engine = store._sync_engine
    commits = store.stats.commits
    sa_event.listen(engine, "before_cursor_execute", record)
    try:
        results = await asyncio.gather(
            *(
                store.send_message(SendRequest(room.id, p.id, f"reply {i}", None, roots[i % 3].id))
                for i, p in enumerate(people * 5)
            )
        )
    finally:
        sa_event.remove(engine, "before_cursor_execute", record)
    batches = store.stats.commits - commits
    assert batches < len(results)  # group commit put several replies in one batch
    assert statements.count("SELECT") == batches and statements.count("UPDATE") == batches
    assert {r.message.thread_root_id for r in results} == {root.id for root in roots}
    for root in roots:
        got = await store.get_message(room.id, root.id)
        assert got is not None and got.thread is not None
        assert got.thread.reply_count == sum(r.message.thread_root_id == root.id for r in results)
    await assert_contiguous(store, room.id)


async def test_refusals_in_a_batch_leave_the_rest_alone(store: SqlStore) -> None:
    alice, bob, eve = await new_user(store), await new_user(store), await new_user(store)
    room, other = await new_room(store, alice, bob), await new_room(store, eve, name="other")
    root = (await store.send_message(SendRequest(room.id, alice.id, "root", None))).message
    elsewhere = (await store.send_message(SendRequest(other.id, eve.id, "x", None))).message
    unknown = MessageId("00000000-0000-4000-8000-000000000000")
    requests = [
        SendRequest(room.id, bob.id, "ok", "c1", root.id),
        SendRequest(room.id, bob.id, "no root", None, unknown),
        SendRequest(room.id, bob.id, "other room", None, elsewhere.id),
        SendRequest(room.id, eve.id, "not a member", None, root.id),
        SendRequest(room.id, bob.id, "ok (the same again)", "c1", root.id),
    ]
    results = await asyncio.gather(
        *(store.send_message(r) for r in requests), return_exceptions=True
    )
    ok, *refused, again = results
    assert all(isinstance(r, NotFound) for r in refused), refused
    assert not isinstance(ok, BaseException) and not isinstance(again, BaseException)
    assert again.message == ok.message and ok.created and not again.created
    got = await store.get_message(room.id, root.id)
    assert got is not None and got.thread is not None
    assert (got.thread.reply_count, got.thread.participants) == (1, (alice.id, bob.id))
    assert ok.event is not None and payload(ok.event)["root_thread"]["reply_count"] == 1
    await assert_contiguous(store, room.id)


async def test_a_reply_to_a_reply_joins_its_root_and_threads_page(store: SqlStore) -> None:
    alice, bob = await new_user(store), await new_user(store)
    room = await new_room(store, alice, bob)
    root = (await store.send_message(SendRequest(room.id, alice.id, "root", None))).message
    first = (await store.send_message(SendRequest(room.id, bob.id, "a", None, root.id))).message
    second = (await store.send_message(SendRequest(room.id, alice.id, "b", None, first.id))).message
    assert second.thread_root_id == root.id
    found = await store.list_thread(room.id, first.id, after_seq=0, limit=1)
    assert found is not None
    got_root, page, more = found
    assert got_root.id == root.id and [m.id for m in page] == [first.id] and more
    assert await store.list_thread(room.id, MessageId(bob.id), after_seq=0, limit=5) is None


async def test_one_group_direct_room_per_set(store: SqlStore) -> None:
    people = [await new_user(store) for _ in range(4)]
    ids = [UserId(p.id) for p in people]

    async def open_as(i: int) -> str:
        room, _, _ = await store.get_or_create_group_dm(ids[i], [u for u in ids if u != ids[i]])
        return room.id

    made = await asyncio.gather(*(open_as(i % 4) for i in range(8)))
    assert len(set(made)) == 1
    room = await store.get_room(RoomId(made[0]))
    assert room is not None and room.kind is RoomKind.GROUP_DM
    assert sorted(await store.member_ids(room.id)) == sorted(ids)
    other, _, created = await store.get_or_create_group_dm(ids[0], ids[1:3])
    assert created and other.id != room.id
    with pytest.raises(NotFound):
        await store.get_or_create_group_dm(ids[0], [ids[1], UserId(room.id)])
