"""``SqlStore``: the ``Store`` port on SQLite (aiosqlite) and PostgreSQL (asyncpg).

Why one implementation, on SQLAlchemy 2 Core
    The two databases differ in a handful of places only: connection set-up (SQLite
    pragmas and ``BEGIN IMMEDIATE``), and row locks before a batch (PostgreSQL, where
    several nodes write at once). Core compiles the same statement objects for both,
    caches the compiled SQL, batches ``executemany`` inserts (``insertmanyvalues``) and
    wraps every driver error in one exception tree, so each query is written once and
    one contract suite (``tests/contract/test_store.py``) runs against both. The ORM is
    not used: its identity map and lazy loads buy nothing for rows that become frozen
    domain dataclasses, and lazy loads fail under asyncio. Raw drivers would mean two
    dialects of every query and two sets of error mapping for little gain: the cost
    that matters is the transaction (an fsync on SQLite, a round trip on PostgreSQL),
    and group commit is what amortises it.

Group commit
    Every write goes through one writer task per store (and so one connection): callers
    enqueue an operation and a future on a bounded queue (``await put``: back-pressure),
    the writer takes everything queued (up to ``group_commit_max``), runs it in ONE
    transaction and commits once, and only then resolves each future with its own
    result or error. Runs of consecutive ``send_message`` calls are vectorised (one
    membership query, one idempotency query, one counter ``UPDATE`` for all their
    rooms, one ``executemany`` per table); every other operation runs inside its own SAVEPOINT, so
    a domain error undoes that operation only. Operations run in enqueue order, so a
    room's events take their ``seq`` in the order callers asked. If the transaction
    itself fails, every caller in the batch gets ``Unavailable`` and the writer goes
    on with the next batch. ``group_commit=False`` commits each operation alone: the
    baseline of the benchmark (``bench/store_sends.py``).

Sequence numbers
    ``UPDATE rooms SET last_seq = last_seq + :n WHERE id = :room RETURNING last_seq``
    in the transaction that inserts the events: 1, 2, 3, … with no gap (a rollback
    undoes the counter too) and no repeat (the row lock serialises writers), also
    with several nodes on one PostgreSQL database.

Locking (PostgreSQL)
    A batch first locks the rows of every room it will change, sorted by id, with
    ``SELECT … FOR NO KEY UPDATE``, and takes a transaction advisory lock on every
    direct-room key it may create, sorted too. Every room-scoped row a batch changes
    belongs to a room it locked first, so two nodes' batches wait for each other
    instead of deadlocking; and reads made after the lock (membership, idempotency)
    see the other node's commit. Only user and refresh-token rows are outside this
    order: a cycle there needs two nodes rotating tokens of one family at the same
    moment, and PostgreSQL's deadlock detector then fails one operation (its
    caller gets ``Unavailable``) while the rest of both batches commits.

SQLite
    WAL (readers never wait for the writer), ``synchronous=FULL`` (an acknowledged
    write survives power loss), ``busy_timeout=5000``, foreign keys on. The driver's own
    transaction handling is off (``isolation_level=None``) and a ``begin`` hook emits
    ``BEGIN IMMEDIATE`` for writes, so a writer takes the lock up front (waiting up to
    the busy timeout) rather than failing with "database is locked" on upgrade. Within
    a process there is one writer anyway; this is for another process on the same
    file (a CLI next to the server). Reads use a deferred ``BEGIN``.
"""

from __future__ import annotations

import asyncio
import logging
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Mapping, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, TypeVar, cast

from sqlalchemy import (
    Row,
    and_,
    case,
    delete,
    event,
    func,
    insert,
    not_,
    select,
    text,
    update,
)
from sqlalchemy.engine import URL, make_url
from sqlalchemy.exc import IntegrityError, SQLAlchemyError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine, create_async_engine

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
from parley.ports import RefreshGrant, SendRequest, Store
from parley.protocol.codec import encode_event
from parley.store.schema import events, members, messages, reactions, refresh_tokens, rooms, users

__all__ = ["SqlStore", "make_engine", "normalize_url", "prepare_sqlite_path"]

log = logging.getLogger(__name__)

_T = TypeVar("_T")
_WRITE = "parley_write"
_EXPORT_PAGE = 500
_PING_TIMEOUT = 5.0


# engine


def normalize_url(url: str) -> URL:
    """The URL with its async driver named: ``sqlite://`` → aiosqlite, ``postgresql://``
    (or ``postgres://``) → asyncpg."""
    parsed = make_url(url.replace("postgres://", "postgresql://", 1))
    if parsed.drivername == "sqlite":
        parsed = parsed.set(drivername="sqlite+aiosqlite")
    elif parsed.drivername == "postgresql":
        parsed = parsed.set(drivername="postgresql+asyncpg")
    return parsed


def prepare_sqlite_path(url: URL) -> None:
    """Create the directory of a SQLite database file if it is missing."""
    if url.get_backend_name() == "sqlite" and url.database not in (None, "", ":memory:"):
        Path(str(url.database)).parent.mkdir(parents=True, exist_ok=True)


def make_engine(url: str | URL, *, pool_size: int = 10) -> AsyncEngine:
    """An async engine set up for Parley. On SQLite: WAL, ``synchronous=FULL``, a 5 s
    busy timeout, foreign keys, and ``BEGIN IMMEDIATE`` for connections run with the
    ``parley_write`` execution option (see ``writer_engine``)."""
    parsed = normalize_url(url) if isinstance(url, str) else url
    if parsed.get_backend_name() == "sqlite":
        engine = create_async_engine(
            parsed,
            connect_args={"isolation_level": None},
            pool_size=pool_size,
            max_overflow=pool_size,
        )
        event.listen(engine.sync_engine, "connect", _sqlite_connect)
        event.listen(engine.sync_engine, "begin", _sqlite_begin)
        return engine
    return create_async_engine(
        parsed,
        connect_args={"timeout": 10},
        pool_size=pool_size,
        max_overflow=pool_size * 2,
        pool_pre_ping=False,
    )


