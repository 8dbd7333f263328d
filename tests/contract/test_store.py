"""The ``Store`` contract, run against every backend: SQLite and PostgreSQL.

Each test makes its own users and rooms (random names), so one migrated database
serves a whole session, and the suite is safe under pytest-xdist: every worker gets
its own PostgreSQL database (``postgres_url``) and its own SQLite files.
"""

from __future__ import annotations

import asyncio
import dataclasses
import shutil
import sqlite3
import uuid
from collections.abc import AsyncIterator, Iterator, Sequence
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import event as sa_event
from sqlalchemy import make_url

from parley.domain.admin import AuditAction, AuditEntry, AuditRecord, Invite
from parley.domain.models import (
    Event,
    EventType,
    MessageId,
    Role,
    Room,
    RoomId,
    RoomKind,
    SendResult,
    User,
    UserId,
    Visibility,
)
from parley.errors import (
    Conflict,
    Forbidden,
    InvalidInput,
    NotFound,
    Unauthorized,
    Unavailable,
    Undecryptable,
    UsernameTaken,
    VersionConflict,
)
from parley.ports import SendRequest, Store
from parley.protocol import codec
from parley.store import SqlStore, journal, migrate, statements
from parley.store import sql as sql_module
from parley.store.crypto import KeyRing

FUTURE = "2999-01-01T00:00:00.000000Z"
PAST = "2000-01-01T00:00:00.000000Z"
NOW = "2025-01-01T00:00:00.000000Z"


# fixtures


@pytest.fixture(scope="session")
def sqlite_template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One migrated SQLite file, copied per test: migrating each time costs ~1 s."""
    path = tmp_path_factory.mktemp("template") / "parley.db"
    asyncio.run(migrate(f"sqlite:///{path}"))
    return path


@pytest.fixture(scope="session")
def pg_url(postgres_url: str) -> str:
    url = postgres_url.replace("postgresql://", "postgresql+asyncpg://", 1)
    asyncio.run(migrate(url))
    return url


@pytest.fixture(params=["sqlite", "postgres"])
def store_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    if request.param == "sqlite":
        target = tmp_path / "parley.db"
        shutil.copyfile(request.getfixturevalue("sqlite_template"), target)
        yield f"sqlite+aiosqlite:///{target}"
    else:
        yield request.getfixturevalue("pg_url")


@pytest.fixture
def backend(store_url: str) -> str:
    return "postgres" if store_url.startswith("postgresql") else "sqlite"


MASTER_KEY = bytes(range(32))
"""One master key for the session: a PostgreSQL database serves many tests, and its
``keys`` table is wrapped by this key."""


def key_ring() -> KeyRing:
    return KeyRing(MASTER_KEY)


@pytest.fixture
async def store(store_url: str) -> AsyncIterator[SqlStore]:
    """A store sealing message text at rest (``SqlStore(store_url)`` elsewhere: plain)."""
    s = SqlStore(store_url, keys=key_ring())
    await s.start()
    try:
        yield s
    finally:
        await s.close()


# helpers


async def new_user(store: Store, prefix: str = "u") -> User:
    return await store.create_user(f"{prefix}{uuid.uuid4().hex[:12]}", "hash", prefix.title())


async def new_room(
    store: Store,
    owner: User,
    *others: User,
    visibility: Visibility = Visibility.PUBLIC,
    name: str = "general",
) -> Room:
    room, _ = await store.create_room(
        name=name,
        visibility=visibility,
        topic="",
        kind=RoomKind.ROOM,
        owner_id=owner.id,
    )
    for other in others:
        await store.join_room(room.id, other.id)
    got = await store.get_room(room.id)
    assert got is not None
    return got


def send(room: Room, user: User, body: str = "hi", client_msg_id: str | None = None) -> SendRequest:
    return SendRequest(room.id, user.id, body, client_msg_id)


def payload(event: Event) -> dict[str, Any]:
    decoded = codec.loads(event.raw)
    assert isinstance(decoded, dict)
    return decoded


async def all_events(store: Store, room_id: RoomId) -> list[Event]:
    return [e async for e in store.export_room(room_id)]


async def assert_contiguous(store: Store, room_id: RoomId) -> list[Event]:
    """The room's log is exactly 1..last_seq, and agrees with its messages."""
    room = await store.get_room(room_id)
    assert room is not None
    log = await all_events(store, room_id)
    assert [e.seq for e in log] == list(range(1, room.last_seq + 1))
    for e in log:
        body = payload(e)
        assert (body["room_id"], body["seq"], body["type"]) == (room_id, e.seq, e.type.value)
    created = [payload(e)["message"]["seq"] for e in log if e.type is EventType.MESSAGE_CREATED]
    assert created == [e.seq for e in log if e.type is EventType.MESSAGE_CREATED]
    stored, _ = await store.list_messages(room_id, before_seq=None, after_seq=None, limit=10_000)
    assert [m.seq for m in stored] == created
    return log


# migrations


async def test_migration_0002_names_the_message_of_stored_events(tmp_path: Path) -> None:
    path = tmp_path / "old.db"
    await migrate(f"sqlite:///{path}", "0001")
    created = codec.dumps({"seq": 2, "type": "message.created", "message": {"id": "m1"}})
    with sqlite3.connect(path) as db:
        db.execute("INSERT INTO users VALUES ('u', 'u', 'U', 'h', 0, :t)", {"t": NOW})
        db.execute(
            "INSERT INTO rooms VALUES ('r', 'r', 'public', '', 'room', :t, 2, :t, NULL)",
            {"t": NOW},
        )
        db.executemany(
            "INSERT INTO events VALUES ('r', ?, ?, ?)",
            [(1, "room.created", b"{}"), (2, "message.created", created)],
        )
    db.close()
    await migrate(f"sqlite:///{path}")
    with sqlite3.connect(path) as db:
        rows = db.execute("SELECT seq, message_id FROM events ORDER BY seq").fetchall()
    db.close()
    assert rows == [(1, None), (2, "m1")]


async def test_migrated_schema_matches_the_tables(store_url: str) -> None:
    from alembic.autogenerate import compare_metadata
    from alembic.migration import MigrationContext

    from parley.store.schema import include_name, metadata

    engine = sql_module.make_engine(store_url, pool_size=1)
    try:
        async with engine.connect() as conn:
            diff = await conn.run_sync(
                lambda sync: compare_metadata(
                    MigrationContext.configure(sync, opts={"include_name": include_name}),
                    metadata,
                )
            )
    finally:
        await engine.dispose()
    assert diff == []


async def test_migrate_creates_the_data_dir_and_is_idempotent(tmp_path: Path) -> None:
    path = tmp_path / "nested" / "dir" / "parley.db"
    await migrate(f"sqlite:///{path}")
    await migrate(f"sqlite:///{path}")
    store = SqlStore(f"sqlite:///{path}")
    await store.start()
    try:
        await store.ping()
        assert (await new_user(store)).id
    finally:
        await store.close()


async def test_concurrent_migrations_on_postgres(pg_url: str) -> None:
    await asyncio.gather(migrate(pg_url), migrate(pg_url), migrate(pg_url))


async def test_unreachable_database_is_unavailable() -> None:
    store = SqlStore("postgresql://postgres@127.0.0.1:1/nothing")
    await store.start()
    try:
        with pytest.raises(Unavailable):
            await store.ping()
        with pytest.raises(Unavailable):
            await store.get_user(UserId("x"))
    finally:
        await store.close()
    with pytest.raises(Unavailable):
        await migrate("postgresql://postgres@127.0.0.1:1/nothing")


async def test_a_store_that_is_not_started_is_unavailable(store_url: str) -> None:
    store = SqlStore(store_url)
    with pytest.raises(Unavailable):
        await store.ping()
    with pytest.raises(Unavailable):
        await store.send_message(SendRequest(RoomId("r"), UserId("u"), "x", None))
    await store.close()


# users and tokens


async def test_users(store: SqlStore) -> None:
    alice = await store.create_user(f"alice{uuid.uuid4().hex[:8]}", "h1", "Alice", is_admin=True)
    assert await store.get_user(alice.id) == alice
    assert alice.is_admin
    assert await store.get_user(UserId(str(uuid.uuid4()))) is None
    creds = await store.get_credentials(alice.username)
    assert creds is not None
    assert (creds.user, creds.password_hash) == (alice, "h1")
    assert await store.get_credentials("nobody-here") is None
    with pytest.raises(UsernameTaken) as caught:
        await store.create_user(alice.username, "h2", "Other")
    assert caught.value.code == "username_taken"
    bob = await new_user(store)
    assert await store.get_users([alice.id, bob.id, UserId("missing")]) == {
        alice.id: alice,
        bob.id: bob,
    }
    assert await store.get_users([]) == {}


