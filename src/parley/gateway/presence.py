"""Presence on one node: who is online, idle or offline, pushed to subscribers.

Flow: a WebSocket connection contributes an entry to the ``PresenceStore`` port
(``connected``), refreshed by this node every ``refresh`` seconds and expiring
after ``ttl``; real activity (``activity``) moves its ``last_active``. A change of a
user's status is computed from all live entries (every node's), encoded once as a
``presence`` frame, and pushed only to the connections subscribed to that user, at
most once a second per user (coalescing). Other nodes hear of a change on the bus
channel ``presence`` (through the hub) and recompute; a poll of subscribed users
every ``refresh`` seconds catches entries that expired because a node died.

Bounds, with the defaults (heartbeat 20 s, grace 10 s): a vanished client is
offline within two heartbeat intervals (the WebSocket is closed) plus the grace
period, 50 s; a vanished node's users within ``ttl + refresh`` = 55 s.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Final, Literal

from parley.domain import presence as rules
from parley.domain.models import UserId, format_ts
from parley.ports import ConnectionPresence, PresenceStore, Store
from parley.protocol import codec
from parley.protocol import frames as f
from parley.settings import Settings

if TYPE_CHECKING:
    from parley.gateway.hub import Connection, Hub

log = logging.getLogger("parley.presence")

MAX_SUBSCRIPTIONS: Final = 1000
VISIBILITY_TTL: Final = 30.0
"""Seconds a viewer's set of co-members is reused for subscription checks."""
ACTIVITY_WRITE_EVERY: Final = 5.0
"""Seconds between two writes of one connection's ``last_active`` when nothing else
changes: activity is frequent, and readers need it only to the second."""


@dataclass(slots=True)
class _Local:
    user_id: UserId
    chosen: str
    last_active: float
    written: float


def presence_frame(user_id: str, presence: rules.Presence) -> bytes:
    return codec.dumps(
        {
            "type": "presence",
            "user_id": user_id,
            "status": presence.status,
            "last_active_at": format_ts_epoch(presence.last_active),
        }
    )


def format_ts_epoch(seconds: float | None) -> str | None:
    """Epoch seconds as an API timestamp (``None`` stays ``None``)."""
    return None if seconds is None else format_ts(datetime.fromtimestamp(seconds, UTC))