def writer_engine(engine: AsyncEngine) -> AsyncEngine:
    """The same pool, marked so that SQLite transactions begin ``IMMEDIATE``."""
    return engine.execution_options(**{_WRITE: True})


def _sqlite_connect(dbapi_connection: Any, _record: Any) -> None:
    cursor = dbapi_connection.cursor()
    try:
        # busy_timeout first: switching to WAL may itself wait for a lock.
        for pragma in (
            "PRAGMA busy_timeout = 5000",
            "PRAGMA journal_mode = WAL",
            "PRAGMA synchronous = FULL",
            "PRAGMA foreign_keys = ON",
        ):
            cursor.execute(pragma)
    finally:
        cursor.close()


def _sqlite_begin(conn: Any) -> None:
    write = conn.get_execution_options().get(_WRITE, False)
    conn.exec_driver_sql("BEGIN IMMEDIATE" if write else "BEGIN")


def _unavailable(exc: BaseException) -> Unavailable:
    """A driver error as the domain sees it; the cause stays attached for the logs."""
    err = Unavailable("the database is unavailable")
    err.__cause__ = exc
    return err


# row mapping


def _user(row: Row[Any]) -> User:
    return User(
        id=UserId(row.id),
        username=row.username,
        display_name=row.display_name,
        created_at=row.created_at,
        is_admin=bool(row.is_admin),
    )


def _room(row: Row[Any]) -> Room:
    return Room(
        id=RoomId(row.id),
        name=row.name,
        visibility=Visibility(row.visibility),
        topic=row.topic,
        kind=RoomKind(row.kind),
        created_at=row.created_at,
        last_seq=row.last_seq,
    )


def _message(row: Row[Any]) -> Message:
    return Message(
        id=MessageId(row.id),
        room_id=RoomId(row.room_id),
        seq=row.seq,
        sender_id=UserId(row.sender_id),
        body=row.body,
        client_msg_id=row.client_msg_id,
        created_at=row.created_at,
        edited_at=row.edited_at,
        version=row.version,
        deleted=bool(row.deleted),
    )


def _event_from_row(row: Row[Any]) -> Event:
    return Event(RoomId(row.room_id), row.seq, EventType(row.type), bytes(row.data))


def _membership(row: Row[Any]) -> Membership:
    return Membership(
        room_id=RoomId(row.room_id),
        user_id=UserId(row.user_id),
        role=Role(row.role) if row.role is not None else None,
        banned=bool(row.banned),
        read_seq=row.read_seq,
    )


_IS_MEMBER = and_(members.c.role.is_not(None), not_(members.c.banned))


def _storable(*texts: str | None) -> bool:
    """False for text that either database would refuse: lone surrogates (not UTF-8)
    or NUL (PostgreSQL ``text`` cannot hold it). The service validates input first;
    this keeps one bad message from failing everyone else's batch."""
    try:
        for t in texts:
            if t is not None:
                t.encode()
                if "\x00" in t:
                    return False
    except UnicodeEncodeError:
        return False
    return True


def _dm_key(a: str, b: str) -> str:
    return ":".join(sorted((a, b)))


def _new_event(
    room_id: str,
    seq: int,
    type_: EventType,
    created_at: str,
    actor_id: str | None,
    **fields: Any,
) -> Event:
    """Encode an event once: these bytes are stored and sent to every recipient."""
    raw = encode_event(room_id, seq, type_.value, created_at, actor_id, **fields)
    return Event(RoomId(room_id), seq, type_, raw)


# statements shared by the write operations


async def _insert_events(conn: AsyncConnection, new: Sequence[Event]) -> None:
    if new:
        await conn.execute(
            insert(events),
            [
                {"room_id": e.room_id, "seq": e.seq, "type": e.type.value, "data": e.raw}
                for e in new
            ],
        )


async def _take_seqs(conn: AsyncConnection, room_id: str, n: int, now: str) -> int:
    """Reserve the room's next ``n`` sequence numbers; return the first. The counter
    row's lock holds until commit, so no other writer can take the same numbers."""
    last = (
        await conn.execute(
            update(rooms)
            .where(rooms.c.id == room_id)
            .values(last_seq=rooms.c.last_seq + n, last_event_at=now)
            .returning(rooms.c.last_seq)
        )
    ).scalar_one_or_none()
    if last is None:
        raise NotFound("room not found")
    return int(last) - n + 1


async def _take_seqs_per_room(
    conn: AsyncConnection, counts: Mapping[str, int], now: str
) -> dict[str, int]:
    """``_take_seqs`` for several rooms in one statement (one round trip, however
    many rooms a batch of sends touches); returns each room's first new seq."""
    if len(counts) == 1:
        [(room_id, n)] = counts.items()
        return {room_id: await _take_seqs(conn, room_id, n, now)}
    rows = await conn.execute(
        update(rooms)
        .where(rooms.c.id.in_(sorted(counts)))
        .values(
            last_seq=rooms.c.last_seq + case(dict(counts), value=rooms.c.id, else_=0),
            last_event_at=now,
        )
        .returning(rooms.c.id, rooms.c.last_seq)
    )
    first = {row.id: int(row.last_seq) - counts[row.id] + 1 for row in rows}
    if len(first) != len(counts):
        raise NotFound("room not found")
    return first