async def test_refresh_token_rotation_and_reuse_revokes_the_family(store: SqlStore) -> None:
    user = await new_user(store)
    family = str(uuid.uuid4())
    t1, t2 = f"t1-{family}", f"t2-{family}"
    await store.add_refresh_token(t1, user.id, family, FUTURE)
    grant = await store.use_refresh_token(t1, NOW)
    assert (grant.user_id, grant.family_id) == (user.id, family)
    await store.add_refresh_token(t2, user.id, family, FUTURE)
    with pytest.raises(Unauthorized) as caught:
        await store.use_refresh_token(t1, NOW)
    assert caught.value.code == "invalid_grant"
    with pytest.raises(Unauthorized):
        await store.use_refresh_token(t2, NOW)


async def test_refresh_tokens_unknown_expired_revoked(store: SqlStore) -> None:
    user = await new_user(store)
    with pytest.raises(Unauthorized) as caught:
        await store.use_refresh_token(f"unknown-{uuid.uuid4()}", NOW)
    assert caught.value.code == "invalid_grant"
    old = f"old-{uuid.uuid4()}"
    await store.add_refresh_token(old, user.id, str(uuid.uuid4()), PAST)
    with pytest.raises(Unauthorized):
        await store.use_refresh_token(old, NOW)
    revoked = f"rev-{uuid.uuid4()}"
    await store.add_refresh_token(revoked, user.id, str(uuid.uuid4()), FUTURE)
    revoked_family = await store.revoke_refresh_family(revoked)
    assert revoked_family is not None and revoked_family.user_id == user.id
    assert await store.revoke_refresh_family(f"never-{uuid.uuid4()}") is None
    with pytest.raises(Unauthorized):
        await store.use_refresh_token(revoked, NOW)


async def test_a_password_change_revokes_every_other_family(store: SqlStore) -> None:
    user, other = await new_user(store), await new_user(store)
    kept, ended, ended_too, others = (str(uuid.uuid4()) for _ in range(4))
    tokens = {family: f"tok-{family}" for family in (kept, ended, ended_too, others)}
    for family, token in tokens.items():
        owner = other.id if family == others else user.id
        await store.add_refresh_token(token, owner, family, FUTURE)
    assert await store.set_password(user.id, "new-hash", kept) == sorted([ended, ended_too])
    credentials = await store.get_credentials(user.username)
    assert credentials is not None and credentials.password_hash == "new-hash"
    for family in (ended, ended_too):
        with pytest.raises(Unauthorized):
            await store.use_refresh_token(tokens[family], NOW)
    assert (await store.use_refresh_token(tokens[kept], NOW)).family_id == kept
    assert (await store.use_refresh_token(tokens[others], NOW)).family_id == others
    with pytest.raises(NotFound):
        await store.set_password(UserId(f"nobody-{uuid.uuid4()}"), "h", None)


async def test_a_refresh_token_is_consumed_once_under_concurrency(store: SqlStore) -> None:
    user = await new_user(store)
    token = f"race-{uuid.uuid4()}"
    await store.add_refresh_token(token, user.id, str(uuid.uuid4()), FUTURE)
    results = await asyncio.gather(
        *(store.use_refresh_token(token, NOW) for _ in range(5)), return_exceptions=True
    )
    assert sum(not isinstance(r, BaseException) for r in results) == 1
    assert all(isinstance(r, Unauthorized) for r in results if isinstance(r, BaseException))


# rooms and membership


async def test_create_room_events(store: SqlStore) -> None:
    owner = await new_user(store)
    room, events = await store.create_room(
        name="lobby",
        visibility=Visibility.PRIVATE,
        topic="hello",
        kind=RoomKind.ROOM,
        owner_id=owner.id,
    )
    assert (room.name, room.topic, room.kind, room.last_seq) == ("lobby", "hello", RoomKind.ROOM, 2)
    assert [(e.seq, e.type) for e in events] == [
        (1, EventType.ROOM_CREATED),
        (2, EventType.MEMBER_JOINED),
    ]
    created, joined = (payload(e) for e in events)
    assert created["room"]["id"] == room.id
    assert created["actor_id"] == owner.id
    assert joined["user_id"] == owner.id
    assert joined["role"] == "owner"
    assert "invited_by" not in joined
    assert await store.get_room(room.id) == room
    assert await store.get_room(RoomId(str(uuid.uuid4()))) is None
    membership = await store.get_membership(room.id, owner.id)
    assert membership is not None
    assert (membership.role, membership.is_member) == (Role.OWNER, True)
    assert [e.raw for e in await all_events(store, room.id)] == [e.raw for e in events]


async def test_create_room_with_a_missing_owner(store: SqlStore) -> None:
    with pytest.raises(NotFound):
        await store.create_room(
            name="x",
            visibility=Visibility.PUBLIC,
            topic="",
            kind=RoomKind.ROOM,
            owner_id=UserId(str(uuid.uuid4())),
        )


async def test_public_rooms_list(store: SqlStore) -> None:
    owner = await new_user(store)
    public = await new_room(store, owner, name=f"pub-{uuid.uuid4().hex[:6]}")
    private = await new_room(store, owner, visibility=Visibility.PRIVATE)
    listed = {r.id for r in await store.list_public_rooms(limit=10_000)}
    assert public.id in listed
    assert private.id not in listed


async def test_update_room(store: SqlStore) -> None:
    owner = await new_user(store)
    room = await new_room(store, owner)
    updated, events = await store.update_room(room.id, owner.id, name="renamed", topic=None)
    assert (updated.name, updated.topic, updated.last_seq) == ("renamed", "", 3)
    assert payload(events[0])["room"] == updated.public()
    same, none = await store.update_room(room.id, owner.id, name="renamed", topic="")
    assert (same, none) == (updated, [])
    with pytest.raises(NotFound):
        await store.update_room(RoomId(str(uuid.uuid4())), owner.id, name="x", topic=None)


async def test_direct_rooms_are_idempotent(store: SqlStore) -> None:
    a, b = await new_user(store), await new_user(store)
    room, events, created = await store.get_or_create_dm(a.id, b.id)
    assert created
    assert room.kind is RoomKind.DM
    assert [(e.seq, e.type) for e in events] == [
        (1, EventType.ROOM_CREATED),
        (2, EventType.MEMBER_JOINED),
        (3, EventType.MEMBER_JOINED),
    ]
    assert payload(events[2])["invited_by"] == a.id
    again, events_again, created_again = await store.get_or_create_dm(b.id, a.id)
    assert (again.id, events_again, created_again) == (room.id, [], False)
    roles = {user.id: role for user, role in await store.list_members(room.id)}
    assert roles == {a.id: Role.MEMBER, b.id: Role.MEMBER}
    with pytest.raises(Conflict):
        await store.create_room(
            name="",
            visibility=Visibility.PRIVATE,
            topic="",
            kind=RoomKind.DM,
            owner_id=a.id,
            other_ids=[b.id],
        )


async def test_concurrent_dm_creation_makes_one_room(store_url: str, backend: str) -> None:
    stores = [SqlStore(store_url) for _ in range(2 if backend == "postgres" else 1)]
    for s in stores:
        await s.start()
    try:
        a, b = await new_user(stores[0]), await new_user(stores[0])
        results = await asyncio.gather(
            *(
                stores[i % len(stores)].get_or_create_dm(*((a.id, b.id) if i % 3 else (b.id, a.id)))
                for i in range(12)
            )
        )
        assert len({room.id for room, _, _ in results}) == 1
        assert sum(created for _, _, created in results) == 1
        assert await stores[0].user_room_ids(a.id) == {results[0][0].id: 3}
    finally:
        for s in stores:
            await s.close()


async def test_join_leave_kick(store: SqlStore) -> None:
    owner, bob, carol = await new_user(store), await new_user(store), await new_user(store)
    room = await new_room(store, owner)
    [joined] = await store.join_room(room.id, bob.id)
    assert payload(joined) | {"created_at": None} == {
        "room_id": room.id,
        "seq": 3,
        "type": "member.joined",
        "created_at": None,
        "actor_id": bob.id,
        "user_id": bob.id,
        "role": "member",
    }
    assert await store.join_room(room.id, bob.id) == []
    [invited] = await store.invite(room.id, carol.id, Role.ADMIN, owner.id)
    assert (payload(invited)["role"], payload(invited)["invited_by"]) == ("admin", owner.id)
    assert await store.invite(room.id, carol.id, Role.MEMBER, owner.id) == []
    assert set(await store.member_ids(room.id)) == {owner.id, bob.id, carol.id}
    assert [(u.id, r) for u, r in await store.list_members(room.id)] == [
        (owner.id, Role.OWNER),
        (bob.id, Role.MEMBER),
        (carol.id, Role.ADMIN),
    ]
    assert await store.shares_room(bob.id, carol.id)

    [left] = await store.remove_member(room.id, bob.id, bob.id, ban=False)
    assert (payload(left)["reason"], payload(left)["user_id"]) == ("left", bob.id)
    assert await store.remove_member(room.id, bob.id, bob.id, ban=False) == []
    assert await store.get_membership(room.id, bob.id) is None
    assert not await store.shares_room(bob.id, carol.id)
    [kicked] = await store.remove_member(room.id, carol.id, owner.id, ban=False)
    assert (payload(kicked)["reason"], payload(kicked)["actor_id"]) == ("kicked", owner.id)
    assert await store.member_ids(room.id) == [owner.id]
    assert await store.user_room_ids(bob.id) == {}
    with pytest.raises(NotFound):
        await store.join_room(RoomId(str(uuid.uuid4())), bob.id)
    await assert_contiguous(store, room.id)


