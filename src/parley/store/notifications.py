"""Mentions and notifications in the store: who a batch of sends mentions and
notifies, decided inside the write transaction, and the feed's reads and writes.

In the send's transaction
    ``_audience`` parses every body of the batch (``parley.domain.mentions``) and
    reads the members its rules may pick, on the DBAPI cursor: per room, one probe
    for those who chose level ``all`` and everyone in a direct room; and, only for a
    room whose bodies name someone or say ``@room``, one more (those named, found by
    the usernames' index; or everyone, the senders' roles with them). Names are
    resolved to ids there, so a mention of a non-member is plain text, and a member
    who left before the commit is not notified. ``_notify`` then inserts a row per
    recipient (one ``executemany`` for the batch) referring to the message row: no
    copy of the text, which stays sealed in ``messages``.

Afterwards
    A message's deletion deletes its notifications, and a member's leaving (or being
    kicked or banned) deletes theirs from that room, in the same transaction: a
    notification never shows text its reader can no longer read.
"""

from __future__ import annotations

import functools
from collections.abc import Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import (
    and_,
    bindparam,
    delete,
    desc,
    false,
    func,
    insert,
    select,
    true,
    union_all,
    update,
)
from sqlalchemy.engine import Connection

from parley.domain.mentions import (
    Member,
    Notification,
    NotificationKind,
    may_mention_room,
    notification_targets,
    parse_mentions,
    resolve_mentions,
)
from parley.domain.models import Message, RoomId, UserId, new_message_id
from parley.store.rows import _MESSAGE_COLUMNS, _ROLES, _message
from parley.store.schema import members, messages, notifications, rooms, users
from parley.store.statements import _IS_MEMBER, _fold_reactions, _many, _Raw

_n = notifications
_COLUMNS = (
    members.c.room_id,
    members.c.user_id,
    users.c.username,
    members.c.role,
    members.c.notify_level,
    rooms.c.kind,
)
_JOINED = members.join(rooms, rooms.c.id == members.c.room_id).join(
    users, users.c.id == members.c.user_id
)
# Every send's room: its members who chose "all", and everyone in a direct room.
# Two indexed probes (members by room and level; the room's row, then its members
# only when it is direct), on the DBAPI cursor: a room with no mention costs this.
_ALWAYS = _Raw(
    union_all(
        select(*_COLUMNS)
        .select_from(_JOINED)
        .where(members.c.room_id == bindparam("room"), members.c.notify_level == "all", _IS_MEMBER),
        select(*_COLUMNS)
        .select_from(_JOINED)
        .where(rooms.c.id == bindparam("room"), rooms.c.kind != "room", _IS_MEMBER),
    )
)
# Only for a room whose bodies say @room: everyone (the senders' roles with them).
_EVERYONE = _Raw(
    select(*_COLUMNS).select_from(_JOINED).where(members.c.room_id == bindparam("room"), _IS_MEMBER)
)
_NAMES_PER_QUERY = 16


@functools.cache
def _named(size: int, by_id: bool = False) -> _Raw:
    """The members of a room among ``size`` usernames, or user ids (a padded list:
    few shapes)."""
    column = users.c.id if by_id else users.c.username
    names: list[Any] = [bindparam(f"n{i}") for i in range(size)]
    return _Raw(
        select(*_COLUMNS)
        .select_from(_JOINED)
        .where(members.c.room_id == bindparam("room"), column.in_(names), _IS_MEMBER)
    )


def _named_rows(
    conn: Connection, room_id: str, names: Sequence[str], *, by_id: bool = False
) -> list[Any]:
    rows: list[Any] = []
    for start in range(0, len(names), _NAMES_PER_QUERY):
        chunk = list(names[start : start + _NAMES_PER_QUERY])
        size = 1 << (len(chunk) - 1).bit_length()
        params = {f"n{i}": name for i, name in enumerate(chunk + chunk[-1:] * (size - len(chunk)))}
        rows.extend(_named(size, by_id).execute(conn, {"room": room_id, **params}).fetchall())
    return rows


