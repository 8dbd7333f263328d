"""Threads in the store: finding a send's thread root, keeping each root's summary of
its live replies, and a thread's page.

A reply is an ordinary message of its room (same ``seq`` stream) whose
``thread_root_id`` names its root; a reply to a reply belongs to the same root, so a
thread is one level deep. The root's row carries the summary of its live replies
(``reply_count``, ``last_reply_at``, ``thread_participants``), changed only by the
transaction that stores or deletes a reply, under the room's lock (the counter row's
``UPDATE`` on SQLite's single writer; the batch's ``FOR NO KEY UPDATE`` of the room
on PostgreSQL), so concurrent replies from several nodes never lose a count: each
reads the summary after the previous one committed. A send batch resolves all its
roots in one query and writes all their summaries in one ``executemany``.
"""

from __future__ import annotations

from collections.abc import Collection
from dataclasses import dataclass
from typing import Any

from sqlalchemy import and_, bindparam, select, update
from sqlalchemy.engine import Connection

from parley.domain.models import Message, MessageId, ThreadSummary
from parley.protocol.codec import dumps
from parley.store.rows import _MESSAGE_COLUMNS, _message, _thread
from parley.store.schema import messages
from parley.store.statements import _MESSAGE, _fold_reactions

_root = messages.alias("root")
_THREAD_COLUMNS = (
    messages.c.sender_id,
    messages.c.reply_count,
    messages.c.last_reply_at,
    messages.c.thread_participants,
)
# each named message with its own root (if it is a reply): one query per batch
_NAMED_ROOTS = (
    select(
        messages.c.id,
        messages.c.room_id,
        messages.c.deleted,
        *_THREAD_COLUMNS,
        _root.c.id,
        _root.c.deleted,
        *(_root.c[c.name] for c in _THREAD_COLUMNS),
    )
    .select_from(messages.outerjoin(_root, _root.c.id == messages.c.thread_root_id))
    .where(messages.c.id.in_(bindparam("ids", expanding=True)))
)
_SET_THREAD = (
    update(messages)
    .where(messages.c.id == bindparam("root"))
    .values(
        reply_count=bindparam("count"),
        last_reply_at=bindparam("last"),
        thread_participants=bindparam("people"),
    )
)
_LIVE_REPLIES = (
    select(messages.c.sender_id, messages.c.created_at)
    .where(
        messages.c.room_id == bindparam("room"),
        messages.c.thread_root_id == bindparam("root"),
        ~messages.c.deleted,
    )
    .order_by(messages.c.seq)
)
_THREAD_PAGE = (
    select(*_MESSAGE_COLUMNS)
    .where(
        and_(
            messages.c.thread_root_id == bindparam("root"),
            messages.c.room_id == bindparam("room"),
            messages.c.seq > bindparam("seq"),
        )
    )
    .order_by(messages.c.seq)
    .limit(bindparam("n"))
)


@dataclass(slots=True)
class _Root:
    """A thread root as a batch of sends sees it, its summary updated as replies are
    added."""

    id: str
    room_id: str
    sender_id: str
    reply_count: int
    last_reply_at: str | None
    participants: list[str]
    changed: bool = False

    def add_reply(self, sender_id: str, at: str) -> ThreadSummary:
        """Count a reply; the summary after it."""
        self.reply_count += 1
        self.last_reply_at = at
        if not self.participants:
            self.participants.append(self.sender_id)
        if sender_id not in self.participants:
            self.participants.append(sender_id)
        self.changed = True
        return ThreadSummary(self.reply_count, at, tuple(self.participants))


def _find_roots(conn: Connection, named: Collection[str]) -> dict[tuple[str, str], _Root]:
    """For each named message id that may take a reply, keyed by (room, named id):
    its thread's root. A message that is unknown or deleted, or a reply whose root
    was deleted, is absent."""
    if not named:
        return {}
    found: dict[tuple[str, str], _Root] = {}
    roots: dict[str, _Root] = {}
    for row in conn.execute(_NAMED_ROOTS, {"ids": sorted(named)}):
        if row[2]:
            continue
        if row[7] is None:
            root_row: tuple[Any, ...] = (row[0], *row[3:7])
        elif row[8]:
            continue
        else:
            root_row = (row[7], *row[9:13])
        root_id = root_row[0]
        if root_id not in roots:
            summary = _thread(root_row[2], root_row[3], root_row[4])
            roots[root_id] = _Root(
                root_id,
                row[1],
                root_row[1],
                summary.reply_count if summary else 0,
                summary.last_reply_at if summary else None,
                list(summary.participants) if summary else [],
            )
        found[(row[1], row[0])] = roots[root_id]
    return found


def _store_summaries(conn: Connection, roots: Collection[_Root]) -> None:
    """Write the summaries a batch changed: one statement for all of them."""
    params = [
        {
            "root": root.id,
            "count": root.reply_count,
            "last": root.last_reply_at,
            "people": dumps(root.participants).decode(),
        }
        for root in roots
        if root.changed
    ]
    if params:
        conn.execute(_SET_THREAD, params)


def _recount(conn: Connection, room_id: str, root_id: str) -> ThreadSummary | None:
    """Recompute a root's summary from its live replies (after one was deleted) and
    store it; ``None`` when none is left. ``last_reply_at`` is then the newest live
    reply's time; participants who only wrote deleted replies drop out."""
    root_row = conn.execute(_MESSAGE, {"message": root_id, "room": room_id}).first()
    if root_row is None:
        return None
    root = _Root(root_id, room_id, root_row[3], 0, None, [])
    for sender_id, created_at in conn.execute(_LIVE_REPLIES, {"room": room_id, "root": root_id}):
        root.add_reply(sender_id, created_at)
    root.changed = True
    _store_summaries(conn, [root])
    if not root.reply_count:
        return None
    return ThreadSummary(root.reply_count, root.last_reply_at, tuple(root.participants))


def _read_thread(
    conn: Connection, room_id: str, message_id: MessageId, after_seq: int, limit: int
) -> tuple[Message, list[Message], bool] | None:
    """The root of the thread ``message_id`` belongs to, a page of its replies after
    ``after_seq``, and whether more exist; ``None`` for an unknown message."""
    row = conn.execute(_MESSAGE, {"message": message_id, "room": room_id}).first()
    if row is None:
        return None
    root = _message(row, conn)
    if root.thread_root_id is not None:
        row = conn.execute(_MESSAGE, {"message": root.thread_root_id, "room": room_id}).first()
        if row is None:
            return None
        root = _message(row, conn)
    params = {"root": root.id, "room": room_id, "seq": after_seq, "n": limit + 1}
    rows = conn.execute(_THREAD_PAGE, params).all()
    page = [_message(r, conn) for r in rows[:limit]]
    [folded_root, *folded] = _fold_reactions(conn, [root, *page])
    return folded_root, folded, len(rows) > limit
