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

Why not the async engine on SQLite
    aiosqlite turns each statement into several loop↔thread round trips plus greenlet
    switches (16 for one ``get_user``: checkout, ``BEGIN``, query, ``ROLLBACK``,
    reset), ~1.5–2 ms of CPU per read. Here a call is one hop to a thread whose
    connection is already open. Reads issue no ``BEGIN``: under WAL each statement
    reads one consistent snapshot; the two reads made of several statements (a
    message page and its reactions) take a deferred ``BEGIN``. The hop is a
    ``SimpleQueue`` plus ``call_soon_threadsafe``: half the CPU of ``run_in_executor``
    (no ``concurrent.futures.Future``, no condition variable).

Statements are built once, at import
    With ``bindparam`` (``expanding`` for ``IN``), so executing one costs a lookup in
    the compiled cache: building a ``select()`` per call and computing its cache key
    cost more than running it (~145 µs against ~50 µs here). Rows are read by position
    and enums by dict: ``row.name`` and ``Enum(value)`` made a 100-event page 3× dearer.

Group commit
    Every write goes through one writer task per store: callers enqueue an operation and
    a future on a bounded queue (``await put``: back-pressure); the writer takes what is
    queued (up to ``group_commit_max``), runs it in ONE transaction, commits once, and
    only then resolves each future with its own result or error. Runs of consecutive
    ``send_message`` calls are vectorised (one membership query, one idempotency query,
    one counter ``UPDATE`` for all their rooms, one ``executemany`` per table); every
    other operation runs in its own SAVEPOINT, so a domain error undoes that operation
    only. Operations run in enqueue order, so a room's events take their ``seq`` in the
    order callers asked. If the transaction fails, every caller in the batch gets
    ``Unavailable``, the connection is replaced and the writer goes on.
    ``group_commit=False`` commits each operation alone (the benchmark's baseline).
    ``stats`` counts commits; ``on_commit(seconds, batch_size)`` is called once per
    commit on the event loop (the metrics histogram hook).

The commit hook (``on_events``)
    Every event a batch stores is written by ``_insert_events``, which also appends it
    to the batch's journal (a list on the connection's ``info`` while the batch runs);
    an operation whose SAVEPOINT rolls back cuts its own events off the journal again.
    Once the batch committed, and before any future is resolved, the journal goes to
    ``on_events`` in one call: the events in the order they were stored, so in
    ``seq`` order per room. Refused operations and repeated sends store nothing and
    add nothing; a cancelled caller's events are still delivered (they committed).

Sequence numbers
    ``UPDATE rooms SET last_seq = last_seq + :n WHERE id = :room RETURNING last_seq``
    in the transaction that inserts the events: 1, 2, 3, … with no gap (a rollback
    undoes the counter too) and no repeat (the row lock serialises writers), also with
    several nodes on one PostgreSQL database.

Locking (PostgreSQL)
    A batch first locks the rows of every room it will change, sorted by id, with
    ``SELECT … FOR NO KEY UPDATE``, and takes a transaction advisory lock on every
    direct-room key it may create, sorted too. Every room-scoped row a batch changes
    belongs to a room it locked first, so two nodes' batches wait for each other
    instead of deadlocking; and reads made after the lock (membership, idempotency) see
    the other node's commit. Only user and refresh-token rows are outside this order: a
    cycle there needs two nodes rotating tokens of one family at the same moment, and
    PostgreSQL's deadlock detector then fails one batch (its callers get
    ``Unavailable``). Reads run on ``AUTOCOMMIT`` connections kept open (up to
    ``pool_size``): no ``BEGIN``/``ROLLBACK`` round trips, no pool checkout (they were
    READ COMMITTED before: a snapshot per statement either way).

SQLite
    WAL (readers never wait for the writer), ``synchronous=FULL`` (an acknowledged write
    survives power loss), ``busy_timeout=5000``, foreign keys on. The driver's own
    transaction handling is off (``isolation_level=None``) and a batch starts with
    ``BEGIN IMMEDIATE``, so it takes the lock up front (waiting up to the busy timeout)
    rather than failing with "database is locked" on upgrade: one writer per process
    anyway, this is for another process on the same file (a CLI next to the server).
    Migrations keep the async engine (``make_engine``, aiosqlite), where a ``begin``
    hook does the same.

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
import logging
import queue
import sqlite3
import threading
import time
from collections.abc import AsyncIterator, Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Protocol, TypeVar, cast

from sqlalchemy import (
    String,
    and_,
    bindparam,
    column,
    create_engine,
    delete,
    event,
    func,
    insert,
    not_,
    select,
    text,
    update,
)
from sqlalchemy.engine import URL, Connection, Engine, make_url
from sqlalchemy.exc import IntegrityError, SQLAlchemyError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine, create_async_engine
from sqlalchemy.pool import NullPool
from sqlalchemy.sql.compiler import SQLCompiler
from sqlalchemy.sql.elements import ClauseElement

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
    new_message_id,
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
from parley.ports import CommitHook, RefreshGrant, SendRequest, Store
from parley.protocol.codec import encode_event
from parley.store.schema import events, members, messages, reactions, refresh_tokens, rooms, users

__all__ = ["SqlStore", "StoreStats", "make_engine", "normalize_url", "prepare_sqlite_path"]

log = logging.getLogger(__name__)

_T = TypeVar("_T")
_WRITE = "parley_write"
_EXPORT_PAGE = 500
_JOURNAL = "parley_stored_events"
_PING_TIMEOUT = 5.0
_GATHER_TURNS = 3
"""Turns of the event loop the writer lets pass before it takes a batch, so that
writes arriving in frames already read join this commit instead of waiting for the
next one. A send frame starts the send's task as it is read, and the task queues
the write in the next turn; under plain ASGI the frame wakes its connection's task
in the next turn, and the write is queued in the turn after. One turn:
2.0 sends a commit from 5 closed-loop senders (``parley bench fanout --receivers
0``), 489 µs of server CPU a send, 1,890 sends/s; three: 2.5 a commit, 380 µs,
2,487 sends/s (medians of 3); six and ten gathered no more. An idle loop runs them
in microseconds; the latency benchmark did not get slower (p99 10–12 ms after)."""