_INSERT = _Raw(insert(_n), ("id", "user_id", "room_id", "message_id", "kind", "created_at", "read"))
_KINDS = {k.value: k for k in NotificationKind}


def _feed(*, unread_only: bool, before: bool) -> Any:
    query = (
        select(_n.c.id, _n.c.kind, _n.c.created_at, _n.c.read, *_MESSAGE_COLUMNS)
        .select_from(_n.join(messages, messages.c.id == _n.c.message_id))
        .where(_n.c.user_id == bindparam("user"))
        .order_by(desc(_n.c.id))
        .limit(bindparam("n"))
    )
    if unread_only:
        query = query.where(_n.c.read == false())
    if before:
        query = query.where(_n.c.id < bindparam("before"))
    return query


_FEEDS = {(u, b): _feed(unread_only=u, before=b) for u in (False, True) for b in (False, True)}
_UNREAD = select(func.count()).where(_n.c.user_id == bindparam("user"), _n.c.read == false())
_READ_ALL = (
    update(_n).where(_n.c.user_id == bindparam("user"), _n.c.read == false()).values(read=true())
)
_READ_IDS = (
    update(_n)
    .where(_n.c.user_id == bindparam("user"), _n.c.id.in_(_many("ids")), _n.c.read == false())
    .values(read=true())
)
_DELETE_OF_MESSAGE = delete(_n).where(_n.c.message_id == bindparam("message"))
_DELETE_OF_MEMBER = delete(_n).where(
    and_(_n.c.room_id == bindparam("room"), _n.c.user_id == bindparam("user"))
)
_SET_LEVEL = (
    update(members)
    .where(
        members.c.room_id == bindparam("room"), members.c.user_id == bindparam("user"), _IS_MEMBER
    )
    .values(notify_level=bindparam("level"))
)


@dataclass(slots=True)
class _RoomAudience:
    kind: str = "room"
    by_name: dict[str, Member] = field(default_factory=dict)
    by_id: dict[str, Member] = field(default_factory=dict)


@dataclass(slots=True)
class _Audience:
    """A batch's bodies parsed, and the members its rules may pick, per room."""

    parsed: list[tuple[list[str], bool]]
    rooms: dict[str, _RoomAudience]

    def mentions(self, index: int, room_id: str, sender_id: str) -> tuple[tuple[UserId, ...], bool]:
        """The members the ``index``-th body mentions, and whether its ``@room``
        counts (the sender is an admin or owner)."""
        names, room = self.parsed[index]
        audience = self.rooms.get(room_id)
        if audience is None:
            return (), False
        mentioned = tuple(resolve_mentions(names, audience.by_name)) if names else ()
        if room:
            sender = audience.by_id.get(sender_id)
            room = sender is not None and may_mention_room(sender.role)
        return mentioned, room


def _audience(
    conn: Connection,
    items: Sequence[tuple[str, str, str]],
    in_threads: Mapping[str, Collection[str]] | None = None,
) -> _Audience:
    """``items``: (room id, sender id, body) of each message; ``in_threads``: per
    room, the people who took part in the threads its replies go to. Per room, one
    probe; a second for a room whose bodies say ``@room`` (everyone) or name someone
    (the names, in padded lists of at most 16); one more for a room with replies
    (those people, by id), unless everyone was read."""
    in_threads = in_threads or {}
    parsed = [parse_mentions(body) for _, _, body in items]
    names: dict[str, set[str]] = {}
    everyone: set[str] = set()
    for (room_id, _, _), (found, room) in zip(items, parsed, strict=True):
        names.setdefault(room_id, set()).update(found)
        if room:
            everyone.add(room_id)
    rows: list[Any] = []
    for room_id in sorted(names):
        rows.extend(_ALWAYS.execute(conn, {"room": room_id}).fetchall())
        if room_id in everyone:
            rows.extend(_EVERYONE.execute(conn, {"room": room_id}).fetchall())
            continue
        if names[room_id]:
            rows.extend(_named_rows(conn, room_id, sorted(names[room_id])))
        if in_threads.get(room_id):
            rows.extend(_named_rows(conn, room_id, sorted(in_threads[room_id]), by_id=True))
    by_room: dict[str, _RoomAudience] = {}
    for room_id, user_id, username, role, level, kind in rows:
        audience = by_room.get(room_id)
        if audience is None:
            audience = by_room[room_id] = _RoomAudience(kind)
        member = Member(user_id, username, _ROLES[role], level)
        audience.by_name[username] = member
        audience.by_id[user_id] = member
    return _Audience(parsed, by_room)


