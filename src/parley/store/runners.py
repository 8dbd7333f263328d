"""Where a sync function runs: the runners behind ``SqlStore``, one per dialect.

Why not the async engine on SQLite
    aiosqlite turns each statement into several loop↔thread round trips plus greenlet
    switches (16 for one ``get_user``: checkout, ``BEGIN``, query, ``ROLLBACK``,
    reset), ~1.5–2 ms of CPU per read. Here a call is one hop to a thread whose
    connection is already open. Reads issue no ``BEGIN``: under WAL each statement
    reads one consistent snapshot; the two reads made of several statements (a
    message page and its reactions) take a deferred ``BEGIN``. The hop is a
    ``SimpleQueue`` plus ``call_soon_threadsafe``: half the CPU of ``run_in_executor``
    (no ``concurrent.futures.Future``, no condition variable).

PostgreSQL
    Reads run on ``AUTOCOMMIT`` connections kept open (up to ``pool_size``): no
    ``BEGIN``/``ROLLBACK`` round trips, no pool checkout (they were READ COMMITTED
    before: a snapshot per statement either way).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import queue
import sqlite3
import threading
import time
from collections.abc import Callable, Sequence
from typing import Any, Protocol, TypeVar

from sqlalchemy.engine import URL, Connection, Engine
from sqlalchemy.exc import DBAPIError, InterfaceError
from sqlalchemy.ext.asyncio import AsyncConnection

from parley.errors import ParleyError
from parley.store.crypto import KeyRing, attach
from parley.store.engine import _postgres_engine, _raw_cursor, _sqlite_engine
from parley.store.ops import _Committed, _Op
from parley.store.writer import _apply_batch, _Batches, _checkpoint, _run_batch

log = logging.getLogger(__name__)

_T = TypeVar("_T")

WRITE_TIMEOUT = 15.0
"""Seconds a PostgreSQL write may wait for its answer (a commit waiting for a
synchronous standby included) before it fails as ``unavailable``."""


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


class _Runner(_Batches, Protocol):
    @property
    def engine(self) -> Engine:
        """The sync engine behind the writer's connection (event hooks attach here)."""

    async def read(self, fn: Callable[[Connection], _T], *, snapshot: bool) -> _T: ...

    async def write(self, fn: Callable[[Connection], _T]) -> _T: ...

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

    def __init__(self, url: URL, readers: int, keys: KeyRing | None = None) -> None:
        self._engine = _sqlite_engine(url)
        attach(self._engine, keys)
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
        """Close the readers, then checkpoint the whole WAL into the database
        (``TRUNCATE``) on the writer's connection, the last one open, then close it.

        SQLite's own checkpoint at close runs only if the closing connection gets an
        exclusive lock, that is, if no other connection is open: two connections
        closing at once (the reader threads) can each see the other and both skip it,
        leaving the WAL beside a database file whose pages still hold text that
        later commits re-sealed or erased (1 close in ~8 here)."""
        if self._sender is not None:
            self._sender.close()
            self._sender = None
        await self._readers.stop()
        if not await self._writer.run(_checkpoint):
            log.warning("WAL checkpoint at close was busy: another process has the database open")
        await self._writer.stop()
        self._engine.dispose()


async def _drop_async(conn: AsyncConnection) -> None:
    try:
        await conn.invalidate()
        await conn.close()
    except Exception as exc:
        log.debug("closing a failed connection failed: %r", exc)


def _lost(exc: BaseException) -> bool:
    """The error says the connection is gone (the server restarted or a network
    cut), not that the statement was wrong."""
    if not isinstance(exc, DBAPIError):
        return False
    # asyncpg's "connection is closed" comes as an InterfaceError that SQLAlchemy does
    # not always mark invalidated (it depends on when asyncpg noticed the close).
    return exc.connection_invalidated or isinstance(exc, InterfaceError)


async def _closed(conn: AsyncConnection) -> bool:
    """The driver already knows this connection is gone (the server or the network
    closed it while it sat idle): free to ask, no round trip."""
    raw = await conn.get_raw_connection()
    is_closed = getattr(raw.driver_connection, "is_closed", None)
    return bool(callable(is_closed) and is_closed())


class _PostgresRunner:
    """Up to ``readers`` ``AUTOCOMMIT`` connections kept open for reads (a pool
    checkout and return cost a third of a read's CPU); the writer keeps its own.

    Connections kept open go stale when PostgreSQL restarts or the network is cut.
    Before each use, a connection the driver already knows closed is replaced (no
    round trip); a read that still finds its connection gone drops every idle one
    and runs once more on a fresh connection (reads change nothing). A write batch
    is never run twice: its outcome is unknown once sent. No client sees a 503 from
    a database that is back.

    A write that has no answer within ``write_timeout`` seconds fails (its
    connection dropped, its outcome unknown: a retried send with its
    ``client_msg_id`` is stored once either way). A primary left waiting for a
    synchronous standby that is gone would otherwise hold every send forever.
    """

    def __init__(
        self,
        url: URL,
        readers: int,
        keys: KeyRing | None = None,
        *,
        write_timeout: float = WRITE_TIMEOUT,
    ) -> None:
        self._write_timeout = write_timeout
        self._reads = _postgres_engine(url, pool_size=readers, max_overflow=0, autocommit=True)
        self._writes = _postgres_engine(url, pool_size=1, max_overflow=0)
        attach(self._reads.sync_engine, keys)
        attach(self._writes.sync_engine, keys)
        self._read_slots = asyncio.Semaphore(readers)
        self._idle: list[AsyncConnection] = []
        self._conn: AsyncConnection | None = None
        self._closed = False

    @property
    def engine(self) -> Engine:
        return self._writes.sync_engine

    async def read(self, fn: Callable[[Connection], _T], *, snapshot: bool) -> _T:
        async with self._read_slots:
            conn = await self._reader()
            try:
                result = await conn.run_sync(fn)
            except BaseException as exc:
                if isinstance(exc, ParleyError):
                    self._idle.append(conn)
                    raise
                await _drop_async(conn)
                if not _lost(exc):
                    raise
                stale, self._idle = self._idle, []
                for old in stale:
                    await _drop_async(old)
                conn = await self._reads.connect()
                try:
                    result = await conn.run_sync(fn)
                except BaseException as again:
                    if isinstance(again, ParleyError):
                        self._idle.append(conn)
                    else:
                        await _drop_async(conn)
                    raise
            if self._closed:
                await conn.close()
            else:
                self._idle.append(conn)
            return result

    async def _reader(self) -> AsyncConnection:
        while self._idle:
            conn = self._idle.pop()
            if not await _closed(conn):
                return conn
            await _drop_async(conn)
        return await self._reads.connect()

    async def write(self, fn: Callable[[Connection], _T]) -> _T:
        try:
            stale = self._conn
            if stale is not None and await _closed(stale):
                self._conn = None
                await _drop_async(stale)
            async with asyncio.timeout(self._write_timeout):
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