# engines


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
    """An async engine set up for Parley, used by the migrations (the store itself runs
    SQLite on the sync driver). On SQLite: WAL, ``synchronous=FULL``, a 5 s busy
    timeout, foreign keys, and ``BEGIN IMMEDIATE`` for connections run with the
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
    return _postgres_engine(parsed, pool_size=pool_size, max_overflow=pool_size * 2)


def writer_engine(engine: AsyncEngine) -> AsyncEngine:
    """The same pool, marked so that SQLite transactions begin ``IMMEDIATE``."""
    return engine.execution_options(**{_WRITE: True})


def _postgres_engine(
    url: URL, *, pool_size: int, max_overflow: int, autocommit: bool = False
) -> AsyncEngine:
    options: dict[str, Any] = {"isolation_level": "AUTOCOMMIT"} if autocommit else {}
    return create_async_engine(
        url,
        connect_args={"timeout": 10},
        pool_size=pool_size,
        max_overflow=max_overflow,
        pool_pre_ping=False,
        **options,
    )


def _sqlite_engine(url: URL) -> Engine:
    """A sync engine on the stdlib driver. No pool: each of the store's threads opens
    one connection and keeps it for the store's life. No ``begin`` hook either: with the
    driver's transactions off, SQLAlchemy's ``begin()`` emits nothing, so a read runs
    without ``BEGIN`` and ``_run_batch`` says ``BEGIN IMMEDIATE`` itself (a connection
    event listener would also switch on event dispatch for every statement: ~10 %)."""
    engine = create_engine(
        url.set(drivername="sqlite+pysqlite"),
        connect_args={"isolation_level": None, "check_same_thread": False},
        poolclass=NullPool,
    )
    event.listen(engine, "connect", _sqlite_connect)  # a pool event: no dispatch cost
    return engine


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
    """The async engine's ``begin`` hook (migrations): ``IMMEDIATE`` when writing."""
    write = conn.get_execution_options().get(_WRITE, False)
    conn.exec_driver_sql("BEGIN IMMEDIATE" if write else "BEGIN")


def _unavailable(exc: BaseException) -> Unavailable:
    """A driver error as the domain sees it; the cause stays attached for the logs."""
    err = Unavailable("the database is unavailable")
    err.__cause__ = exc
    return err


# where a sync function runs


def _settle(future: asyncio.Future[Any], result: Any, error: BaseException | None) -> None:
    if future.done():
        return  # the caller was cancelled
    if error is not None:
        future.set_exception(error)
    else:
        future.set_result(result)


def _discard(conn: Connection) -> None:
    """Drop a connection that failed: the next call opens a fresh one."""
    try:
        conn.invalidate()
        conn.close()
    except Exception as exc:
        log.debug("closing a failed connection failed: %r", exc)


_Call = tuple[Callable[[Connection], Any], asyncio.Future[Any]]


class _ConnectionThreads:
    """Threads that each own one connection and run calls from a shared queue.

    A call is one hop: ``SimpleQueue.put`` here, ``call_soon_threadsafe`` back. A
    connection that raised anything but a domain error is discarded."""

    def __init__(self, connect: Callable[[], Connection], count: int, name: str) -> None:
        self._connect = connect
        self._calls: queue.SimpleQueue[_Call | None] = queue.SimpleQueue()
        self._threads = [
            threading.Thread(target=self._serve, name=f"{name}-{i}", daemon=True)
            for i in range(count)
        ]
        for thread in self._threads:
            thread.start()

    def run(self, fn: Callable[[Connection], _T]) -> asyncio.Future[_T]:
        future: asyncio.Future[_T] = asyncio.get_running_loop().create_future()
        self._calls.put((fn, future))
        return future

    async def stop(self) -> None:
        """Finish the calls already queued, close the connections, end the threads."""
        for _ in self._threads:
            self._calls.put(None)
        for thread in self._threads:
            await asyncio.to_thread(thread.join)

    def _serve(self) -> None:
        conn: Connection | None = None
        try:
            while (call := self._calls.get()) is not None:
                fn, future = call
                result: Any = None
                error: BaseException | None = None
                try:
                    if conn is None:
                        conn = self._connect()
                    result = fn(conn)
                except BaseException as exc:
                    error = exc
                    if conn is not None and not isinstance(exc, ParleyError):
                        _discard(conn)
                        conn = None
                with contextlib.suppress(RuntimeError):  # a closed loop: nobody waits
                    future.get_loop().call_soon_threadsafe(_settle, future, result, error)
                del call, fn, future, result, error
        finally:
            if conn is not None:
                conn.close()


def _in_snapshot(fn: Callable[[Connection], _T]) -> Callable[[Connection], _T]:
    """``fn`` inside a deferred transaction: its statements read one snapshot."""

    def run(conn: Connection) -> _T:
        conn.exec_driver_sql("BEGIN")
        try:
            return fn(conn)
        finally:
            conn.rollback()

    return run


class _Runner(Protocol):
    @property
    def engine(self) -> Engine:
        """The sync engine behind the writer's connection (event hooks attach here)."""

    async def read(self, fn: Callable[[Connection], _T], *, snapshot: bool) -> _T: ...

    async def write(self, fn: Callable[[Connection], _T]) -> _T: ...

    async def write_batch(self, batch: Sequence[_Op]) -> _Committed:
        """Run a group-commit batch in one transaction; the seconds it took and the
        events it stored."""

    async def close(self) -> None: ...


