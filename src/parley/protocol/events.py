"""What a node must know of a stored event to route it, decoded once per node.

An event travels as the bytes the store encoded (``Event.raw``). The fan-out needs
only its room, ``seq``, type and, for ``member.*`` events, whose membership changed;
msgspec reads those and skips the rest (the message body) without building it.
"""

from __future__ import annotations

from typing import Final

import msgspec

MEMBER_JOINED: Final = "member.joined"
MEMBER_LEFT: Final = "member.left"
MESSAGE_EDITED: Final = "message.edited"
MESSAGE_DELETED: Final = "message.deleted"
REWRITES: Final = frozenset((MESSAGE_EDITED, MESSAGE_DELETED))
"""Events after which the room's earlier events read differently from the store
(the text they held is rewritten or erased there)."""


class EventHead(msgspec.Struct, frozen=True):
    """The routing fields of an event; ``user_id`` is set on ``member.*`` events."""

    room_id: str
    seq: int
    type: str
    user_id: str | None = None


_decoder: Final = msgspec.json.Decoder(EventHead)


def decode_head(raw: bytes) -> EventHead:
    """Raises ``msgspec.DecodeError`` (a ``ValueError``) on anything that is not an event."""
    return _decoder.decode(raw)
