"""One connection's protocol state, sans I/O: what a frame means now, and where each
room's delivery stands.

The gateway pumps bytes and time in and acts on what comes out, so every rule here
is tested with no socket and no event loop (``tests/unit/test_protocol*.py``), as
python-websockets does with its ``protocol.py``.

``ServerSession`` decides, for every inbound frame: too large, binary, malformed,
over the rate limit, not allowed before authentication, or a valid ``ClientFrame``
for the gateway to carry out. It also tracks the 10 s authentication deadline and
which ``resume`` requests still wait for rooms to catch up.

``RoomCursor`` is the delivery rule of one room on one connection. Live events come
from the node's fan-out in ``seq`` order (the hub reorders and repairs before
that); the cursor delivers ``seq == cursor + 1``, drops what the client already has,
and on a gap switches to *replaying*: live events are then skipped while the
gateway reads the log from the store, and the cursor goes live again only once it
has reached the fan-out's head (``catch_up``), a synchronous check with no await
between it and the next live event. Hence no gap and no duplicate at the switch:
everything up to the head came from the store, everything after it comes live.
"""

from __future__ import annotations

import enum
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Final

from parley.protocol.frames import (
    Auth,
    ClientFrame,
    FrameError,
    Ping,
    decode_client,
    error_frame,
    resumed_frame,
)

# Close codes (RFC 6455 section 7.4.1; 1013 from the IANA registry).
CLOSE_NORMAL: Final = 1000
CLOSE_GOING_AWAY: Final = 1001
CLOSE_POLICY: Final = 1008
CLOSE_TOO_BIG: Final = 1009
CLOSE_INTERNAL: Final = 1011
CLOSE_SERVICE_RESTART: Final = 1012
CLOSE_TRY_AGAIN: Final = 1013

AUTH_TIMEOUT: Final = 10.0


class Phase(enum.Enum):
    AUTHENTICATING = "authenticating"
    OPEN = "open"
    CLOSED = "closed"


@dataclass(frozen=True, slots=True)
class Close:
    """Close the connection with this code; ``reason`` is at most 123 bytes."""

    code: int
    reason: str


@dataclass(frozen=True, slots=True)
class Reply:
    """A frame that was not accepted: send ``frame`` back, then close if ``close``."""

    frame: bytes
    close: Close | None = None


class TokenBucket:
    """``rate`` tokens a second, at most ``burst`` saved up."""

    __slots__ = ("_burst", "_rate", "_stamp", "_tokens")

    def __init__(self, rate: float, burst: float, now: float) -> None:
        self._rate = rate
        self._burst = burst
        self._tokens = burst
        self._stamp = now

    def take(self, now: float) -> float:
        """Take a token: 0.0 if one was there, else the seconds until there is one."""
        tokens = min(self._burst, self._tokens + (now - self._stamp) * self._rate)
        self._stamp = now
        if tokens >= 1.0:
            self._tokens = tokens - 1.0
            return 0.0
        self._tokens = tokens
        return (1.0 - tokens) / self._rate


@dataclass(slots=True)
class _PendingResume:
    frame_id: str | int | None
    rooms: set[str] = field(default_factory=set)
    started: float = 0.0


