"""``SqlStore``: the ``Store`` port on SQLite (stdlib ``sqlite3``) and PostgreSQL (asyncpg).

One implementation, synchronous, on SQLAlchemy 2 Core
    Every operation is a plain function over a *sync* ``Connection``; the dialect only
    decides where it runs (and how a batch's transaction starts: ``BEGIN IMMEDIATE`` or
    row locks). SQLite: in threads, each owning one connection of the
    stdlib driver: ONE writer thread that runs a whole group-commit batch (``BEGIN
    IMMEDIATE`` … ``COMMIT`` and its fsync, GIL released) per hop, and a few reader
    threads; a batch made only of sends, the hot path, runs its statements on the
    event loop and hops to the writer's thread for ``COMMIT`` alone (``_SqliteRunner``
    says why). PostgreSQL: through ``AsyncConnection.run_sync`` on asyncpg (SQLAlchemy's
    greenlet bridge), one call per batch or read. Core compiles the same statements for
    both and wraps every driver error in one tree, so one contract suite
    (``tests/contract/test_store.py``) covers both. No ORM: rows become frozen domain
    dataclasses, an identity map buys nothing.

The store's modules, one job each
    ``engine`` (URLs, engines, SQLite's set-up) · ``runners`` (where a sync function
    runs: threads on SQLite, ``run_sync`` on PostgreSQL) · ``rows`` (rows to domain
    values) · ``statements`` (the statement catalogue) · ``journal`` (events made,
    stored and journaled for the commit hook) · ``ops`` (a queued write) · ``sends``
    (the vectorised send path) · ``writer`` (group commit, the commit hook) · here,
    the operations themselves: transaction scripts run by the writer, and reads.

Figures (``bench/store_sends.py --rounds 5``, before → after; a 2-core VM shared with
other jobs, ±30 % run to run; CPU of the whole process, benchmark tasks included)
    SQLite      get_user 1,190 → 150–180 µs CPU · list_events(100) 2,500 → 440–540 ·
                list_user_rooms(10) 1,970 → 280–350 · 50 senders, group commit:
                200 → 120–140 µs CPU per send · one sender: 6.1 → 1.1–1.6 ms a send
    PostgreSQL  get_user 800 → 280 · list_events(100) 1,650 → 610 · 50 senders:
                200 → 90 µs CPU per send · one sender: 5.7 → 3.4 ms a send
    Of a batched send's ~120 µs here: SQLite's own B-tree and WAL work ~50 (raw
    ``sqlite3`` costs as much), SQLAlchemy ~25, building the message and event ~20,
    the event loop ~20.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import hashlib
import logging
from collections.abc import AsyncIterator, Callable, Iterable, Sequence
from dataclasses import replace
from typing import Any, TypeVar, cast

from sqlalchemy.engine import Connection, Engine
from sqlalchemy.exc import IntegrityError, SQLAlchemyError

from parley.domain.admin import AuditEntry, AuditRecord, Invite
from parley.domain.mentions import Notification, NotificationLevel
from parley.domain.models import (
    Credentials,
    Event,
    EventType,
    Membership,
    Message,
    MessageId,
    Role,
    Room,
    RoomId,
    RoomKind,
    RoomSummary,
    SendResult,
    User,
    UserId,
    Visibility,
    new_id,
    utc_now,
)
from parley.domain.search import Query, SearchFilters, SearchHit
from parley.errors import (
    Conflict,
    Forbidden,
    InvalidInput,
    NotFound,
    ParleyError,
    Unauthorized,
    Unavailable,
    UsernameTaken,
    VersionConflict,
)
from parley.ports import CommitHook, NotificationHook, RefreshGrant, SendRequest, Store
from parley.store import admin
from parley.store.crypto import (
    KeyRing,
    _ring,
    add_key,
    load_keys,
    reseal_bodies,
    reseal_events,
    seal_body,
)
from parley.store.engine import (
    _unavailable,
    make_engine,
    normalize_url,
    prepare_sqlite_path,
    writer_engine,
)
from parley.store.erase import _ERASED, _rewrite_text_events
from parley.store.journal import _insert_events, _new_event
from parley.store.notifications import (
    _audience,
    _forget_member,
    _forget_message,
    _list_feed,
    _mark_read,
    _set_level,
    _stored_mentions,
)
from parley.store.ops import _Op
from parley.store.replicas import ReplicaStats, _Replicas, room_head
from parley.store.rows import (
    _ROLES,
    _USER_WIDTH,
    _event,
    _membership,
    _message,
    _room,
    _storable,
    _user,
)
from parley.store.runners import _PostgresRunner, _Runner, _SqliteRunner
from parley.store.search import (
    clear_index,
    index_page,
    reindex_message,
    search,
    unindex_message,
)
from parley.store.statements import (
    _CONSUME_TOKEN,
    _COUNT_USERS,
    _CREDENTIALS,
    _DELETE_MEMBER,
    _DELETE_REACTION,
    _EVENT_DATA,
    _EVENT_KEY_COUNTS,
    _EVENTS,
    _INSERT_MEMBER,
    _INSERT_REACTION,
    _INSERT_ROOM,
    _INSERT_TOKEN,
    _INSERT_USER,
    _MEMBER_IDS,
    _MEMBERS,
    _MEMBERSHIP,
    _MESSAGE,
    _MESSAGE_BODY,
    _MESSAGE_KEY_COUNTS,
    _PAGE_AFTER,
    _PAGE_BEFORE,
    _PAGE_LATEST,
    _PUBLIC_ROOMS,
    _RAW_USER_ROOM_SEQS,
    _REACTION,
    _READ_CURSOR,
    _RESEAL_MESSAGE,
    _REVOKE_FAMILY,
    _REVOKE_OTHER_FAMILIES,
    _REWRITE_EVENT,
    _ROOM,
    _ROOM_HEADS,
    _ROOM_OF_PAIR,
    _SELECT_1,
    _SET_PASSWORD,
    _SHARED_ROOM,
    _STALE_EVENTS,
    _STALE_MESSAGES,
    _TOKEN,
    _TOKEN_OWNER,
    _UPDATE_MEMBER,
    _UPDATE_MESSAGE,
    _UPDATE_ROOM,
    _USER,
    _USER_ROOMS,
    _USERS,
    _fold_reactions,
    _take_seqs,
)
from parley.store.threads import _read_thread, _recount
from parley.store.writer import GroupCommitWriter, StoreStats

__all__ = [
    "SqlStore",
    "StoreStats",
    "make_engine",
    "normalize_url",
    "prepare_sqlite_path",
    "writer_engine",
]

log = logging.getLogger(__name__)

_T = TypeVar("_T")
_EXPORT_PAGE = 500
_RESEAL_PAGE = 200
_INDEX_PAGE = 500
_PING_TIMEOUT = 5.0


def _dm_key(a: str, b: str) -> str:
    return ":".join(sorted((a, b)))


def _group_dm_key(people: Iterable[str]) -> str:
    """One key per set of people, order-insensitive, short enough for the column
    whatever the set's size."""
    return "g:" + hashlib.sha256(":".join(sorted(set(people))).encode()).hexdigest()