class _SqliteRunner:
    """One writer thread, ``readers`` reader threads, one connection each; and one
    more connection, used on the event loop, for batches made only of sends.

    A batch of sends runs its statements on the loop and only its ``COMMIT`` (the
    fsync) in the writer's thread. Run whole in the thread, the batch's Python work
    (~250 µs for a lone send) competed for the GIL with the loop: the thread takes
    the GIL back after every statement, and each time may wait out a switch interval
    (5 ms) while the loop is busy, so a few sends in a hundred waited 10–50 ms for a
    commit of 1 ms (``parley bench latency``, 1,000 sends/s). The loop never waits
    for the lock: this connection has no busy timeout, and a batch that finds the
    database locked by another process goes to the thread, which waits for it."""

    def __init__(self, url: URL, readers: int) -> None:
        self._engine = _sqlite_engine(url)
        self._writer = _ConnectionThreads(self._engine.connect, 1, "parley-sqlite-writer")
        self._readers = _ConnectionThreads(self._engine.connect, readers, "parley-sqlite-reader")
        self._sender: Connection | None = None

    @property
    def engine(self) -> Engine:
        return self._engine

    async def read(self, fn: Callable[[Connection], _T], *, snapshot: bool) -> _T:
        return await self._readers.run(_in_snapshot(fn) if snapshot else fn)

    async def write(self, fn: Callable[[Connection], _T]) -> _T:
        return await self._writer.run(fn)

    async def write_batch(self, batch: Sequence[_Op]) -> _Committed:
        if any(op.send is None for op in batch):
            return await self.write(lambda conn: _run_batch(conn, batch))
        started = time.perf_counter()
        conn = self._sender_connection()
        transaction = conn.begin()
        try:
            try:
                _raw_cursor(conn).execute("BEGIN IMMEDIATE")
            except sqlite3.OperationalError as exc:
                if "locked" not in str(exc) and "busy" not in str(exc):
                    raise
                transaction.rollback()
                return await self.write(lambda c: _run_batch(c, batch))
            stored = _apply_batch(conn, batch)
            await self._writer.run(lambda _: transaction.commit())
        except BaseException:
            self._sender = None
            with contextlib.suppress(Exception):
                transaction.rollback()
            _discard(conn)
            raise
        return time.perf_counter() - started, stored

    def _sender_connection(self) -> Connection:
        """The loop's connection, without foreign key checks: it only ever runs
        batches of sends, whose lookup, under the write lock, finds the sender a
        member of the room, and a membership row (checked on every other
        connection) proves both exist. The checks it skips probed rooms and users
        again for each message and event: ~10% of a commit's CPU here."""
        conn = self._sender
        if conn is None:
            conn = self._sender = self._engine.connect()
            cursor = _raw_cursor(conn)
            cursor.execute("PRAGMA busy_timeout = 0")
            cursor.execute("PRAGMA foreign_keys = OFF")
        return conn

    async def close(self) -> None:
        if self._sender is not None:
            self._sender.close()
            self._sender = None
        await self._writer.stop()
        await self._readers.stop()
        self._engine.dispose()


async def _drop_async(conn: AsyncConnection) -> None:
    try:
        await conn.invalidate()
        await conn.close()
    except Exception as exc:
        log.debug("closing a failed connection failed: %r", exc)


class _PostgresRunner:
    """Up to ``readers`` ``AUTOCOMMIT`` connections kept open for reads (a pool
    checkout and return cost a third of a read's CPU); the writer keeps its own."""

    def __init__(self, url: URL, readers: int) -> None:
        self._reads = _postgres_engine(url, pool_size=readers, max_overflow=0, autocommit=True)
        self._writes = _postgres_engine(url, pool_size=1, max_overflow=0)
        self._read_slots = asyncio.Semaphore(readers)
        self._idle: list[AsyncConnection] = []
        self._conn: AsyncConnection | None = None
        self._closed = False

    @property
    def engine(self) -> Engine:
        return self._writes.sync_engine

    async def read(self, fn: Callable[[Connection], _T], *, snapshot: bool) -> _T:
        async with self._read_slots:
            conn = self._idle.pop() if self._idle else await self._reads.connect()
            try:
                result = await conn.run_sync(fn)
            except BaseException as exc:
                if isinstance(exc, ParleyError):
                    self._idle.append(conn)
                else:
                    await _drop_async(conn)
                raise
            if self._closed:
                await conn.close()
            else:
                self._idle.append(conn)
            return result

    async def write(self, fn: Callable[[Connection], _T]) -> _T:
        try:
            if self._conn is None:
                self._conn = await self._writes.connect()
            return await self._conn.run_sync(fn)
        except BaseException:
            conn, self._conn = self._conn, None
            if conn is not None:
                await _drop_async(conn)
            raise

    async def write_batch(self, batch: Sequence[_Op]) -> _Committed:
        return await self.write(lambda conn: _run_batch(conn, batch))

    async def close(self) -> None:
        self._closed = True
        conns, self._idle = self._idle, []
        if self._conn is not None:
            conns.append(self._conn)
            self._conn = None
        for conn in conns:
            try:
                await conn.close()
            except Exception as exc:
                log.debug("closing a connection failed: %r", exc)
        await self._reads.dispose()
        await self._writes.dispose()


# row mapping: by position, in the column order below (a fixed prefix of each select)

_USER_COLUMNS = (
    users.c.id,
    users.c.username,
    users.c.display_name,
    users.c.created_at,
    users.c.is_admin,
)
_ROOM_COLUMNS = (
    rooms.c.id,
    rooms.c.name,
    rooms.c.visibility,
    rooms.c.topic,
    rooms.c.kind,
    rooms.c.created_at,
    rooms.c.last_seq,
)
_MESSAGE_COLUMNS = (
    messages.c.id,
    messages.c.room_id,
    messages.c.seq,
    messages.c.sender_id,
    messages.c.body,
    messages.c.client_msg_id,
    messages.c.created_at,
    messages.c.edited_at,
    messages.c.version,
    messages.c.deleted,
)
_MEMBER_COLUMNS = (
    members.c.room_id,
    members.c.user_id,
    members.c.role,
    members.c.banned,
    members.c.read_seq,
)
_EVENT_COLUMNS = (events.c.room_id, events.c.seq, events.c.type, events.c.data)
# dict lookups: calling an Enum class costs ~20 times more
_ROLES = {r.value: r for r in Role}
_VISIBILITIES = {v.value: v for v in Visibility}
_KINDS = {k.value: k for k in RoomKind}
_EVENT_TYPES = {t.value: t for t in EventType}


def _user(row: Sequence[Any]) -> User:
    return User(
        id=row[0], username=row[1], display_name=row[2], created_at=row[3], is_admin=bool(row[4])
    )