async def test_ban(store: SqlStore) -> None:
    owner, bob, eve = await new_user(store), await new_user(store), await new_user(store)
    room = await new_room(store, owner, bob)
    [banned] = await store.remove_member(room.id, bob.id, owner.id, ban=True)
    assert payload(banned)["reason"] == "banned"
    membership = await store.get_membership(room.id, bob.id)
    assert membership is not None
    assert (membership.role, membership.banned, membership.is_member) == (None, True, False)
    assert await store.remove_member(room.id, bob.id, owner.id, ban=True) == []
    with pytest.raises(Forbidden) as caught:
        await store.join_room(room.id, bob.id)
    assert caught.value.code == "banned"
    assert await store.member_ids(room.id) == [owner.id]
    with pytest.raises(NotFound):
        await store.send_message(send(room, bob))

    assert await store.remove_member(room.id, eve.id, owner.id, ban=True) == []
    eve_membership = await store.get_membership(room.id, eve.id)
    assert eve_membership is not None
    assert eve_membership.banned

    [lifted] = await store.invite(room.id, bob.id, Role.MEMBER, owner.id)
    assert payload(lifted)["invited_by"] == owner.id
    membership = await store.get_membership(room.id, bob.id)
    assert membership is not None
    assert (membership.role, membership.banned) == (Role.MEMBER, False)
    await assert_contiguous(store, room.id)


# sequencing and group commit


@pytest.mark.parametrize("group_commit", [True, False])
async def test_seqs_are_contiguous_under_concurrent_senders(
    store_url: str, group_commit: bool
) -> None:
    store = SqlStore(store_url, group_commit=group_commit)
    await store.start()
    try:
        users = [await new_user(store) for _ in range(4)]
        rooms = [await new_room(store, users[0], *users[1:]) for _ in range(3)]

        async def sender(task: int) -> list[tuple[RoomId, int, int]]:
            sent = []
            for i in range(25):
                room = rooms[(task + i) % 3]
                result = await store.send_message(
                    send(room, users[task % 4], f"{task}/{i}", f"c-{task}-{i}")
                )
                assert result.created
                assert result.event is not None
                sent.append((room.id, result.message.seq, i))
            return sent

        sent = await asyncio.gather(*(sender(t) for t in range(20)))
        for room in rooms:
            log = await assert_contiguous(store, room.id)
            assert len(log) == 2 + 3 + sum(1 for s in sent for r, _, _ in s if r == room.id)
        for per_task in sent:
            for room in rooms:
                seqs = [seq for r, seq, _ in per_task if r == room.id]
                assert seqs == sorted(seqs)
    finally:
        await store.close()


@pytest.mark.service("postgres")
async def test_two_nodes_write_one_room(pg_url: str) -> None:
    nodes = [SqlStore(pg_url), SqlStore(pg_url)]
    for node in nodes:
        await node.start()
    try:
        users = [await new_user(nodes[0]) for _ in range(4)]
        rooms = [await new_room(nodes[0], users[0], *users[1:]) for _ in range(2)]

        async def sender(task: int) -> None:
            node = nodes[task % 2]
            for i in range(20):
                await node.send_message(send(rooms[(task + i) % 2], users[task % 4], f"{i}"))
                if i % 7 == 0:
                    await node.invite(
                        rooms[i % 2].id, users[(task + 1) % 4].id, Role.MEMBER, users[0].id
                    )

        await asyncio.gather(*(sender(t) for t in range(12)))
        for room in rooms:
            await assert_contiguous(nodes[1], room.id)
    finally:
        for node in nodes:
            await node.close()


@settings(
    max_examples=12,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)
@given(
    st.lists(
        st.tuples(
            st.integers(0, 2),
            st.integers(0, 2),
            st.one_of(st.none(), st.sampled_from(["a", "b", "c"])),
        ),
        min_size=1,
        max_size=30,
    )
)
async def test_property_concurrent_sends(
    store: SqlStore, plan: list[tuple[int, int, str | None]]
) -> None:
    """Any mix of senders, rooms and repeated client ids: each room's log stays
    1..N, and every distinct (room, sender, client_msg_id) is stored once."""
    users = [await new_user(store) for _ in range(3)]
    rooms = [await new_room(store, users[0], *users[1:]) for _ in range(3)]
    results = await asyncio.gather(
        *(store.send_message(send(rooms[r], users[u], "x", c)) for r, u, c in plan)
    )
    keyed: dict[tuple[int, int, str], str] = {}
    for (r, u, c), result in zip(plan, results, strict=True):
        if c is not None:
            assert keyed.setdefault((r, u, c), result.message.id) == result.message.id
    assert sum(r.created for r in results) == len(keyed) + sum(c is None for _, _, c in plan)
    for room in rooms:
        await assert_contiguous(store, room.id)


async def test_client_msg_id_makes_a_send_idempotent(store: SqlStore) -> None:
    owner, bob = await new_user(store), await new_user(store)
    room = await new_room(store, owner, bob)
    first = await store.send_message(send(room, owner, "hello", "k1"))
    assert first.created
    assert first.event is not None
    retry = await store.send_message(send(room, owner, "changed body", "k1"))
    assert (retry.created, retry.event, retry.message) == (False, None, first.message)
    other = await store.send_message(send(room, bob, "hello", "k1"))
    assert other.created

    same_batch = await asyncio.gather(
        store.send_message(send(room, owner, "twin", "k2")),
        store.send_message(send(room, owner, "twin", "k2")),
        store.send_message(send(room, owner, "free")),
        store.send_message(send(room, owner, "free")),
    )
    assert [r.created for r in same_batch] == [True, False, True, True]
    assert same_batch[1].message == same_batch[0].message
    assert same_batch[1].event is None
    messages, _ = await store.list_messages(room.id, before_seq=None, after_seq=None, limit=50)
    assert [m.body for m in messages] == ["hello", "hello", "twin", "free", "free"]
    await assert_contiguous(store, room.id)


async def test_large_batches_check_membership_and_retries_for_every_send(store: SqlStore) -> None:
    """More keys than one lookup takes (the store checks keys in chunks)."""
    owner, bob, stranger = await new_user(store), await new_user(store), await new_user(store)
    rooms = [await new_room(store, owner, bob) for _ in range(3)]

    def requests() -> list[SendRequest]:
        return [
            send(rooms[i % 3], (owner, bob, stranger)[i % 5 % 3], f"m{i}", f"k{i}")
            for i in range(150)
        ]

    first = await asyncio.gather(*map(store.send_message, requests()), return_exceptions=True)
    again = await asyncio.gather(*map(store.send_message, requests()), return_exceptions=True)
    for i, (one, two) in enumerate(zip(first, again, strict=True)):
        if i % 5 % 3 == 2:
            assert isinstance(one, NotFound)
            assert isinstance(two, NotFound)
        else:
            assert not isinstance(one, BaseException)
            assert not isinstance(two, BaseException)
            assert (one.created, two.created, two.message) == (True, False, one.message)
    for room in rooms:
        await assert_contiguous(store, room.id)


@pytest.mark.parametrize("size", [1, 2, 3, 4, 5, 9])
async def test_every_batch_size_checks_each_key(store: SqlStore, size: int) -> None:
    """Batches are checked in padded shapes (the last key repeated): a stranger's
    send last in the batch is refused, and only it."""
    owner, stranger = await new_user(store), await new_user(store)
    room = await new_room(store, owner)
    senders = [owner] * (size - 1) + [stranger]
    results = await asyncio.gather(
        *(store.send_message(send(room, u, f"m{i}", f"k{i}")) for i, u in enumerate(senders)),
        return_exceptions=True,
    )
    assert isinstance(results[-1], NotFound)
    assert all(isinstance(r, SendResult) and r.created for r in results[:-1])
    await assert_contiguous(store, room.id)


async def test_a_non_member_send_fails_alone(store: SqlStore) -> None:
    owner, stranger, banned = await new_user(store), await new_user(store), await new_user(store)
    room = await new_room(store, owner, banned)
    await store.remove_member(room.id, banned.id, owner.id, ban=True)
    results = await asyncio.gather(
        store.send_message(send(room, owner, "1")),
        store.send_message(send(room, stranger, "no", "s1")),
        store.send_message(send(room, owner, "2")),
        store.send_message(send(room, banned, "no")),
        store.send_message(SendRequest(RoomId(str(uuid.uuid4())), owner.id, "no", None)),
        store.send_message(send(room, owner, "3")),
        return_exceptions=True,
    )
    assert [type(r).__name__ for r in results] == [
        "SendResult",
        "NotFound",
        "SendResult",
        "NotFound",
        "NotFound",
        "SendResult",
    ]
    messages, _ = await store.list_messages(room.id, before_seq=None, after_seq=None, limit=50)
    assert [m.body for m in messages] == ["1", "2", "3"]
    await assert_contiguous(store, room.id)