class PresenceService:
    """This node's presence: local connections, subscriptions, coalesced pushes."""

    def __init__(self, port: PresenceStore, store: Store, settings: Settings, node_id: str) -> None:
        self.port = port
        self.store = store
        self.node_id = node_id
        self.idle_after = settings.idle_after
        self.grace = settings.presence_grace
        self.refresh = min(settings.heartbeat_interval, 10.0)
        self.ttl = 2 * settings.heartbeat_interval + self.refresh
        self.max_subscriptions = MAX_SUBSCRIPTIONS
        self.hub: Hub | None = None
        self._local: dict[Connection, _Local] = {}
        self._subscribers: dict[UserId, set[Connection]] = {}
        self._subscriptions: dict[Connection, set[UserId]] = {}
        self._known: dict[UserId, rules.Presence] = {}
        self._last_sent: dict[UserId, float] = {}
        self._timers: dict[UserId, asyncio.TimerHandle] = {}
        self._visible: dict[UserId, tuple[float, frozenset[UserId]]] = {}
        self._task: asyncio.Task[None] | None = None
        self.frames_sent = 0

    # lifecycle

    def start(self, hub: Hub) -> None:
        self.hub = hub
        self._task = asyncio.create_task(self._refresh_forever(), name="parley-presence")

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        for timer in self._timers.values():
            timer.cancel()
        self._timers.clear()
        keys = [(local.user_id, conn.session_id) for conn, local in self._local.items()]
        with contextlib.suppress(Exception):
            await self.port.remove(keys)

    # connections

    async def connected(self, conn: Connection) -> None:
        now = time.time()
        local = _Local(conn.user_id, rules.ONLINE, now, now)
        self._local[conn] = local
        await self.port.put([self._entry(conn, local)], self.ttl)
        await self.changed(conn.user_id)

    async def activity(self, conn: Connection, chosen: str | None = None) -> None:
        """Real activity on a connection (a send, typing, ``presence.set``)."""
        local = self._local.get(conn)
        if local is None:
            return
        now = time.time()
        before = rules.effective(_state(local), now, self.idle_after)
        if chosen == rules.IDLE:
            local.chosen = rules.IDLE
        else:
            local.chosen = rules.ONLINE
            local.last_active = now
        after = rules.effective(_state(local), now, self.idle_after)
        if before != after or now - local.written >= ACTIVITY_WRITE_EVERY:
            local.written = now
            await self.port.put([self._entry(conn, local)], self.ttl)
        if before != after:
            await self.changed(conn.user_id)

    async def disconnected(self, conn: Connection) -> None:
        """A connection closed (cleanly or not): its contribution ends; an offline
        that follows waits out the grace period, so a reload does not flash."""
        for target in self._subscriptions.pop(conn, ()):
            subs = self._subscribers.get(target)
            if subs is not None:
                subs.discard(conn)
                if not subs:
                    del self._subscribers[target]
        local = self._local.pop(conn, None)
        if local is None:
            return
        await self.port.remove([(local.user_id, conn.session_id)])
        current = (await self._compute([local.user_id]))[local.user_id]
        if current.status == rules.OFFLINE and self.grace > 0:
            self._schedule(local.user_id, time.monotonic() + self.grace)
        else:
            await self.changed(local.user_id)

    # subscriptions

    async def subscribe(
        self, conn: Connection, user_ids: Sequence[str], frame_id: str | int | None
    ) -> list[bytes]:
        """Current presence of each visible user, then changes; an ``error`` frame
        for users who share no room with the viewer (never their status)."""
        mine = self._subscriptions.setdefault(conn, set())
        wanted = [UserId(u) for u in dict.fromkeys(user_ids) if UserId(u) not in mine]
        if len(mine) + len(wanted) > self.max_subscriptions:
            return [
                f.error_frame(
                    "too_many_subscriptions",
                    f"at most {self.max_subscriptions} presence subscriptions per connection",
                    frame_id,
                )
            ]
        visible = await self.visible_to(conn.user_id)
        allowed = [u for u in wanted if u in visible]
        denied = [u for u in wanted if u not in visible]
        for user in allowed:
            mine.add(user)
            self._subscribers.setdefault(user, set()).add(conn)
        out: list[bytes] = []
        if denied:
            out.append(
                codec.dumps(
                    {
                        "type": "error",
                        "id": frame_id,
                        "code": "forbidden",
                        "message": "presence is visible only to users who share a room",
                        "user_ids": denied,
                    }
                )
            )
        current = await self._compute(allowed)
        for user in allowed:
            self._known[user] = current[user]
            out.append(presence_frame(user, current[user]))
        return out

    def unsubscribe(self, conn: Connection, user_ids: Iterable[str]) -> None:
        mine = self._subscriptions.get(conn)
        if not mine:
            return
        for user in user_ids:
            mine.discard(UserId(user))
            subs = self._subscribers.get(UserId(user))
            if subs is not None:
                subs.discard(conn)
                if not subs:
                    del self._subscribers[UserId(user)]

    async def visible_to(self, viewer: UserId) -> frozenset[UserId]:
        """Users who share a room with ``viewer`` (and the viewer), cached briefly."""
        now = time.monotonic()
        cached = self._visible.get(viewer)
        if cached is not None and now - cached[0] < VISIBILITY_TTL:
            return cached[1]
        members: set[UserId] = {viewer}
        for room_id in await self.store.user_room_ids(viewer):
            members.update(await self.store.member_ids(room_id))
        result = frozenset(members)
        self._visible[viewer] = (now, result)
        if len(self._visible) > 10_000:
            self._visible.clear()
        return result

    async def current(self, user_ids: Sequence[UserId]) -> dict[UserId, rules.Presence]:
        """Presence of these users now (for the REST endpoint)."""
        return await self._compute(user_ids)

    # changes

    async def changed(self, user_id: UserId) -> None:
        """A user's status may have changed here: tell other nodes, push locally."""
        if self.hub is not None:
            await self.hub.ring_presence(user_id)
        await self.remote_changed(user_id)

    async def remote_changed(self, user_id: UserId) -> None:
        if user_id not in self._subscribers:
            return
        timer = self._timers.get(user_id)
        if timer is not None:
            return  # a flush is already due; it reads the newest state
        now = time.monotonic()
        due = rules.next_send_at(self._last_sent.get(user_id), now)
        if due <= now:
            await self._flush([user_id])
        else:
            self._schedule(user_id, due)

    def _schedule(self, user_id: UserId, when: float) -> None:
        old = self._timers.pop(user_id, None)
        if old is not None:
            old.cancel()
        loop = asyncio.get_running_loop()

        def fire() -> None:
            self._timers.pop(user_id, None)
            if self.hub is not None:
                self.hub.spawn(self._flush([user_id], ring=True), "parley-presence-flush")

        self._timers[user_id] = loop.call_at(when, fire)

    async def _flush(self, user_ids: Sequence[UserId], *, ring: bool = False) -> None:
        current = await self._compute(user_ids)
        now = time.monotonic()
        for user in user_ids:
            presence = current[user]
            if ring and self.hub is not None:
                await self.hub.ring_presence(user)
            previous = self._known.get(user)
            self._known[user] = presence
            if previous is not None and previous.status == presence.status:
                continue
            subs = self._subscribers.get(user)
            if not subs:
                continue
            self._last_sent[user] = now
            frame = presence_frame(user, presence)
            for conn in list(subs):
                conn.push(frame)
            self.frames_sent += len(subs)

    async def _compute(self, user_ids: Sequence[UserId]) -> dict[UserId, rules.Presence]:
        if not user_ids:
            return {}
        now = time.time()
        found = await self.port.get(user_ids)
        result: dict[UserId, rules.Presence] = {}
        for user in user_ids:
            entries, last_seen = found.get(user, ([], None))
            states = [
                rules.ConnState(
                    rules.IDLE if e.chosen == rules.IDLE else rules.ONLINE, e.last_active
                )
                for e in entries
            ]
            result[user] = rules.aggregate(states, now, self.idle_after, last_seen)
        return result

    # housekeeping

    async def _refresh_forever(self) -> None:
        while True:
            await asyncio.sleep(self.refresh)
            try:
                await self.tick()
            except Exception:
                log.exception("presence refresh failed")

    async def tick(self) -> None:
        """Refresh this node's entries (one call), then recompute every subscribed
        user: catches idling by inactivity and entries expired with a dead node."""
        now = time.time()
        entries = [self._entry(conn, local) for conn, local in self._local.items()]
        if entries:
            await self.port.put(entries, self.ttl)
            for local in self._local.values():
                local.written = now
        targets = [u for u in self._subscribers if u not in self._timers]
        if targets:
            await self._flush(targets)

    def _entry(self, conn: Connection, local: _Local) -> ConnectionPresence:
        return ConnectionPresence(
            local.user_id, conn.session_id, self.node_id, local.chosen, local.last_active
        )


def _state(local: _Local) -> rules.ConnState:
    chosen: Literal["online", "idle"] = "idle" if local.chosen == rules.IDLE else "online"
    return rules.ConnState(chosen, local.last_active)