def _room(row: Sequence[Any]) -> Room:
    return Room(
        id=row[0],
        name=row[1],
        visibility=_VISIBILITIES[row[2]],
        topic=row[3],
        kind=_KINDS[row[4]],
        created_at=row[5],
        last_seq=row[6],
    )


def _message(row: Sequence[Any]) -> Message:
    return Message(
        id=row[0],
        room_id=row[1],
        seq=row[2],
        sender_id=row[3],
        body=row[4],
        client_msg_id=row[5],
        created_at=row[6],
        edited_at=row[7],
        version=row[8],
        deleted=bool(row[9]),
    )


def _membership(row: Sequence[Any]) -> Membership:
    return Membership(
        room_id=row[0],
        user_id=row[1],
        role=_ROLES[row[2]] if row[2] is not None else None,
        banned=bool(row[3]),
        read_seq=row[4],
    )


def _event(row: Sequence[Any]) -> Event:
    return Event(row[0], row[1], _EVENT_TYPES[row[2]], bytes(row[3]))


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


# statements, built once (bind parameter names must differ from column names: SQLAlchemy
# reserves those for the SET and VALUES clauses)


def _many(name: str) -> Any:
    """An ``IN`` list bound at execution: one cached statement for any length."""
    return bindparam(name, expanding=True)


class _Raw:
    """A Core statement compiled once per dialect and run on the DBAPI cursor.

    For the hot paths only (sends, a connection's rooms): SQLAlchemy's
    per-execution work (execution context, parameter processing, result wrapping)
    costs ~50 µs a statement on these machines, more than SQLite takes to run it,
    and a batch of sends is four statements. The statements here have no type
    processing to skip (text, integers, bytes), so the driver's own parameters and
    rows are the same values.
    """

    __slots__ = ("_columns", "_compiled", "_stmt")

    def __init__(self, stmt: ClauseElement, columns: Sequence[str] | None = None) -> None:
        self._stmt = stmt
        self._columns = list(columns) if columns is not None else None
        self._compiled: dict[str, tuple[str, tuple[str, ...], dict[str, Any]]] = {}

    def _plan(self, conn: Connection) -> tuple[str, tuple[str, ...], dict[str, Any]]:
        name = conn.dialect.name
        plan = self._compiled.get(name)
        if plan is None:
            compiled = cast(
                SQLCompiler, self._stmt.compile(dialect=conn.dialect, column_keys=self._columns)
            )
            names = tuple(compiled.positiontup or ())
            plan = self._compiled[name] = (compiled.string, names, dict(compiled.params))
        return plan

    def execute(self, conn: Connection, params: Mapping[str, Any]) -> Any:
        """Run with one set of parameters; the DBAPI cursor, for its rows."""
        sql, names, defaults = self._plan(conn)
        cursor = _raw_cursor(conn)
        values = defaults | dict(params) if defaults else params
        cursor.execute(sql, tuple([values[n] for n in names]))
        return cursor

    def executemany(self, conn: Connection, rows: Sequence[Mapping[str, Any]]) -> None:
        sql, names, _ = self._plan(conn)
        cursor = _raw_cursor(conn)
        cursor.executemany(sql, [tuple([row[n] for n in names]) for row in rows])
        cursor.close()


_IS_MEMBER = and_(members.c.role.is_not(None), not_(members.c.banned))
_SELECT_1 = text("SELECT 1")

_INSERT_USER = insert(users)
_INSERT_TOKEN = insert(refresh_tokens)
_INSERT_ROOM = insert(rooms)
_INSERT_MEMBER = insert(members)
_INSERT_MESSAGE = insert(messages)
_INSERT_REACTION = insert(reactions)
_INSERT_EVENT = insert(events)
_MESSAGE_KEYS = (
    "id",
    "room_id",
    "seq",
    "sender_id",
    "body",
    "client_msg_id",
    "created_at",
    "version",
    "deleted",
)
_RAW_INSERT_MESSAGES = _Raw(_INSERT_MESSAGE, _MESSAGE_KEYS)
_RAW_INSERT_EVENTS = _Raw(_INSERT_EVENT, ("room_id", "seq", "type", "data"))

_USER = select(*_USER_COLUMNS).where(users.c.id == bindparam("user"))
_USERS = select(*_USER_COLUMNS).where(users.c.id.in_(_many("users")))
_CREDENTIALS = select(*_USER_COLUMNS, users.c.password_hash).where(
    users.c.username == bindparam("username")
)
_COUNT_USERS = select(func.count()).where(users.c.id.in_(_many("users")))

_t = refresh_tokens
_CONSUME_TOKEN = (
    update(_t)
    .where(
        _t.c.token_hash == bindparam("token"),
        _t.c.used_at.is_(None),
        not_(_t.c.revoked),
        _t.c.expires_at > bindparam("now"),
    )
    .values(used_at=bindparam("now"))
    .returning(_t.c.user_id, _t.c.family_id)
)
_TOKEN = select(_t.c.family_id, _t.c.used_at).where(_t.c.token_hash == bindparam("token"))
_REVOKE_FAMILY = update(_t).where(_t.c.family_id == bindparam("family")).values(revoked=True)
_REVOKE_FAMILY_OF_TOKEN = (
    update(_t)
    .where(
        _t.c.family_id
        == select(_t.c.family_id).where(_t.c.token_hash == bindparam("token")).scalar_subquery()
    )
    .values(revoked=True)
)

_ROOM = select(*_ROOM_COLUMNS).where(rooms.c.id == bindparam("room"))
_ROOM_OF_PAIR = select(*_ROOM_COLUMNS).where(rooms.c.dm_key == bindparam("key"))
_UPDATE_ROOM = update(rooms).where(rooms.c.id == bindparam("room"))  # SET from the parameters
_TAKE_SEQS = (
    update(rooms)
    .where(rooms.c.id == bindparam("room"))
    .values(last_seq=rooms.c.last_seq + bindparam("n"), last_event_at=bindparam("now"))
    .returning(rooms.c.last_seq)
)
_RAW_TAKE_SEQS = _Raw(_TAKE_SEQS)
_PUBLIC_ROOMS = (
    select(*_ROOM_COLUMNS)
    .where(rooms.c.visibility == Visibility.PUBLIC.value, rooms.c.kind == RoomKind.ROOM.value)
    .order_by(rooms.c.name, rooms.c.id)
    .limit(bindparam("limit"))
)
_LOCK_ROOMS = (
    select(rooms.c.id)
    .where(rooms.c.id.in_(_many("rooms")))
    .order_by(rooms.c.id)
    .with_for_update(key_share=True)
)
_LOCK_KEY = select(func.pg_advisory_xact_lock(func.hashtextextended(bindparam("key"), 0)))