async def test_text_the_database_cannot_hold_fails_alone(store: SqlStore) -> None:
    owner = await new_user(store)
    room = await new_room(store, owner)
    results = await asyncio.gather(
        store.send_message(send(room, owner, "fine")),
        store.send_message(send(room, owner, "nul \x00 inside")),
        store.send_message(send(room, owner, "lone \ud800 surrogate")),
        store.send_message(send(room, owner, "also fine")),
        return_exceptions=True,
    )
    assert [type(r).__name__ for r in results] == [
        "SendResult",
        "InvalidInput",
        "InvalidInput",
        "SendResult",
    ]
    first = results[0]
    assert not isinstance(first, BaseException)
    with pytest.raises(InvalidInput):
        await store.edit_message(room.id, first.message.id, owner.id, "\x00", 1)
    await assert_contiguous(store, room.id)


async def test_operations_apply_in_enqueue_order(store: SqlStore) -> None:
    owner, bob = await new_user(store), await new_user(store)
    room = await new_room(store, owner, bob)
    sent, left = await asyncio.gather(
        store.send_message(send(room, bob, "before the kick")),
        store.remove_member(room.id, bob.id, owner.id, ban=False),
    )
    assert sent.message.seq < left[0].seq
    await store.join_room(room.id, bob.id)
    results = await asyncio.gather(
        store.remove_member(room.id, bob.id, owner.id, ban=False),
        store.send_message(send(room, bob, "after the kick")),
        store.send_message(send(room, owner, "still here")),
        return_exceptions=True,
    )
    assert isinstance(results[1], NotFound)
    assert not isinstance(results[2], BaseException)
    await assert_contiguous(store, room.id)


async def test_a_failed_commit_fails_its_batch_and_the_writer_goes_on(store: SqlStore) -> None:
    owner = await new_user(store)
    room = await new_room(store, owner)
    engine = store._sync_engine
    failures = 0

    def fail_commit(conn: Any) -> None:
        nonlocal failures
        failures += 1
        raise RuntimeError("disk on fire")

    sa_event.listen(engine, "commit", fail_commit)
    try:
        results = await asyncio.gather(
            *(store.send_message(send(room, owner, f"{i}")) for i in range(5)),
            store.update_room(room.id, owner.id, name="never", topic=None),
            return_exceptions=True,
        )
    finally:
        sa_event.remove(engine, "commit", fail_commit)
    assert failures == 1
    assert all(isinstance(r, Unavailable) for r in results)
    after = await store.send_message(send(room, owner, "works"))
    assert after.message.seq == room.last_seq + 1
    messages, _ = await store.list_messages(room.id, before_seq=None, after_seq=None, limit=50)
    assert [m.body for m in messages] == ["works"]
    await assert_contiguous(store, room.id)


async def test_a_failed_commit_of_sends_alone_fails_them_and_the_writer_goes_on(
    store: SqlStore,
) -> None:
    """On SQLite a batch made only of sends commits on another path (statements on
    the event loop, COMMIT in the writer's thread): its failure must fail it the same."""
    owner = await new_user(store)
    room = await new_room(store, owner)
    engine = store._sync_engine

    def fail_commit(conn: Any) -> None:
        raise RuntimeError("disk on fire")

    sa_event.listen(engine, "commit", fail_commit)
    try:
        results = await asyncio.gather(
            *(store.send_message(send(room, owner, f"{i}")) for i in range(5)),
            return_exceptions=True,
        )
    finally:
        sa_event.remove(engine, "commit", fail_commit)
    assert all(isinstance(r, Unavailable) for r in results)
    after = await asyncio.gather(
        *(store.send_message(send(room, owner, f"ok {i}")) for i in range(3))
    )
    assert [r.message.seq for r in after] == [
        room.last_seq + 1,
        room.last_seq + 2,
        room.last_seq + 3,
    ]
    await assert_contiguous(store, room.id)


async def test_sends_wait_for_another_process_lock_without_blocking_the_loop(
    store: SqlStore, store_url: str, backend: str
) -> None:
    """Another process (a CLI) holding SQLite's write lock: sends wait for it in the
    writer's thread, and the event loop keeps running meanwhile."""
    if backend != "sqlite":
        pytest.skip("SQLite's write lock")
    owner = await new_user(store)
    room = await new_room(store, owner)
    other = sqlite3.connect(make_url(store_url).database or "", isolation_level=None)
    try:
        other.execute("BEGIN IMMEDIATE")
        sends = asyncio.gather(*(store.send_message(send(room, owner, f"{i}")) for i in range(5)))
        loop = asyncio.get_running_loop()
        longest, last = 0.0, loop.time()
        for _ in range(30):
            await asyncio.sleep(0.01)
            now = loop.time()
            longest, last = max(longest, now - last), now
        assert not sends.done()
        other.execute("COMMIT")
    finally:
        other.close()
    stored = await sends
    assert longest < 0.2
    assert [r.message.seq for r in stored] == [room.last_seq + i for i in range(1, 6)]
    await assert_contiguous(store, room.id)


async def test_sqlite_refused_sends_leave_no_orphan_rows(
    store: SqlStore, store_url: str, backend: str
) -> None:
    """The loop's connection skips SQLite's foreign key checks (the batch's own lookup
    refuses outsiders first): a batch that mixes members' sends with sends into a
    room that does not exist, from an outsider, from a banned member and from a user
    that does not exist stores only the members' messages and no row without its
    room or sender."""
    if backend != "sqlite":
        pytest.skip("SQLite's sender connection")
    owner, bob, outsider, banned = [await new_user(store) for _ in range(4)]
    room = await new_room(store, owner, bob, banned)
    await store.remove_member(room.id, banned.id, owner.id, ban=True)
    room = await store.get_room(room.id) or room
    ghost_room = dataclasses.replace(room, id=RoomId(str(uuid.uuid4())))
    ghost_user = dataclasses.replace(owner, id=UserId(str(uuid.uuid4())))
    requests = [
        send(room, owner, "1"),
        send(ghost_room, owner, "no room"),
        send(room, outsider, "outsider"),
        send(room, banned, "banned"),
        send(room, ghost_user, "no user"),
        send(room, bob, "2"),
    ]
    results = await asyncio.gather(
        *(store.send_message(r) for r in requests), return_exceptions=True
    )
    assert [type(r) for r in results] == [SendResult, *[NotFound] * 4, SendResult]
    log = await assert_contiguous(store, room.id)
    assert [payload(e)["message"]["body"] for e in log[-2:]] == ["1", "2"]
    db = sqlite3.connect(make_url(store_url).database or "")
    try:
        assert db.execute("PRAGMA foreign_key_check").fetchall() == []
        assert db.execute(
            "SELECT count(*) FROM messages WHERE room_id = ?", (ghost_room.id,)
        ).fetchone() == (0,)
    finally:
        db.close()


async def test_close_finishes_queued_writes(store_url: str) -> None:
    store = SqlStore(store_url, group_commit_max=8)
    await store.start()
    owner = await new_user(store)
    room = await new_room(store, owner)
    tasks = [asyncio.create_task(store.send_message(send(room, owner, f"{i}"))) for i in range(100)]
    await asyncio.sleep(0)
    await store.close()
    assert all(t.done() and t.result().created for t in tasks)
    with pytest.raises(Unavailable):
        await store.send_message(send(room, owner, "late"))
    reopened = SqlStore(store_url)
    await reopened.start()
    try:
        log = await assert_contiguous(reopened, room.id)
        assert len(log) == 102
    finally:
        await reopened.close()


async def test_commit_counters_and_hook(store_url: str) -> None:
    commits: list[tuple[float, int]] = []
    store = SqlStore(store_url, on_commit=lambda seconds, size: commits.append((seconds, size)))
    await store.start()
    try:
        owner = await new_user(store)
        room = await new_room(store, owner)
        await asyncio.gather(*(store.send_message(send(room, owner, f"{i}")) for i in range(20)))
        with pytest.raises(NotFound):
            await store.join_room(RoomId(str(uuid.uuid4())), owner.id)  # fails alone: commits
        stats = store.stats
        assert stats.commits == len(commits) >= 4
        assert stats.committed_ops == sum(size for _, size in commits) == 20 + 3
        assert (stats.last_commit_seconds, stats.last_batch_size) == commits[-1]
        assert stats.commit_seconds_total == pytest.approx(sum(s for s, _ in commits))
        assert all(s > 0 for s, _ in commits)
        assert stats.failed_batches == 0
        store.on_commit = None
        await new_user(store)
        assert store.stats.commits == len(commits) + 1
    finally:
        await store.close()


