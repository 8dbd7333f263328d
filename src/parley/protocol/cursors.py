"""Per-room cursors as one compact string: the SSE event ``id`` (``Last-Event-ID``).

A browser's ``EventSource`` sends back only the id of the last event it received,
so that id must say where *every* room stands. Format (version 1)::

    1~<key>.<seq>~<key>.<seq>...

``key``: the first 6 bytes of BLAKE2b of the room id, base64url (8 characters);
``seq``: base 36. A user's rooms are matched back by key (a collision among one
user's rooms is a 1 in 2**48·n² chance; a colliding key is dropped, and that room
starts live). Rooms at ``seq`` 0 are left out. About 13 bytes per room: 50 rooms
make a 650-byte id. Header-safe ASCII only, never CR, LF or NUL.
"""

from __future__ import annotations

import base64
import hashlib
from collections.abc import Iterable, Mapping
from typing import Final

VERSION: Final = "1"
_SEP: Final = "~"
_DIGITS: Final = "0123456789abcdefghijklmnopqrstuvwxyz"
_DIGIT_SET: Final = frozenset(_DIGITS)
MAX_ID_CHARS: Final = 64 * 1024


def room_key(room_id: str) -> str:
    """The 8-character key of a room in a cursor string."""
    digest = hashlib.blake2b(room_id.encode(), digest_size=6).digest()
    return base64.urlsafe_b64encode(digest).decode()


def _base36(n: int) -> str:
    if n == 0:
        return "0"
    out = []
    while n:
        n, r = divmod(n, 36)
        out.append(_DIGITS[r])
    return "".join(reversed(out))


def encode_entry(room_id: str, seq: int) -> str:
    """One room's part of a cursor string (cache it per room: it changes per event)."""
    return f"{room_key(room_id)}.{_base36(seq)}"


def join_entries(entries: Iterable[str]) -> str:
    """The cursor string of already-encoded entries."""
    return _SEP.join((VERSION, *entries))


def encode_cursors(cursors: Mapping[str, int]) -> str:
    """The cursor string of ``{room_id: seq}``."""
    return join_entries(encode_entry(r, s) for r, s in sorted(cursors.items()) if s > 0)


def decode_cursors(value: str, room_ids: Iterable[str]) -> dict[str, int]:
    """The cursors in ``value`` for the rooms in ``room_ids`` (the user's rooms now).

    Unknown keys, a colliding key and a malformed or foreign string give no cursor
    for the rooms concerned (they start live); nothing raises.
    """
    if len(value) > MAX_ID_CHARS:
        return {}
    parts = value.strip().split(_SEP)
    if parts[0] != VERSION:
        return {}
    by_key: dict[str, str | None] = {}
    for room_id in room_ids:
        key = room_key(room_id)
        by_key[key] = None if key in by_key else room_id
    out: dict[str, int] = {}
    for part in parts[1:]:
        key, dot, digits = part.partition(".")
        room = by_key.get(key)
        if not dot or room is None or not 0 < len(digits) <= 12:
            continue
        if not _DIGIT_SET.issuperset(digits):
            continue
        out[room] = int(digits, 36)
    return out
