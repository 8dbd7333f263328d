"""Presence rules, sans I/O: every function takes the time as a number.

Model (the Presence issue; ``docs/architecture.md``)
    * Each connection contributes a state: the status its client chose (``online``
      or ``idle``) and when its user was last really active on it (a send, a typing
      frame, ``presence.set online``). Heartbeats prove the socket alive; they are
      not activity, so they never move ``last_active``.
    * A connection is idle when its client said so or after ``idle_after`` seconds
      without activity (``effective``). A user's status is the best of their live
      connections' (online > idle > offline), and no live connection is offline
      (``aggregate``).
    * The node that owns a connection keeps its entry alive in the shared store by
      re-writing it every heartbeat interval with a time to live of ``entry_ttl``; a
      closed connection's entry is kept ``grace`` seconds more, so a quick reconnect
      (a page reload) adds a new entry before the old one lapses and the user never
      flashes offline. A node that dies without a word loses its users by expiry,
      within ``offline_bound``.
    * Updates to a subscriber are coalesced: at most one frame per watched user per
      ``COALESCE_INTERVAL``, the latest one (``Subscriptions``).
    * Typing is ephemeral: forwarded at most once per ``TYPING_THROTTLE`` per user
      and room, forgotten ``TYPING_TTL`` after its last refresh (``TypingTracker``).
"""

from __future__ import annotations

from collections.abc import Collection, Hashable, Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Final, Literal

from parley.domain.models import RoomId, UserId, format_ts

Chosen = Literal["online", "idle"]
"""What a client may set, and what a connection is."""
Status = Literal["online", "idle", "offline"]
"""What a user is."""

ONLINE: Final = "online"
IDLE: Final = "idle"
OFFLINE: Final = "offline"
RANK: Final[dict[str, int]] = {ONLINE: 2, IDLE: 1, OFFLINE: 0}

COALESCE_INTERVAL: Final = 1.0
"""Seconds between two presence updates about one user to one subscriber (the issue:
"at most one update per user per second to each subscriber")."""
MAX_SUBSCRIPTIONS: Final = 1000
"""Users one connection may watch at once: bounds what one connection costs."""
TYPING_THROTTLE: Final = 3.0
"""Seconds between two forwarded ``typing`` frames of one user in one room (clients
repeat them on every keystroke; Slack forwards one every 3 s too)."""
TYPING_TTL: Final = 6.0
"""Seconds a typing indicator lives without a refresh: two throttle periods, so one
late frame does not make it blink."""


@dataclass(frozen=True, slots=True)
class ConnState:
    """One connection's contribution: the client's choice and its last activity
    (epoch seconds)."""

    chosen: Chosen
    last_active: float


@dataclass(frozen=True, slots=True)
class Presence:
    """A user's aggregate presence; ``last_active`` is ``None`` for a user never seen."""

    status: Status
    last_active: float | None


def effective(conn: ConnState, now: float, idle_after: float) -> Chosen:
    """A connection's status now: idle if its client said so, or after ``idle_after``
    seconds without activity."""
    if conn.chosen == IDLE or now - conn.last_active >= idle_after:
        return IDLE
    return ONLINE


def idle_at(conn: ConnState, idle_after: float) -> float | None:
    """When an online connection turns idle by itself (``None``: it is idle already
    by choice)."""
    return None if conn.chosen == IDLE else conn.last_active + idle_after


def best_status(statuses: Iterable[str]) -> Status:
    """The best of several statuses; offline when there are none."""
    best: Status = OFFLINE
    for status in statuses:
        if status == ONLINE:
            return ONLINE
        if status == IDLE:
            best = IDLE
    return best


def aggregate(
    conns: Iterable[ConnState], now: float, idle_after: float, last_seen: float | None = None
) -> Presence:
    """A user's presence from their live connections: the best status, and the latest
    activity of any of them or of ``last_seen`` (what the store remembers of
    connections gone), so an offline user still shows when they were last active."""
    status: Status = OFFLINE
    last = last_seen
    for conn in conns:
        if last is None or conn.last_active > last:
            last = conn.last_active
        if effective(conn, now, idle_after) == ONLINE:
            status = ONLINE
        elif status == OFFLINE:
            status = IDLE
    return Presence(status, last)