async def test_a_write_queued_two_turns_later_joins_the_commit(store_url: str) -> None:
    """A write queued two turns of the loop after the writer woke joins its commit
    (``_GATHER_TURNS``: a send frame's write reaches the queue that late)."""
    sizes: list[int] = []
    store = SqlStore(store_url, on_commit=lambda seconds, size: sizes.append(size))
    await store.start()
    try:
        owner = await new_user(store)
        room = await new_room(store, owner)
        sizes.clear()
        loop = asyncio.get_running_loop()
        later: list[asyncio.Task[Any]] = []

        def start_later() -> None:  # a send frame read: its task runs a turn later
            later.append(loop.create_task(store.send_message(send(room, owner, "second"))))

        # the frame is read in the turn the writer wakes in, after it
        loop.call_soon(loop.call_soon, start_later)
        first = await store.send_message(send(room, owner, "first"))
        second = await later[0]
        assert second.message.seq == first.message.seq + 1
        assert sizes == [2]
    finally:
        await store.close()


class Hooked:
    """An ``on_events`` hook that keeps each call's events."""

    def __init__(self) -> None:
        self.calls: list[list[Event]] = []

    def __call__(self, events: Sequence[Event]) -> None:
        self.calls.append(list(events))

    def events(self, room_id: RoomId | None = None) -> list[Event]:
        return [e for call in self.calls for e in call if room_id in (None, e.room_id)]


async def test_the_commit_hook_sees_every_stored_event_once(store_url: str) -> None:
    hooked = Hooked()
    store = SqlStore(store_url, on_events=hooked)
    await store.start()
    try:
        owner, bob, carol = await new_user(store), await new_user(store), await new_user(store)
        room, _ = await store.create_room(
            name="hooked", visibility=Visibility.PUBLIC, topic="", kind=RoomKind.ROOM,
            owner_id=owner.id,
        )  # fmt: skip
        await store.join_room(room.id, bob.id)
        sent = await asyncio.gather(
            *(store.send_message(send(room, owner, f"{i}", f"c{i}")) for i in range(20)),
            store.invite(room.id, carol.id, Role.MEMBER, owner.id),
            *(store.send_message(send(room, bob, f"b{i}")) for i in range(5)),
        )
        first = sent[0]
        assert isinstance(first, SendResult)
        await store.edit_message(room.id, first.message.id, owner.id, "edited", 1)
        await store.set_reaction(room.id, first.message.id, bob.id, "+1", on=True)
        await store.set_reaction(room.id, first.message.id, bob.id, "+1", on=False)
        await store.delete_message(room.id, first.message.id, owner.id, any_sender=False)
        await store.update_room(room.id, owner.id, name="renamed", topic=None)
        await store.remove_member(room.id, carol.id, owner.id, ban=False)
        dm, _, _ = await store.get_or_create_dm(owner.id, bob.id)
        log = await assert_contiguous(store, room.id)
        assert [e.seq for e in hooked.events(room.id)] == [e.seq for e in log]
        # the deleted message's created and edited events were redacted since
        erased = {e.seq for e in log if payload(e).get("message", {}).get("deleted")}
        assert [(e.seq, e.raw) for e in hooked.events(room.id) if e.seq not in erased] == [
            (e.seq, e.raw) for e in log if e.seq not in erased
        ]
        assert hooked.events(dm.id) == await all_events(store, dm.id)
        assert all(hooked.calls), "no call without events"
        for call in hooked.calls:
            seqs = [e.seq for e in call if e.room_id == room.id]
            assert seqs == sorted(seqs)
        assert len(hooked.calls) <= store.stats.commits
    finally:
        await store.close()


async def test_the_commit_hook_sees_nothing_of_refusals_repeats_and_no_ops(
    store_url: str,
) -> None:
    hooked = Hooked()
    store = SqlStore(store_url, on_events=hooked)
    await store.start()
    try:
        owner, stranger = await new_user(store), await new_user(store)
        room = await new_room(store, owner)
        first = await store.send_message(send(room, owner, "once", "retry-me"))
        hooked.calls.clear()
        results = await asyncio.gather(
            store.send_message(send(room, owner, "once", "retry-me")),  # stored before
            store.send_message(send(room, stranger, "not a member")),
            store.send_message(send(room, owner, "bad \ud800")),
            store.join_room(RoomId(str(uuid.uuid4())), owner.id),
            store.join_room(room.id, owner.id),  # already a member: no event
            store.edit_message(room.id, first.message.id, owner.id, "stale", 7),
            store.update_room(room.id, owner.id, name=None, topic=None),
            store.set_read(room.id, owner.id, 1),
            return_exceptions=True,
        )
        assert isinstance(results[0], SendResult) and not results[0].created
        assert [type(r) for r in results[1:4]] == [NotFound, InvalidInput, NotFound]
        assert isinstance(results[5], VersionConflict)
        pair = await asyncio.gather(
            store.send_message(send(room, owner, "twice", "same")),
            store.send_message(send(room, owner, "twice", "same")),
        )
        assert [r.created for r in pair] == [True, False]
        assert [e.seq for e in hooked.events()] == [pair[0].message.seq]
        assert len(hooked.calls) == 1
    finally:
        await store.close()


async def test_the_commit_hook_drops_the_events_of_an_operation_rolled_back(
    store: SqlStore,
) -> None:
    """An operation that stored events and then failed is undone by its SAVEPOINT:
    its events are not delivered, and the send committed beside it is."""
    hooked = Hooked()
    store.on_events = hooked
    owner = await new_user(store)
    room = await new_room(store, owner)
    hooked.calls.clear()

    def store_then_fail(conn: Any) -> None:
        now = NOW
        seq = statements._take_seqs(conn, room.id, 1, now)
        event = journal._new_event(room.id, seq, EventType.ROOM_UPDATED, now, owner.id)
        journal._insert_events(conn, [event])
        raise Conflict("changed my mind")

    failed, sent = await asyncio.gather(
        store._writer.write(store_then_fail, room.id),
        store.send_message(send(room, owner, "kept")),
        return_exceptions=True,
    )
    assert isinstance(failed, Conflict)
    assert isinstance(sent, SendResult) and sent.event is not None
    assert sent.message.seq == room.last_seq + 1
    assert hooked.calls == [[sent.event]]
    await assert_contiguous(store, room.id)


async def test_the_commit_hook_runs_before_any_caller_is_answered(store: SqlStore) -> None:
    owner = await new_user(store)
    room = await new_room(store, owner)
    answered: list[int] = []
    answered_when_hooked: list[int] = []
    hooked = Hooked()

    def hook(events: Sequence[Event]) -> None:
        answered_when_hooked.append(len(answered))
        hooked(events)

    store.on_events = hook

    async def sender(i: int) -> None:
        result = await store.send_message(send(room, owner, f"{i}"))
        assert result.event in hooked.events()
        answered.append(result.message.seq)

    await asyncio.gather(*(sender(i) for i in range(10)))
    assert answered_when_hooked[0] == 0
    assert answered_when_hooked == sorted(answered_when_hooked)
    assert len(hooked.events()) == 10


async def test_a_cancelled_callers_events_are_still_delivered(store: SqlStore) -> None:
    """Delivery follows the commit, not the caller."""
    hooked = Hooked()
    store.on_events = hooked
    owner = await new_user(store)
    room = await new_room(store, owner)
    hooked.calls.clear()
    task = asyncio.create_task(store.send_message(send(room, owner, "gone")))
    await asyncio.sleep(0)  # queued, waiting for its commit
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    after = await store.send_message(send(room, owner, "after"))
    delivered = hooked.events(room.id)
    assert [e.seq for e in delivered] == [after.message.seq - 1, after.message.seq]
    assert delivered == (await all_events(store, room.id))[-2:]


async def test_a_failing_commit_hook_fails_no_write(
    store: SqlStore, caplog: pytest.LogCaptureFixture
) -> None:
    calls = 0

    def broken(events: Sequence[Event]) -> None:
        nonlocal calls
        calls += 1
        raise RuntimeError("hook on fire")

    store.on_events = broken
    owner = await new_user(store)
    room = await new_room(store, owner)
    sent = await asyncio.gather(*(store.send_message(send(room, owner, f"{i}")) for i in range(5)))
    assert [r.created for r in sent] == [True] * 5
    assert calls >= 2
    assert "the on_events hook failed" in caplog.text
    await assert_contiguous(store, room.id)


async def test_a_failed_commit_calls_no_hook(store: SqlStore) -> None:
    hooked = Hooked()
    store.on_events = hooked
    owner = await new_user(store)
    room = await new_room(store, owner)
    hooked.calls.clear()
    engine = store._sync_engine

    def fail_commit(conn: Any) -> None:
        raise RuntimeError("disk on fire")

    sa_event.listen(engine, "commit", fail_commit)
    try:
        results = await asyncio.gather(
            *(store.send_message(send(room, owner, f"{i}")) for i in range(3)),
            store.update_room(room.id, owner.id, name="never", topic=None),
            return_exceptions=True,
        )
    finally:
        sa_event.remove(engine, "commit", fail_commit)
    assert all(isinstance(r, Unavailable) for r in results)
    assert hooked.calls == []
    after = await store.send_message(send(room, owner, "works"))
    assert hooked.calls == [[after.event]]


