"""The statement catalogue: every statement the store runs, built once, and the few
helpers that several operations share.

Statements are built once, at import
    With ``bindparam`` (``expanding`` for ``IN``), so executing one costs a lookup in
    the compiled cache: building a ``select()`` per call and computing its cache key
    cost more than running it (~145 µs against ~50 µs here). Rows are read by position
    (``parley.store.rows``).

Sequence numbers
    ``UPDATE rooms SET last_seq = last_seq + :n WHERE id = :room RETURNING last_seq``
    in the transaction that inserts the events: 1, 2, 3, … with no gap (a rollback
    undoes the counter too) and no repeat (the row lock serialises writers), also with
    several nodes on one PostgreSQL database.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import replace
from typing import Any, cast

from sqlalchemy import (
    and_,
    bindparam,
    delete,
    func,
    insert,
    not_,
    or_,
    select,
    text,
    tuple_,
    update,
)
from sqlalchemy.engine import Connection
from sqlalchemy.sql.compiler import SQLCompiler
from sqlalchemy.sql.elements import ClauseElement

from parley.domain.models import Message, RoomKind, Visibility
from parley.errors import NotFound
from parley.store.engine import _raw_cursor
from parley.store.rows import (
    _EVENT_COLUMNS,
    _MEMBER_COLUMNS,
    _MESSAGE_COLUMNS,
    _ROOM_COLUMNS,
    _USER_COLUMNS,
)
from parley.store.schema import events, members, messages, reactions, refresh_tokens, rooms, users

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
    "key_id",
    "thread_root_id",
    "mentions",
    "mentions_room",
)
_RAW_INSERT_MESSAGES = _Raw(_INSERT_MESSAGE, _MESSAGE_KEYS)
_RAW_INSERT_EVENTS = _Raw(_INSERT_EVENT, ("room_id", "seq", "type", "data", "message_id", "key_id"))

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
_TOKEN_OWNER = select(_t.c.user_id, _t.c.family_id).where(_t.c.token_hash == bindparam("token"))
_REVOKE_OTHER_FAMILIES = (
    update(_t)
    .where(
        _t.c.user_id == bindparam("user"),
        _t.c.family_id != bindparam("keep"),
        not_(_t.c.revoked),
    )
    .values(revoked=True)
    .returning(_t.c.family_id)
)
_SET_PASSWORD = (
    update(users).where(users.c.id == bindparam("user")).values(password_hash=bindparam("hash"))
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

_EVENTS = (
    select(*_EVENT_COLUMNS)
    .where(events.c.room_id == bindparam("room"), events.c.seq > bindparam("seq"))
    .order_by(events.c.seq)
    .limit(bindparam("n"))
)

# the stored events that carry a copy of a message's text (``parley.store.erase``)
_TEXT_EVENTS = select(events.c.seq, events.c.data, events.c.key_id).where(
    events.c.message_id == bindparam("message"),
    events.c.room_id == bindparam("room"),
    events.c.type.in_(("message.created", "message.edited")),
)
_REWRITE_EVENT = (
    update(events)
    .where(events.c.room_id == bindparam("room"), events.c.seq == bindparam("seq_"))
    .values(data=bindparam("data_"), key_id=bindparam("key_id_"))
)

# encryption at rest: rows not sealed under the current key, a page at a time in
# primary-key order (no index on key_id: a pass reads each table once), and counts
_STALE_MESSAGES = (
    select(messages.c.id, messages.c.room_id)
    .where(
        messages.c.id > bindparam("after"),
        not_(messages.c.deleted),
        or_(messages.c.key_id.is_(None), messages.c.key_id != bindparam("current")),
    )
    .order_by(messages.c.id)
    .limit(bindparam("n"))
)
_MESSAGE_BODY = select(messages.c.id, messages.c.room_id, messages.c.key_id, messages.c.body).where(
    messages.c.id == bindparam("message"), not_(messages.c.deleted)
)
_RESEAL_MESSAGE = (
    update(messages)
    .where(messages.c.id == bindparam("message"))
    .values(body=bindparam("body_"), key_id=bindparam("key_id_"))
)
_STALE_EVENTS = (
    select(events.c.room_id, events.c.seq)
    .where(
        tuple_(events.c.room_id, events.c.seq)
        > tuple_(bindparam("after_room"), bindparam("after_seq")),
        events.c.message_id.is_not(None),
        or_(events.c.key_id.is_(None), events.c.key_id != bindparam("current")),
    )
    .order_by(events.c.room_id, events.c.seq)
    .limit(bindparam("n"))
)
_EVENT_DATA = select(events.c.room_id, events.c.seq, events.c.key_id, events.c.data).where(
    events.c.room_id == bindparam("room"), events.c.seq == bindparam("seq_")
)
_MESSAGE_KEY_COUNTS = (
    select(messages.c.key_id, func.count())
    .where(not_(messages.c.deleted))
    .group_by(messages.c.key_id)
)
_EVENT_KEY_COUNTS = (
    select(events.c.key_id, func.count())
    .where(events.c.message_id.is_not(None))
    .group_by(events.c.key_id)
)

# statements shared by the write operations


def _take_seqs(conn: Connection, room_id: str, n: int, now: str) -> int:
    """Reserve the room's next ``n`` sequence numbers; return the first. The counter
    row's lock holds until commit, so no other writer can take the same numbers."""
    row = _RAW_TAKE_SEQS.execute(conn, {"room": room_id, "n": n, "now": now}).fetchone()
    last = row[0] if row is not None else None
    if last is None:
        raise NotFound("room not found")
    return int(last) - n + 1


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