def next_send_at(last_sent: float | None, now: float, interval: float = COALESCE_INTERVAL) -> float:
    """When an update may go to a subscriber last sent one at ``last_sent``: ``now``
    if an interval has passed (or nothing was sent), else when it ends."""
    if last_sent is None or now - last_sent >= interval:
        return now
    return last_sent + interval


def format_epoch(seconds: float | None) -> str | None:
    """Epoch seconds as an API timestamp (``None`` stays ``None``)."""
    return None if seconds is None else format_ts(datetime.fromtimestamp(seconds, UTC))


def entry_ttl(heartbeat_interval: float, grace: float) -> float:
    """How long an entry outlives its last refresh: a connection is dead after two
    silent heartbeat intervals, and then gets the grace a closed one gets."""
    return 2 * heartbeat_interval + grace


def offline_bound(
    heartbeat_interval: float, grace: float, tick_interval: float, interval: float
) -> float:
    """Worst case, in seconds, from a node's death to its users' subscribers being
    told they are offline: the entries lapse after ``entry_ttl``; some live node's
    next tick reaps them and rings the bus; each watching node applies that on its
    next tick; the coalescer may hold the frame one interval. Skew between the
    clocks that time the expiry adds to it."""
    return entry_ttl(heartbeat_interval, grace) + 2 * tick_interval + interval


class _Sent:
    """What one subscriber last got about one user. ``key`` ``None``: the answer to
    its subscribe is still being prepared, so no change may overtake it."""

    __slots__ = ("at", "key")

    def __init__(self) -> None:
        self.at: float | None = None
        self.key: Hashable | None = None


class SubscriptionLimit(Exception):
    """A subscriber asked to watch more users than allowed."""

    def __init__(self, limit: int) -> None:
        super().__init__(f"at most {limit} presence subscriptions per connection")
        self.limit = limit


class Subscriptions:
    """Who watches whom on this node, and the coalescing of updates to them.

    A change touches only its user's subscribers, with one pre-encoded frame shared
    by all of them, so its cost is that user's subscriber count, never users times
    subscribers. Each subscriber gets at most one frame per user per ``interval``:
    the latest, and none if the state came back to what it last got. Subscriber and
    user ids are opaque strings; a frame is opaque bytes with a ``key`` (its status)
    saying what it means.
    """

    def __init__(
        self, *, interval: float = COALESCE_INTERVAL, limit: int = MAX_SUBSCRIPTIONS
    ) -> None:
        self.interval = interval
        self.limit = limit
        self._by_user: dict[str, dict[str, _Sent]] = {}
        self._by_sub: dict[str, set[str]] = {}
        self._current: dict[str, tuple[Hashable, bytes]] = {}
        self._due: dict[str, float] = {}

    # the index

    def add(self, sub: str, users: Collection[str]) -> list[str]:
        """Watch ``users``, all or none (``SubscriptionLimit``); return those ``sub``
        did not watch before, each pending until ``answered``."""
        mine = self._by_sub.get(sub, set())
        new = [u for u in dict.fromkeys(users) if u not in mine]
        if len(mine) + len(new) > self.limit:
            raise SubscriptionLimit(self.limit)
        if not new:
            return []
        mine = self._by_sub.setdefault(sub, mine)
        for user in new:
            mine.add(user)
            self._by_user.setdefault(user, {})[sub] = _Sent()
        return new

    def fits(self, sub: str, users: Collection[str]) -> bool:
        """Whether ``add(sub, users)`` would stay within the limit."""
        mine = self._by_sub.get(sub, set())
        return len(mine) + len({u for u in users if u not in mine}) <= self.limit

    def remove(self, sub: str, users: Iterable[str]) -> list[str]:
        """Stop watching; return the users nobody on this node watches any more."""
        mine = self._by_sub.get(sub)
        if mine is None:
            return []
        gone: list[str] = []
        for user in users:
            if user not in mine:
                continue
            mine.discard(user)
            subs = self._by_user[user]
            del subs[sub]
            if not subs:
                del self._by_user[user]
                self._current.pop(user, None)
                self._due.pop(user, None)
                gone.append(user)
        if not mine:
            del self._by_sub[sub]
        return gone

    def drop(self, sub: str) -> list[str]:
        """Forget a subscriber entirely (its connection closed)."""
        return self.remove(sub, list(self._by_sub.get(sub, ())))

    def watching(self, sub: str) -> frozenset[str]:
        return frozenset(self._by_sub.get(sub, ()))

    def watchers(self, user: str) -> list[str]:
        return list(self._by_user.get(user, ()))

    def watched(self) -> list[str]:
        """Every user somebody on this node watches."""
        return list(self._by_user)

    def is_watched(self, user: str) -> bool:
        return user in self._by_user

    # delivery

    def answered(self, sub: str, user: str, key: Hashable) -> bool:
        """Record that ``sub`` was sent state ``key`` of ``user`` in answer to its
        subscribe; ``False`` if it no longer watches. An answer is not an update: it
        starts no interval, so a change right after it is not held back."""
        sent = self._by_user.get(user, {}).get(sub)
        if sent is None:
            return False
        sent.key = key
        return True

    def publish(self, user: str, key: Hashable, frame: bytes, now: float) -> list[str]:
        """A new state of ``user``: the subscribers to send ``frame`` to now. The
        others get the latest state when their interval ends (``due``)."""
        if user not in self._by_user:
            return []
        self._current[user] = (key, frame)
        if user in self._due:
            return []
        return self._flush(user, now)

    def due(self, now: float) -> list[tuple[str, bytes]]:
        """Coalesced updates whose interval has ended: ``(subscriber, frame)`` pairs."""
        out: list[tuple[str, bytes]] = []
        for user in [u for u, t in self._due.items() if t <= now]:
            del self._due[user]
            frame = self._current[user][1]
            out.extend((sub, frame) for sub in self._flush(user, now))
        return out

    def next_due(self) -> float | None:
        return min(self._due.values(), default=None)

    def _flush(self, user: str, now: float) -> list[str]:
        key = self._current[user][0]
        send: list[str] = []
        later: float | None = None
        for sub, sent in self._by_user[user].items():
            if sent.key is None or sent.key == key:
                continue
            when = next_send_at(sent.at, now, self.interval)
            if when <= now:
                sent.at, sent.key = now, key
                send.append(sub)
            elif later is None or when < later:
                later = when
        if later is not None:
            self._due[user] = later
        return send


