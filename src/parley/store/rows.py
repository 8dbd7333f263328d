"""Row mapping: rows become frozen domain dataclasses, read by position and enums by
dict (``row.name`` and ``Enum(value)`` made a 100-event page 3× dearer); and the
text that a row can hold."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from sqlalchemy.engine import Connection

from parley.domain.models import (
    Event,
    EventType,
    Membership,
    Message,
    Role,
    Room,
    RoomKind,
    ThreadSummary,
    User,
    Visibility,
)
from parley.protocol.codec import loads
from parley.store.crypto import open_body, open_event
from parley.store.schema import events, members, messages, rooms, users

# row mapping: by position, in the column order below (a fixed prefix of each select)

_USER_COLUMNS = (
    users.c.id,
    users.c.username,
    users.c.display_name,
    users.c.created_at,
    users.c.is_admin,
    users.c.deactivated_at,
    users.c.deleted_at,
)
_USER_WIDTH = len(_USER_COLUMNS)
"""Where a select's own columns begin after a user's."""
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
    messages.c.key_id,
    messages.c.thread_root_id,
    messages.c.reply_count,
    messages.c.last_reply_at,
    messages.c.thread_participants,
    messages.c.mentions,
    messages.c.mentions_room,
)
_MEMBER_COLUMNS = (
    members.c.room_id,
    members.c.user_id,
    members.c.role,
    members.c.banned,
    members.c.read_seq,
    members.c.notify_level,
)
_EVENT_COLUMNS = (events.c.room_id, events.c.seq, events.c.type, events.c.data, events.c.key_id)
# dict lookups: calling an Enum class costs ~20 times more
_ROLES = {r.value: r for r in Role}
_VISIBILITIES = {v.value: v for v in Visibility}
_KINDS = {k.value: k for k in RoomKind}
_EVENT_TYPES = {t.value: t for t in EventType}


def _user(row: Sequence[Any]) -> User:
    return User(
        id=row[0],
        username=row[1],
        display_name=row[2],
        created_at=row[3],
        is_admin=bool(row[4]),
        deactivated_at=row[5],
        deleted=row[6] is not None,
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


def _message(row: Sequence[Any], conn: Connection) -> Message:
    """A message row, its body opened if sealed (``parley.store.crypto``)."""
    body = row[4] if row[10] is None else open_body(conn, row[1], row[0], row[10], row[4])
    return Message(
        id=row[0],
        room_id=row[1],
        seq=row[2],
        sender_id=row[3],
        body=body,
        client_msg_id=row[5],
        created_at=row[6],
        edited_at=row[7],
        version=row[8],
        deleted=bool(row[9]),
        thread_root_id=row[11],
        thread=_thread(row[12], row[13], row[14]),
        mentions=tuple(row[15].split()) if row[15] else (),
        mentions_room=bool(row[16]),
    )


def _thread(
    count: int, last_reply_at: str | None, participants: str | None
) -> ThreadSummary | None:
    """A root's summary from its columns; ``None`` when it has no live reply."""
    if not count:
        return None
    return ThreadSummary(count, last_reply_at, tuple(loads(participants or "[]")))


def _membership(row: Sequence[Any]) -> Membership:
    return Membership(
        room_id=row[0],
        user_id=row[1],
        role=_ROLES[row[2]] if row[2] is not None else None,
        banned=bool(row[3]),
        read_seq=row[4],
        notify_level=row[5],
    )


def _event(row: Sequence[Any], conn: Connection) -> Event:
    """An event row, its data opened if sealed (``parley.store.crypto``)."""
    data = bytes(row[3]) if row[4] is None else open_event(conn, row[0], row[1], row[4], row[3])
    return Event(row[0], row[1], _EVENT_TYPES[row[2]], data)


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
