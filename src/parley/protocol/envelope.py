"""The bus envelope: how every message between nodes is framed, sans I/O.

One layout for rooms, presence and typing::

    kind (1 byte) | origin length (1 byte) | origin node id | body

``kind`` says what the body is: ``E`` one or more stored events (each a 4-byte
big-endian length, then the event's bytes as the store encoded them: a commit's
events for one room travel in one bus message), ``T`` a ``typing`` frame, ``P`` a
presence change notice (user ids, one per line), ``S`` sessions ended (a user id,
then the ended sessions' ids, one per line: a logout or a password change), ``N``
notifications for the user whose ``user.<id>`` channel carries it (each a 4-byte
length, then the ``notification`` frame's bytes, as in ``E``: a commit's
notifications of one user travel in one bus message). The
origin comes first so that a node skips its own echo (brokers deliver a publisher's
messages to itself) without decoding the body.
"""

from __future__ import annotations

import struct
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Final

EVENTS: Final = b"E"
TYPING: Final = b"T"
PRESENCE: Final = b"P"
SESSIONS: Final = b"S"
NOTIFICATIONS: Final = b"N"
KINDS: Final = frozenset((EVENTS, TYPING, PRESENCE, SESSIONS, NOTIFICATIONS))

_LENGTH: Final = struct.Struct(">I")


@dataclass(frozen=True, slots=True)
class Envelope:
    """A decoded envelope; ``body`` is still the kind's own encoding."""

    kind: bytes
    origin: bytes
    body: bytes


def prefix(kind: bytes, origin: bytes) -> bytes:
    """The bytes before the body: build once per node and kind, then concatenate."""
    if kind not in KINDS:
        raise ValueError(f"unknown envelope kind {kind!r}")
    if len(origin) > 255:
        raise ValueError("origin: at most 255 bytes")
    return kind + bytes([len(origin)]) + origin


def pack(kind: bytes, origin: bytes, body: bytes) -> bytes:
    return prefix(kind, origin) + body


def pack_events(head: bytes, raws: Iterable[bytes]) -> bytes:
    """``head`` is ``prefix(EVENTS, origin)`` (or ``NOTIFICATIONS``); each event
    (frame) is length-prefixed."""
    parts = [head]
    for raw in raws:
        parts.append(_LENGTH.pack(len(raw)))
        parts.append(raw)
    return b"".join(parts)


def origin_of(data: bytes) -> bytes:
    """The origin node id alone (empty for a message too short to have one)."""
    if len(data) < 2:
        return b""
    return data[2 : 2 + data[1]]


def unpack(data: bytes) -> Envelope:
    """Raises ``ValueError`` on anything that is not an envelope."""
    if len(data) < 2 or data[:1] not in KINDS or len(data) < 2 + data[1]:
        raise ValueError("not a bus envelope")
    end = 2 + data[1]
    return Envelope(data[:1], data[2:end], data[end:])


def unpack_events(body: bytes) -> list[bytes]:
    """The events of an ``E`` body (the frames of an ``N`` one); ``ValueError`` if
    it is cut short."""
    raws: list[bytes] = []
    view = memoryview(body)
    offset, size = 0, len(body)
    while offset < size:
        if offset + 4 > size:
            raise ValueError("truncated event length")
        (length,) = _LENGTH.unpack_from(view, offset)
        offset += 4
        if offset + length > size:
            raise ValueError("truncated event")
        raws.append(bytes(view[offset : offset + length]))
        offset += length
    return raws