async def _fold_reactions(conn: AsyncConnection, page: Sequence[Message]) -> list[Message]:
    """The messages with their reactions, ``{emoji: [user_id, …]}``, in one query."""
    if not page:
        return []
    rows = await conn.execute(
        select(reactions.c.message_id, reactions.c.emoji, reactions.c.user_id)
        .where(reactions.c.message_id.in_({m.id for m in page}))
        .order_by(reactions.c.created_at, reactions.c.emoji, reactions.c.user_id)
    )
    folded: dict[str, dict[str, list[str]]] = {}
    for row in rows:
        folded.setdefault(row.message_id, {}).setdefault(row.emoji, []).append(row.user_id)
    return [replace(m, reactions=folded[m.id]) if m.id in folded else m for m in page]


async def _load_message(conn: AsyncConnection, room_id: str, message_id: str) -> Message:
    row = (
        await conn.execute(
            select(messages).where(messages.c.id == message_id, messages.c.room_id == room_id)
        )
    ).first()
    if row is None:
        raise NotFound("message not found")
    return _message(row)


async def _load_room(conn: AsyncConnection, room_id: str) -> Room:
    row = (await conn.execute(select(rooms).where(rooms.c.id == room_id))).first()
    if row is None:
        raise NotFound("room not found")
    return _room(row)


async def _require_users(conn: AsyncConnection, user_ids: Iterable[str]) -> None:
    wanted = set(user_ids)
    found = (await conn.execute(select(func.count()).where(users.c.id.in_(wanted)))).scalar_one()
    if found != len(wanted):
        raise NotFound("user not found")


async def _find_membership(conn: AsyncConnection, room_id: str, user_id: str) -> Row[Any] | None:
    return (
        await conn.execute(
            select(members).where(members.c.room_id == room_id, members.c.user_id == user_id)
        )
    ).first()


# the writer's queue entries


@dataclass(slots=True, eq=False)
class _Op:
    """One queued write: either a send (vectorised with its neighbours) or ``run``."""

    future: asyncio.Future[Any]
    room_ids: tuple[str, ...] = ()
    dm_key: str | None = None
    send: SendRequest | None = None
    run: Callable[[AsyncConnection], Awaitable[Any]] | None = None
    result: Any = None
    error: BaseException | None = None