_MEMBER_KEY = and_(members.c.room_id == bindparam("room"), members.c.user_id == bindparam("user"))
_MEMBERSHIP = select(*_MEMBER_COLUMNS).where(_MEMBER_KEY)
_UPDATE_MEMBER = update(members).where(_MEMBER_KEY)  # SET from the parameters
_DELETE_MEMBER = delete(members).where(_MEMBER_KEY)
_MEMBERS = (
    select(*_USER_COLUMNS, members.c.role)
    .select_from(members.join(users, users.c.id == members.c.user_id))
    .where(members.c.room_id == bindparam("room"), _IS_MEMBER)
    .order_by(members.c.joined_at, users.c.id)
)
_MEMBER_IDS = select(members.c.user_id).where(members.c.room_id == bindparam("room"), _IS_MEMBER)
_USER_ROOM_SEQS = (
    select(rooms.c.id, rooms.c.last_seq)
    .select_from(members.join(rooms, rooms.c.id == members.c.room_id))
    .where(members.c.user_id == bindparam("user"), _IS_MEMBER)
)
# Every WebSocket connection reads it as it opens: in a reconnect storm, SQLAlchemy's
# per-execution work on the reader threads held the GIL the event loop waited for.
_RAW_USER_ROOM_SEQS = _Raw(_USER_ROOM_SEQS)
_ROOM_HEADS = select(rooms.c.id, rooms.c.last_seq).where(rooms.c.id.in_(_many("rooms")))
_other = members.alias("other")
_SHARED_ROOM = (
    select(members.c.room_id)
    .join(_other, _other.c.room_id == members.c.room_id)
    .where(
        members.c.user_id == bindparam("a"),
        _IS_MEMBER,
        _other.c.user_id == bindparam("b"),
        _other.c.role.is_not(None),
        not_(_other.c.banned),
    )
    .limit(1)
)
# unread: live messages after the read cursor that others sent, counted by a correlated
# subquery on the (room_id, seq) index: one query for the whole list.
_unread = (
    select(func.count())
    .select_from(messages)
    .where(
        messages.c.room_id == rooms.c.id,
        messages.c.seq > members.c.read_seq,
        not_(messages.c.deleted),
        messages.c.sender_id != bindparam("user"),
    )
    .scalar_subquery()
)
_USER_ROOMS = (
    select(*_ROOM_COLUMNS, members.c.role, members.c.read_seq, _unread)
    .select_from(members.join(rooms, rooms.c.id == members.c.room_id))
    .where(members.c.user_id == bindparam("user"), _IS_MEMBER)
    .order_by(rooms.c.last_event_at.desc(), rooms.c.id)
)
_READ_CURSOR = (
    select(members.c.read_seq, rooms.c.last_seq)
    .select_from(members.join(rooms, rooms.c.id == members.c.room_id))
    .where(_MEMBER_KEY, _IS_MEMBER)
)

_MESSAGE = select(*_MESSAGE_COLUMNS).where(
    messages.c.id == bindparam("message"), messages.c.room_id == bindparam("room")
)
_UPDATE_MESSAGE = update(messages).where(messages.c.id == bindparam("message"))  # SET from params
_in_room = (
    select(*_MESSAGE_COLUMNS).where(messages.c.room_id == bindparam("room")).limit(bindparam("n"))
)
_PAGE_AFTER = _in_room.where(messages.c.seq > bindparam("seq")).order_by(messages.c.seq)
_PAGE_BEFORE = _in_room.where(messages.c.seq < bindparam("seq")).order_by(messages.c.seq.desc())
_PAGE_LATEST = _in_room.order_by(messages.c.seq.desc())

_REACTIONS = (
    select(reactions.c.message_id, reactions.c.emoji, reactions.c.user_id)
    .where(reactions.c.message_id.in_(_many("messages")))
    .order_by(reactions.c.created_at, reactions.c.emoji, reactions.c.user_id)
)
_reaction_key = and_(
    reactions.c.message_id == bindparam("message"),
    reactions.c.user_id == bindparam("user"),
    reactions.c.emoji == bindparam("emoji_"),
)
_REACTION = select(reactions.c.emoji).where(_reaction_key)
_DELETE_REACTION = delete(reactions).where(_reaction_key)

# A run of sends is checked in one lookup: for each (room, sender, client_msg_id) key,
# is the sender a member, and is a message with that client id stored already. The keys
# go in as a VALUES list left-joined to both tables, which both databases run as one
# index probe per key and table. (An IN list per column probes every combination: 2,500
# probes for 50 senders; an OR of the keys makes PostgreSQL scan the whole room: 8.5 ms
# against 0.9.) Keys go in chunks of at most 64, padded by repeating the last key to 1,
# 2, 4 or a multiple of 8, so eleven statement shapes serve every batch size (and a lone
# send probes once, not eight times). The rows are text()
# because values() with bind parameters is not cacheable; VALUES names its columns
# column1, column2, … in both databases.
_KEYS_PER_QUERY = 64
_KEY_NAMES = [(f"r{i}", f"u{i}", f"c{i}") for i in range(_KEYS_PER_QUERY)]