async def test_sqlite_reads_are_single_statements(store: SqlStore, backend: str) -> None:
    """No BEGIN/ROLLBACK around a one-statement read (WAL gives it a snapshot); a read
    of several statements takes one deferred transaction."""
    if backend != "sqlite":
        pytest.skip("SQLite's reader threads")
    owner = await new_user(store)
    room = await new_room(store, owner)
    sent = await store.send_message(send(room, owner))
    seen: list[str] = []

    def record(conn: Any, cursor: Any, statement: str, *_: Any) -> None:
        seen.append(statement.split()[0])

    engine = store._sync_engine
    sa_event.listen(engine, "before_cursor_execute", record)
    try:
        await store.get_user(owner.id)
        await store.list_events(room.id, after_seq=0, limit=10)
        assert seen == ["SELECT", "SELECT"]
        seen.clear()
        assert await store.get_message(room.id, sent.message.id) == sent.message
        assert seen == ["BEGIN", "SELECT", "SELECT"]  # ROLLBACK is the driver's own call
    finally:
        sa_event.remove(engine, "before_cursor_execute", record)


# messages


async def test_edit(store: SqlStore) -> None:
    owner, bob = await new_user(store), await new_user(store)
    room = await new_room(store, owner, bob)
    sent = await store.send_message(send(room, owner, "draft"))
    edited, [event] = await store.edit_message(room.id, sent.message.id, owner.id, "final", 1)
    assert (edited.body, edited.version, edited.seq) == ("final", 2, sent.message.seq)
    assert edited.edited_at is not None
    assert event.type is EventType.MESSAGE_EDITED
    assert payload(event)["message"] == edited.public()
    with pytest.raises(VersionConflict) as caught:
        await store.edit_message(room.id, sent.message.id, owner.id, "stale", 1)
    assert caught.value.current_version == 2
    with pytest.raises(Forbidden):
        await store.edit_message(room.id, sent.message.id, bob.id, "mine now", 2)
    with pytest.raises(NotFound):
        await store.edit_message(room.id, MessageId("missing"), owner.id, "x", 1)
    assert await store.get_message(room.id, sent.message.id) == edited
    await assert_contiguous(store, room.id)


async def test_delete_leaves_a_tombstone(store: SqlStore) -> None:
    owner, bob = await new_user(store), await new_user(store)
    room = await new_room(store, owner, bob)
    mine = await store.send_message(send(room, bob, "secret"))
    with pytest.raises(Forbidden):
        await store.delete_message(room.id, mine.message.id, owner.id, any_sender=False)
    tombstone, [event] = await store.delete_message(
        room.id, mine.message.id, owner.id, any_sender=True
    )
    assert (tombstone.deleted, tombstone.body, tombstone.version) == (True, "", 2)
    assert payload(event)["message"]["body"] == ""
    assert payload(event)["message"]["deleted"] is True
    again, none = await store.delete_message(room.id, mine.message.id, bob.id, any_sender=False)
    assert (again, none) == (tombstone, [])
    with pytest.raises(Conflict):
        await store.edit_message(room.id, mine.message.id, bob.id, "back", 2)
    [listed], _ = await store.list_messages(room.id, before_seq=None, after_seq=None, limit=5)
    assert listed == tombstone
    with pytest.raises(NotFound):
        await store.delete_message(room.id, MessageId("missing"), bob.id, any_sender=True)
    await assert_contiguous(store, room.id)


async def traces_at_rest(store_url: str, marker: str) -> list[str]:
    """Where ``marker`` is stored: on SQLite, the files of the database's directory
    (the store must be closed), on PostgreSQL, the rows of the tables holding text."""
    if not store_url.startswith("postgresql"):
        directory = Path(str(make_url(store_url).database)).parent
        return [p.name for p in sorted(directory.iterdir()) if marker.encode() in p.read_bytes()]
    from sqlalchemy import text
    from sqlalchemy.ext.asyncio import create_async_engine
    from sqlalchemy.pool import NullPool

    engine = create_async_engine(store_url, poolclass=NullPool)
    like = {"m": f"%{marker}%"}
    try:
        async with engine.connect() as conn:
            events = await conn.execute(
                text("SELECT seq FROM events WHERE position(convert_to(:m, 'UTF8') in data) > 0"),
                {"m": marker},
            )
            messages = await conn.execute(text("SELECT seq FROM messages WHERE body LIKE :m"), like)
            return [f"events {r[0]}" for r in events] + [f"messages {r[0]}" for r in messages]
    finally:
        await engine.dispose()


async def test_a_deleted_message_leaves_no_text_anywhere(store_url: str) -> None:
    marker = f"erase-me-{uuid.uuid4().hex}"
    store = SqlStore(store_url)
    await store.start()
    try:
        owner, bob = await new_user(store), await new_user(store)
        room = await new_room(store, owner, bob)
        kept = await store.send_message(send(room, bob, f"kept {marker[-8:]}"))
        # long enough for overflow pages, which a delete frees
        sent = await store.send_message(send(room, bob, f"first {marker} " * 200))
        await store.set_reaction(room.id, sent.message.id, owner.id, "+1", on=True)
        await store.edit_message(room.id, sent.message.id, bob.id, f"second {marker}", 1)
        assert marker in payload((await all_events(store, room.id))[-1])["message"]["body"]
        await store.delete_message(room.id, sent.message.id, owner.id, any_sender=True)
        log = await assert_contiguous(store, room.id)
        assert not [e.seq for e in log if marker.encode() in e.raw]
        mine = [payload(e)["message"] for e in log if e.type.value.startswith("message.")]
        mine = [m for m in mine if m["id"] == sent.message.id]
        assert [(m["body"], m["deleted"]) for m in mine] == [("", True)] * 3
        page, _ = await store.list_events(room.id, after_seq=0, limit=100)
        assert not [e.seq for e in page if marker.encode() in e.raw]
        assert (await store.get_message(room.id, kept.message.id)) == kept.message
        folded = await store.get_message(room.id, sent.message.id)
        assert folded is not None and folded.reactions == {"+1": [owner.id]}
        if not store_url.startswith("postgresql"):  # the WAL was checkpointed already
            assert await traces_at_rest(store_url, marker) == []
    finally:
        await store.close()
    assert await traces_at_rest(store_url, marker) == []
    assert await traces_at_rest(store_url, f"kept {marker[-8:]}") != []


async def test_an_edit_keeps_no_earlier_version(store_url: str) -> None:
    marker = f"version-one-{uuid.uuid4().hex}"
    store = SqlStore(store_url)
    await store.start()
    try:
        owner = await new_user(store)
        room = await new_room(store, owner)
        sent = await store.send_message(send(room, owner, marker))
        await store.edit_message(room.id, sent.message.id, owner.id, "two", 1)
        await store.edit_message(room.id, sent.message.id, owner.id, "three", 2)
        log = await assert_contiguous(store, room.id)
        texts = [
            (e.type.value, payload(e)["message"]["version"], payload(e)["message"]["body"])
            for e in log
            if e.type.value.startswith("message.")
        ]
        assert texts == [
            ("message.created", 1, "three"),
            ("message.edited", 2, "three"),
            ("message.edited", 3, "three"),
        ]
    finally:
        await store.close()
    assert await traces_at_rest(store_url, marker) == []


async def test_reactions_are_folded(store: SqlStore) -> None:
    owner, bob = await new_user(store), await new_user(store)
    room = await new_room(store, owner, bob)
    one = await store.send_message(send(room, owner, "one"))
    two = await store.send_message(send(room, owner, "two"))
    mid = one.message.id
    _, [added] = await store.set_reaction(room.id, mid, owner.id, "👍", on=True)
    assert payload(added) | {"created_at": None} == {
        "room_id": room.id,
        "seq": added.seq,
        "type": "reaction.added",
        "created_at": None,
        "actor_id": owner.id,
        "message_id": mid,
        "user_id": owner.id,
        "emoji": "👍",
    }
    await store.set_reaction(room.id, mid, bob.id, "👍", on=True)
    message, _ = await store.set_reaction(room.id, mid, bob.id, "🎉", on=True)
    assert message.reactions == {"👍": [owner.id, bob.id], "🎉": [bob.id]}
    unchanged, none = await store.set_reaction(room.id, mid, bob.id, "🎉", on=True)
    assert (unchanged.reactions, none) == (message.reactions, [])
    page, _ = await store.list_messages(room.id, before_seq=None, after_seq=None, limit=10)
    assert [m.reactions for m in page] == [message.reactions, {}]
    got = await store.get_message(room.id, mid)
    assert got is not None
    assert got.reactions == message.reactions
    removed_message, [removed] = await store.set_reaction(room.id, mid, owner.id, "👍", on=False)
    assert removed.type is EventType.REACTION_REMOVED
    assert removed_message.reactions == {"👍": [bob.id], "🎉": [bob.id]}
    assert (await store.set_reaction(room.id, mid, owner.id, "👍", on=False))[1] == []
    retry = await store.send_message(send(room, owner, "x", None))
    assert retry.message.reactions == {}
    assert (await store.get_message(room.id, two.message.id)) == two.message
    assert await store.get_message(room.id, MessageId("missing")) is None
    await assert_contiguous(store, room.id)


