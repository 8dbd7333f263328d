"""``Live``: one user's real-time connection that survives the network.

* Reconnects with exponential backoff and full jitter (so a thousand clients cut
  off at once do not come back at once), refreshing the access token when the
  server says it expired; at once (a quarter second of jitter at most) when a
  draining node closed with 1012 or 1001, since another node is ready.
* A resume cursor beyond a room's head (a restored or failed-over database) is
  answered ``cursor_ahead``: the room goes on from the server's head, and the
  frame goes to ``on_frame`` so the application can reset its view.
* Tracks, per room, the last ``seq`` handed to the application, and on every
  reconnect sends ``resume`` with those cursors *as its first frame*, before
  ``ready`` arrives: the server usually reads it before any live event is
  queued, so the replay comes first and nothing is repeated.
* Hands each event to the application exactly once, in ``seq`` order per room:
  a repeat is dropped, a gap (a ``seq`` that skips) is filled from
  ``GET /rooms/{id}/events`` before the event that revealed it. Except while
  the ``resume`` is unanswered: a live event that outran it (a busy client sent
  it late) is dropped, since the resume rewinds the room and replays it.
* ``send`` retries with the same ``client_msg_id`` across reconnects until the
  server acknowledges it; the server stores a repeated id once.
* A bounded event queue that never stops the socket reader: answers (``ack``,
  ``error``) must get through even to an application that sends and never reads
  its events (a bot; a reader blocked on a full queue left every later ``send``
  waiting forever, and a draining node waiting for its close). A room event that
  finds the queue full is not kept: the room is marked behind (its cursor stays at
  the last event queued, later live events of it are dropped too), and once the
  application has read the queue empty, ``next_event`` fetches the room from
  ``GET /rooms/{id}/events`` up to the newest event dropped. Memory stays bounded,
  and nothing is lost or repeated.
* Keeps the connection's token fresh: shortly before the access token expires
  (a fifth of its life, at most a minute, before), it refreshes the token pair
  and sends the new access token on the open socket (``auth``, answered
  ``auth.ok``); the server would otherwise close it at the expiry (1008
  ``token_expired``), after which it refreshes and reconnects.
* Presence: ``presence_subscribe``, ``presence_unsubscribe`` and ``set_presence``
  are remembered, and on every reconnect (after ``ready``) the subscriptions are
  sent again and an ``idle`` status is set again, since the server forgets both
  when a connection ends. ``presence`` holds the latest ``presence`` frame of each
  watched user; the frames also go to ``on_frame``.
* Notifications: each ``notification`` frame's ``Notification`` goes to
  ``on_notification`` (the frame to ``on_frame`` when that is not set). They are
  not replayed on resume: what arrived while disconnected is in
  ``ParleyClient.notifications``.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import contextlib
import itertools
import json
import logging
import random
import secrets
import time
from collections.abc import AsyncIterator, Callable, Iterable
from typing import Any, Final, Literal

from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed, InvalidHandshake, InvalidStatus

from parley.client._errors import ApiError, AuthError, ClientError, ConnectionLost
from parley.client._rest import ParleyClient
from parley.protocol import codec
from parley.protocol import frames as f

log = logging.getLogger("parley.client")

AUTH_CLOSE_REASONS: Final = frozenset({"unauthorized", "invalid_token", "token_expired"})
REPAIR_PAGE: Final = 200
CATCH_UP_RETRY: Final = 1.0
DRAIN_CLOSE_CODES: Final = frozenset({1001, 1012})
"""A node closing to be restarted or taken out: reconnect at once, to another node."""
DRAIN_JITTER: Final = 0.25
"""Seconds a drained client waits at most (spread, not backoff)."""
MAX_PRESENCE_SUBSCRIPTIONS: Final = 1000
"""Users one connection may watch (the server's limit, ``too_many_subscriptions``)."""
PRESENCE_CHUNK: Final = 250
"""Most user ids in one ``presence.subscribe`` or ``presence.unsubscribe`` frame: the
protocol allows 1,000, but 250 ids of the longest allowed length (128) still fit the
server's default 64 KiB frame limit."""

REFRESH_AHEAD: Final = 60.0
"""Seconds before an access token's expiry the connection renews it, at most (a
fifth of the token's life when that is shorter)."""

PresenceStatus = Literal["online", "idle"]
_SET_FRAMES: Final[dict[str, str]] = {
    status: codec.dumps(f.PresenceSet(status=status)).decode() for status in ("online", "idle")
}
"""The two ``presence.set`` frames, encoded once."""


def token_expiry(token: str) -> float | None:
    """The ``exp`` (Unix seconds) of a JWT, read without checking the signature (the
    server checks it; the client only needs to know when to renew)."""
    try:
        payload = token.split(".")[1]
        claims = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
        exp = claims["exp"]
    except (IndexError, KeyError, TypeError, ValueError, binascii.Error):
        return None
    return float(exp) if isinstance(exp, int | float) else None


class Backoff:
    """Exponential backoff with full jitter: attempt n waits uniformly in
    ``[0, min(cap, base * 2**n)]`` (AWS architecture blog, "Exponential Backoff
    And Jitter"), so simultaneous failures spread out instead of retrying in step."""

    def __init__(self, base: float = 0.1, cap: float = 10.0) -> None:
        self.base = base
        self.cap = cap
        self.attempt = 0

    def next_delay(self) -> float:
        delay = random.uniform(0, min(self.cap, self.base * 2**self.attempt))
        self.attempt = min(self.attempt + 1, 30)
        return delay

    def reset(self) -> None:
        self.attempt = 0


class Live:
    """A live connection: ``async with client.live() as live: async for event in
    live: ...`` (see the module doc). ``cursors`` resumes from a previous session.

    ``on_frame`` receives frames that are not room events or answers (``typing``,
    ``presence``, unanswered ``error``, ``notification`` unless ``on_notification``
    takes each ``Notification``); ``queue_size`` bounds events received but not yet
    read (past it, rooms are read again from the log: see the module doc).
    ``presence`` is the latest ``presence`` frame of each user watched
    through ``presence_subscribe`` (the last known state while disconnected).
    """

    def __init__(
        self,
        client: ParleyClient,
        *,
        cursors: dict[str, int] | None = None,
        on_frame: Callable[[dict[str, Any]], None] | None = None,
        on_notification: Callable[[dict[str, Any]], None] | None = None,
        queue_size: int = 10_000,
        backoff: Backoff | None = None,
        ping_interval: float | None = 20.0,
        open_timeout: float = 10.0,
        max_size: int = 1 << 22,
    ) -> None:
        self.client = client
        self.cursors: dict[str, int] = dict(cursors or {})
        self.on_frame = on_frame
        self.on_notification = on_notification
        self.user_id: str | None = None
        self.session_id: str | None = None
        self.rooms: dict[str, int] = {}
        self.connects = 0
        self.duplicates = 0
        self.gaps_repaired = 0
        self._resuming: tuple[str, set[str]] | None = None
        """The unanswered ``resume`` of this connection: its id and rooms."""
        self.resumed_at: float | None = None
        """``time.monotonic()`` when the server last answered a ``resume`` (sent on
        every reconnect): every missed event had arrived by then."""
        self.presence: dict[str, dict[str, Any]] = {}
        self._watching: dict[str, None] = {}
        """The users ``presence_subscribe`` asked for, in order (sent again on reconnect)."""
        self._status: PresenceStatus = "online"
        self._backoff = backoff or Backoff()
        self._ping_interval = ping_interval
        self._open_timeout = open_timeout
        self._max_size = max_size
        self._events: asyncio.Queue[dict[str, Any]] = asyncio.Queue(queue_size)
        self._behind: dict[str, int] = {}
        """Rooms whose events did not fit the queue: the newest ``seq`` dropped."""
        self.overflows = 0
        """Times a room fell behind because the application read too slowly."""
        self._pending: dict[str, asyncio.Future[dict[str, Any]]] = {}
        self._ids = itertools.count(1)
        self._ws: ClientConnection | None = None
        self._ready = asyncio.Event()
        self._dead = asyncio.Event()
        self._wakers: set[asyncio.Future[None]] = set()
        self._fatal: BaseException | None = None
        self._closed = False
        self._task: asyncio.Task[None] | None = None

    # lifecycle

    async def __aenter__(self) -> Live:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def start(self) -> None:
        """Connect, and return once the server said ``ready`` (or raise why not).
        It retries while the server is unreachable: bound it with ``asyncio.timeout``."""
        if self._task is None:
            self._task = asyncio.create_task(self._run(), name="parley-live")
        await self.wait_ready()

    async def close(self) -> None:
        """Close the connection for good."""
        self._closed = True
        self._wake()
        ws = self._ws
        if ws is not None:
            with contextlib.suppress(Exception):
                await ws.close()
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        self._fail_pending(ConnectionLost("closed"))

    def _wake(self) -> None:
        """Wake ``next_event`` callers: an event arrived, or the client ended."""
        for waker in self._wakers:
            if not waker.done():
                waker.set_result(None)

    def _raise_if_dead(self) -> None:
        if self._dead.is_set() or self._closed:
            raise self._fatal or ClientError("the live connection is closed")

    async def wait_ready(self) -> None:
        """Wait until connected and ``ready``; raise the error that ended the client."""
        while not self._ready.is_set():
            self._raise_if_dead()
            ready = asyncio.ensure_future(self._ready.wait())
            dead = asyncio.ensure_future(self._dead.wait())
            try:
                await asyncio.wait({ready, dead}, return_when=asyncio.FIRST_COMPLETED)
            finally:
                ready.cancel()
                dead.cancel()

    @property
    def connected(self) -> bool:
        return self._ready.is_set()

    def drop(self) -> None:
        """Cut the connection as a network failure would (no close handshake); the
        client reconnects and resumes. For tests and the benchmark."""
        ws = self._ws
        if ws is not None:
            ws.transport.abort()

    # events

    def __aiter__(self) -> AsyncIterator[dict[str, Any]]:
        return self

    async def __anext__(self) -> dict[str, Any]:
        return await self.next_event()

    async def next_event(self) -> dict[str, Any]:
        """The next room event (an ``Event`` object), in ``seq`` order per room.
        (One future per wait, none when events are queued: a bot or a benchmark
        reading thousands of events a second should not pay for two tasks each.)"""
        events = self._events
        while events.empty():
            self._raise_if_dead()
            if self._behind and await self._catch_up():
                continue
            waker = asyncio.get_running_loop().create_future()
            self._wakers.add(waker)
            try:
                if self._behind:  # the log could not be read: try again soon
                    await asyncio.wait({waker}, timeout=CATCH_UP_RETRY)
                else:
                    await waker
            finally:
                self._wakers.discard(waker)
        return events.get_nowait()

    async def _catch_up(self) -> bool:
        """Fetch the rooms that fell behind from the log into the (empty) queue;
        True if anything was queued. A room stays behind until its cursor reaches
        the newest event dropped; the check and the release have no await between
        them, so an event dropped meanwhile is fetched too."""
        queued = False
        for room_id in list(self._behind):
            cursor = self.cursors.get(room_id)
            if cursor is None:  # left the room
                self._behind.pop(room_id, None)
                continue
            try:
                events, _more = await self.client.events(
                    room_id, after_seq=cursor, limit=REPAIR_PAGE
                )
            except ClientError as exc:
                log.info("could not catch up room %s after %d: %s", room_id, cursor, exc)
                continue
            for event in events:
                if event["seq"] != self.cursors.get(room_id, -1) + 1:
                    continue  # a live event was queued meanwhile, or a repeat
                if not self._queue(event):
                    break
                queued = True
            newest = self._behind.get(room_id)
            if newest is not None and self.cursors.get(room_id, newest) >= newest:
                del self._behind[room_id]
        return queued

    # requests

    async def send(
        self,
        room_id: str,
        body: str,
        *,
        client_msg_id: str | None = None,
        thread_root_id: str | None = None,
    ) -> dict[str, Any]:
        """Send a message (a reply in a thread with ``thread_root_id``); the stored
        ``Message`` once the server acknowledged it.
        Retried with the same ``client_msg_id`` across reconnects (stored once)
        until acknowledged, and after ``rate_limited`` or ``draining`` (the node is
        restarting: the send goes again on the next connection, to another node);
        bound the wait with ``asyncio.timeout``. Other errors are raised."""
        msg_id = client_msg_id or secrets.token_hex(12)
        while True:
            frame = f.Send(
                room_id=room_id,
                body=body,
                client_msg_id=msg_id,
                id=self._next_id(),
                thread_root_id=thread_root_id,
            )
            try:
                answer = await self._call(frame)
            except ConnectionLost:
                await asyncio.sleep(0)  # let the connection's end be seen first
                continue
            except ApiError as exc:
                if exc.code == "rate_limited":
                    await asyncio.sleep(exc.retry_after or 1.0)
                elif exc.code != "draining":  # the next call waits for a new ``ready``
                    raise
                continue
            message: dict[str, Any] = answer["message"]
            return message

    async def ping(self) -> None:
        """A round trip through the server's frame loop."""
        await self._call(f.Ping(id=self._next_id()))

    async def typing(self, room_id: str) -> None:
        """Say the user is typing (dropped when disconnected: it is ephemeral)."""
        await self._send_now(codec.dumps(f.Typing(room_id=room_id)).decode())

    # presence

    @property
    def presence_subscriptions(self) -> frozenset[str]:
        """The users this client watches (and watches again after a reconnect)."""
        return frozenset(self._watching)

    @property
    def presence_status(self) -> PresenceStatus:
        """The status last chosen with ``set_presence`` (``online`` by default)."""
        return self._status

    async def presence_subscribe(self, user_ids: Iterable[str]) -> None:
        """Watch these users: their current ``presence`` frame, then one on every
        change, arrive at ``on_frame`` and in ``presence``. Remembered: sent now if
        connected, and again after every reconnect (or at the first ``ready`` when
        called before ``start``). Users who share no room with this user are
        refused by the server with a ``forbidden`` ``error`` frame naming them
        (to ``on_frame``) and forgotten here; so is a watched user when the last
        room shared with them is left. ``ValueError`` when the subscriptions would
        exceed ``MAX_PRESENCE_SUBSCRIPTIONS`` (nothing is sent then)."""
        wanted = list(dict.fromkeys(_ids(user_ids)))
        added = [u for u in wanted if u not in self._watching]
        if len(self._watching) + len(added) > MAX_PRESENCE_SUBSCRIPTIONS:
            raise ValueError(
                f"at most {MAX_PRESENCE_SUBSCRIPTIONS} presence subscriptions per connection"
            )
        self._watching.update(dict.fromkeys(added))
        await self._send_presence(f.PresenceSubscribe, wanted)

    async def presence_unsubscribe(self, user_ids: Iterable[str]) -> None:
        """Stop watching these users (unknown ids are ignored) and forget their
        entries in ``presence``. Nothing to send while disconnected: the server ends
        a connection's subscriptions with it."""
        gone = list(dict.fromkeys(_ids(user_ids)))
        for user_id in gone:
            self._watching.pop(user_id, None)
            self.presence.pop(user_id, None)
        await self._send_presence(f.PresenceUnsubscribe, gone)

    async def set_presence(self, status: PresenceStatus) -> None:
        """``idle``: the user is away; ``online``: back (activity, which also ends
        an idleness the server inferred). Remembered: sent now if connected, and
        ``idle`` is set again after every reconnect (a new connection starts
        ``online``)."""
        if status not in _SET_FRAMES:
            raise ValueError(f"status: online or idle, not {status!r}")
        self._status = status
        await self._send_now(_SET_FRAMES[status])

    async def _send_presence(
        self, kind: type[f.PresenceSubscribe] | type[f.PresenceUnsubscribe], user_ids: list[str]
    ) -> None:
        for start in range(0, len(user_ids), PRESENCE_CHUNK):
            frame = kind(user_ids=user_ids[start : start + PRESENCE_CHUNK], id=self._next_id())
            if not await self._send_now(codec.dumps(frame).decode()):
                return  # the next session's ``ready`` sends what is remembered

    async def _send_now(self, text: str) -> bool:
        """Send a frame that needs no answer if connected; ``False`` if not sent."""
        ws = self._ws
        if ws is None or not self._ready.is_set():
            return False
        try:
            await ws.send(text)
        except ConnectionClosed:
            return False
        return True

    async def _restore_presence(self) -> None:
        """After ``ready``: what the server forgot with the previous connection."""
        await self._send_presence(f.PresenceSubscribe, list(self._watching))
        if self._status != "online":
            await self._send_now(_SET_FRAMES[self._status])

    def _on_presence(self, frame: dict[str, Any]) -> None:
        user_id = str(frame.get("user_id"))
        if user_id in self._watching:
            self.presence[user_id] = frame

    async def mark_read(self, room_id: str, seq: int) -> int:
        """Move the read cursor forward; the cursor the server kept."""
        answer = await self._call(f.Read(room_id=room_id, seq=seq, id=self._next_id()))
        return int(answer["read_seq"])

    def _next_id(self) -> str:
        return f"c{next(self._ids)}"

    async def _call(self, frame: f.ClientFrame) -> dict[str, Any]:
        await self.wait_ready()
        ws = self._ws
        if ws is None:
            raise ConnectionLost("not connected")
        frame_id = str(frame.id)
        future: asyncio.Future[dict[str, Any]] = asyncio.get_running_loop().create_future()
        self._pending[frame_id] = future
        try:
            try:
                await ws.send(codec.dumps(frame).decode())
            except ConnectionClosed as exc:
                if future.done():  # failed by the connection's end while sending
                    future.exception()  # retrieved: this raise says the same
                raise ConnectionLost(str(exc)) from exc
            return await future
        finally:
            self._pending.pop(frame_id, None)

    def _fail_pending(self, exc: ClientError) -> None:
        for future in self._pending.values():
            if not future.done():
                future.set_exception(exc)
        self._pending.clear()

    # the connection loop

    async def _run(self) -> None:
        try:
            while not self._closed:
                ws = await self._connect()
                if ws is None:
                    await asyncio.sleep(self._backoff.next_delay())
                    continue
                moved = await self._session(ws)
                if not self._closed:
                    # A draining node (1012, 1001) asks for a reconnect now, to
                    # another node: no backoff, a little jitter.
                    delay = random.uniform(0, DRAIN_JITTER) if moved else None
                    await asyncio.sleep(self._backoff.next_delay() if delay is None else delay)
        except ClientError as exc:
            self._fatal = exc
        except Exception as exc:
            log.exception("live connection failed")
            self._fatal = ClientError(f"live connection failed: {exc!r}")
        finally:
            self._ready.clear()
            self._dead.set()
            self._wake()
            self._fail_pending(ConnectionLost("closed"))

    async def _connect(self) -> ClientConnection | None:
        """Open the socket with a fresh enough token; ``None`` to retry later."""
        client = self.client
        if client.access_token is None:
            raise AuthError(401, "unauthorized", "not logged in")
        try:
            return await connect(
                client.ws_url,
                additional_headers={"Authorization": f"Bearer {client.access_token}"},
                compression=None,
                max_size=self._max_size,
                ping_interval=self._ping_interval,
                ping_timeout=self._ping_interval,
                open_timeout=self._open_timeout,
                close_timeout=2,
            )
        except InvalidStatus as exc:
            status = exc.response.status_code
            if status == 401:
                await client.refresh()  # AuthError when it cannot: fatal
                return None
            if status in (400, 403, 404):
                raise ApiError(status, "refused", f"the server refused the upgrade: {exc}") from exc
            log.info("upgrade refused (%s); retrying", status)
            return None
        except (OSError, TimeoutError, InvalidHandshake, ConnectionClosed) as exc:
            # ConnectionClosed: the server dropped the socket mid-handshake (it was
            # restarting, or out of file descriptors): as transient as a refusal.
            log.info("cannot connect (%r); retrying", exc)
            return None

    async def _session(self, ws: ClientConnection) -> bool:
        """Run one connection until it ends; True if the server closed it to have
        the client reconnect elsewhere at once (it is draining)."""
        self._ws = ws
        self.connects += 1
        renewer = asyncio.create_task(self._keep_token_fresh(ws), name="parley-token-renew")
        try:
            if self.cursors:
                resume = f.Resume(cursors=dict(self.cursors), id=self._next_id())
                self._resuming = (str(resume.id), set(self.cursors))
                await ws.send(codec.dumps(resume).decode())
            async for raw in ws:
                try:
                    frame = codec.loads(raw)
                    await self._on_frame(frame)
                except (KeyError, TypeError, ValueError) as exc:
                    log.warning("ignored a frame the client does not understand: %r", exc)
        except ConnectionClosed:
            pass
        finally:
            # The connection's state goes first, with no await before it: a caller
            # waiting on ``_ready`` must not meet a closed socket meanwhile.
            self._ws = None
            self._resuming = None
            self._ready.clear()
            self._fail_pending(ConnectionLost("connection lost"))
            renewer.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await renewer
        if ws.close_code == 1008 and ws.close_reason in AUTH_CLOSE_REASONS:
            await self.client.refresh()
        return ws.close_code in DRAIN_CLOSE_CODES

    async def _keep_token_fresh(self, ws: ClientConnection) -> None:
        """Renew the access token before it expires and send it on ``ws``. A failed
        renewal is left to the server's close at the expiry, which reconnects
        (refreshing once more) or ends the connection for good (``AuthError``)."""
        client = self.client
        while True:
            token = client.access_token
            expiry = token_expiry(token) if token else None
            if expiry is None:
                return
            lifetime = max(1.0, expiry - time.time())
            await asyncio.sleep(max(0.0, lifetime - min(REFRESH_AHEAD, lifetime / 5)))
            try:
                if client.access_token == token:
                    await client.refresh()
                fresh = client.access_token
                if fresh is None or fresh == token:
                    return
                await self._call(f.Auth(token=fresh, id=self._next_id()))
            except ClientError as exc:
                log.info("renewing the connection's token failed: %s", exc)
                return

    async def _on_frame(self, frame: dict[str, Any]) -> None:
        kind = frame.get("type")
        if kind == "event":
            await self._on_event(frame["event"])
        elif kind in ("ack", "pong", "resumed", "read.ok", "auth.ok"):
            if kind == "resumed":
                self.resumed_at = time.monotonic()
                self._resume_answered(frame)
            self._answer(frame)
        elif kind == "error":
            self._on_error(frame)
        elif kind == "ready":
            self._on_ready(frame)
            await self._restore_presence()
        elif kind == "notification" and self.on_notification is not None:
            self.on_notification(frame["notification"])
        else:
            if kind == "presence":
                self._on_presence(frame)
            if self.on_frame is not None:
                self.on_frame(frame)

    def _answer(self, frame: dict[str, Any]) -> None:
        future = self._pending.get(str(frame.get("id")))
        if future is not None and not future.done():
            future.set_result(frame)

    def _resume_answered(self, frame: dict[str, Any]) -> None:
        if self._resuming is not None and str(frame.get("id")) == self._resuming[0]:
            self._resuming = None

    def _on_error(self, frame: dict[str, Any]) -> None:
        if frame.get("code") == "cursor_ahead":
            self._cursor_ahead(frame)
            return
        if frame.get("code") == "draining":
            self._ready.clear()  # the node closes this connection: wait for the next
        self._resume_answered(frame)
        error = ApiError(
            0,
            str(frame.get("code")),
            str(frame.get("message")),
            retry_after=frame.get("retry_after"),
        )
        refused = frame.get("user_ids")
        if error.code == "forbidden" and isinstance(refused, list):
            # presence the server will not send: refused, or a subscription it ended
            for user_id in refused:
                self._watching.pop(str(user_id), None)
                self.presence.pop(str(user_id), None)
        future = self._pending.get(str(frame.get("id")))
        if future is not None and not future.done():
            future.set_exception(error)
        elif self.on_frame is not None:
            self.on_frame(frame)
        else:
            log.warning("server error: %s", error)

    def _cursor_ahead(self, frame: dict[str, Any]) -> None:
        """Our cursor of a room is beyond the server's head (a restore, a failover):
        the room goes on live from ``head``; the application hears of it through
        ``on_frame`` to reset its view. The rest of the resume goes on."""
        room_id, head = str(frame["room_id"]), int(frame["head"])
        self.cursors[room_id] = head
        if self._resuming is not None:
            self._resuming[1].discard(room_id)
        if self.on_frame is not None:
            self.on_frame(frame)
        else:
            log.warning("room %s: our cursor is beyond the server's head %d", room_id, head)

    def _on_ready(self, frame: dict[str, Any]) -> None:
        self.user_id = str(frame["user_id"])
        self.session_id = str(frame["session_id"])
        rooms: dict[str, int] = frame["rooms"]
        self.rooms = rooms
        for room_id in [r for r in self.cursors if r not in rooms]:
            del self.cursors[room_id]  # no longer a member
        for room_id, last_seq in rooms.items():
            self.cursors.setdefault(room_id, last_seq)
        self._backoff.reset()
        self._ready.set()

    async def _on_event(self, event: dict[str, Any]) -> None:
        room_id: str = event["room_id"]
        seq: int = event["seq"]
        cursor = self.cursors.get(room_id, seq - 1)
        if seq <= cursor:
            self.duplicates += 1
            return
        if room_id in self._behind:
            self._fell_behind(room_id, seq)
            return
        if seq > cursor + 1:
            resuming = self._resuming
            if resuming is not None and room_id in resuming[1]:
                # Live before the server read our resume (it was late): the resume
                # rewinds the room to our cursor and replays this event too.
                return
            if not await self._repair(room_id, cursor, seq):
                return
        self._deliver(event)

    def _deliver(self, event: dict[str, Any]) -> bool:
        """Queue ``event`` for the application, or mark its room behind when the
        queue is full (never wait: answers are read by the same loop)."""
        if self._queue(event):
            return True
        self._fell_behind(event["room_id"], event["seq"])
        return False

    def _queue(self, event: dict[str, Any]) -> bool:
        room_id: str = event["room_id"]
        try:
            self._events.put_nowait(event)
        except asyncio.QueueFull:
            return False
        self.cursors[room_id] = event["seq"]
        if self._wakers:
            self._wake()
        if event.get("type") == "member.left" and event.get("user_id") == self.user_id:
            self.cursors.pop(room_id, None)
            self._behind.pop(room_id, None)
        return True

    def _fell_behind(self, room_id: str, seq: int) -> None:
        if room_id not in self._behind:
            self.overflows += 1
            log.info("room %s: the application reads too slowly; read again later", room_id)
        self._behind[room_id] = max(seq, self._behind.get(room_id, seq))

    async def _repair(self, room_id: str, cursor: int, seq: int) -> bool:
        """Fill ``cursor+1 .. seq-1`` from the REST log before delivering ``seq``;
        False if the room fell behind meanwhile (``seq`` is then fetched later)."""
        self.gaps_repaired += 1
        try:
            while cursor < seq - 1:
                events, more = await self.client.events(
                    room_id, after_seq=cursor, limit=REPAIR_PAGE
                )
                for event in events:
                    if event["seq"] == cursor + 1 and event["seq"] < seq:
                        if not self._deliver(event):
                            break
                        cursor = event["seq"]
                if room_id in self._behind:
                    self._fell_behind(room_id, seq)
                    return False
                if not events or not more:
                    break
        except ApiError as exc:
            log.warning("could not repair room %s after %d: %s", room_id, cursor, exc)
        return True


def _ids(user_ids: Iterable[str]) -> list[str]:
    if isinstance(user_ids, str):
        raise TypeError("user_ids: an iterable of user ids, not one string")
    return [str(u) for u in user_ids]