def _load_message(conn: Connection, room_id: str, message_id: str) -> Message:
    row = conn.execute(_MESSAGE, {"message": message_id, "room": room_id}).first()
    if row is None:
        raise NotFound("message not found")
    return _message(row, conn)


def _load_room(conn: Connection, room_id: str) -> Room:
    row = conn.execute(_ROOM, {"room": room_id}).first()
    if row is None:
        raise NotFound("room not found")
    return _room(row)


def _require_users(conn: Connection, user_ids: Iterable[str]) -> None:
    wanted = set(user_ids)
    if conn.execute(_COUNT_USERS, {"users": list(wanted)}).scalar_one() != len(wanted):
        raise NotFound("user not found")


def _find_membership(conn: Connection, room_id: str, user_id: str) -> Membership | None:
    row = conn.execute(_MEMBERSHIP, {"room": room_id, "user": user_id}).first()
    return _membership(row) if row is not None else None


def _stale_rows(
    query: Any, after: tuple[Any, ...], current: int | None, n: int, conn: Connection
) -> list[tuple[Any, ...]]:
    """A page of keys of rows not sealed under ``current``, after ``after``."""
    names = ("after",) if len(after) == 1 else ("after_room", "after_seq")
    params = dict(zip(names, after, strict=True)) | {"current": current, "n": n}
    return [tuple(row) for row in conn.execute(query, params).all()]


def _reseal_messages(ring: KeyRing, ids: Sequence[str], conn: Connection) -> int:
    rows = [tuple(r) for i in ids for r in conn.execute(_MESSAGE_BODY, {"message": i}).all()]
    params = reseal_bodies(conn, ring, rows)
    if params:
        conn.execute(_RESEAL_MESSAGE, params)
        conn.info[_ERASED] = True  # the old bytes leave the WAL too (``erase``)
    return len(params)


def _reseal_events(ring: KeyRing, keys: Sequence[tuple[Any, ...]], conn: Connection) -> int:
    rows = [
        tuple(r)
        for room, seq in keys
        for r in conn.execute(_EVENT_DATA, {"room": room, "seq_": seq}).all()
    ]
    params = reseal_events(conn, ring, rows)
    if params:
        conn.execute(_REWRITE_EVENT, params)
        conn.info[_ERASED] = True
    return len(params)


def _ping(conn: Connection) -> None:
    conn.execute(_SELECT_1).scalar()


def _insert_room(
    conn: Connection,
    name: str,
    visibility: Visibility,
    topic: str,
    kind: RoomKind,
    owner_id: str,
    others: Sequence[str],
    dm_key: str | None,
) -> tuple[Room, list[Event]]:
    """``room.created`` (seq 1), then ``member.joined`` for the owner and each other
    member. The counter row is inserted at its final value: nobody else can see the
    room before this commits. In a direct room everyone is a plain member."""
    _require_users(conn, [owner_id, *others])
    now = utc_now()
    room_id = new_id()
    last_seq = 2 + len(others)
    room = Room(RoomId(room_id), name, visibility, topic, kind, now, last_seq)
    conn.execute(
        _INSERT_ROOM,
        {
            "id": room_id,
            "name": name,
            "visibility": visibility.value,
            "topic": topic,
            "kind": kind.value,
            "created_at": now,
            "last_seq": last_seq,
            "last_event_at": now,
            "dm_key": dm_key,
        },
    )
    owner_role = Role.MEMBER if kind.direct else Role.OWNER
    new = [
        _new_event(
            room_id,
            1,
            EventType.ROOM_CREATED,
            now,
            owner_id,
            room=replace(room, last_seq=1).public(),
        ),
        _new_event(
            room_id,
            2,
            EventType.MEMBER_JOINED,
            now,
            owner_id,
            user_id=owner_id,
            role=owner_role.value,
        ),
    ]
    for offset, other in enumerate(others):
        new.append(
            _new_event(
                room_id,
                3 + offset,
                EventType.MEMBER_JOINED,
                now,
                owner_id,
                user_id=other,
                role=Role.MEMBER.value,
                invited_by=owner_id,
            )
        )
    conn.execute(
        _INSERT_MEMBER,
        [
            {
                "room_id": room_id,
                "user_id": user_id,
                "role": role.value,
                "banned": False,
                "read_seq": last_seq,
                "joined_at": now,
            }
            for user_id, role in [(owner_id, owner_role)] + [(o, Role.MEMBER) for o in others]
        ],
    )
    _insert_events(conn, new)
    return room, new


def _add_member(
    conn: Connection,
    room_id: str,
    user_id: str,
    role: Role,
    actor_id: str,
    row: Membership | None,
) -> list[Event]:
    now = utc_now()
    seq = _take_seqs(conn, room_id, 1, now)
    values = {"role": role.value, "banned": False, "read_seq": seq, "joined_at": now}
    if row is None:
        conn.execute(_INSERT_MEMBER, {"room_id": room_id, "user_id": user_id, **values})
    else:
        conn.execute(_UPDATE_MEMBER, {"room": room_id, "user": user_id, **values})
    fields: dict[str, Any] = {"user_id": user_id, "role": role.value}
    if actor_id != user_id:
        fields["invited_by"] = actor_id
    new = [_new_event(room_id, seq, EventType.MEMBER_JOINED, now, actor_id, **fields)]
    _insert_events(conn, new)
    return new