class ServerSession:
    """The server's view of one client connection.

    ``frames_per_second=None`` turns the inbound rate limit off (``PARLEY_RATE_LIMITS
    =off``). A client over the limit gets ``rate_limited`` errors; one that goes on
    sending a whole second's worth of refused frames is closed with 1008.
    """

    def __init__(
        self,
        *,
        max_frame_bytes: int,
        frames_per_second: int | None,
        now: float,
        auth_timeout: float = AUTH_TIMEOUT,
    ) -> None:
        self.phase = Phase.AUTHENTICATING
        self.user_id: str | None = None
        self.auth_deadline = now + auth_timeout
        self.max_frame_bytes = max_frame_bytes
        self._bucket = (
            TokenBucket(frames_per_second, frames_per_second, now) if frames_per_second else None
        )
        self._refused_limit = frames_per_second or 0
        self._refused = 0
        self._resumes: list[_PendingResume] = []
        self.resume_seconds: list[float] = []
        """How long each completed ``resume`` took (``now`` given to ``begin_resume``
        and ``caught_up``); the gateway drains it into a histogram."""

    # inbound frames

    def receive(self, data: str | bytes, now: float) -> ClientFrame | Reply:
        """Judge one inbound message: ``str`` is a text frame, ``bytes`` a binary one."""
        if self.phase is Phase.CLOSED:
            return Reply(error_frame("closed", "the connection is closing"))
        if self._bucket is not None:
            wait = self._bucket.take(now)
            if wait:
                self._refused += 1
                if self._refused > self._refused_limit:
                    self.phase = Phase.CLOSED
                    return Reply(
                        error_frame("rate_limited", "too many frames", retry_after=wait),
                        Close(CLOSE_POLICY, "rate limit exceeded"),
                    )
                return Reply(error_frame("rate_limited", "too many frames", retry_after=wait))
            self._refused = 0
        if isinstance(data, bytes):
            return Reply(error_frame("bad_frame", "binary frames are not supported"))
        if self._too_large(data):
            return Reply(
                error_frame("too_large", f"frames are limited to {self.max_frame_bytes} bytes")
            )
        try:
            frame = decode_client(data)
        except FrameError as exc:
            return Reply(error_frame(exc.code, exc.message, exc.frame_id))
        if self.phase is Phase.AUTHENTICATING:
            if isinstance(frame, Auth | Ping):
                return frame
            return Reply(error_frame("unauthorized", "authenticate first", frame.id))
        return frame

    def _too_large(self, text: str) -> bool:
        # A character is 1 to 4 bytes of UTF-8: encode only when the count is unclear.
        size = len(text)
        if size * 4 <= self.max_frame_bytes:
            return False
        if size > self.max_frame_bytes:
            return True
        return len(text.encode("utf-8", "surrogatepass")) > self.max_frame_bytes

    # authentication

    def authenticated(self, user_id: str) -> None:
        """The token was good: frames other than ``auth`` and ``ping`` are now allowed."""
        self.phase = Phase.OPEN
        self.user_id = user_id

    def auth_failed(self, code: str, message: str, frame_id: str | int | None = None) -> Reply:
        """A bad token ends the connection: the client must come back with a new one."""
        self.phase = Phase.CLOSED
        return Reply(error_frame(code, message, frame_id), Close(CLOSE_POLICY, code))

    def auth_timed_out(self, now: float) -> Close | None:
        """The close to make if authentication is overdue at ``now``."""
        if self.phase is Phase.AUTHENTICATING and now >= self.auth_deadline:
            self.phase = Phase.CLOSED
            return Close(CLOSE_POLICY, "authentication timeout")
        return None

    def closed(self) -> None:
        self.phase = Phase.CLOSED

    # resume

    def begin_resume(
        self, frame_id: str | int | None, waiting: Iterable[str], now: float = 0.0
    ) -> bytes | None:
        """A ``resume`` whose replay waits for ``waiting`` rooms to catch up; returns
        the ``resumed`` frame at once when there is nothing to wait for."""
        pending = _PendingResume(frame_id, set(waiting), now)
        if not pending.rooms:
            self.resume_seconds.append(0.0)
            return resumed_frame(frame_id)
        self._resumes.append(pending)
        return None

    def caught_up(self, room_id: str, now: float = 0.0) -> list[bytes]:
        """A room's replay reached the live stream (or the room was left): the
        ``resumed`` frames of every resume that was waiting only for it, in order."""
        done: list[bytes] = []
        if not self._resumes:
            return done
        keep: list[_PendingResume] = []
        for pending in self._resumes:
            pending.rooms.discard(room_id)
            if pending.rooms:
                keep.append(pending)
            else:
                done.append(resumed_frame(pending.frame_id))
                self.resume_seconds.append(max(0.0, now - pending.started))
        self._resumes = keep
        return done


# delivery of one room on one connection

DELIVER: Final = 1
SKIP: Final = 0
GAP: Final = -1


class RoomCursor:
    """Where one room's delivery stands on one connection (see the module doc).

    ``seq``: the last event this connection has (sent, or known from ``ready`` or a
    ``resume``). ``replaying``: live events are skipped while the store is read.
    ``end_seq``: the user left the room at this event; nothing after it is sent.
    ``target``: the database's head when the client last resumed: the resume is
    complete once ``seq`` reached it (``reached``), whatever the fan-out's head.
    """

    __slots__ = ("end_seq", "replaying", "room_id", "seq", "target")

    def __init__(self, room_id: str, seq: int) -> None:
        self.room_id = room_id
        self.seq = seq
        self.replaying = False
        self.end_seq: int | None = None
        self.target = 0

    def live(self, seq: int) -> int:
        """A live event: ``DELIVER`` (and advance), ``SKIP``, or ``GAP`` (now replaying)."""
        if self.replaying:
            return SKIP
        if seq == self.seq + 1:
            self.seq = seq
            return DELIVER
        if seq <= self.seq:
            return SKIP
        self.replaying = True
        return GAP

    def rewind(self, seq: int, target: int = 0) -> None:
        """``resume``: the client has everything up to ``seq``; replay the rest, at
        least up to ``target``."""
        self.seq = seq
        self.target = target
        self.replaying = True

    @property
    def reached(self) -> bool:
        """Live again and at (or past) the resume's ``target``."""
        return not self.replaying and self.seq >= self.target

    def need_replay(self, head: int) -> bool:
        """Attach or re-check against the fan-out's head: replay if behind it."""
        if self.seq < head:
            self.replaying = True
        return self.replaying

    def replayed(self, seq: int) -> bool:
        """An event read from the store during a replay: deliver it? Only the next
        one (a ``resume`` may rewind the cursor while a page is being read)."""
        if seq != self.seq + 1 or (self.end_seq is not None and seq > self.end_seq):
            return False
        self.seq = seq
        return True

    def catch_up(self, head: int) -> bool:
        """After a page from the store: go live if the fan-out's head is reached."""
        if self.seq >= head:
            self.replaying = False
            return True
        return False

    @property
    def ended(self) -> bool:
        """The user left at ``end_seq`` and the connection has been sent up to it."""
        return self.end_seq is not None and self.seq >= self.end_seq