class TypingTracker:
    """Who is typing where, for a few seconds: never stored, forwarded at most once
    per ``throttle`` for one user and room; ``sweep`` bounds the memory."""

    def __init__(self, *, throttle: float = TYPING_THROTTLE, ttl: float = TYPING_TTL) -> None:
        if ttl < throttle:
            raise ValueError("the typing ttl must be at least the throttle period")
        self.throttle = throttle
        self.ttl = ttl
        # room -> user -> [last refresh, last forwarded]
        self._rooms: dict[RoomId, dict[UserId, list[float]]] = {}

    def typing(self, room_id: RoomId, user_id: UserId, now: float) -> bool:
        """A typing frame from ``user_id``: whether to forward it to the room now."""
        users = self._rooms.setdefault(room_id, {})
        stamps = users.get(user_id)
        if stamps is None:
            users[user_id] = [now, now]
            return True
        stamps[0] = now
        if now - stamps[1] >= self.throttle:
            stamps[1] = now
            return True
        return False

    def stopped(self, room_id: RoomId, user_id: UserId) -> None:
        """The user sent their message: the indicator ends, and their next keystroke
        is forwarded at once (receivers cleared it when the message arrived)."""
        users = self._rooms.get(room_id)
        if users is not None and users.pop(user_id, None) is not None and not users:
            del self._rooms[room_id]

    def typers(self, room_id: RoomId, now: float) -> list[UserId]:
        """Who typed in the room within ``ttl`` seconds."""
        users = self._rooms.get(room_id, {})
        return [u for u, (seen, _) in users.items() if now - seen < self.ttl]

    def sweep(self, now: float) -> int:
        """Forget what has expired; return how many indicators went."""
        removed = 0
        for room_id in list(self._rooms):
            users = self._rooms[room_id]
            for user_id in [u for u, (seen, _) in users.items() if now - seen >= self.ttl]:
                del users[user_id]
                removed += 1
            if not users:
                del self._rooms[room_id]
        return removed