async def test_paging(store: SqlStore) -> None:
    owner = await new_user(store)
    room = await new_room(store, owner)

    async def page(
        before: int | None = None, after: int | None = None, limit: int = 3
    ) -> tuple[list[int], bool]:
        found, more = await store.list_messages(
            room.id, before_seq=before, after_seq=after, limit=limit
        )
        return [m.seq for m in found], more

    assert await page() == ([], False)
    assert await page(before=1) == ([], False)
    assert await page(after=0) == ([], False)
    for i in range(10):
        await store.send_message(send(room, owner, str(i)))
    # room.created and member.joined took seqs 1 and 2: messages are 3..12
    assert await page() == ([10, 11, 12], True)
    assert await page(limit=10) == (list(range(3, 13)), False)
    assert await page(limit=11) == (list(range(3, 13)), False)
    assert await page(limit=9) == (list(range(4, 13)), True)
    assert await page(before=12) == ([9, 10, 11], True)
    assert await page(before=6) == ([3, 4, 5], False)
    assert await page(before=4) == ([3], False)
    assert await page(before=3) == ([], False)
    assert await page(before=1) == ([], False)
    assert await page(after=0) == ([3, 4, 5], True)
    assert await page(after=9) == ([10, 11, 12], False)
    assert await page(after=10) == ([11, 12], False)
    assert await page(after=12) == ([], False)
    assert await page(after=100) == ([], False)

    events, more = await store.list_events(room.id, after_seq=0, limit=5)
    assert ([e.seq for e in events], more) == ([1, 2, 3, 4, 5], True)
    events, more = await store.list_events(room.id, after_seq=7, limit=5)
    assert ([e.seq for e in events], more) == ([8, 9, 10, 11, 12], False)
    assert await store.list_events(room.id, after_seq=12, limit=5) == ([], False)


async def test_unread_counts_and_read_cursor(store: SqlStore) -> None:
    alice, bob = await new_user(store), await new_user(store)
    quiet = await new_room(store, alice, bob, name="quiet")
    busy = await new_room(store, alice, bob, name="busy")
    sent = [await store.send_message(send(busy, bob, f"b{i}")) for i in range(3)]
    await store.send_message(send(busy, alice, "mine"))
    rooms = await store.list_user_rooms(alice.id)
    assert [(s.room.id, s.unread) for s in rooms] == [(busy.id, 3), (quiet.id, 0)]
    assert rooms[0].role is Role.OWNER
    assert rooms[0].room.last_seq == sent[-1].message.seq + 1

    assert await store.set_read(busy.id, alice.id, sent[1].message.seq) == sent[1].message.seq
    assert await store.set_read(busy.id, alice.id, 1) == sent[1].message.seq
    await store.delete_message(busy.id, sent[2].message.id, bob.id, any_sender=False)
    [summary] = [s for s in await store.list_user_rooms(alice.id) if s.room.id == busy.id]
    assert (summary.read_seq, summary.unread) == (sent[1].message.seq, 0)

    current = await store.get_room(busy.id)
    assert current is not None
    last = current.last_seq
    assert await store.set_read(busy.id, alice.id, 10_000) == last
    membership = await store.get_membership(busy.id, alice.id)
    assert membership is not None
    assert membership.read_seq == last
    with pytest.raises(NotFound):
        await store.set_read(busy.id, (await new_user(store)).id, 1)
    assert await store.user_room_ids(alice.id) == {busy.id: last, quiet.id: quiet.last_seq}


