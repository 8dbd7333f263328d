"""The send path: a run of consecutive ``send_message`` calls in one transaction, as a
handful of statements whatever its size (one membership and repeat lookup, one
counter ``UPDATE`` per room, one ``executemany`` per table; replies add one lookup of
their roots and one ``executemany`` of the roots' summaries); and ``_new_message``,
which makes a send's message, row and event for the writer and the store floor alike.
"""

from __future__ import annotations

import functools
from collections.abc import Mapping, Sequence
from dataclasses import replace
from typing import Any

from sqlalchemy import String, and_, column, select, text
from sqlalchemy.engine import Connection

from parley.domain.models import (
    Event,
    EventType,
    Message,
    MessageId,
    SendResult,
    ThreadSummary,
    UserId,
    new_message_id,
    utc_now,
)
from parley.errors import InvalidInput, NotFound
from parley.ports import SendRequest
from parley.store.crypto import _ring, seal_body
from parley.store.journal import _insert_events, _new_event
from parley.store.notifications import _audience, _notify, _stored_mentions
from parley.store.ops import _Op
from parley.store.rows import _MESSAGE_COLUMNS, _message, _storable
from parley.store.schema import members, messages
from parley.store.search import index_messages
from parley.store.statements import (
    _IS_MEMBER,
    _RAW_INSERT_MESSAGES,
    _fold_reactions,
    _Raw,
    _take_seqs,
)
from parley.store.threads import _find_roots, _Root, _store_summaries

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
                found[row[3]] = _message(row[3:], conn)
    return allowed, list(found.values())


def _take_seqs_per_room(conn: Connection, counts: Mapping[str, int], now: str) -> dict[str, int]:
    """``_take_seqs`` for each room a batch of sends touches, in one order (rooms
    sorted: two writers never lock the same rooms in opposite orders). One compiled
    statement per room: an ``UPDATE … CASE`` over all of them had to be built and
    compiled afresh for every batch, ~1 ms, far more than the statements it saved."""
    return {room_id: _take_seqs(conn, room_id, counts[room_id], now) for room_id in sorted(counts)}


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

    roots = _find_roots(
        conn,
        {op.send.thread_root_id for op in ops if op.send and op.send.thread_root_id is not None},
    )
    root_of: dict[int, _Root] = {}
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
        if request.thread_root_id is not None:
            root = roots.get((request.room_id, request.thread_root_id))
            if root is None:
                op.error = NotFound("thread root not found")
                continue
            root_of[id(op)] = root
        if request.client_msg_id is not None:
            first_of[(request.room_id, request.sender_id, request.client_msg_id)] = op
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
    requests = [op.send for op in fresh if op.send is not None]
    # Who took part in each thread replied to (the root's sender, its repliers, and
    # this batch's): the members a reply may notify, read with the others.
    in_threads: dict[str, set[str]] = {}
    for op in fresh:
        root = root_of.get(id(op))
        if root is not None and op.send is not None:
            people = in_threads.setdefault(op.send.room_id, set())
            people.update(root.participants, (root.sender_id, op.send.sender_id))
    audience = _audience(conn, [(r.room_id, r.sender_id, r.body) for r in requests], in_threads)
    took_part: dict[str, tuple[str, ...]] = {}
    message_rows: list[dict[str, Any]] = []
    new_events: list[Event] = []
    for index, request in enumerate(requests):
        seq = next_seq[request.room_id]
        next_seq[request.room_id] = seq + 1
        mentions, mentions_room = audience.mentions(index, request.room_id, request.sender_id)
        root = root_of.get(id(fresh[index]))
        if root is None:
            message, row, created = _new_message(request, seq, now, mentions, mentions_room)
        else:
            summary = root.add_reply(request.sender_id, now)
            message, row, created = _new_message(
                request, seq, now, mentions, mentions_room, root.id, summary
            )
            took_part[message.id] = summary.participants
        message_rows.append(row)
        new_events.append(created)
        fresh[index].result = SendResult(message, created, created=True)
    bodies = [(row["id"], row["room_id"], row["body"]) for row in message_rows]
    ring = _ring(conn)
    if ring is not None:
        for row in message_rows:
            row["key_id"], row["body"] = seal_body(ring, row["room_id"], row["id"], row["body"])
    _RAW_INSERT_MESSAGES.executemany(conn, message_rows)
    index_messages(conn, bodies)
    _insert_events(conn, new_events, [row["id"] for row in message_rows])
    if root_of:
        _store_summaries(conn, {id(root): root for root in root_of.values()}.values())
    notified = _notify(conn, audience, [op.result.message for op in fresh], took_part)
    for op in fresh:
        made = notified.get(op.result.message.id)
        if made:
            op.result = replace(op.result, notifications=made)
    for op, first in repeats:
        op.result = SendResult(first.result.message, None, created=False)


def _new_message(
    request: SendRequest,
    seq: int,
    now: str,
    mentions: tuple[UserId, ...] = (),
    mentions_room: bool = False,
    root_id: str | None = None,
    root_thread: ThreadSummary | None = None,
) -> tuple[Message, dict[str, Any], Event]:
    """A fresh message with its ``seq``: the message, its row and its event. A reply
    names its thread's root (``root_id``), and its event carries the root's summary
    after it (``root_thread``), so live clients and a replay see the count move."""
    message = Message(
        id=MessageId(new_message_id()),
        room_id=request.room_id,
        seq=seq,
        sender_id=request.sender_id,
        body=request.body,
        client_msg_id=request.client_msg_id,
        created_at=now,
        thread_root_id=MessageId(root_id) if root_id is not None else None,
        mentions=mentions,
        mentions_room=mentions_room,
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
        "key_id": None,
        "thread_root_id": root_id,
        "mentions": _stored_mentions(mentions),
        "mentions_room": mentions_room,
    }
    fields: dict[str, Any] = {"message": message.public()}
    if root_thread is not None:
        fields["root_thread"] = root_thread.public()
    created = _new_event(
        request.room_id, seq, EventType.MESSAGE_CREATED, now, request.sender_id, **fields
    )
    return message, row, created
