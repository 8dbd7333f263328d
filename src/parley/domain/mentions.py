"""Mentions and who a message notifies: plain functions, tested without I/O.

Grammar
    ``@name`` where ``name`` is a username (``validation.USERNAME_RE``: 3 to 32 of
    ``a-z 0-9 _ . -``; matched case-insensitively, since usernames are lower case),
    not preceded by a word character, ``.``, ``-``, ``@`` or ``/`` (so an e-mail
    address or a URL path is no mention), and not inside a code span or a fenced code
    block as the web client renders them (``web/js/markdown.js``). A trailing ``.`` or
    ``-`` ends the sentence rather than the name when the longer name is no member
    (``@bob.`` mentions ``bob``). ``@room`` mentions every member, and only when the
    sender is an admin or owner of the room; anyone else's ``@room`` is plain text.
    At most ``MAX_MENTIONS`` distinct names per message are looked up; the rest stay
    plain text.

Notification rules (``notification_targets``)
    For each member but the sender, the room level (``NotificationLevel``; default
    ``all`` in direct rooms, ``mentions`` elsewhere) decides: ``none`` never;
    ``mentions`` for a mention of them, ``@room`` or a reply in a thread they took
    part in; ``all`` for those and every other message (kind ``dm`` in a direct room,
    ``message`` elsewhere). One notification per recipient and message, of the
    strongest kind: ``mention`` > ``room_mention`` > ``reply`` > ``dm`` > ``message``.
"""

from __future__ import annotations

import enum
import re
from collections.abc import Collection, Iterable, Mapping
from dataclasses import dataclass
from typing import Any, Final

from parley.domain.models import Message, Role, RoomId, RoomKind, UserId

MAX_MENTIONS: Final = 50
ROOM: Final = "room"

_MENTION = re.compile(r"(?<![\w.\-@/])@([A-Za-z0-9_.\-]{3,32})(?![A-Za-z0-9_.\-])")
_CODE_SPAN = re.compile(r"`[^`\n]{1,2000}`")
_FENCE_OPEN = re.compile(r"^\s{0,3}```")
_FENCE_CLOSE = re.compile(r"^\s{0,3}```\s*$")


class NotificationLevel(enum.StrEnum):
    ALL = "all"
    MENTIONS = "mentions"
    NONE = "none"


class NotificationKind(enum.StrEnum):
    MENTION = "mention"
    ROOM_MENTION = "room_mention"
    REPLY = "reply"
    DM = "dm"
    MESSAGE = "message"


_BY_MENTION = frozenset(
    (NotificationKind.MENTION, NotificationKind.ROOM_MENTION, NotificationKind.REPLY)
)
_LEVELS = {level.value: level for level in NotificationLevel}


def is_direct(kind: RoomKind | str) -> bool:
    """A direct room (1:1 or group): every message notifies by default."""
    return str(kind) != RoomKind.ROOM.value


def default_level(kind: RoomKind | str) -> NotificationLevel:
    return NotificationLevel.ALL if is_direct(kind) else NotificationLevel.MENTIONS


def level_of(stored: str | None, kind: RoomKind | str) -> NotificationLevel:
    """A member's effective level: what they chose, else the room kind's default."""
    if stored is None:
        return default_level(kind)
    return _LEVELS[stored]


def _outside_code(body: str) -> Iterable[str]:
    """The lines of ``body`` outside fenced code blocks, code spans blanked."""
    fenced = False
    for line in body.split("\n"):
        if fenced:
            fenced = not _FENCE_CLOSE.match(line)
            continue
        if _FENCE_OPEN.match(line):
            fenced = True
            continue
        yield _CODE_SPAN.sub(" ", line) if "`" in line else line


def parse_mentions(body: str) -> tuple[list[str], bool]:
    """The candidate usernames ``body`` mentions (lower case, first use first, each
    with its trailing ``.``/``-`` trimmed form after it) and whether it says
    ``@room``. Who they are, and whether ``@room`` counts, is for the store to
    decide against the room's members."""
    if "@" not in body:
        return [], False
    names: dict[str, None] = {}
    room = False
    for line in _outside_code(body):
        if "@" not in line:
            continue
        for match in _MENTION.finditer(line):
            name = match.group(1).lower()
            if name == ROOM:
                room = True
                continue
            if len(names) >= 2 * MAX_MENTIONS:
                break
            names.setdefault(name, None)
            trimmed = name.rstrip(".-")
            if trimmed != name and len(trimmed) >= 3:
                names.setdefault(trimmed, None)
    if not names:
        return [], room
    return list(names), room


@dataclass(frozen=True, slots=True)
class Member:
    """What the rules need of a member: their role and chosen level (None: default)."""

    user_id: UserId
    username: str
    role: Role
    level: str | None


def resolve_mentions(names: Iterable[str], members: Mapping[str, Member]) -> list[UserId]:
    """The members ``names`` mention (``members`` by username), at most
    ``MAX_MENTIONS``: a name and its trimmed form count once, the longer one first."""
    found: dict[UserId, None] = {}
    skip: set[str] = set()
    for name in names:
        if name in skip:
            continue
        member = members.get(name)
        if member is None:
            continue
        trimmed = name.rstrip(".-")
        if trimmed != name:
            skip.add(trimmed)
        found.setdefault(member.user_id, None)
        if len(found) >= MAX_MENTIONS:
            break
    return list(found)


def may_mention_room(role: Role | None) -> bool:
    return role is not None and role.rank >= Role.ADMIN.rank


def notification_targets(
    sender_id: UserId,
    room_kind: RoomKind | str,
    members: Iterable[Member],
    *,
    mentions: Collection[UserId],
    mentions_room: bool,
    thread_participants: Collection[UserId] = (),
) -> list[tuple[UserId, NotificationKind]]:
    """Who a message notifies, and why. ``members``: at least every member the rules
    may pick (the mentioned ones, everyone for ``@room`` or a direct room, those with
    level ``all``); ``thread_participants``: for a reply, the thread's participants."""
    direct = is_direct(room_kind)
    default = default_level(room_kind)
    out: list[tuple[UserId, NotificationKind]] = []
    for member in members:
        if member.user_id == sender_id:
            continue
        if member.user_id in mentions:
            kind = NotificationKind.MENTION
        elif mentions_room:
            kind = NotificationKind.ROOM_MENTION
        elif member.user_id in thread_participants:
            kind = NotificationKind.REPLY
        elif direct:
            kind = NotificationKind.DM
        else:
            kind = NotificationKind.MESSAGE
        level = default if member.level is None else _LEVELS[member.level]
        if level is NotificationLevel.NONE:
            continue
        if level is NotificationLevel.MENTIONS and kind not in _BY_MENTION:
            continue
        out.append((member.user_id, kind))
    return out


@dataclass(frozen=True, slots=True)
class Notification:
    """One recipient's notification of a message. Stored as a reference to the
    message row (never a copy of its text); ``message`` is read with it."""

    id: str
    user_id: UserId
    kind: NotificationKind
    room_id: RoomId
    message: Message
    created_at: str
    read: bool = False

    def public(self) -> dict[str, Any]:
        """The API's ``Notification`` object."""
        return {
            "id": self.id,
            "kind": self.kind.value,
            "room_id": self.room_id,
            "message": self.message.public(),
            "created_at": self.created_at,
            "read": self.read,
        }