async def test_export_streams_in_order(store: SqlStore, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(sql_module, "_EXPORT_PAGE", 4)
    owner = await new_user(store)
    room = await new_room(store, owner)
    await asyncio.gather(*(store.send_message(send(room, owner, str(i))) for i in range(13)))
    exported = await all_events(store, room.id)
    assert [e.seq for e in exported] == list(range(1, 16))
    listed, _ = await store.list_events(room.id, after_seq=0, limit=100)
    assert [e.raw for e in exported] == [e.raw for e in listed]
    assert [e async for e in store.export_room(RoomId(str(uuid.uuid4())))] == []


# encryption at rest


async def raw_execute(store_url: str, sql: str, params: dict[str, Any]) -> list[Any]:
    """A statement run beside the store, as an attacker with the database would."""
    from sqlalchemy import text
    from sqlalchemy.ext.asyncio import create_async_engine
    from sqlalchemy.pool import NullPool

    engine = create_async_engine(store_url, poolclass=NullPool)
    try:
        async with engine.begin() as conn:
            result = await conn.execute(text(sql), params)
            return list(result.all()) if result.returns_rows else []
    finally:
        await engine.dispose()


async def test_no_message_text_at_rest(store_url: str) -> None:
    marker = f"plain-{uuid.uuid4().hex}"
    store = SqlStore(store_url, keys=key_ring())
    await store.start()
    try:
        owner = await new_user(store)
        room = await new_room(store, owner)
        sent = [await store.send_message(send(room, owner, f"{i} {marker}")) for i in range(3)]
        batch = await asyncio.gather(
            *(store.send_message(send(room, owner, f"b{i} {marker}", f"c{i}")) for i in range(20))
        )
        edited, _ = await store.edit_message(
            room.id, sent[0].message.id, owner.id, f"edited {marker}", 1
        )
        [again] = await asyncio.gather(store.send_message(send(room, owner, "b1", "c1")))
        assert again.message == batch[1].message and again.message.body == f"b1 {marker}"
        assert await store.get_message(room.id, sent[0].message.id) == edited
        page, _ = await store.list_messages(room.id, before_seq=None, after_seq=None, limit=50)
        assert [m.body for m in page] == [
            f"edited {marker}", *(f"{i} {marker}" for i in (1, 2)),
            *(f"b{i} {marker}" for i in range(20)),
        ]  # fmt: skip
        log = await assert_contiguous(store, room.id)
        assert payload(log[-1])["message"]["body"] == f"edited {marker}"
    finally:
        await store.close()
    assert await traces_at_rest(store_url, marker) == []


async def test_rows_from_before_encryption_still_read_and_get_sealed(store_url: str) -> None:
    plain = SqlStore(store_url)
    await plain.start()
    try:
        owner = await new_user(plain)
        room = await new_room(plain, owner)
        sent = [(await plain.send_message(send(room, owner, f"old {i}"))).message for i in range(5)]
    finally:
        await plain.close()
    assert await traces_at_rest(store_url, "old 3") != []
    sealed = SqlStore(store_url, keys=key_ring(), key_check_interval=3600)
    await sealed.start()
    try:
        stored = await sealed.get_message(room.id, sent[0].id)
        assert stored == sent[0]  # a NULL key id reads as plain text
        await sealed.reencrypt()
        status = await sealed.key_status()
        assert None not in status["messages"] and None not in status["events"]
        page, _ = await sealed.list_messages(room.id, before_seq=None, after_seq=None, limit=9)
        assert page == sent
        await assert_contiguous(sealed, room.id)
    finally:
        await sealed.close()
    assert await traces_at_rest(store_url, "old 3") == []


async def test_rotation_with_sends_during_it(store_url: str) -> None:
    store = SqlStore(store_url, keys=key_ring(), key_check_interval=3600)
    await store.start()
    try:
        owner, bob = await new_user(store), await new_user(store)
        room = await new_room(store, owner, bob)
        before = [
            (await store.send_message(send(room, bob, f"before {i}"))).message for i in range(30)
        ]
        old_key = (await store.key_status())["messages"]
        sends = [store.send_message(send(room, owner, f"during {i}")) for i in range(60)]
        rotated, *during = await asyncio.gather(store.rotate_key(), *sends)
        assert rotated > max(k for k in old_key if k is not None)
        edited, _ = await store.edit_message(room.id, before[0].id, bob.id, "after", 1)
        await store.reencrypt()
        status = await store.key_status()
        assert set(status["messages"]) == {rotated} and set(status["events"]) == {rotated}
        page, _ = await store.list_messages(room.id, before_seq=None, after_seq=None, limit=200)
        expected = [edited, *before[1:], *(r.message for r in during)]
        assert [(m.id, m.body) for m in page] == [(m.id, m.body) for m in expected]
        await assert_contiguous(store, room.id)
    finally:
        await store.close()
    # another node (a fresh ring, the same master key) reads every key
    other = SqlStore(store_url, keys=key_ring(), key_check_interval=3600)
    await other.start()
    try:
        page, _ = await other.list_messages(room.id, before_seq=None, after_seq=None, limit=200)
        assert [m.body for m in page] == [m.body for m in expected]
    finally:
        await other.close()


async def test_a_row_moved_to_another_message_does_not_open(
    store: SqlStore, store_url: str
) -> None:
    owner = await new_user(store)
    room = await new_room(store, owner)
    a = (await store.send_message(send(room, owner, "from a"))).message
    b = (await store.send_message(send(room, owner, "from b"))).message
    await raw_execute(
        store_url,
        "UPDATE messages SET body = (SELECT body FROM messages WHERE id = :a), "
        "key_id = (SELECT key_id FROM messages WHERE id = :a) WHERE id = :b",
        {"a": a.id, "b": b.id},
    )
    assert await store.get_message(room.id, a.id) == a
    with pytest.raises(Undecryptable) as caught:
        await store.get_message(room.id, b.id)
    assert caught.value.code == "undecryptable"
    await raw_execute(
        store_url,
        "UPDATE events SET data = (SELECT data FROM events WHERE room_id = :r AND seq = :a) "
        "WHERE room_id = :r AND seq = :b",
        {"r": room.id, "a": a.seq, "b": b.seq},
    )
    with pytest.raises(Undecryptable):
        await store.list_events(room.id, after_seq=0, limit=50)
    page, _ = await store.list_events(room.id, after_seq=0, limit=a.seq)
    assert payload(page[-1])["message"]["body"] == "from a"
    assert (await store.get_message(room.id, a.id)) == a  # the store goes on


async def test_the_wrong_master_key_is_refused_at_start(store: SqlStore, store_url: str) -> None:
    wrong = SqlStore(store_url, keys=KeyRing(bytes(32)))
    with pytest.raises(Undecryptable, match="wrong master key"):
        await wrong.start()


# server administration: each change commits with its audit entry


def audit_record(action: AuditAction, user: User | None = None, **details: Any) -> AuditRecord:
    return AuditRecord(action, target_user_id=user.id if user else None, details=details)


async def audited(store: Store, user: User) -> list[AuditEntry]:
    """This user's audit entries (the PostgreSQL database is shared by many tests)."""
    entries, _ = await store.list_audit(limit=500, before=2**53)
    return [e for e in entries if e.record.target_user_id == user.id]


async def test_deactivation_revokes_every_family_and_refresh_says_why(store: SqlStore) -> None:
    user = await new_user(store)
    families = sorted(str(uuid.uuid4()) for _ in range(2))
    for n, family in enumerate(families):
        await store.add_refresh_token(f"f{n}-{user.id}", user.id, family, FUTURE)
    await store.use_refresh_token(f"f0-{user.id}", NOW)  # a used token of a live family
    changed, ended = await store.set_user_active(
        user.id, False, audit_record(AuditAction.DEACTIVATED, user)
    )
    assert changed.deactivated_at is not None
    assert sorted(ended) == families
    with pytest.raises(Forbidden) as caught:
        await store.use_refresh_token(f"f1-{user.id}", NOW)
    assert caught.value.code == "account_deactivated"
    again, ended_again = await store.set_user_active(
        user.id, False, audit_record(AuditAction.DEACTIVATED, user)
    )
    assert ended_again == [] and again.deactivated_at == changed.deactivated_at
    back, _ = await store.set_user_active(
        user.id, True, audit_record(AuditAction.REACTIVATED, user)
    )
    assert back.deactivated_at is None
    actions = [e.record.action for e in await audited(store, user)]
    assert actions == [AuditAction.DEACTIVATED, AuditAction.REACTIVATED]  # no change, no entry


async def test_a_failed_change_records_no_audit_entry(store: SqlStore) -> None:
    ghost = UserId(str(uuid.uuid4()))
    with pytest.raises(NotFound):
        await store.set_user_active(
            ghost, False, AuditRecord(AuditAction.DEACTIVATED, target_user_id=ghost)
        )
    entries, _ = await store.list_audit(limit=500, before=2**53)
    assert ghost not in [e.record.target_user_id for e in entries]


async def test_refresh_token_reuse_is_audited_with_the_ip(store: SqlStore) -> None:
    user = await new_user(store)
    family = str(uuid.uuid4())
    await store.add_refresh_token(f"r-{user.id}", user.id, family, FUTURE)
    await store.use_refresh_token(f"r-{user.id}", NOW)
    with pytest.raises(Unauthorized):
        await store.use_refresh_token(f"r-{user.id}", NOW, ip="192.0.2.7")
    [entry] = await audited(store, user)
    assert entry.record.action is AuditAction.REFRESH_REUSE
    assert entry.record.ip == "192.0.2.7"
    assert entry.record.details == {"family_id": family}


async def test_admin_flag_password_reset_and_display_name(store: SqlStore) -> None:
    user = await new_user(store)
    promoted = await store.set_user_admin(user.id, True, audit_record(AuditAction.PROMOTED, user))
    assert promoted.is_admin and (await store.get_user(user.id)) == promoted
    family = str(uuid.uuid4())
    await store.add_refresh_token(f"p-{user.id}", user.id, family, FUTURE)
    ended = await store.reset_password(
        user.id, "new-hash", audit_record(AuditAction.PASSWORD_RESET, user)
    )
    assert ended == [family]
    credentials = await store.get_credentials(user.username)
    assert credentials is not None and credentials.password_hash == "new-hash"
    renamed = await store.set_display_name(user.id, "New Name")
    assert renamed.display_name == "New Name" and renamed.is_admin
    actions = [e.record.action for e in await audited(store, user)]
    assert actions == [AuditAction.PROMOTED, AuditAction.PASSWORD_RESET]


async def test_a_deleted_account_frees_its_username_and_keeps_its_messages(
    store: SqlStore,
) -> None:
    user = await new_user(store)
    room = await new_room(store, user)
    sent = (await store.send_message(send(room, user, "kept"))).message
    await store.delete_account(user.id, audit_record(AuditAction.ACCOUNT_DELETED, user))
    assert await store.get_credentials(user.username) is None
    gone = await store.get_user(user.id)
    assert gone is not None and gone.deleted and gone.display_name == "Deleted user"
    assert (await store.get_message(room.id, sent.id)) == sent
    again = await store.create_user(user.username, "hash", "Again")
    assert again.id != user.id
    listed, _ = await store.list_users(prefix=user.username)
    assert [u.id for u in listed] == [again.id]


async def test_list_users_pages_by_username_with_a_prefix(store: SqlStore) -> None:
    prefix = f"p{uuid.uuid4().hex[:8]}"
    made = [await store.create_user(f"{prefix}{i}", "hash", "P") for i in range(5)]
    await store.set_user_active(made[1].id, False, audit_record(AuditAction.DEACTIVATED))
    first, more = await store.list_users(prefix=prefix, limit=3)
    assert [u.username for u in first] == [f"{prefix}{i}" for i in range(3)] and more
    assert first[1].deactivated_at is not None
    rest, more = await store.list_users(prefix=prefix, after=first[-1].username, limit=3)
    assert [u.username for u in rest] == [f"{prefix}3", f"{prefix}4"] and not more
    odd, _ = await store.list_users(prefix=f"{prefix[:-1]}%")
    assert odd == []  # LIKE's wildcards are plain characters in a prefix


async def test_settings_and_invites(store: SqlStore) -> None:
    name = f"s{uuid.uuid4().hex[:8]}"
    assert await store.get_setting(name) is None
    await store.put_setting(name, "closed", audit_record(AuditAction.REGISTRATION_CHANGED))
    await store.put_setting(name, "invite", audit_record(AuditAction.REGISTRATION_CHANGED))
    assert await store.get_setting(name) == "invite"
    invite = Invite(str(uuid.uuid4()), None, NOW, None, 2, 0)
    code = f"code-{invite.id}"
    await store.create_invite(invite, code, audit_record(AuditAction.INVITE_CREATED))
    first = await store.create_user(f"i{uuid.uuid4().hex[:8]}", "h", "I", invite_hash=code)
    with pytest.raises(UsernameTaken):  # a failed registration uses nothing up
        await store.create_user(first.username, "h", "I", invite_hash=code)
    await store.create_user(f"i{uuid.uuid4().hex[:8]}", "h", "I", invite_hash=code)
    with pytest.raises(Forbidden) as caught:
        await store.create_user(f"i{uuid.uuid4().hex[:8]}", "h", "I", invite_hash=code)
    assert caught.value.code == "invalid_invite"
    listed = {i.id: i for i in await store.list_invites()}
    assert listed[invite.id].uses == 2
    expired = Invite(str(uuid.uuid4()), None, PAST, PAST, None, 0)
    await store.create_invite(expired, f"x-{expired.id}", audit_record(AuditAction.INVITE_CREATED))
    with pytest.raises(Forbidden):
        await store.create_user(f"i{uuid.uuid4().hex[:8]}", "h", "I", invite_hash=f"x-{expired.id}")


async def test_audit_pages_both_ways_and_filters_by_action(store: SqlStore) -> None:
    user = await new_user(store)
    ids = [
        await store.record_audit(audit_record(action, user, n=n))
        for n, action in enumerate([AuditAction.LOGIN, AuditAction.KICK, AuditAction.LOGIN])
    ]
    assert ids == sorted(ids)
    page, more = await store.list_audit(after=ids[0] - 1, limit=2)
    assert [e.id for e in page] == ids[:2] and more
    page, _ = await store.list_audit(before=ids[2], limit=1)
    assert [e.id for e in page] == [ids[1]]
    logins, _ = await store.list_audit(after=ids[0] - 1, actions=["auth.login"])
    mine = [e for e in logins if e.record.target_user_id == user.id]
    assert [e.record.details for e in mine] == [{"n": 0}, {"n": 2}]