def _notify(
    conn: Connection,
    audience: _Audience,
    new: Iterable[Message],
    took_part: Mapping[str, Collection[str]] | None = None,
) -> dict[str, tuple[Notification, ...]]:
    """Store the notifications of freshly stored messages: by message id.
    ``took_part``: for each reply, who had taken part in its thread."""
    took_part = took_part or {}
    rows: list[dict[str, Any]] = []
    made: dict[str, tuple[Notification, ...]] = {}
    for message in new:
        room = audience.rooms.get(message.room_id)
        if room is None:
            continue
        targets = notification_targets(
            message.sender_id,
            room.kind,
            room.by_id.values(),
            mentions=frozenset(message.mentions),
            mentions_room=message.mentions_room,
            thread_participants=frozenset(UserId(u) for u in took_part.get(message.id, ())),
        )
        if not targets:
            continue
        these = []
        for user_id, kind in targets:
            item = Notification(
                new_message_id(), user_id, kind, message.room_id, message, message.created_at
            )
            these.append(item)
            rows.append(
                {
                    "id": item.id,
                    "user_id": user_id,
                    "room_id": message.room_id,
                    "message_id": message.id,
                    "kind": kind.value,
                    "created_at": item.created_at,
                    "read": False,
                }
            )
        made[message.id] = tuple(these)
    if rows:
        _INSERT.executemany(conn, rows)
    return made


def _stored_mentions(mentions: Sequence[str]) -> str | None:
    return " ".join(mentions) if mentions else None


def _list_feed(
    conn: Connection, user_id: str, *, unread_only: bool, before: str | None, limit: int
) -> tuple[list[Notification], int, bool]:
    params: dict[str, Any] = {"user": user_id, "n": limit + 1}
    if before is not None:
        params["before"] = before
    rows = conn.execute(_FEEDS[(unread_only, before is not None)], params).all()
    page = rows[:limit]
    folded = {m.id: m for m in _fold_reactions(conn, [_message(row[4:], conn) for row in page])}
    feed = [
        Notification(
            row[0],
            UserId(user_id),
            _KINDS[row[1]],
            RoomId(row[5]),
            folded[row[4]],
            row[2],
            bool(row[3]),
        )
        for row in page
    ]
    return feed, _unread(conn, user_id), len(rows) > limit


def _unread(conn: Connection, user_id: str) -> int:
    return int(conn.execute(_UNREAD, {"user": user_id}).scalar_one())


def _mark_read(conn: Connection, user_id: str, ids: Sequence[str] | None) -> int:
    if ids is None:
        conn.execute(_READ_ALL, {"user": user_id})
    elif ids:
        conn.execute(_READ_IDS, {"user": user_id, "ids": list(ids)})
    return _unread(conn, user_id)


def _set_level(conn: Connection, room_id: str, user_id: str, level: str | None) -> bool:
    """False when the user is no member of the room."""
    result = conn.execute(_SET_LEVEL, {"room": room_id, "user": user_id, "level": level})
    return bool(result.rowcount)


def _forget_message(conn: Connection, message_id: str) -> None:
    conn.execute(_DELETE_OF_MESSAGE, {"message": message_id})


def _forget_member(conn: Connection, room_id: str, user_id: str) -> None:
    conn.execute(_DELETE_OF_MEMBER, {"room": room_id, "user": user_id})
