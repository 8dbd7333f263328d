"""One event on its way to a node's connections, framed once for all of them.

The fan-out queues the same ``Fanout`` object for every recipient: no per-recipient
encoding. Each transport builds its own framing from ``frame`` once per event
(``encoded``): WebSocket and SSE framing live with their transports.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar, cast

from parley.domain.models import Event
from parley.protocol.codec import event_frame
from parley.protocol.events import MEMBER_JOINED, MEMBER_LEFT, decode_head

_T = TypeVar("_T")


class Fanout:
    """One event on its way to this node's connections, framed once for all of them."""

    __slots__ = ("_encoded", "_frame", "member", "raw", "room_id", "seq", "type")

    def __init__(self, room_id: str, seq: int, type_: str, raw: bytes, member: str | None) -> None:
        self.room_id = room_id
        self.seq = seq
        self.type = type_
        self.raw = raw
        self.member = member
        self._frame: bytes | None = None
        self._encoded: dict[Callable[[Fanout], Any], Any] | None = None

    @classmethod
    def of_event(cls, event: Event) -> Fanout:
        """From a stored event; only ``member.*`` events are decoded (for the user)."""
        member = None
        if event.type in (MEMBER_JOINED, MEMBER_LEFT):
            member = decode_head(event.raw).user_id
        return cls(event.room_id, event.seq, str(event.type), event.raw, member)

    @classmethod
    def of_raw(cls, raw: bytes) -> Fanout:
        head = decode_head(raw)
        return cls(head.room_id, head.seq, head.type, raw, head.user_id)

    @property
    def frame(self) -> bytes:
        """The ``event`` frame's bytes, built once."""
        frame = self._frame
        if frame is None:
            frame = self._frame = event_frame(self.raw)
        return frame

    def encoded(self, build: Callable[[Fanout], _T]) -> _T:
        """What a transport makes of this event (a whole WebSocket frame, an ASGI
        message): ``build`` runs once per event, and every recipient on that
        transport shares the result (transports only read it)."""
        cache = self._encoded
        if cache is None:
            cache = self._encoded = {}
        value = cache.get(build)
        if value is None:
            value = cache[build] = build(self)
        return cast(_T, value)


Item = bytes | Fanout
"""What a connection's queue holds: a frame of its own, or a shared event."""