def _padded(keys: int) -> int:
    """The statement shape for ``keys`` keys: 1, 2, 4, then a multiple of 8."""
    return keys if keys in (1, 2) else 4 if keys <= 4 else -(-keys // 8) * 8


@functools.cache
def _send_checks(size: int) -> _Raw:
    rows = ", ".join(f"(:{r}, :{u}, :{c})" for r, u, c in _KEY_NAMES[:size])
    k = (
        text(f"VALUES {rows}")
        .columns(column("column1", String), column("column2", String), column("column3", String))
        .cte("send_keys")
    )
    member = and_(members.c.room_id == k.c.column1, members.c.user_id == k.c.column2, _IS_MEMBER)
    stored = and_(
        messages.c.room_id == k.c.column1,
        messages.c.sender_id == k.c.column2,
        messages.c.client_msg_id == k.c.column3,
    )
    return _Raw(
        select(k.c.column1, k.c.column2, members.c.user_id, *_MESSAGE_COLUMNS).select_from(
            k.outerjoin(members, member).outerjoin(messages, stored)
        )
    )


def _check_sends(
    conn: Connection, keys: Sequence[tuple[str, str, str | None]]
) -> tuple[set[tuple[str, str]], list[Message]]:
    """The (room, sender) pairs that may send, and the messages already stored."""
    allowed: set[tuple[str, str]] = set()
    found: dict[str, Message] = {}
    for start in range(0, len(keys), _KEYS_PER_QUERY):
        chunk = keys[start : start + _KEYS_PER_QUERY]
        size = _padded(len(chunk))
        params: dict[str, str | None] = {}
        for names, key in zip(_KEY_NAMES[:size], chunk, strict=False):
            params.update(zip(names, key, strict=True))
        for names in _KEY_NAMES[len(chunk) : size]:
            params.update(zip(names, chunk[-1], strict=True))
        for row in _send_checks(size).execute(conn, params).fetchall():
            if row[2] is not None:
                allowed.add((row[0], row[1]))
            if row[3] is not None:
                found[row[3]] = _message(row[3:])
    return allowed, list(found.values())


_EVENTS = (
    select(*_EVENT_COLUMNS)
    .where(events.c.room_id == bindparam("room"), events.c.seq > bindparam("seq"))
    .order_by(events.c.seq)
    .limit(bindparam("n"))
)


# statements shared by the write operations


def _insert_events(conn: Connection, new: Sequence[Event]) -> None:
    """Store events; when a batch is running on ``conn``, add them to its journal
    (for the commit hook) once they are written."""
    if new:
        _RAW_INSERT_EVENTS.executemany(
            conn,
            [
                {"room_id": e.room_id, "seq": e.seq, "type": e.type.value, "data": e.raw}
                for e in new
            ],
        )
        journal: list[Event] | None = conn.info.get(_JOURNAL)
        if journal is not None:
            journal.extend(new)


def _take_seqs(conn: Connection, room_id: str, n: int, now: str) -> int:
    """Reserve the room's next ``n`` sequence numbers; return the first. The counter
    row's lock holds until commit, so no other writer can take the same numbers."""
    row = _RAW_TAKE_SEQS.execute(conn, {"room": room_id, "n": n, "now": now}).fetchone()
    last = row[0] if row is not None else None
    if last is None:
        raise NotFound("room not found")
    return int(last) - n + 1


def _take_seqs_per_room(conn: Connection, counts: Mapping[str, int], now: str) -> dict[str, int]:
    """``_take_seqs`` for each room a batch of sends touches, in one order (rooms
    sorted: two writers never lock the same rooms in opposite orders). One compiled
    statement per room: an ``UPDATE … CASE`` over all of them had to be built and
    compiled afresh for every batch, ~1 ms, far more than the statements it saved."""
    return {room_id: _take_seqs(conn, room_id, counts[room_id], now) for room_id in sorted(counts)}


def _fold_reactions(conn: Connection, page: Sequence[Message]) -> list[Message]:
    """The messages with their reactions, ``{emoji: [user_id, …]}``, in one query."""
    if not page:
        return []
    folded: dict[str, dict[str, list[str]]] = {}
    for message_id, emoji, user_id in conn.execute(_REACTIONS, {"messages": [m.id for m in page]}):
        folded.setdefault(message_id, {}).setdefault(emoji, []).append(user_id)
    if not folded:
        return list(page)
    return [replace(m, reactions=folded[m.id]) if m.id in folded else m for m in page]


def _load_message(conn: Connection, room_id: str, message_id: str) -> Message:
    row = conn.execute(_MESSAGE, {"message": message_id, "room": room_id}).first()
    if row is None:
        raise NotFound("message not found")
    return _message(row)


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


def _ping(conn: Connection) -> None:
    conn.execute(_SELECT_1).scalar()


# the writer's batches


@dataclass(slots=True, eq=False)
class _Op:
    """One queued write: either a send (vectorised with its neighbours) or ``run``."""

    future: asyncio.Future[Any]
    room_ids: tuple[str, ...] = ()
    dm_key: str | None = None
    send: SendRequest | None = None
    run: Callable[[Connection], Any] | None = None
    result: Any = None
    error: BaseException | None = None


@dataclass(slots=True)
class StoreStats:
    """The writer's counters, bumped on the event loop once per transaction. Mean
    batch size is ``committed_ops / commits``; mean commit time is
    ``commit_seconds_total / commits``."""

    commits: int = 0
    committed_ops: int = 0
    failed_batches: int = 0
    last_batch_size: int = 0
    last_commit_seconds: float = 0.0
    commit_seconds_total: float = 0.0


_Committed = tuple[float, list[Event]]
"""A committed batch: the seconds it took, and the events it stored."""


def _run_batch(conn: Connection, batch: Sequence[_Op]) -> _Committed:
    """Run a batch in one transaction (in the writer's thread, or greenlet on
    PostgreSQL); each op gets its own result or error. Returns the seconds from
    ``BEGIN`` to the end of ``COMMIT`` and the events stored. Raises if the
    transaction itself failed."""
    started = time.perf_counter()
    with conn.begin():
        if conn.dialect.name == "sqlite":
            # Take the write lock now, not on the first write: another process's writer
            # makes us wait (busy_timeout) instead of failing with "database is locked".
            _raw_cursor(conn).execute("BEGIN IMMEDIATE")
        else:
            _lock(conn, batch)
        stored = _apply_batch(conn, batch)
    return time.perf_counter() - started, stored


def _raw_cursor(conn: Connection) -> Any:
    return conn.connection.dbapi_connection.cursor()  # type: ignore[union-attr]


def _apply_batch(conn: Connection, batch: Sequence[_Op]) -> list[Event]:
    """The batch's operations in order: runs of sends vectorised, the rest one by one.
    Returns the journal: the events they stored, in the order they were stored."""
    journal: list[Event] = []
    info = conn.info  # read once: a connection that failed may not give it again
    info[_JOURNAL] = journal
    try:
        index = 0
        while index < len(batch):
            if batch[index].send is None:
                _apply_one(conn, batch[index], journal)
                index += 1
                continue
            end = index
            while end < len(batch) and batch[end].send is not None:
                end += 1
            _apply_sends(conn, batch[index:end])
            index = end
    finally:
        info.pop(_JOURNAL, None)
    return journal


def _lock(conn: Connection, batch: Sequence[_Op]) -> None:
    """PostgreSQL: lock every room the batch changes, and every DM key it may create,
    in one global order, so that concurrent nodes never deadlock."""
    room_ids = sorted(
        {r for op in batch for r in op.room_ids}
        | {op.send.room_id for op in batch if op.send is not None}
    )
    if room_ids:
        conn.execute(_LOCK_ROOMS, {"rooms": room_ids}).all()
    for key in sorted({op.dm_key for op in batch if op.dm_key is not None}):
        conn.execute(_LOCK_KEY, {"key": key}).all()


def _apply_one(conn: Connection, op: _Op, journal: list[Event]) -> None:
    """Run one operation in a SAVEPOINT: a failure undoes it, and its events leave
    the journal, and nothing else. A failure of the savepoint itself propagates and
    fails the whole batch."""
    assert op.run is not None
    mark = len(journal)
    savepoint = conn.begin_nested()
    try:
        op.result = op.run(conn)
    except Exception as exc:
        savepoint.rollback()
        del journal[mark:]
        op.error = exc if isinstance(exc, ParleyError) else _unavailable(exc)
        if not isinstance(exc, ParleyError):
            log.warning("write operation failed: %r", exc)
    else:
        savepoint.commit()


def _apply_sends(conn: Connection, ops: Sequence[_Op]) -> None:
    """A run of consecutive sends as a handful of statements, whatever its size.

    No SAVEPOINT (two statements per run): every refusal (not a member, a repeat, text
    that cannot be encoded) is decided before anything is written, so a statement that
    fails here means the database is in trouble, and failing the whole batch is the
    right answer."""
    keys = list(
        {
            (op.send.room_id, op.send.sender_id, op.send.client_msg_id): None
            for op in ops
            if op.send is not None
        }
    )
    allowed, found = _check_sends(conn, keys)
    stored: dict[tuple[str, str, str], Message] = {}
    for message in _fold_reactions(conn, found):
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
    counts: dict[str, int] = {}
    for op in fresh:
        assert op.send is not None
        counts[op.send.room_id] = counts.get(op.send.room_id, 0) + 1
    next_seq = _take_seqs_per_room(conn, counts, now)
    message_rows: list[dict[str, Any]] = []
    new_events: list[Event] = []
    for op in fresh:
        request = op.send
        assert request is not None
        seq = next_seq[request.room_id]
        next_seq[request.room_id] = seq + 1
        message, row, created = _new_message(request, seq, now)
        message_rows.append(row)
        new_events.append(created)
        op.result = SendResult(message, created, created=True)
    _RAW_INSERT_MESSAGES.executemany(conn, message_rows)
    _insert_events(conn, new_events)
    for op, first in repeats:
        op.result = SendResult(first.result.message, None, created=False)


def _new_message(request: SendRequest, seq: int, now: str) -> tuple[Message, dict[str, Any], Event]:
    """A fresh message with its ``seq``: the message, its row and its event."""
    message = Message(
        id=MessageId(new_message_id()),
        room_id=request.room_id,
        seq=seq,
        sender_id=request.sender_id,
        body=request.body,
        client_msg_id=request.client_msg_id,
        created_at=now,
    )
    row = {
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
    created = _new_event(
        request.room_id,
        seq,
        EventType.MESSAGE_CREATED,
        now,
        request.sender_id,
        message=message.public(),
    )
    return message, row, created


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
    room before this commits. In a DM both people are plain members."""
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
    ``on_commit(seconds, batch_size)``: called on the event loop after each commit (also
    a settable attribute); ``stats`` holds running counters.
    ``on_events(events)``: the commit hook (``Store.on_events``; also a settable
    attribute), called once per commit that stored events, before its callers resume.
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
        on_commit: Callable[[float, int], None] | None = None,
        on_events: CommitHook | None = None,
    ) -> None:
        if group_commit_max < 1:
            raise ValueError("group_commit_max must be at least 1")
        if read_threads < 1:
            raise ValueError("read_threads must be at least 1")
        self._url = normalize_url(url)
        if self._url.get_backend_name() not in ("sqlite", "postgresql"):
            raise ValueError(f"unsupported database: {self._url.get_backend_name()}")
        self._postgres = self._url.get_backend_name() == "postgresql"
        self._pool_size = pool_size
        self._read_threads = read_threads
        self._batch_max = group_commit_max if group_commit else 1
        self._queue: asyncio.Queue[_Op | None] = asyncio.Queue(maxsize=max(64, 4 * self._batch_max))
        self._runner: _Runner | None = None
        self._writer: asyncio.Task[None] | None = None
        self._closing = False
        self.stats = StoreStats()
        self.on_commit = on_commit
        self.on_events = on_events

    # lifecycle

    async def start(self) -> None:
        if self._runner is not None:
            return
        prepare_sqlite_path(self._url)
        if self._postgres:
            self._runner = _PostgresRunner(self._url, self._pool_size)
        else:
            self._runner = _SqliteRunner(self._url, self._read_threads)
        self._writer = asyncio.create_task(self._write_loop(), name="parley-store-writer")

    async def close(self) -> None:
        if self._closing or self._writer is None:
            self._closing = True
            return
        self._closing = True
        await self._queue.put(None)
        await self._writer
        runner, self._runner = self._runner, None
        if runner is not None:
            await runner.close()

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

    # the writer

    async def _submit(self, op: _Op) -> Any:
        if self._writer is None or self._writer.done() or self._closing:
            raise Unavailable("the store is not accepting writes")
        await self._queue.put(op)
        return await op.future

    async def _write(
        self,
        run: Callable[[Connection], _T],
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
            for _ in range(_GATHER_TURNS):
                await asyncio.sleep(0)
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
        """One hop to the writer's connection for the whole batch; the futures are
        resolved only once it committed, and only after ``on_events`` saw what it
        stored."""
        runner = self._runner
        assert runner is not None
        committed = False
        seconds = 0.0
        stored: list[Event] = []
        try:
            seconds, stored = await runner.write_batch(batch)
            committed = True
        except Exception as exc:
            log.warning("write batch of %d failed: %r", len(batch), exc)
            self.stats.failed_batches += 1
            for op in batch:
                if not op.future.done():
                    op.future.set_exception(_unavailable(exc))
        finally:
            if not committed:
                for op in batch:
                    if not op.future.done():
                        op.future.set_exception(Unavailable("the write was interrupted"))
        if not committed:
            return
        if stored and self.on_events is not None:
            try:
                self.on_events(stored)
            except Exception:
                log.exception("the on_events hook failed")
        for op in batch:
            if op.future.done():
                continue
            if op.error is not None:
                op.future.set_exception(op.error)
            else:
                op.future.set_result(op.result)
        stats = self.stats
        stats.commits += 1
        stats.committed_ops += len(batch)
        stats.last_batch_size = len(batch)
        stats.last_commit_seconds = seconds
        stats.commit_seconds_total += seconds
        if self.on_commit is not None:
            try:
                self.on_commit(seconds, len(batch))
            except Exception:
                log.exception("the on_commit hook failed")

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
        row = {
            "id": user.id,
            "username": username,
            "display_name": display_name,
            "password_hash": password_hash,
            "is_admin": is_admin,
            "created_at": user.created_at,
        }

        def run(conn: Connection) -> User:
            try:
                with conn.begin_nested():
                    conn.execute(_INSERT_USER, row)
            except IntegrityError as exc:
                raise UsernameTaken(f"the username {username!r} is taken") from exc
            return user

        return await self._write(run)

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
            return Credentials(_user(row), row[5]) if row is not None else None

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

        await self._write(run)

    async def use_refresh_token(self, token_hash: str, now: str) -> RefreshGrant:
        """One conditional ``UPDATE`` consumes the token, so two concurrent refreshes
        with the same token cannot both succeed; the loser finds it used, which is
        reuse: the family is revoked. The refusal is returned rather than raised so
        that the revocation commits; it is raised here, after the commit."""

        def run(conn: Connection) -> RefreshGrant | Unauthorized:
            row = conn.execute(_CONSUME_TOKEN, {"token": token_hash, "now": now}).first()
            if row is not None:
                return RefreshGrant(UserId(row.user_id), row.family_id)
            known = conn.execute(_TOKEN, {"token": token_hash}).first()
            if known is None or known.used_at is None:
                return Unauthorized("invalid refresh token", code="invalid_grant")
            conn.execute(_REVOKE_FAMILY, {"family": known.family_id})
            return Unauthorized("refresh token reused: its family is revoked", code="invalid_grant")

        outcome = await self._write(run)
        if isinstance(outcome, Unauthorized):
            raise outcome
        return outcome

    async def revoke_refresh_family(self, token_hash: str) -> None:
        def run(conn: Connection) -> None:
            conn.execute(_REVOKE_FAMILY_OF_TOKEN, {"token": token_hash})

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

        def run(conn: Connection) -> tuple[Room, list[Event]]:
            try:
                with conn.begin_nested():
                    return _insert_room(
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

        return await self._write(run, dm_key=key)

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

        return await self._write(run, room_id)

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

        return await self._write(run, room_id)

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

        return await self._write(run, room_id)

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

        return await self._write(run, room_id)

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
            return [(_user(row), _ROLES[row[5]]) for row in rows]

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
        return cast(SendResult, await self._submit(_Op(future, send=request)))

    async def edit_message(
        self, room_id: RoomId, message_id: MessageId, editor_id: UserId, body: str, version: int
    ) -> tuple[Message, list[Event]]:
        """A deleted message cannot be edited (``Conflict``: it is a tombstone now)."""

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
            conn.execute(
                _UPDATE_MESSAGE,
                {
                    "message": message_id,
                    "body": body,
                    "edited_at": now,
                    "version": current.version + 1,
                },
            )
            [edited] = _fold_reactions(
                conn, [replace(current, body=body, edited_at=now, version=current.version + 1)]
            )
            new = [
                _new_event(
                    room_id, seq, EventType.MESSAGE_EDITED, now, editor_id, message=edited.public()
                )
            ]
            _insert_events(conn, new)
            return edited, new

        return await self._write(run, room_id)

    async def delete_message(
        self, room_id: RoomId, message_id: MessageId, actor_id: UserId, *, any_sender: bool
    ) -> tuple[Message, list[Event]]:
        """The body is erased from the database, not only hidden; ``version`` moves on
        so that an edit racing the delete gets ``VersionConflict``."""

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
                    "deleted": True,
                    "version": current.version + 1,
                },
            )
            [tombstone] = _fold_reactions(
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
            _insert_events(conn, new)
            return tombstone, new

        return await self._write(run, room_id)

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

        return await self._write(run, room_id)

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
            page = [_message(row) for row in conn.execute(query, params).all()]
            has_more = len(page) > limit
            page = page[:limit]
            if after_seq is None:
                page.reverse()
            return _fold_reactions(conn, page), has_more

        return await self._read(run, snapshot=True)

    async def list_events(
        self, room_id: RoomId, *, after_seq: int, limit: int
    ) -> tuple[list[Event], bool]:
        def run(conn: Connection) -> tuple[list[Event], bool]:
            rows = conn.execute(_EVENTS, {"room": room_id, "seq": after_seq, "n": limit + 1}).all()
            page = [_event(row) for row in rows]
            return page[:limit], len(page) > limit

        return await self._read(run)

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

        return await self._write(run, room_id)

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