class SqlStore(Store):
    """The store on SQLite or PostgreSQL, chosen by ``url``.

    ``url``: ``sqlite:///path`` or ``postgresql://…`` (drivers are filled in; an async
    driver named in a SQLite URL is replaced by the stdlib one).
    ``group_commit``: group concurrent writes into one transaction (off: one each).
    ``group_commit_max``: the most operations in one transaction.
    ``pool_size``: the most PostgreSQL connections reading at once (kept open).
    ``read_threads``: SQLite reader threads, each with its own connection.
    ``replica_urls``: PostgreSQL read replicas (streaming standbys) that may answer
    ``list_messages`` and ``list_events`` once they have caught up with the room
    (``parley.store.replicas`` says why no lag shows).
    ``on_commit(seconds, batch_size)``: called on the event loop after each commit (also
    a settable attribute); ``stats`` holds running counters.
    ``on_events(events)``: the commit hook (``Store.on_events``; also a settable
    attribute), called once per commit that stored events, before its callers resume.
    ``keys``: the key ring that seals message text at rest (``parley.store.crypto``;
    None: plain text). ``key_check_interval``: seconds between reloads of the ring
    from the ``keys`` table (a rotation elsewhere) and re-sealing passes. ``reseal``:
    run that background task (off for one-shot tools: ``reencrypt`` by hand).
    The schema must be migrated first (``parley.store.migrate``).
    """

    def __init__(
        self,
        url: str,
        *,
        group_commit: bool = True,
        group_commit_max: int = 512,
        pool_size: int = 10,
        read_threads: int = 4,
        replica_urls: Sequence[str] = (),
        on_commit: Callable[[float, int], None] | None = None,
        on_events: CommitHook | None = None,
        keys: KeyRing | None = None,
        key_check_interval: float = 30.0,
        reseal: bool = True,
    ) -> None:
        if group_commit_max < 1:
            raise ValueError("group_commit_max must be at least 1")
        if read_threads < 1:
            raise ValueError("read_threads must be at least 1")
        self._url = normalize_url(url)
        if self._url.get_backend_name() not in ("sqlite", "postgresql"):
            raise ValueError(f"unsupported database: {self._url.get_backend_name()}")
        self._postgres = self._url.get_backend_name() == "postgresql"
        self._replica_urls = [normalize_url(u) for u in replica_urls]
        if self._replica_urls and not (
            self._postgres and all(u.get_backend_name() == "postgresql" for u in self._replica_urls)
        ):
            raise ValueError("read replicas need PostgreSQL, for the primary and each replica")
        self._replicas: _Replicas | None = None
        self._pool_size = pool_size
        self._read_threads = read_threads
        self._runner: _Runner | None = None
        self._writer = GroupCommitWriter(
            group_commit_max if group_commit else 1, on_commit=on_commit, on_events=on_events
        )
        self._keys = keys
        self._key_check_interval = key_check_interval
        self._reseal = reseal
        self._key_task: asyncio.Task[None] | None = None
        self._key_changed = asyncio.Event()

    @property
    def stats(self) -> StoreStats:
        """The writer's running counters."""
        return self._writer.stats

    @property
    def on_commit(self) -> Callable[[float, int], None] | None:
        """Called with ``(seconds, batch_size)`` on the event loop after each commit."""
        return self._writer.on_commit

    @on_commit.setter
    def on_commit(self, hook: Callable[[float, int], None] | None) -> None:
        self._writer.on_commit = hook

    @property
    def on_events(self) -> CommitHook | None:
        """The commit hook (``Store.on_events``)."""
        return self._writer.on_events

    @on_events.setter
    def on_events(self, hook: CommitHook | None) -> None:
        self._writer.on_events = hook

    @property
    def on_notifications(self) -> NotificationHook | None:
        """The notifications hook (``Store.on_notifications``)."""
        return self._writer.on_notifications

    @on_notifications.setter
    def on_notifications(self, hook: NotificationHook | None) -> None:
        self._writer.on_notifications = hook

    # lifecycle

    async def start(self) -> None:
        if self._runner is not None:
            return
        prepare_sqlite_path(self._url)
        runner: _Runner
        if self._postgres:
            runner = _PostgresRunner(self._url, self._pool_size, self._keys)
            if self._replica_urls:
                self._replicas = _Replicas(self._replica_urls, self._pool_size, self._keys)
        else:
            runner = _SqliteRunner(self._url, self._read_threads, self._keys)
        self._runner = runner
        self._writer.start(runner)
        if self._keys is not None:
            try:
                await self._open_key_ring(self._keys)
            except BaseException:
                await self.close()
                raise
            if self._reseal:
                self._key_task = asyncio.create_task(
                    self._maintain_keys(self._keys), name="parley-store-keys"
                )

    async def close(self) -> None:
        task, self._key_task = self._key_task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        if not await self._writer.close():
            return
        runner, self._runner = self._runner, None
        if runner is not None:
            await runner.close()
        replicas, self._replicas = self._replicas, None
        if replicas is not None:
            await replicas.close()

    async def ping(self) -> None:
        try:
            async with asyncio.timeout(_PING_TIMEOUT):
                await self._read(_ping)
        except TimeoutError as exc:
            raise _unavailable(exc) from exc

    @property
    def _sync_engine(self) -> Engine:
        """The engine of the writer's connection (tests hook its events)."""
        if self._runner is None:
            raise Unavailable("the store is not started")
        return self._runner.engine

    async def _read(self, fn: Callable[[Connection], _T], *, snapshot: bool = False) -> _T:
        """Run ``fn`` on a reader connection. ``snapshot``: its statements see one
        snapshot (SQLite; PostgreSQL reads are a snapshot per statement)."""
        runner = self._runner
        if runner is None:
            raise Unavailable("the store is not started")
        try:
            return await runner.read(fn, snapshot=snapshot)
        except (IntegrityError, ParleyError):
            raise
        except (SQLAlchemyError, OSError) as exc:
            raise _unavailable(exc) from exc

    @property
    def replica_stats(self) -> ReplicaStats | None:
        """Pages the read replicas served and the reads they could not (``None``: no
        replicas)."""
        return None if self._replicas is None else self._replicas.stats

    async def _read_history(
        self,
        room_id: RoomId,
        fn: Callable[[Connection], _T],
        *,
        full: Callable[[_T], bool],
        snapshot: bool,
    ) -> _T:
        """``fn`` on a replica that has caught up with the room, else on the primary.
        ``full(result)``: the result holds only rows that never change (a full page of
        events), so the replica's copy is the primary's whatever its lag."""
        replicas = self._replicas
        if replicas is None:
            return await self._read(fn, snapshot=snapshot)
        got = await replicas.read(room_id, fn)
        if got is None:  # failed or resting: counted there
            return await self._read(fn, snapshot=snapshot)
        replica_head, result = got
        if replica_head is not None:
            if full(result):
                replicas.stats.served += 1
                return result
            replicas.stats.head_checks += 1
            primary_head = await self._read(room_head(room_id))
            if primary_head is not None and replica_head >= primary_head:
                replicas.stats.served += 1
                return result
        replicas.stats.lagged += 1
        return await self._read(fn, snapshot=snapshot)

    # encryption at rest

    async def _open_key_ring(self, ring: KeyRing) -> None:
        """Load the ring; the first node to start on a database makes key 1."""

        def run(conn: Connection) -> None:
            load_keys(conn, ring)
            if ring.current is None:
                try:
                    with conn.begin_nested():
                        add_key(conn, ring)
                except IntegrityError:  # another node made it first
                    load_keys(conn, ring)

        await self._writer.write(run)

    async def _maintain_keys(self, ring: KeyRing) -> None:
        """Re-seal what the current key did not seal, then every
        ``key_check_interval`` seconds (or at once after ``rotate_key`` here) reload
        the ring and, if a newer key appeared, re-seal again."""
        changed = True
        while True:
            try:
                if changed:
                    count = await self.reencrypt()
                    if count:
                        log.info("re-sealed %d rows under key %s", count, ring.current)
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(self._key_check_interval):
                        await self._key_changed.wait()
                self._key_changed.clear()
                changed = await self._read(functools.partial(load_keys, ring=ring)) or changed
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                log.warning("key maintenance failed, retrying: %r", exc)
                changed = True
                await asyncio.sleep(self._key_check_interval)

    async def rotate_key(self) -> int:
        """Add a data key: new writes on this node are sealed with it at once, on
        other nodes within ``key_check_interval``; older rows are re-sealed in the
        background. Its id."""
        ring = self._require_keys()
        key_id = await self._writer.write(lambda conn: add_key(conn, ring))
        self._key_changed.set()
        return key_id

    async def key_status(self) -> dict[str, dict[int | None, int]]:
        """Rows holding text per key id (None: plain text), for ``messages`` and
        ``events``."""

        def run(conn: Connection) -> dict[str, dict[int | None, int]]:
            return {
                "messages": {row[0]: row[1] for row in conn.execute(_MESSAGE_KEY_COUNTS)},
                "events": {row[0]: row[1] for row in conn.execute(_EVENT_KEY_COUNTS)},
            }

        return await self._read(run)

    async def reencrypt(self, *, page: int = _RESEAL_PAGE) -> int:
        """One pass re-sealing every message body and message event not sealed under
        the current key (plain rows included), a page per write: each page is a small
        operation of the group-commit writer, between other writes, locking only the
        rooms it touches. The rows re-sealed."""
        ring = self._require_keys()
        total = 0
        after: tuple[Any, ...] = ("",)
        while stale := await self._read(
            functools.partial(_stale_rows, _STALE_MESSAGES, after, ring.current, page)
        ):
            reseal = functools.partial(_reseal_messages, ring, [row[0] for row in stale])
            total += await self._writer.write(reseal, *{row[1] for row in stale})
            after = (stale[-1][0],)
        after = ("", 0)
        while stale := await self._read(
            functools.partial(_stale_rows, _STALE_EVENTS, after, ring.current, page)
        ):
            reseal = functools.partial(_reseal_events, ring, [tuple(row) for row in stale])
            total += await self._writer.write(reseal, *{row[0] for row in stale})
            after = tuple(stale[-1])
        return total

    def _require_keys(self) -> KeyRing:
        if self._keys is None:
            raise Unavailable("this store has no key ring: encryption at rest is off")
        return self._keys

    # users

    async def create_user(
        self,
        username: str,
        password_hash: str,
        display_name: str,
        *,
        is_admin: bool = False,
        invite_hash: str | None = None,
    ) -> User:
        user = User(
            id=UserId(new_id()),
            username=username,
            display_name=display_name,
            created_at=utc_now(),
            is_admin=is_admin,
        )
        row = {
            "id": user.id,
            "username": username,
            "display_name": display_name,
            "password_hash": password_hash,
            "is_admin": is_admin,
            "created_at": user.created_at,
        }

        def run(conn: Connection) -> User:
            if invite_hash is not None:
                admin.use_invite(conn, invite_hash, user.created_at)
            try:
                with conn.begin_nested():
                    conn.execute(_INSERT_USER, row)
            except IntegrityError as exc:
                raise UsernameTaken(f"the username {username!r} is taken") from exc
            return user

        return await self._writer.write(run)

    async def get_user(self, user_id: UserId) -> User | None:
        def run(conn: Connection) -> User | None:
            row = conn.execute(_USER, {"user": user_id}).first()
            return _user(row) if row is not None else None

        return await self._read(run)

    async def get_users(self, user_ids: Sequence[UserId]) -> dict[UserId, User]:
        if not user_ids:
            return {}

        def run(conn: Connection) -> dict[UserId, User]:
            rows = conn.execute(_USERS, {"users": sorted(set(user_ids))}).all()
            return {row[0]: _user(row) for row in rows}

        return await self._read(run)

    async def get_credentials(self, username: str) -> Credentials | None:
        def run(conn: Connection) -> Credentials | None:
            row = conn.execute(_CREDENTIALS, {"username": username}).first()
            return Credentials(_user(row), row[_USER_WIDTH]) if row is not None else None

        return await self._read(run)

    # refresh tokens: through the writer too, so that on SQLite no second writer ever
    # waits for the lock (and risks "database is locked" under a sustained load)

    async def add_refresh_token(
        self, token_hash: str, user_id: UserId, family_id: str, expires_at: str
    ) -> None:
        row = {
            "token_hash": token_hash,
            "user_id": user_id,
            "family_id": family_id,
            "expires_at": expires_at,
            "revoked": False,
        }

        def run(conn: Connection) -> None:
            conn.execute(_INSERT_TOKEN, row)

        await self._writer.write(run)

    async def use_refresh_token(
        self, token_hash: str, now: str, *, ip: str | None = None
    ) -> RefreshGrant:
        """One conditional ``UPDATE`` consumes the token, so two concurrent refreshes
        with the same token cannot both succeed; the loser finds it used, which is
        reuse: the family is revoked, and the audit log records it. The refusal is
        returned rather than raised so that the revocation commits; it is raised
        here, after the commit."""

        def run(conn: Connection) -> RefreshGrant | ParleyError:
            row = conn.execute(_CONSUME_TOKEN, {"token": token_hash, "now": now}).first()
            if row is not None:
                return RefreshGrant(UserId(row.user_id), row.family_id)
            known = conn.execute(_TOKEN, {"token": token_hash}).first()
            if known is None or known.used_at is None:
                closed = admin.token_account_closed(conn, token_hash) if known else None
                return closed or Unauthorized("invalid refresh token", code="invalid_grant")
            conn.execute(_REVOKE_FAMILY, {"family": known.family_id})
            admin.record_reuse(conn, token_hash, ip)
            return Unauthorized("refresh token reused: its family is revoked", code="invalid_grant")

        outcome = await self._writer.write(run)
        if isinstance(outcome, ParleyError):
            raise outcome
        return outcome

    async def revoke_refresh_family(self, token_hash: str) -> RefreshGrant | None:
        def run(conn: Connection) -> RefreshGrant | None:
            row = conn.execute(_TOKEN_OWNER, {"token": token_hash}).first()
            if row is None:
                return None
            conn.execute(_REVOKE_FAMILY, {"family": row.family_id})
            return RefreshGrant(UserId(row.user_id), row.family_id)

        return await self._writer.write(run)

    async def set_password(
        self, user_id: UserId, password_hash: str, keep_family: str | None
    ) -> list[str]:
        def run(conn: Connection) -> list[str]:
            if conn.execute(_SET_PASSWORD, {"user": user_id, "hash": password_hash}).rowcount != 1:
                raise NotFound("user not found")
            rows = conn.execute(
                _REVOKE_OTHER_FAMILIES, {"user": user_id, "keep": keep_family or ""}
            )
            return sorted({row.family_id for row in rows})

        return await self._writer.write(run)

    # server administration (``parley.store.admin``): each change and its audit entry
    # commit together

    async def record_audit(self, record: AuditRecord) -> int:
        return await self._writer.write(functools.partial(admin.insert_audit, record=record))

    async def list_audit(
        self,
        *,
        after: int | None = None,
        before: int | None = None,
        limit: int = 100,
        actions: Sequence[str] = (),
    ) -> tuple[list[AuditEntry], bool]:
        return await self._read(
            functools.partial(
                admin.list_audit, after=after, before=before, limit=limit, actions=actions
            )
        )

    async def list_users(
        self, *, prefix: str = "", after: str | None = None, limit: int = 100
    ) -> tuple[list[User], bool]:
        return await self._read(
            functools.partial(admin.list_users, prefix=prefix, after=after, limit=limit)
        )

    async def set_user_active(
        self, user_id: UserId, active: bool, record: AuditRecord
    ) -> tuple[User, list[str]]:
        return await self._writer.write(
            functools.partial(admin.set_active, user_id=user_id, active=active, record=record)
        )

    async def set_user_admin(self, user_id: UserId, is_admin: bool, record: AuditRecord) -> User:
        return await self._writer.write(
            functools.partial(admin.set_admin, user_id=user_id, is_admin=is_admin, record=record)
        )

    async def reset_password(
        self, user_id: UserId, password_hash: str, record: AuditRecord
    ) -> list[str]:
        return await self._writer.write(
            functools.partial(
                admin.reset_password, user_id=user_id, password_hash=password_hash, record=record
            )
        )

    async def set_display_name(self, user_id: UserId, display_name: str) -> User:
        return await self._writer.write(
            functools.partial(admin.set_display_name, user_id=user_id, display_name=display_name)
        )

    async def delete_account(self, user_id: UserId, record: AuditRecord) -> list[str]:
        return await self._writer.write(
            functools.partial(admin.delete_account, user_id=user_id, record=record)
        )

    async def get_setting(self, name: str) -> str | None:
        return await self._read(functools.partial(admin.get_setting, name=name))

    async def put_setting(self, name: str, value: str, record: AuditRecord) -> None:
        await self._writer.write(
            functools.partial(admin.put_setting, name=name, value=value, record=record)
        )

    async def create_invite(self, invite: Invite, code_hash: str, record: AuditRecord) -> None:
        await self._writer.write(
            functools.partial(
                admin.create_invite, invite=invite, code_hash=code_hash, record=record
            )
        )

    async def list_invites(self, limit: int = 200) -> list[Invite]:
        return await self._read(functools.partial(admin.list_invites, limit=limit))

    # rooms and membership: writes

    async def create_room(
        self,
        *,
        name: str,
        visibility: Visibility,
        topic: str,
        kind: RoomKind,
        owner_id: UserId,
        other_ids: Sequence[UserId] = (),
    ) -> tuple[Room, list[Event]]:
        """A DM made here with exactly one other member gets the pair's DM key:
        ``Conflict`` if the pair already has one (use ``get_or_create_dm``)."""
        others = [u for u in dict.fromkeys(other_ids) if u != owner_id]
        dm_key = _dm_key(owner_id, others[0]) if kind is RoomKind.DM and len(others) == 1 else None

        def run(conn: Connection) -> tuple[Room, list[Event]]:
            try:
                with conn.begin_nested():
                    return _insert_room(
                        conn, name, visibility, topic, kind, owner_id, others, dm_key
                    )
            except IntegrityError as exc:
                raise Conflict("these users already have a direct room") from exc

        return await self._writer.write(run, dm_key=dm_key)

    async def get_or_create_dm(self, a: UserId, b: UserId) -> tuple[Room, list[Event], bool]:
        """Looked up first without the writer; created by the writer, which looks
        again under the DM key's lock. Should another node still win the race (the
        unique ``dm_key``), its room is returned."""
        key = _dm_key(a, b)

        def find(conn: Connection) -> Room | None:
            row = conn.execute(_ROOM_OF_PAIR, {"key": key}).first()
            return _room(row) if row is not None else None

        existing = await self._read(find)
        if existing is not None:
            return existing, [], False

        def run(conn: Connection) -> tuple[Room, list[Event], bool]:
            found = find(conn)
            if found is not None:
                return found, [], False
            try:
                with conn.begin_nested():
                    room, new = _insert_room(
                        conn, "", Visibility.PRIVATE, "", RoomKind.DM, a, [b] if b != a else [], key
                    )
                    return room, new, True
            except IntegrityError:
                found = find(conn)
                if found is None:
                    raise
                return found, [], False

        return await self._writer.write(run, dm_key=key)

    async def get_or_create_group_dm(
        self, creator: UserId, others: Sequence[UserId]
    ) -> tuple[Room, list[Event], bool]:
        """As ``get_or_create_dm``, keyed by the set of people. A creator who left
        the room joins it again (``member.joined``); others who left stay out."""
        key = _group_dm_key([creator, *others])
        people = [u for u in dict.fromkeys(others) if u != creator]

        def find(conn: Connection) -> tuple[Room, bool] | None:
            row = conn.execute(_ROOM_OF_PAIR, {"key": key}).first()
            if row is None:
                return None
            found = _room(row)
            member = _find_membership(conn, found.id, creator)
            return found, member is not None and member.is_member

        existing = await self._read(find)
        if existing is not None and existing[1]:
            return existing[0], [], False

        def run(conn: Connection) -> tuple[Room, list[Event], bool]:
            found = find(conn)
            if found is None:
                try:
                    with conn.begin_nested():
                        room, new = _insert_room(
                            conn,
                            "",
                            Visibility.PRIVATE,
                            "",
                            RoomKind.GROUP_DM,
                            creator,
                            people,
                            key,
                        )
                        return room, new, True
                except IntegrityError:
                    found = find(conn)
                    if found is None:
                        raise
            room, is_member = found
            if is_member:
                return room, [], False
            row = _find_membership(conn, room.id, creator)
            new = _add_member(conn, room.id, creator, Role.MEMBER, creator, row)
            return replace(room, last_seq=new[-1].seq), new, False

        rooms = (existing[0].id,) if existing is not None else ()
        return await self._writer.write(run, *rooms, dm_key=key)

    async def join_room(self, room_id: RoomId, user_id: UserId) -> list[Event]:
        """Join as a member; re-checks a ban under the lock (``Forbidden``). A new
        member starts with nothing unread: its cursor is its own join event."""

        def run(conn: Connection) -> list[Event]:
            row = _find_membership(conn, room_id, user_id)
            if row is not None and row.banned:
                raise Forbidden("you are banned from this room", code="banned")
            if row is not None and row.role is not None:
                return []
            return _add_member(conn, room_id, user_id, Role.MEMBER, user_id, row)

        return await self._writer.write(run, room_id)

    async def invite(
        self, room_id: RoomId, user_id: UserId, role: Role, actor_id: UserId
    ) -> list[Event]:
        """An existing member keeps their role and no event is made. Adding a banned
        user is an explicit act of an admin: it lifts the ban."""

        def run(conn: Connection) -> list[Event]:
            row = _find_membership(conn, room_id, user_id)
            if row is not None and row.role is not None and not row.banned:
                return []
            _require_users(conn, [user_id])
            return _add_member(conn, room_id, user_id, role, actor_id, row)

        return await self._writer.write(run, room_id)

    async def remove_member(
        self, room_id: RoomId, user_id: UserId, actor_id: UserId, *, ban: bool
    ) -> list[Event]:
        """Leaving or a kick deletes the membership row; a ban keeps it, with no role
        and ``banned`` set. ``member.left`` only when a member left (reason ``left``,
        ``kicked`` or ``banned``): banning a non-member records the ban silently."""

        def run(conn: Connection) -> list[Event]:
            _load_room(conn, room_id)
            row = _find_membership(conn, room_id, user_id)
            was_member = row is not None and row.role is not None and not row.banned
            key = {"room": room_id, "user": user_id}
            now = utc_now()
            if ban:
                if row is None:
                    _require_users(conn, [user_id])
                    conn.execute(
                        _INSERT_MEMBER,
                        {
                            "room_id": room_id,
                            "user_id": user_id,
                            "role": None,
                            "banned": True,
                            "read_seq": 0,
                            "joined_at": now,
                        },
                    )
                elif not row.banned:
                    conn.execute(_UPDATE_MEMBER, {**key, "role": None, "banned": True})
                reason = "banned"
            else:
                if not was_member:
                    return []
                conn.execute(_DELETE_MEMBER, key)
                reason = "left" if actor_id == user_id else "kicked"
            if not was_member:
                return []
            _forget_member(conn, room_id, user_id)
            seq = _take_seqs(conn, room_id, 1, now)
            new = [
                _new_event(
                    room_id,
                    seq,
                    EventType.MEMBER_LEFT,
                    now,
                    actor_id,
                    user_id=user_id,
                    reason=reason,
                )
            ]
            _insert_events(conn, new)
            return new

        return await self._writer.write(run, room_id)

    async def update_room(
        self, room_id: RoomId, actor_id: UserId, *, name: str | None, topic: str | None
    ) -> tuple[Room, list[Event]]:
        """No event when nothing changes."""

        def run(conn: Connection) -> tuple[Room, list[Event]]:
            room = _load_room(conn, room_id)
            new_name = room.name if name is None else name
            new_topic = room.topic if topic is None else topic
            if (new_name, new_topic) == (room.name, room.topic):
                return room, []
            now = utc_now()
            seq = _take_seqs(conn, room_id, 1, now)
            conn.execute(_UPDATE_ROOM, {"room": room_id, "name": new_name, "topic": new_topic})
            updated = replace(room, name=new_name, topic=new_topic, last_seq=seq)
            new = [
                _new_event(
                    room_id, seq, EventType.ROOM_UPDATED, now, actor_id, room=updated.public()
                )
            ]
            _insert_events(conn, new)
            return updated, new

        return await self._writer.write(run, room_id)

    # rooms and membership: reads

    async def get_room(self, room_id: RoomId) -> Room | None:
        def run(conn: Connection) -> Room | None:
            row = conn.execute(_ROOM, {"room": room_id}).first()
            return _room(row) if row is not None else None

        return await self._read(run)

    async def list_user_rooms(self, user_id: UserId) -> list[RoomSummary]:
        """Most recently active first (``rooms.last_event_at``: when the room's last
        event was stored), with unread counts: one query for the whole list."""

        def run(conn: Connection) -> list[RoomSummary]:
            rows = conn.execute(_USER_ROOMS, {"user": user_id}).all()
            return [RoomSummary(_room(row), _ROLES[row[7]], row[8], row[9]) for row in rows]

        return await self._read(run)

    async def list_public_rooms(self, limit: int = 200) -> list[Room]:
        """Public rooms by name."""

        def run(conn: Connection) -> list[Room]:
            return [_room(row) for row in conn.execute(_PUBLIC_ROOMS, {"limit": limit}).all()]

        return await self._read(run)

    async def get_membership(self, room_id: RoomId, user_id: UserId) -> Membership | None:
        return await self._read(lambda conn: _find_membership(conn, room_id, user_id))

    async def list_members(self, room_id: RoomId) -> list[tuple[User, Role]]:
        """Members in the order they joined."""

        def run(conn: Connection) -> list[tuple[User, Role]]:
            rows = conn.execute(_MEMBERS, {"room": room_id}).all()
            return [(_user(row), _ROLES[row[_USER_WIDTH]]) for row in rows]

        return await self._read(run)

    async def member_ids(self, room_id: RoomId) -> list[UserId]:
        def run(conn: Connection) -> list[UserId]:
            return list(conn.execute(_MEMBER_IDS, {"room": room_id}).scalars().all())

        return await self._read(run)

    async def user_room_ids(self, user_id: UserId) -> dict[RoomId, int]:
        def run(conn: Connection) -> dict[RoomId, int]:
            return dict(_RAW_USER_ROOM_SEQS.execute(conn, {"user": user_id}).fetchall())

        return await self._read(run)

    async def room_heads(self, room_ids: Sequence[RoomId]) -> dict[RoomId, int]:
        def run(conn: Connection) -> dict[RoomId, int]:
            return dict(conn.execute(_ROOM_HEADS, {"rooms": list(room_ids)}).fetchall())

        return await self._read(run) if room_ids else {}

    async def shares_room(self, a: UserId, b: UserId) -> bool:
        def run(conn: Connection) -> bool:
            return conn.execute(_SHARED_ROOM, {"a": a, "b": b}).first() is not None

        return await self._read(run)

    # messages

    async def send_message(self, request: SendRequest) -> SendResult:
        future = asyncio.get_running_loop().create_future()
        return cast(SendResult, await self._writer.submit(_Op(future, send=request)))

    async def edit_message(
        self, room_id: RoomId, message_id: MessageId, editor_id: UserId, body: str, version: int
    ) -> tuple[Message, list[Event]]:
        """A deleted message cannot be edited (``Conflict``: it is a tombstone now).
        No earlier version is kept: the events that carried the old text now carry
        the new one (``parley.store.erase``)."""

        def run(conn: Connection) -> tuple[Message, list[Event]]:
            if not _storable(body):
                raise InvalidInput("the message is not valid UTF-8 text")
            current = _load_message(conn, room_id, message_id)
            if current.deleted:
                raise Conflict("the message was deleted", code="message_deleted")
            if current.sender_id != editor_id:
                raise Forbidden("only the sender can edit a message")
            if current.version != version:
                raise VersionConflict(
                    f"the message is at version {current.version}",
                    current_version=current.version,
                )
            now = utc_now()
            seq = _take_seqs(conn, room_id, 1, now)
            key_id, sealed = seal_body(_ring(conn), room_id, message_id, body)
            mentions, mentions_room = _audience(conn, [(room_id, editor_id, body)]).mentions(
                0, room_id, editor_id
            )
            conn.execute(
                _UPDATE_MESSAGE,
                {
                    "message": message_id,
                    "body": sealed,
                    "key_id": key_id,
                    "edited_at": now,
                    "version": current.version + 1,
                    "mentions": _stored_mentions(mentions),
                    "mentions_room": mentions_room,
                },
            )
            changed = replace(
                current,
                body=body,
                edited_at=now,
                version=current.version + 1,
                mentions=mentions,
                mentions_room=mentions_room,
            )
            [edited] = _fold_reactions(conn, [changed])
            _rewrite_text_events(
                conn, room_id, message_id, body, mentions=mentions, mentions_room=mentions_room
            )
            reindex_message(conn, room_id, message_id, body)
            new = [
                _new_event(
                    room_id, seq, EventType.MESSAGE_EDITED, now, editor_id, message=edited.public()
                )
            ]
            _insert_events(conn, new, [message_id])
            return edited, new

        return await self._writer.write(run, room_id)

    async def delete_message(
        self, room_id: RoomId, message_id: MessageId, actor_id: UserId, *, any_sender: bool
    ) -> tuple[Message, list[Event]]:
        """The body is erased from the database, not only hidden: from the message's
        row and from every stored event that carried it (``parley.store.erase``);
        ``version`` moves on so that an edit racing the delete gets
        ``VersionConflict``. Deleting a reply recounts its root's summary, which the
        ``message.deleted`` event carries as ``root_thread``."""

        def run(conn: Connection) -> tuple[Message, list[Event]]:
            current = _load_message(conn, room_id, message_id)
            if current.deleted:
                [folded] = _fold_reactions(conn, [current])
                return folded, []
            if not any_sender and current.sender_id != actor_id:
                raise Forbidden("only the sender, admins and owners can delete a message")
            now = utc_now()
            seq = _take_seqs(conn, room_id, 1, now)
            conn.execute(
                _UPDATE_MESSAGE,
                {
                    "message": message_id,
                    "body": "",
                    "key_id": None,
                    "deleted": True,
                    "version": current.version + 1,
                    "mentions": None,
                    "mentions_room": False,
                },
            )
            _forget_message(conn, message_id)
            [tombstone] = _fold_reactions(
                conn,
                [
                    replace(
                        current,
                        body="",
                        deleted=True,
                        version=current.version + 1,
                        mentions=(),
                        mentions_room=False,
                    )
                ],
            )
            fields: dict[str, Any] = {"message": tombstone.public()}
            if current.thread_root_id is not None:
                summary = _recount(conn, room_id, current.thread_root_id)
                fields["root_thread"] = summary.public() if summary is not None else None
            new = [_new_event(room_id, seq, EventType.MESSAGE_DELETED, now, actor_id, **fields)]
            _rewrite_text_events(conn, room_id, message_id, "", deleted=True)
            unindex_message(conn, message_id)
            _insert_events(conn, new, [message_id])
            return tombstone, new

        return await self._writer.write(run, room_id)

    async def set_reaction(
        self, room_id: RoomId, message_id: MessageId, user_id: UserId, emoji: str, *, on: bool
    ) -> tuple[Message, list[Event]]:
        """Deleted messages take no reactions (``NotFound``)."""

        def run(conn: Connection) -> tuple[Message, list[Event]]:
            current = _load_message(conn, room_id, message_id)
            if current.deleted:
                raise NotFound("message not found")
            key = {"message": message_id, "user": user_id, "emoji_": emoji}
            now = utc_now()
            if on:
                changed = conn.execute(_REACTION, key).first() is None
                if changed:
                    conn.execute(
                        _INSERT_REACTION,
                        {
                            "room_id": room_id,
                            "message_id": message_id,
                            "user_id": user_id,
                            "emoji": emoji,
                            "created_at": now,
                        },
                    )
            else:
                changed = conn.execute(_DELETE_REACTION, key).rowcount > 0
            [folded] = _fold_reactions(conn, [current])
            if not changed:
                return folded, []
            seq = _take_seqs(conn, room_id, 1, now)
            type_ = EventType.REACTION_ADDED if on else EventType.REACTION_REMOVED
            new = [
                _new_event(
                    room_id,
                    seq,
                    type_,
                    now,
                    user_id,
                    message_id=message_id,
                    user_id=user_id,
                    emoji=emoji,
                )
            ]
            _insert_events(conn, new)
            return folded, new

        return await self._writer.write(run, room_id)

    async def get_message(self, room_id: RoomId, message_id: MessageId) -> Message | None:
        def run(conn: Connection) -> Message | None:
            try:
                current = _load_message(conn, room_id, message_id)
            except NotFound:
                return None
            [folded] = _fold_reactions(conn, [current])
            return folded

        return await self._read(run, snapshot=True)

    async def list_messages(
        self, room_id: RoomId, *, before_seq: int | None, after_seq: int | None, limit: int
    ) -> tuple[list[Message], bool]:
        """One more row than asked tells whether more exist; reactions in one query."""
        params: dict[str, Any] = {"room": room_id, "n": limit + 1}
        if after_seq is not None:
            query, params["seq"] = _PAGE_AFTER, after_seq
        elif before_seq is not None:
            query, params["seq"] = _PAGE_BEFORE, before_seq
        else:
            query = _PAGE_LATEST

        def run(conn: Connection) -> tuple[list[Message], bool]:
            rows = conn.execute(query, params).all()
            has_more = len(rows) > limit
            page = [_message(row, conn) for row in rows[:limit]]
            if after_seq is None:
                page.reverse()
            return _fold_reactions(conn, page), has_more

        return await self._read_history(room_id, run, full=lambda _: False, snapshot=True)

    async def list_events(
        self, room_id: RoomId, *, after_seq: int, limit: int
    ) -> tuple[list[Event], bool]:
        def run(conn: Connection) -> tuple[list[Event], bool]:
            rows = conn.execute(_EVENTS, {"room": room_id, "seq": after_seq, "n": limit + 1}).all()
            return [_event(row, conn) for row in rows[:limit]], len(rows) > limit

        return await self._read_history(room_id, run, full=lambda result: result[1], snapshot=False)

    async def list_thread(
        self, room_id: RoomId, message_id: MessageId, *, after_seq: int, limit: int
    ) -> tuple[Message, list[Message], bool] | None:
        return await self._read(
            functools.partial(
                _read_thread,
                room_id=room_id,
                message_id=message_id,
                after_seq=after_seq,
                limit=limit,
            ),
            snapshot=True,
        )

    async def set_read(self, room_id: RoomId, user_id: UserId, seq: int) -> int:
        """Through the writer, so read cursors are group-committed like sends."""

        def run(conn: Connection) -> int:
            key = {"room": room_id, "user": user_id}
            row = conn.execute(_READ_CURSOR, key).first()
            if row is None:
                raise NotFound("room not found")
            read_seq, last_seq = row
            target = min(seq, int(last_seq))
            if target <= read_seq:
                return int(read_seq)
            conn.execute(_UPDATE_MEMBER, {**key, "read_seq": target})
            return target

        return await self._writer.write(run, room_id)

    # search

    async def search(
        self,
        user_id: UserId,
        query: Query,
        filters: SearchFilters,
        *,
        after: tuple[float, int] | None,
        limit: int,
    ) -> list[SearchHit]:
        """One statement (``parley.store.search``), on a snapshot with the reactions."""
        return await self._read(
            functools.partial(
                search, user_id=user_id, query=query, filters=filters, after=after, limit=limit
            ),
            snapshot=True,
        )

    async def reindex_search(self, *, rebuild: bool = False, page: int = _INDEX_PAGE) -> int:
        """Index the messages the search index lacks (stored before it existed:
        ``parley admin search reindex``), a page per write between other writes;
        ``rebuild``: empty it first (a new index key). The number indexed; a row no
        key opens (altered or moved in the database) is logged and left out."""
        if rebuild:
            await self._writer.write(clear_index)
        total, after = 0, ""
        while True:
            count, unreadable, last = await self._writer.write(
                functools.partial(index_page, after=after, n=page)
            )
            total += count
            for message_id in unreadable:
                log.warning(
                    "search: message %s does not open under its key: not indexed", message_id
                )
            if last is None:
                return total
            after = last

    async def export_room(self, room_id: RoomId) -> AsyncIterator[Event]:
        """Pages of events, each read in its own call: a slow consumer holds no
        connection or snapshot."""
        after = 0
        while True:
            page, more = await self.list_events(room_id, after_seq=after, limit=_EXPORT_PAGE)
            for item in page:
                yield item
            if not more or not page:
                return
            after = page[-1].seq

    # notifications

    async def list_notifications(
        self, user_id: UserId, *, unread_only: bool, before: str | None, limit: int
    ) -> tuple[list[Notification], int, bool]:
        return await self._read(
            functools.partial(
                _list_feed, user_id=user_id, unread_only=unread_only, before=before, limit=limit
            ),
            snapshot=True,
        )

    async def mark_notifications_read(self, user_id: UserId, ids: Sequence[str] | None) -> int:
        """Through the writer, like read cursors."""
        return await self._writer.write(lambda conn: _mark_read(conn, user_id, ids))

    async def set_notification_level(
        self, room_id: RoomId, user_id: UserId, level: NotificationLevel | None
    ) -> None:
        value = None if level is None else level.value

        def run(conn: Connection) -> None:
            if not _set_level(conn, room_id, user_id, value):
                raise NotFound("room not found")

        await self._writer.write(run, room_id)