class SqlStore(Store):
    """The store on SQLite or PostgreSQL, chosen by ``url``.

    ``url``: ``sqlite:///path`` or ``postgresql://…`` (the async drivers are filled in).
    ``group_commit``: group concurrent writes into one transaction (off: one each).
    ``group_commit_max``: the most operations in one transaction.
    The schema must be migrated first (``parley.store.migrate``).
    """

    def __init__(
        self,
        url: str,
        *,
        group_commit: bool = True,
        group_commit_max: int = 512,
        pool_size: int = 10,
    ) -> None:
        if group_commit_max < 1:
            raise ValueError("group_commit_max must be at least 1")
        self._url = normalize_url(url)
        self._pool_size = pool_size
        self._batch_max = group_commit_max if group_commit else 1
        self._queue: asyncio.Queue[_Op | None] = asyncio.Queue(maxsize=max(64, 4 * self._batch_max))
        self._engine: AsyncEngine | None = None
        self._writer_engine: AsyncEngine | None = None
        self._writer: asyncio.Task[None] | None = None
        self._writer_conn: AsyncConnection | None = None
        self._closing = False
        self._postgres = self._url.get_backend_name() == "postgresql"

    # lifecycle

    async def start(self) -> None:
        if self._engine is not None:
            return
        prepare_sqlite_path(self._url)
        self._engine = make_engine(self._url, pool_size=self._pool_size)
        self._writer_engine = writer_engine(self._engine)
        self._writer = asyncio.create_task(self._write_loop(), name="parley-store-writer")

    async def close(self) -> None:
        if self._closing or self._writer is None:
            self._closing = True
            return
        self._closing = True
        await self._queue.put(None)
        await self._writer
        await self._drop_writer_conn()
        if self._engine is not None:
            engine, self._engine, self._writer_engine = self._engine, None, None
            await engine.dispose()

    async def ping(self) -> None:
        try:
            async with asyncio.timeout(_PING_TIMEOUT), self._read() as conn:
                await conn.execute(text("SELECT 1"))
        except TimeoutError as exc:
            raise _unavailable(exc) from exc

    @property
    def _reader(self) -> AsyncEngine:
        if self._engine is None:
            raise Unavailable("the store is not started")
        return self._engine

    @asynccontextmanager
    async def _read(self) -> AsyncIterator[AsyncConnection]:
        """A connection for reading (a deferred transaction on SQLite: no waiting)."""
        engine = self._reader
        try:
            async with engine.connect() as conn:
                yield conn
        except (IntegrityError, ParleyError):
            raise
        except (SQLAlchemyError, OSError) as exc:
            raise _unavailable(exc) from exc

    # the writer

    async def _submit(self, op: _Op) -> Any:
        if self._writer is None or self._writer.done() or self._closing:
            raise Unavailable("the store is not accepting writes")
        await self._queue.put(op)
        return await op.future

    async def _write(
        self,
        run: Callable[[AsyncConnection], Awaitable[_T]],
        *room_ids: str,
        dm_key: str | None = None,
    ) -> _T:
        future = asyncio.get_running_loop().create_future()
        op = _Op(future, room_ids=room_ids, dm_key=dm_key, run=run)
        return cast(_T, await self._submit(op))

    async def _write_loop(self) -> None:
        """Take what is queued, commit it as one batch, repeat; stop at ``None``."""
        stopping = False
        while not stopping:
            first = await self._queue.get()
            if first is None:
                break
            batch = [first]
            while len(batch) < self._batch_max:
                try:
                    item = self._queue.get_nowait()
                except asyncio.QueueEmpty:
                    break
                if item is None:
                    stopping = True
                    break
                batch.append(item)
            await self._commit(batch)
        while not self._queue.empty():
            leftover = self._queue.get_nowait()
            if leftover is not None and not leftover.future.done():
                leftover.future.set_exception(Unavailable("the store is closed"))

    async def _commit(self, batch: list[_Op]) -> None:
        """Run a batch in one transaction; resolve the futures only once it committed.

        The writer keeps one connection between batches (no pool round trip, no reset
        per batch) and replaces it after any failure."""
        assert self._writer_engine is not None
        committed = False
        try:
            if self._writer_conn is None:
                self._writer_conn = await self._writer_engine.connect()
            conn = self._writer_conn
            async with conn.begin():
                if self._postgres:
                    await self._lock(conn, batch)
                index = 0
                while index < len(batch):
                    if batch[index].send is None:
                        await self._apply_one(conn, batch[index])
                        index += 1
                        continue
                    end = index
                    while end < len(batch) and batch[end].send is not None:
                        end += 1
                    await self._apply_sends(conn, batch[index:end])
                    index = end
            committed = True
        except Exception as exc:
            log.warning("write batch of %d failed: %r", len(batch), exc)
            for op in batch:
                if not op.future.done():
                    op.future.set_exception(_unavailable(exc))
            await self._drop_writer_conn()
        finally:
            if not committed:
                for op in batch:
                    if not op.future.done():
                        op.future.set_exception(Unavailable("the write was interrupted"))
        if committed:
            for op in batch:
                if op.future.done():
                    continue
                if op.error is not None:
                    op.future.set_exception(op.error)
                else:
                    op.future.set_result(op.result)

    async def _drop_writer_conn(self) -> None:
        conn, self._writer_conn = self._writer_conn, None
        if conn is None:
            return
        try:
            await conn.invalidate()
            await conn.close()
        except Exception as exc:
            log.debug("closing the writer's connection failed: %r", exc)

    async def _lock(self, conn: AsyncConnection, batch: Sequence[_Op]) -> None:
        """PostgreSQL: lock every room the batch changes, and every DM key it may
        create, in one global order, so that concurrent nodes never deadlock."""
        room_ids = sorted(
            {r for op in batch for r in op.room_ids}
            | {op.send.room_id for op in batch if op.send is not None}
        )
        if room_ids:
            await conn.execute(
                select(rooms.c.id)
                .where(rooms.c.id.in_(room_ids))
                .order_by(rooms.c.id)
                .with_for_update(key_share=True)
            )
        for key in sorted({op.dm_key for op in batch if op.dm_key is not None}):
            await conn.execute(select(func.pg_advisory_xact_lock(func.hashtextextended(key, 0))))

    async def _apply_one(self, conn: AsyncConnection, op: _Op) -> None:
        """Run one operation in a SAVEPOINT: a failure undoes it and nothing else. A
        failure of the savepoint itself propagates and fails the whole batch."""
        assert op.run is not None
        savepoint = await conn.begin_nested()
        try:
            op.result = await op.run(conn)
        except Exception as exc:
            await savepoint.rollback()
            op.error = exc if isinstance(exc, ParleyError) else _unavailable(exc)
            if not isinstance(exc, ParleyError):
                log.warning("write operation failed: %r", exc)
        else:
            await savepoint.commit()

    async def _apply_sends(self, conn: AsyncConnection, ops: Sequence[_Op]) -> None:
        """A run of consecutive sends as a handful of statements, whatever its size.

        No SAVEPOINT (two round trips per run): every refusal (not a member, a repeat,
        text that cannot be encoded) is decided before anything is written, so a
        statement that fails here means the database is in trouble, and failing the
        whole batch is the right answer."""
        requests = [op.send for op in ops if op.send is not None]
        room_ids = sorted({r.room_id for r in requests})
        sender_ids = sorted({r.sender_id for r in requests})
        allowed = {
            (row.room_id, row.user_id)
            for row in await conn.execute(
                select(members.c.room_id, members.c.user_id).where(
                    members.c.room_id.in_(room_ids),
                    members.c.user_id.in_(sender_ids),
                    _IS_MEMBER,
                )
            )
        }
        stored: dict[tuple[str, str, str], Message] = {}
        client_ids = sorted({r.client_msg_id for r in requests if r.client_msg_id is not None})
        if client_ids:
            rows = await conn.execute(
                select(messages).where(
                    messages.c.room_id.in_(room_ids),
                    messages.c.sender_id.in_(sender_ids),
                    messages.c.client_msg_id.in_(client_ids),
                )
            )
            found = [_message(row) for row in rows]
            for message in await _fold_reactions(conn, found):
                assert message.client_msg_id is not None
                stored[(message.room_id, message.sender_id, message.client_msg_id)] = message

        fresh: list[_Op] = []
        first_of: dict[tuple[str, str, str], _Op] = {}
        repeats: list[tuple[_Op, _Op]] = []
        for op in ops:
            request = op.send
            assert request is not None
            if (request.room_id, request.sender_id) not in allowed:
                op.error = NotFound("room not found")
                continue
            if not _storable(request.body, request.client_msg_id):
                op.error = InvalidInput("the message is not valid UTF-8 text")
                continue
            if request.client_msg_id is not None:
                key = (request.room_id, request.sender_id, request.client_msg_id)
                if key in stored:
                    op.result = SendResult(stored[key], None, created=False)
                    continue
                if key in first_of:
                    repeats.append((op, first_of[key]))
                    continue
                first_of[key] = op
            fresh.append(op)
        if not fresh:
            for op, first in repeats:
                op.result = SendResult(first.result.message, None, created=False)
            return

        now = utc_now()
        counts: Counter[str] = Counter(op.send.room_id for op in fresh if op.send is not None)
        next_seq = await _take_seqs_per_room(conn, counts, now)
        message_rows: list[dict[str, Any]] = []
        new_events: list[Event] = []
        for op in fresh:
            request = op.send
            assert request is not None
            seq = next_seq[request.room_id]
            next_seq[request.room_id] = seq + 1
            message = Message(
                id=MessageId(new_id()),
                room_id=request.room_id,
                seq=seq,
                sender_id=request.sender_id,
                body=request.body,
                client_msg_id=request.client_msg_id,
                created_at=now,
            )
            message_rows.append(
                {
                    "id": message.id,
                    "room_id": message.room_id,
                    "seq": seq,
                    "sender_id": message.sender_id,
                    "body": message.body,
                    "client_msg_id": message.client_msg_id,
                    "created_at": now,
                    "version": 1,
                    "deleted": False,
                }
            )
            created = _new_event(
                request.room_id,
                seq,
                EventType.MESSAGE_CREATED,
                now,
                request.sender_id,
                message=message.public(),
            )
            new_events.append(created)
            op.result = SendResult(message, created, created=True)
        await conn.execute(insert(messages), message_rows)
        await _insert_events(conn, new_events)
        for op, first in repeats:
            op.result = SendResult(first.result.message, None, created=False)

    # users

    async def create_user(
        self, username: str, password_hash: str, display_name: str, *, is_admin: bool = False
    ) -> User:
        user = User(
            id=UserId(new_id()),
            username=username,
            display_name=display_name,
            created_at=utc_now(),
            is_admin=is_admin,
        )

        async def run(conn: AsyncConnection) -> User:
            try:
                async with conn.begin_nested():
                    await conn.execute(
                        insert(users).values(
                            id=user.id,
                            username=username,
                            display_name=display_name,
                            password_hash=password_hash,
                            is_admin=is_admin,
                            created_at=user.created_at,
                        )
                    )
            except IntegrityError as exc:
                raise UsernameTaken(f"the username {username!r} is taken") from exc
            return user

        return await self._write(run)

    async def get_user(self, user_id: UserId) -> User | None:
        async with self._read() as conn:
            row = (await conn.execute(select(users).where(users.c.id == user_id))).first()
        return _user(row) if row is not None else None

    async def get_users(self, user_ids: Sequence[UserId]) -> dict[UserId, User]:
        if not user_ids:
            return {}
        async with self._read() as conn:
            rows = await conn.execute(select(users).where(users.c.id.in_(sorted(set(user_ids)))))
            return {UserId(row.id): _user(row) for row in rows}

    async def get_credentials(self, username: str) -> Credentials | None:
        async with self._read() as conn:
            row = (await conn.execute(select(users).where(users.c.username == username))).first()
        return Credentials(_user(row), row.password_hash) if row is not None else None

    # refresh tokens: through the writer too, so that on SQLite no second writer ever
    # waits for the lock (and risks "database is locked" under a sustained load)

    async def add_refresh_token(
        self, token_hash: str, user_id: UserId, family_id: str, expires_at: str
    ) -> None:
        async def run(conn: AsyncConnection) -> None:
            await conn.execute(
                insert(refresh_tokens).values(
                    token_hash=token_hash,
                    user_id=user_id,
                    family_id=family_id,
                    expires_at=expires_at,
                    revoked=False,
                )
            )

        await self._write(run)

    async def use_refresh_token(self, token_hash: str, now: str) -> RefreshGrant:
        """One conditional ``UPDATE`` consumes the token, so two concurrent refreshes
        with the same token cannot both succeed; the loser finds it used, which is
        reuse: the family is revoked. The refusal is returned rather than raised so
        that the revocation commits; it is raised here, after the commit."""
        t = refresh_tokens

        async def run(conn: AsyncConnection) -> RefreshGrant | Unauthorized:
            row = (
                await conn.execute(
                    update(t)
                    .where(
                        t.c.token_hash == token_hash,
                        t.c.used_at.is_(None),
                        not_(t.c.revoked),
                        t.c.expires_at > now,
                    )
                    .values(used_at=now)
                    .returning(t.c.user_id, t.c.family_id)
                )
            ).first()
            if row is not None:
                return RefreshGrant(UserId(row.user_id), row.family_id)
            known = (
                await conn.execute(
                    select(t.c.family_id, t.c.used_at).where(t.c.token_hash == token_hash)
                )
            ).first()
            if known is None or known.used_at is None:
                return Unauthorized("invalid refresh token", code="invalid_grant")
            await conn.execute(
                update(t).where(t.c.family_id == known.family_id).values(revoked=True)
            )
            return Unauthorized("refresh token reused: its family is revoked", code="invalid_grant")

        outcome = await self._write(run)
        if isinstance(outcome, Unauthorized):
            raise outcome
        return outcome

    async def revoke_refresh_family(self, token_hash: str) -> None:
        t = refresh_tokens
        family = select(t.c.family_id).where(t.c.token_hash == token_hash).scalar_subquery()

        async def run(conn: AsyncConnection) -> None:
            await conn.execute(update(t).where(t.c.family_id == family).values(revoked=True))

        await self._write(run)

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

        async def run(conn: AsyncConnection) -> tuple[Room, list[Event]]:
            try:
                async with conn.begin_nested():
                    return await self._insert_room(
                        conn, name, visibility, topic, kind, owner_id, others, dm_key
                    )
            except IntegrityError as exc:
                raise Conflict("these users already have a direct room") from exc

        return await self._write(run, dm_key=dm_key)

    async def get_or_create_dm(self, a: UserId, b: UserId) -> tuple[Room, list[Event], bool]:
        """Looked up first without the writer; created by the writer, which looks
        again under the DM key's lock. Should another node still win the race (the
        unique ``dm_key``), its room is returned."""
        key = _dm_key(a, b)
        existing = await self._dm_room(key)
        if existing is not None:
            return existing, [], False

        async def run(conn: AsyncConnection) -> tuple[Room, list[Event], bool]:
            row = (await conn.execute(select(rooms).where(rooms.c.dm_key == key))).first()
            if row is not None:
                return _room(row), [], False
            try:
                async with conn.begin_nested():
                    room, new = await self._insert_room(
                        conn, "", Visibility.PRIVATE, "", RoomKind.DM, a, [b] if b != a else [], key
                    )
                    return room, new, True
            except IntegrityError:
                row = (await conn.execute(select(rooms).where(rooms.c.dm_key == key))).first()
                if row is None:
                    raise
                return _room(row), [], False

        return await self._write(run, dm_key=key)

    async def _dm_room(self, key: str) -> Room | None:
        async with self._read() as conn:
            row = (await conn.execute(select(rooms).where(rooms.c.dm_key == key))).first()
        return _room(row) if row is not None else None

    async def _insert_room(
        self,
        conn: AsyncConnection,
        name: str,
        visibility: Visibility,
        topic: str,
        kind: RoomKind,
        owner_id: str,
        others: Sequence[str],
        dm_key: str | None,
    ) -> tuple[Room, list[Event]]:
        """``room.created`` (seq 1), then ``member.joined`` for the owner and each
        other member. The counter row is inserted at its final value: nobody else
        can see the room before this commits. In a DM both people are plain members."""
        await _require_users(conn, [owner_id, *others])
        now = utc_now()
        room_id = new_id()
        last_seq = 2 + len(others)
        room = Room(RoomId(room_id), name, visibility, topic, kind, now, last_seq)
        await conn.execute(
            insert(rooms).values(
                id=room_id,
                name=name,
                visibility=visibility.value,
                topic=topic,
                kind=kind.value,
                created_at=now,
                last_seq=last_seq,
                last_event_at=now,
                dm_key=dm_key,
            )
        )
        owner_role = Role.MEMBER if kind is RoomKind.DM else Role.OWNER
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
        await conn.execute(
            insert(members),
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
        await _insert_events(conn, new)
        return room, new

    async def join_room(self, room_id: RoomId, user_id: UserId) -> list[Event]:
        """Join as a member; re-checks a ban under the lock (``Forbidden``). A new
        member starts with nothing unread: its cursor is its own join event."""

        async def run(conn: AsyncConnection) -> list[Event]:
            row = await _find_membership(conn, room_id, user_id)
            if row is not None and row.banned:
                raise Forbidden("you are banned from this room", code="banned")
            if row is not None and row.role is not None:
                return []
            return await self._add_member(conn, room_id, user_id, Role.MEMBER, user_id, row)

        return await self._write(run, room_id)

    async def invite(
        self, room_id: RoomId, user_id: UserId, role: Role, actor_id: UserId
    ) -> list[Event]:
        """An existing member keeps their role and no event is made. Adding a banned
        user is an explicit act of an admin: it lifts the ban."""

        async def run(conn: AsyncConnection) -> list[Event]:
            row = await _find_membership(conn, room_id, user_id)
            if row is not None and row.role is not None and not row.banned:
                return []
            await _require_users(conn, [user_id])
            return await self._add_member(conn, room_id, user_id, role, actor_id, row)

        return await self._write(run, room_id)

    async def _add_member(
        self,
        conn: AsyncConnection,
        room_id: str,
        user_id: str,
        role: Role,
        actor_id: str,
        row: Row[Any] | None,
    ) -> list[Event]:
        now = utc_now()
        seq = await _take_seqs(conn, room_id, 1, now)
        values = {"role": role.value, "banned": False, "read_seq": seq, "joined_at": now}
        if row is None:
            await conn.execute(insert(members).values(room_id=room_id, user_id=user_id, **values))
        else:
            await conn.execute(
                update(members)
                .where(members.c.room_id == room_id, members.c.user_id == user_id)
                .values(**values)
            )
        fields: dict[str, Any] = {"user_id": user_id, "role": role.value}
        if actor_id != user_id:
            fields["invited_by"] = actor_id
        new = [_new_event(room_id, seq, EventType.MEMBER_JOINED, now, actor_id, **fields)]
        await _insert_events(conn, new)
        return new

    async def remove_member(
        self, room_id: RoomId, user_id: UserId, actor_id: UserId, *, ban: bool
    ) -> list[Event]:
        """Leaving or a kick deletes the membership row; a ban keeps it, with no role
        and ``banned`` set. ``member.left`` only when a member left (reason ``left``,
        ``kicked`` or ``banned``): banning a non-member records the ban silently."""

        async def run(conn: AsyncConnection) -> list[Event]:
            await _load_room(conn, room_id)
            row = await _find_membership(conn, room_id, user_id)
            was_member = row is not None and row.role is not None and not row.banned
            where = and_(members.c.room_id == room_id, members.c.user_id == user_id)
            now = utc_now()
            if ban:
                if row is None:
                    await _require_users(conn, [user_id])
                    await conn.execute(
                        insert(members).values(
                            room_id=room_id,
                            user_id=user_id,
                            role=None,
                            banned=True,
                            read_seq=0,
                            joined_at=now,
                        )
                    )
                elif not row.banned:
                    await conn.execute(update(members).where(where).values(role=None, banned=True))
                reason = "banned"
            else:
                if not was_member:
                    return []
                await conn.execute(delete(members).where(where))
                reason = "left" if actor_id == user_id else "kicked"
            if not was_member:
                return []
            seq = await _take_seqs(conn, room_id, 1, now)
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
            await _insert_events(conn, new)
            return new

        return await self._write(run, room_id)

    async def update_room(
        self, room_id: RoomId, actor_id: UserId, *, name: str | None, topic: str | None
    ) -> tuple[Room, list[Event]]:
        """No event when nothing changes."""

        async def run(conn: AsyncConnection) -> tuple[Room, list[Event]]:
            room = await _load_room(conn, room_id)
            new_name = room.name if name is None else name
            new_topic = room.topic if topic is None else topic
            if (new_name, new_topic) == (room.name, room.topic):
                return room, []
            now = utc_now()
            seq = await _take_seqs(conn, room_id, 1, now)
            await conn.execute(
                update(rooms).where(rooms.c.id == room_id).values(name=new_name, topic=new_topic)
            )
            updated = replace(room, name=new_name, topic=new_topic, last_seq=seq)
            new = [
                _new_event(
                    room_id, seq, EventType.ROOM_UPDATED, now, actor_id, room=updated.public()
                )
            ]
            await _insert_events(conn, new)
            return updated, new

        return await self._write(run, room_id)

    # rooms and membership: reads

    async def get_room(self, room_id: RoomId) -> Room | None:
        async with self._read() as conn:
            row = (await conn.execute(select(rooms).where(rooms.c.id == room_id))).first()
        return _room(row) if row is not None else None

    async def list_user_rooms(self, user_id: UserId) -> list[RoomSummary]:
        """Most recently active first (``rooms.last_event_at``: when the room's last
        event was stored). ``unread`` counts live messages after the user's read
        cursor that others sent, in a correlated subquery on the ``(room_id, seq)``
        index: one query for the whole list."""
        unread = (
            select(func.count())
            .select_from(messages)
            .where(
                messages.c.room_id == rooms.c.id,
                messages.c.seq > members.c.read_seq,
                not_(messages.c.deleted),
                messages.c.sender_id != user_id,
            )
            .scalar_subquery()
        )
        query = (
            select(rooms, members.c.role, members.c.read_seq, unread.label("unread"))
            .select_from(members.join(rooms, rooms.c.id == members.c.room_id))
            .where(members.c.user_id == user_id, _IS_MEMBER)
            .order_by(rooms.c.last_event_at.desc(), rooms.c.id)
        )
        async with self._read() as conn:
            rows = await conn.execute(query)
            return [
                RoomSummary(_room(row), Role(row.role), row.read_seq, row.unread) for row in rows
            ]

    async def list_public_rooms(self, limit: int = 200) -> list[Room]:
        """Public rooms by name."""
        async with self._read() as conn:
            rows = await conn.execute(
                select(rooms)
                .where(
                    rooms.c.visibility == Visibility.PUBLIC.value,
                    rooms.c.kind == RoomKind.ROOM.value,
                )
                .order_by(rooms.c.name, rooms.c.id)
                .limit(limit)
            )
            return [_room(row) for row in rows]

    async def get_membership(self, room_id: RoomId, user_id: UserId) -> Membership | None:
        async with self._read() as conn:
            row = await _find_membership(conn, room_id, user_id)
        return _membership(row) if row is not None else None

    async def list_members(self, room_id: RoomId) -> list[tuple[User, Role]]:
        """Members in the order they joined."""
        async with self._read() as conn:
            rows = await conn.execute(
                select(users, members.c.role)
                .select_from(members.join(users, users.c.id == members.c.user_id))
                .where(members.c.room_id == room_id, _IS_MEMBER)
                .order_by(members.c.joined_at, users.c.id)
            )
            return [(_user(row), Role(row.role)) for row in rows]

    async def member_ids(self, room_id: RoomId) -> list[UserId]:
        async with self._read() as conn:
            rows = await conn.execute(
                select(members.c.user_id).where(members.c.room_id == room_id, _IS_MEMBER)
            )
            return [UserId(row.user_id) for row in rows]

    async def user_room_ids(self, user_id: UserId) -> dict[RoomId, int]:
        async with self._read() as conn:
            rows = await conn.execute(
                select(rooms.c.id, rooms.c.last_seq)
                .select_from(members.join(rooms, rooms.c.id == members.c.room_id))
                .where(members.c.user_id == user_id, _IS_MEMBER)
            )
            return {RoomId(row.id): row.last_seq for row in rows}

    async def shares_room(self, a: UserId, b: UserId) -> bool:
        other = members.alias("other")
        query = (
            select(members.c.room_id)
            .join(other, other.c.room_id == members.c.room_id)
            .where(
                members.c.user_id == a,
                _IS_MEMBER,
                other.c.user_id == b,
                other.c.role.is_not(None),
                not_(other.c.banned),
            )
            .limit(1)
        )
        async with self._read() as conn:
            return (await conn.execute(query)).first() is not None

    # messages

    async def send_message(self, request: SendRequest) -> SendResult:
        future = asyncio.get_running_loop().create_future()
        return cast(SendResult, await self._submit(_Op(future, send=request)))

    async def edit_message(
        self, room_id: RoomId, message_id: MessageId, editor_id: UserId, body: str, version: int
    ) -> tuple[Message, list[Event]]:
        """A deleted message cannot be edited (``Conflict``: it is a tombstone now)."""

        async def run(conn: AsyncConnection) -> tuple[Message, list[Event]]:
            if not _storable(body):
                raise InvalidInput("the message is not valid UTF-8 text")
            current = await _load_message(conn, room_id, message_id)
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
            seq = await _take_seqs(conn, room_id, 1, now)
            await conn.execute(
                update(messages)
                .where(messages.c.id == message_id)
                .values(body=body, edited_at=now, version=current.version + 1)
            )
            [edited] = await _fold_reactions(
                conn, [replace(current, body=body, edited_at=now, version=current.version + 1)]
            )
            new = [
                _new_event(
                    room_id, seq, EventType.MESSAGE_EDITED, now, editor_id, message=edited.public()
                )
            ]
            await _insert_events(conn, new)
            return edited, new

        return await self._write(run, room_id)

    async def delete_message(
        self, room_id: RoomId, message_id: MessageId, actor_id: UserId, *, any_sender: bool
    ) -> tuple[Message, list[Event]]:
        """The body is erased from the database, not only hidden; ``version`` moves on
        so that an edit racing the delete gets ``VersionConflict``."""

        async def run(conn: AsyncConnection) -> tuple[Message, list[Event]]:
            current = await _load_message(conn, room_id, message_id)
            if current.deleted:
                [folded] = await _fold_reactions(conn, [current])
                return folded, []
            if not any_sender and current.sender_id != actor_id:
                raise Forbidden("only the sender, admins and owners can delete a message")
            now = utc_now()
            seq = await _take_seqs(conn, room_id, 1, now)
            await conn.execute(
                update(messages)
                .where(messages.c.id == message_id)
                .values(body="", deleted=True, version=current.version + 1)
            )
            [tombstone] = await _fold_reactions(
                conn, [replace(current, body="", deleted=True, version=current.version + 1)]
            )
            new = [
                _new_event(
                    room_id,
                    seq,
                    EventType.MESSAGE_DELETED,
                    now,
                    actor_id,
                    message=tombstone.public(),
                )
            ]
            await _insert_events(conn, new)
            return tombstone, new

        return await self._write(run, room_id)

    async def set_reaction(
        self, room_id: RoomId, message_id: MessageId, user_id: UserId, emoji: str, *, on: bool
    ) -> tuple[Message, list[Event]]:
        """Deleted messages take no reactions (``NotFound``)."""

        async def run(conn: AsyncConnection) -> tuple[Message, list[Event]]:
            current = await _load_message(conn, room_id, message_id)
            if current.deleted:
                raise NotFound("message not found")
            key = and_(
                reactions.c.message_id == message_id,
                reactions.c.user_id == user_id,
                reactions.c.emoji == emoji,
            )
            now = utc_now()
            if on:
                present = (await conn.execute(select(reactions.c.emoji).where(key))).first()
                changed = present is None
                if changed:
                    await conn.execute(
                        insert(reactions).values(
                            room_id=room_id,
                            message_id=message_id,
                            user_id=user_id,
                            emoji=emoji,
                            created_at=now,
                        )
                    )
            else:
                changed = (await conn.execute(delete(reactions).where(key))).rowcount > 0
            [folded] = await _fold_reactions(conn, [current])
            if not changed:
                return folded, []
            seq = await _take_seqs(conn, room_id, 1, now)
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
            await _insert_events(conn, new)
            return folded, new

        return await self._write(run, room_id)

    async def get_message(self, room_id: RoomId, message_id: MessageId) -> Message | None:
        async with self._read() as conn:
            try:
                current = await _load_message(conn, room_id, message_id)
            except NotFound:
                return None
            [folded] = await _fold_reactions(conn, [current])
            return folded

    async def list_messages(
        self, room_id: RoomId, *, before_seq: int | None, after_seq: int | None, limit: int
    ) -> tuple[list[Message], bool]:
        """One more row than asked tells whether more exist; reactions in one query."""
        query = select(messages).where(messages.c.room_id == room_id).limit(limit + 1)
        if after_seq is not None:
            query = query.where(messages.c.seq > after_seq).order_by(messages.c.seq)
        else:
            if before_seq is not None:
                query = query.where(messages.c.seq < before_seq)
            query = query.order_by(messages.c.seq.desc())
        async with self._read() as conn:
            page = [_message(row) for row in await conn.execute(query)]
            has_more = len(page) > limit
            page = page[:limit]
            if after_seq is None:
                page.reverse()
            return await _fold_reactions(conn, page), has_more

    async def list_events(
        self, room_id: RoomId, *, after_seq: int, limit: int
    ) -> tuple[list[Event], bool]:
        async with self._read() as conn:
            rows = await conn.execute(
                select(events)
                .where(events.c.room_id == room_id, events.c.seq > after_seq)
                .order_by(events.c.seq)
                .limit(limit + 1)
            )
            page = [_event_from_row(row) for row in rows]
        return page[:limit], len(page) > limit

    async def set_read(self, room_id: RoomId, user_id: UserId, seq: int) -> int:
        """Through the writer, so read cursors are group-committed like sends."""

        async def run(conn: AsyncConnection) -> int:
            row = (
                await conn.execute(
                    select(members.c.read_seq, rooms.c.last_seq)
                    .select_from(members.join(rooms, rooms.c.id == members.c.room_id))
                    .where(members.c.room_id == room_id, members.c.user_id == user_id, _IS_MEMBER)
                )
            ).first()
            if row is None:
                raise NotFound("room not found")
            target = min(seq, int(row.last_seq))
            if target <= row.read_seq:
                return int(row.read_seq)
            await conn.execute(
                update(members)
                .where(members.c.room_id == room_id, members.c.user_id == user_id)
                .values(read_seq=target)
            )
            return target

        return await self._write(run, room_id)

    async def export_room(self, room_id: RoomId) -> AsyncIterator[Event]:
        """Pages of events, each read on a connection that is returned before the
        page is yielded: a slow consumer holds no connection or snapshot."""
        after = 0
        while True:
            page, more = await self.list_events(room_id, after_seq=after, limit=_EXPORT_PAGE)
            for item in page:
                yield item
            if not more or not page:
                return
            after = page[-1].seq
