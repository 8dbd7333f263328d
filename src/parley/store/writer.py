"""The group-commit writer: one task per store that commits queued writes in batches,
and the commit hook that hands each batch's events on once it committed.

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
    Then the notifications the batch's sends made go to ``on_notifications``, the
    same way.

Locking (PostgreSQL)
    A batch first locks the rows of every room it will change, sorted by id, with
    ``SELECT … FOR NO KEY UPDATE``, and takes a transaction advisory lock on every
    direct-room key it may create, sorted too. Every room-scoped row a batch changes
    belongs to a room it locked first, so two nodes' batches wait for each other
    instead of deadlocking; and reads made after the lock (membership, idempotency) see
    the other node's commit. Only user and refresh-token rows are outside this order: a
    cycle there needs two nodes rotating tokens of one family at the same moment, and
    PostgreSQL's deadlock detector then fails one batch (its callers get
    ``Unavailable``).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Protocol, TypeVar, cast

from sqlalchemy.engine import Connection

from parley.domain.models import Event
from parley.errors import ParleyError, Unavailable
from parley.ports import CommitHook, NotificationHook
from parley.store.engine import _raw_cursor, _unavailable
from parley.store.erase import _ERASED
from parley.store.journal import _journal
from parley.store.ops import _Committed, _Op
from parley.store.sends import _apply_sends
from parley.store.statements import _LOCK_KEY, _LOCK_ROOMS

__all__ = ["GroupCommitWriter", "StoreStats"]

log = logging.getLogger(__name__)

_T = TypeVar("_T")
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


class _Batches(Protocol):
    """What the writer needs of a runner."""

    async def write_batch(self, batch: Sequence[_Op]) -> _Committed:
        """Run a group-commit batch in one transaction; the seconds it took and the
        events it stored."""


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
    seconds = time.perf_counter() - started
    if conn.info.pop(_ERASED, False) and conn.dialect.name == "sqlite" and not _checkpoint(conn):
        log.info("WAL checkpoint after an erasing commit was busy; tried again later")
        conn.info[_ERASED] = True  # after the next batch run here, or at close
    return seconds, stored


def _checkpoint(conn: Connection) -> bool:
    """Copy the WAL into the database and truncate it, so that text a batch erased
    does not linger in old WAL frames (``secure_delete`` zeroes the database file's
    freed space, not the WAL). Runs in the writer's thread after the commit: no batch
    of this store is in flight then, so only readers on an older snapshot (for
    milliseconds) or another process's writer make it wait. False if it could not
    finish (busy)."""
    busy, _, _ = _raw_cursor(conn).execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchone()
    return not busy


def _apply_batch(conn: Connection, batch: Sequence[_Op]) -> list[Event]:
    """The batch's operations in order: runs of sends vectorised, the rest one by one.
    Returns the journal: the events they stored, in the order they were stored."""
    with _journal(conn) as journal:
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


class GroupCommitWriter:
    """The store's writer task: callers queue operations, it commits them in batches.

    ``batch_max``: the most operations in one transaction (1: each commits alone).
    ``stats``, ``on_commit`` and ``on_events``: as ``SqlStore`` describes them.
    """

    def __init__(
        self,
        batch_max: int,
        *,
        on_commit: Callable[[float, int], None] | None = None,
        on_events: CommitHook | None = None,
        on_notifications: NotificationHook | None = None,
    ) -> None:
        self._batch_max = batch_max
        self._queue: asyncio.Queue[_Op | None] = asyncio.Queue(maxsize=max(64, 4 * batch_max))
        self._runner: _Batches | None = None
        self._task: asyncio.Task[None] | None = None
        self._closing = False
        self.stats = StoreStats()
        self.on_commit = on_commit
        self.on_events = on_events
        self.on_notifications = on_notifications

    def start(self, runner: _Batches) -> None:
        """Start the task, committing on ``runner``."""
        self._runner = runner
        self._task = asyncio.create_task(self._write_loop(), name="parley-store-writer")

    async def close(self) -> bool:
        """Take no more writes and finish those queued. False if the task was not
        running (never started, or closed already): nothing was waited for."""
        if self._closing or self._task is None:
            self._closing = True
            return False
        self._closing = True
        await self._queue.put(None)
        await self._task
        return True

    async def submit(self, op: _Op) -> Any:
        """Queue ``op`` (waiting while the queue is full) and wait for its result."""
        if self._task is None or self._task.done() or self._closing:
            raise Unavailable("the store is not accepting writes")
        await self._queue.put(op)
        return await op.future

    async def write(
        self,
        run: Callable[[Connection], _T],
        *room_ids: str,
        dm_key: str | None = None,
    ) -> _T:
        """``run`` in the next batch, in its own SAVEPOINT: its result, or its error.
        ``room_ids`` and ``dm_key`` name what it may change (PostgreSQL locks them)."""
        future = asyncio.get_running_loop().create_future()
        op = _Op(future, room_ids=room_ids, dm_key=dm_key, run=run)
        return cast(_T, await self.submit(op))

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
        if self.on_notifications is not None:
            notified = [
                n
                for op in batch
                if op.send is not None and op.error is None
                for n in op.result.notifications
            ]
            if notified:
                try:
                    self.on_notifications(notified)
                except Exception:
                    log.exception("the on_notifications hook failed")
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
