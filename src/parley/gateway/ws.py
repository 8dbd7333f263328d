"""``GET /api/v1/ws``: the WebSocket pump around ``ServerSession`` and the ``Hub``.

A raw ASGI endpoint (not Starlette's ``WebSocket`` wrapper: one dict per frame is
all the hot path should cost). Per connection:

* each inbound frame is judged by the sans-I/O session and carried out as uvicorn
  reads it, through the direct socket's ``on_text`` (no ASGI message, no task
  switch); the endpoint's own task reads what that declines (a frame that must
  wait: typing, presence subscriptions, and the frames after it), and everything
  under another ASGI server;
* fan-out never awaits a socket: it queues on the connection's bounded queue
  (``Hub.Connection``; full: closed with 1013), and the queue is written straight
  to uvicorn's transport, coalesced into one write, through the direct socket of
  ``parley.gateway.direct``; where there is none (another ASGI server), a writer
  task sends it frame by frame over ASGI;
* an operations task, started on demand, carries out ``send`` and ``read`` in the
  order received (a connection's messages are stored in the order it sent them).

Authentication: ``Authorization: Bearer`` on the upgrade (refused with HTTP 401 when
bad), or a first ``auth`` frame within 10 s (an error frame and close 1008 when bad
or late). The connection lasts as long as the token: at its expiry it gets an
``error`` (``token_expired``) and close 1008 ``token_expired``, unless the client
sent a fresh token of the same user on it (``auth``, answered ``auth.ok`` with the
new expiry; a bad one or another user's: an error and close 1008). ``Origin``
must be on ``PARLEY_ALLOWED_ORIGINS`` (by default the server's own origin: the
Origin's host is the Host header); no Origin (not a browser) is allowed; others are
refused with HTTP 403.

Heartbeats are the server's WebSocket pings, run below ASGI (which gives an
application no way to send a ping frame): a connection silent for a
``heartbeat_interval`` is pinged, one silent for two is closed (1011). Under
``DirectWebSocketProtocol`` one shared timer wheel per event loop does it
(``parley.gateway.direct.Keepalive``; a connection that talks is never pinged);
under uvicorn's plain protocol, uvicorn's pings (``uvicorn_ws_options``: ping every
interval, close when no pong comes within another one). The hub's sweeper adds
what the pings cannot see: a writer that made no progress for two intervals
(a peer that stopped reading, or a half-open connection with data in flight) is
aborted and its resources freed.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, Final
from urllib.parse import urlsplit

from fastapi import APIRouter
from starlette.routing import WebSocketRoute
from starlette.types import Receive, Scope, Send

from parley.auth.tokens import AccessClaims
from parley.delivery.fanout import Fanout
from parley.delivery.session import Connection
from parley.domain.models import RoomId, format_ts
from parley.errors import ParleyError, RateLimited, Unauthorized
from parley.gateway.direct import EXTENSION, DirectSocket, DirectWebSocketProtocol, text_frame
from parley.gateway.hub import OPERATION, Hub
from parley.gateway.ratelimit import RateLimiter
from parley.protocol import codec
from parley.protocol import frames as f
from parley.protocol.session import (
    AUTH_TIMEOUT,
    CLOSE_INTERNAL,
    CLOSE_POLICY,
    CLOSE_TRY_AGAIN,
    Close,
    Reply,
    ServerSession,
)
from parley.settings import Settings

if TYPE_CHECKING:
    from parley.gateway.runtime import Runtime

log = logging.getLogger("parley.ws")

PATH: Final = "/api/v1/ws"
CLOSE_TIMEOUT: Final = 5.0
MAX_IN_FLIGHT: Final = 64
"""Sends and reads of one connection carried out at once: enough for the store to
group a pipelining client's messages into one commit."""
MAX_BACKLOG: Final = 256
_JUDGED: Final = "parley.frame"
"""An inbound frame the direct path judged already, in the ASGI message's place."""
_DEFAULT_PORTS: Final = {"http": "80", "https": "443", "ws": "80", "wss": "443"}


def uvicorn_ws_options(settings: Settings) -> dict[str, Any]:
    """The uvicorn WebSocket settings this endpoint is designed for: the sans-I/O
    implementation, no compression (~300 KiB and most of the CPU per connection,
    measured here), the frame limit, and pings every ``heartbeat_interval`` with the
    same time allowed for the pong (silent for two intervals: closed)."""
    return {
        "ws": DirectWebSocketProtocol,
        "ws_per_message_deflate": False,
        "ws_max_size": settings.max_frame_bytes,
        "ws_ping_interval": settings.heartbeat_interval,
        "ws_ping_timeout": settings.heartbeat_interval,
    }


def _normal_host(host: str, scheme: str | None = None) -> str:
    """``host[:port]`` in lower case without the scheme's default port."""
    host = host.strip().lower().rstrip(".")
    name, sep, port = host.rpartition(":")
    if sep and not name.endswith("]") and "]" in port:
        return host
    if sep and port.isdigit():
        defaults = [_DEFAULT_PORTS[scheme]] if scheme in _DEFAULT_PORTS else ["80", "443"]
        if port in defaults:
            return name
    return host


def origin_allowed(
    origin: str | None, host: str | None, allowed: list[str], public_url: str | None = None
) -> bool:
    """The ``Origin`` rule: listed origins, or by default the server's own origin
    (its host equals the ``Host`` header, or ``public_url``'s). No ``Origin``: not
    a browser, so no cross-site risk to guard against."""
    if origin is None:
        return True
    origin = origin.strip().rstrip("/")
    if allowed:
        wanted = origin.lower()
        return any(a == "*" or a.lower() == wanted for a in allowed)
    parts = urlsplit(origin)
    if parts.scheme not in ("http", "https") or not parts.netloc:
        return False
    mine = _normal_host(parts.netloc, parts.scheme)
    own = set()
    if host:
        own.add(_normal_host(host))
    if public_url:
        public = urlsplit(public_url)
        if public.netloc:
            own.add(_normal_host(public.netloc, public.scheme))
    return mine in own


def _header(scope: Scope, name: bytes) -> str | None:
    for key, value in scope.get("headers", ()):
        if key == name:
            return bytes(value).decode("latin-1")
    return None


def parse_bearer(authorization: str | None) -> str | None:
    """The token of an ``Authorization: Bearer`` header value, if it is one."""
    if not authorization:
        return None
    kind, _, token = authorization.partition(" ")
    return token.strip() or None if kind.lower() == "bearer" else None


async def _deny(scope: Scope, send: Send, status: int, code: str, message: str) -> None:
    """Refuse an upgrade with an HTTP answer in the API's error shape, where the
    server supports the ASGI denial extension (else a bare 403)."""
    if "websocket.http.response" not in scope.get("extensions", {}):
        await send({"type": "websocket.close", "code": CLOSE_POLICY})
        return
    body = codec.dumps({"error": {"code": code, "message": message}})
    headers = [(b"content-type", b"application/json"), (b"content-length", b"%d" % len(body))]
    if status == 401:
        headers.append((b"www-authenticate", b"Bearer"))
    await send({"type": "websocket.http.response.start", "status": status, "headers": headers})
    await send({"type": "websocket.http.response.body", "body": body})


def _wire(fanout: Fanout) -> bytes:
    """The ``event`` frame as a whole WebSocket frame (built once per event)."""
    return text_frame(fanout.frame)


def _asgi_send(fanout: Fanout) -> dict[str, Any]:
    """The ASGI message that sends the ``event`` frame, shared by every recipient
    (ASGI servers only read it)."""
    return {"type": "websocket.send", "text": fanout.frame.decode()}


class _Pump:
    """One authenticated WebSocket connection: reader, writer and operations."""

    def __init__(
        self,
        rt: Runtime,
        session: ServerSession,
        conn: Connection,
        send: Send,
        limiter: RateLimiter | None,
        inbound: DirectSocket | None,
    ) -> None:
        self.rt = rt
        self.limiter = limiter
        self.hub: Hub = rt.hub
        self.session = session
        self.conn = conn
        self.send = send
        self.aborted = False
        self.busy = False
        """The endpoint's task is carrying out a frame that waits (``on_text``)."""
        self.inbound = inbound
        self.in_flight = 0
        self.backlog: list[f.Send | f.Read] = []
        self.task = asyncio.current_task()
        self.writer: asyncio.Task[None] | None = None
        self.closing: asyncio.Task[None] | None = None
        conn.on_caught_up = self._caught_up
        conn.on_abort = self._abort
        self.direct = inbound if inbound is not None and inbound.usable else None
        if self.direct is not None:
            conn.flusher = self.flush
            self.direct.on_writable(self.flush)
        else:
            self.writer = asyncio.create_task(self._write(), name="parley-ws-writer")

    def _caught_up(self, room_id: str) -> None:
        session = self.session
        for frame in session.caught_up(room_id, asyncio.get_running_loop().time()):
            self.conn.push(frame)
        self._observe_resumes()

    def _observe_resumes(self) -> None:
        took = self.session.resume_seconds
        if took:
            for seconds in took:
                self.hub.metrics.resume_seconds.observe(seconds)
            took.clear()

    def _abort(self) -> None:
        if not self.aborted and self.task is not None:
            self.aborted = True
            self.task.cancel()

    def flush(self) -> None:
        """The direct path: everything queued, in one write, when the transport
        takes it; else nothing (``on_writable`` calls again once it drains, and
        the hub's sweeper aborts a connection that never does)."""
        direct, conn = self.direct, self.conn
        assert direct is not None
        if self.closing is not None:
            return
        if direct.gone:
            conn.take_now()
            return
        if direct.paused:
            return
        items = conn.take_now()
        if items:
            direct.write(
                b"".join(
                    i.encoded(_wire) if isinstance(i, Fanout) else text_frame(i) for i in items
                )
            )
            conn.sent += len(items)
            self.hub.stats.frames_out += len(items)
        close = conn.close_request
        if close is not None:
            self.closing = asyncio.create_task(self._close(close), name="parley-ws-close")

    async def _write(self) -> None:
        """The ASGI path (no direct socket): one ``send`` per frame."""
        conn, send, stats = self.conn, self.send, self.hub.stats
        try:
            while True:
                items = await conn.take()
                if not items:
                    break
                conn.writing = True
                for item in items:
                    if isinstance(item, bytes):
                        await send({"type": "websocket.send", "text": item.decode()})
                    else:
                        await send(item.encoded(_asgi_send))
                    conn.sent += 1
                conn.writing = False
                stats.frames_out += len(items)
        except (OSError, RuntimeError):
            # The peer is gone (uvicorn raises ClientDisconnected, an OSError) or the
            # server already closed it (keepalive timeout): the reader sees it too.
            conn.close(CLOSE_TRY_AGAIN, "gone", flush=False)
            return
        close = conn.close_request
        if close is not None:
            await self._close(close)

    async def _close(self, close: Close) -> None:
        message = {"type": "websocket.close", "code": close.code, "reason": close.reason}
        try:
            async with asyncio.timeout(CLOSE_TIMEOUT):
                await self.send(message)
        except TimeoutError:
            self.conn.abort()
        except (OSError, RuntimeError):
            pass

    def stop(self) -> None:
        """Detach, and let go of everything that points back at this pump (the
        connection's and the socket's callbacks, the writer and close tasks, whose
        cancellation tracebacks hold frames of this pump), so that the closed
        connection is freed by reference counting, not by a full collection."""
        self.hub.detach(self.conn)
        if self.inbound is not None:
            self.inbound.on_text(None)
        if self.direct is not None:
            self.direct.on_writable(None)
        for task in (self.writer, self.closing):
            if task is not None:
                task.cancel()
        self.writer = self.closing = None
        self.backlog.clear()

    # frames

    def on_text(self, text: str) -> bool:
        """The direct path's inbound handler: a frame carried out as uvicorn reads
        it, with no ASGI message and no switch to the endpoint's task. Typing and
        presence subscriptions await the store or the cache, so the task carries
        them out; it is handed the frame already judged. While it does, this
        declines frames (uvicorn queues them for the task), so that every frame is
        carried out in the order it came."""
        if self.busy:
            return False
        try:
            frame = self.accept(text)
            if frame is not None and not self.handle_now(frame):
                assert self.inbound is not None
                self.inbound.deliver({"type": "websocket.receive", _JUDGED: frame})
        except ParleyError as exc:
            log.warning("connection of %s failed: %s", self.conn.user_id, exc)
            self.conn.close(CLOSE_TRY_AGAIN, "unavailable; retry later")
        except Exception:
            log.exception("a frame of %s failed", self.conn.user_id)
            self.conn.close(CLOSE_INTERNAL, "internal error")
        return True

    def accept(self, data: str | bytes) -> f.ClientFrame | None:
        """Judge an inbound message: the frame to carry out, or None (answered). A
        connection whose token expired takes no frame, though the hub's timer has
        not closed it yet."""
        stats = self.hub.stats
        stats.frames_in += 1
        if time.time() >= self.conn.expires_at:
            self.hub.expire(self.conn)
            return None
        result = self.session.receive(data, asyncio.get_running_loop().time())
        if isinstance(result, Reply):
            stats.bad_frames += 1
            self.conn.push(result.frame)
            if result.close is not None:
                self.conn.close(result.close.code, result.close.reason)
            return None
        return result

    async def handle(self, frame: f.ClientFrame) -> None:
        """Carry out a frame, on the endpoint's task."""
        if not self.handle_now(frame):
            self.busy = True
            try:
                await self._handle_later(frame)
            finally:
                self.busy = False

    async def _handle_later(self, frame: f.ClientFrame) -> None:
        conn = self.conn
        if isinstance(frame, f.Resume):
            await self._resume(frame)
            return
        try:
            if self.limiter is not None:
                kind = "typing" if isinstance(frame, f.Typing) else "presence"
                await self.limiter.check(kind, conn.user_id)
            if isinstance(frame, f.Typing):
                await self.hub.typing(conn, frame.room_id)
            elif isinstance(frame, f.PresenceSubscribe):
                for reply in await self.rt.presence.subscribe(conn, frame.user_ids, frame.id):
                    conn.push(reply)
            elif isinstance(frame, f.PresenceUnsubscribe):
                self.rt.presence.unsubscribe(conn, frame.user_ids)
            elif isinstance(frame, f.PresenceSet):
                self.rt.presence.set_status(conn, frame.status)
        except RateLimited as exc:
            conn.push(f.error_frame(exc.code, exc.message, frame.id, retry_after=exc.retry_after))
        except ParleyError as exc:
            conn.push(f.error_frame(exc.code, exc.message, frame.id))

    async def _resume(self, frame: f.Resume) -> None:
        """Rewind the rooms; ``resumed`` once each reached the database's head. A
        cursor beyond a room's head is answered ``cursor_ahead`` and the room goes
        on live from where the connection stands."""
        conn = self.conn
        started = asyncio.get_running_loop().time()
        try:
            result = await self.hub.resume(conn, dict(frame.cursors))
        except ParleyError as exc:
            conn.push(f.error_frame(exc.code, exc.message, frame.id))
            return
        for room_id, head in result.ahead.items():
            conn.push(f.cursor_ahead_frame(room_id, head, frame.id))
        done = self.session.begin_resume(frame.id, result.replaying, started)
        if done is not None:
            conn.push(done)
            self._observe_resumes()

    def handle_now(self, frame: f.ClientFrame) -> bool:
        """Carry out a frame that needs no waiting; False for one that does."""
        conn = self.conn
        if isinstance(frame, f.Send | f.Read):
            if isinstance(frame, f.Send):
                self.rt.presence.message_sent(conn, frame.room_id)
            if self.backlog or self.in_flight >= MAX_IN_FLIGHT:
                if len(self.backlog) >= MAX_BACKLOG:
                    conn.push(
                        f.error_frame("rate_limited", "too many requests in flight", frame.id)
                    )
                    return True
                self.backlog.append(frame)
                return True
            self._start(frame)
        elif isinstance(frame, f.Ping):
            conn.push(f.pong_frame(frame.id))
        elif isinstance(frame, f.Auth):
            self._reauthenticate(frame)
        elif isinstance(
            frame, f.Typing | f.PresenceSubscribe | f.PresenceUnsubscribe | f.PresenceSet
        ):
            return False  # rate-limited in the cache: carried out by the task
        elif isinstance(frame, f.Resume):
            return False  # reads the rooms' heads from the store first
        else:
            conn.push(
                f.error_frame("unsupported", f"{type(frame).__name__} is not supported", frame.id)
            )
        return True

    def _reauthenticate(self, frame: f.Auth) -> None:
        """A fresh token on the open connection: same user, it lasts until the new
        token's expiry; another user's or a bad one ends the connection."""
        conn = self.conn
        try:
            claims = self.rt.tokens.verify_claims(frame.token)
            if claims.user_id != conn.user_id:
                raise Unauthorized("the token is another user's", code="wrong_user")
        except Unauthorized as exc:
            reply = self.session.auth_failed(exc.code, exc.message, frame.id)
            assert reply.close is not None
            conn.end(reply.frame, reply.close.code, reply.close.reason)
            return
        conn.expires_at = claims.expires_at
        conn.sid = claims.sid
        self.hub.watch_expiry(conn)
        conn.push(f.auth_ok_frame(frame.id, _timestamp(claims.expires_at)), urgent=True)

    def _start(self, frame: f.Send | f.Read) -> None:
        """Carry out a send or read. Tasks start in creation order and each reaches
        the store's write queue before its first suspension, so a connection's
        messages take their ``seq`` in the order it sent them, while a pipelining
        client's messages still share commits. An operation is never cancelled
        half-way: its events must be published once it commits."""
        if self.hub.closing:
            self.conn.push(
                f.error_frame("draining", "the node is restarting: send again", frame.id)
            )
            return
        self.in_flight += 1
        op = self._send(frame) if isinstance(frame, f.Send) else self._read(frame)
        self.hub.spawn(self._finish(op), OPERATION)

    async def _finish(self, op: Awaitable[None]) -> None:
        try:
            await op
        finally:
            self.in_flight -= 1
            if self.backlog and self.conn.close_request is None:
                self._start(self.backlog.pop(0))

    async def _send(self, frame: f.Send) -> None:
        rt, conn, stats = self.rt, self.conn, self.hub.stats
        started = time.perf_counter()
        try:
            if self.limiter is not None:
                await self.limiter.check("send", conn.user_id)
            result = await rt.chat.send(
                conn.user_id,
                RoomId(frame.room_id),
                frame.body,
                frame.client_msg_id,
                frame.thread_root_id,
            )
        except RateLimited as exc:
            stats.send_errors += 1
            conn.push(f.error_frame(exc.code, exc.message, frame.id, retry_after=exc.retry_after))
        except ParleyError as exc:
            stats.send_errors += 1
            conn.push(f.error_frame(exc.code, exc.message, frame.id))
        except Exception:
            stats.send_errors += 1
            log.exception("send failed")
            conn.push(f.error_frame("internal", "internal server error", frame.id))
        else:
            stats.sends += 1
            conn.push(f.ack_frame(frame.id, result.message.public()), urgent=True)
            self.hub.metrics.send_seconds.observe(time.perf_counter() - started)

    async def _read(self, frame: f.Read) -> None:
        try:
            seq = await self.rt.chat.mark_read(self.conn.user_id, RoomId(frame.room_id), frame.seq)
        except ParleyError as exc:
            self.conn.push(f.error_frame(exc.code, exc.message, frame.id))
        except Exception:
            log.exception("read failed")
            self.conn.push(f.error_frame("internal", "internal server error", frame.id))
        else:
            if frame.id is not None:
                self.conn.push(f.read_frame(frame.room_id, seq, frame.id))


class WebSocketEndpoint:
    """The ASGI app mounted at ``/api/v1/ws``."""

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "websocket":
            return
        message = await receive()
        if message["type"] != "websocket.connect":
            return
        rt: Runtime = scope["app"].state.runtime
        settings = rt.settings
        if rt.hub.closing:
            await _deny(scope, send, 503, "unavailable", "the server is shutting down")
            return
        origin = _header(scope, b"origin")
        if not origin_allowed(
            origin, _header(scope, b"host"), settings.origins, settings.public_url
        ):
            await _deny(scope, send, 403, "forbidden_origin", "this origin is not allowed")
            return
        claims: AccessClaims | None = None
        token = parse_bearer(_header(scope, b"authorization"))
        if token is not None:
            try:
                claims = rt.tokens.verify_claims(token)
            except Unauthorized as exc:
                await _deny(scope, send, 401, exc.code, exc.message)
                return
        await send({"type": "websocket.accept"})
        loop = asyncio.get_running_loop()
        session = ServerSession(
            max_frame_bytes=settings.max_frame_bytes,
            frames_per_second=settings.frames_per_second if settings.rate_limits == "on" else None,
            now=loop.time(),
            auth_timeout=AUTH_TIMEOUT,
        )
        if claims is None:
            limits = getattr(scope["app"].state, "connection_limits", None)
            ip = scope["client"][0] if scope.get("client") else ""
            if limits is not None and not limits.enter_unauthenticated(ip):
                await _send_close(send, CLOSE_TRY_AGAIN, "too many connections; retry later")
                return
            try:
                claims = await self._authenticate(rt, session, receive, send)
            finally:
                if limits is not None:
                    limits.leave_unauthenticated(ip)
            if claims is None:
                return
        else:
            session.authenticated(claims.user_id)
        await self._run(scope, rt, session, claims, receive, send)

    async def _authenticate(
        self, rt: Runtime, session: ServerSession, receive: Receive, send: Send
    ) -> AccessClaims | None:
        """Frames before authentication: ``auth`` (or ``ping``) within the deadline."""
        loop = asyncio.get_running_loop()
        stats = rt.hub.stats
        while True:
            try:
                async with asyncio.timeout_at(session.auth_deadline):
                    message = await receive()
            except TimeoutError:
                close = session.auth_timed_out(loop.time())
                if close is not None:
                    await _send_close(send, close.code, close.reason)
                    return None
                continue
            if message["type"] != "websocket.receive":
                return None
            stats.frames_in += 1
            result = session.receive(_payload(message), loop.time())
            if isinstance(result, Reply):
                stats.bad_frames += 1
                await _send_text(send, result.frame)
                if result.close is not None:
                    await _send_close(send, result.close.code, result.close.reason)
                    return None
                continue
            if isinstance(result, f.Ping):
                await _send_text(send, f.pong_frame(result.id))
                continue
            assert isinstance(result, f.Auth)
            try:
                claims = rt.tokens.verify_claims(result.token)
            except Unauthorized as exc:
                reply = session.auth_failed(exc.code, exc.message, result.id)
                await _send_text(send, reply.frame)
                assert reply.close is not None
                await _send_close(send, reply.close.code, reply.close.reason)
                return None
            session.authenticated(claims.user_id)
            return claims

    async def _run(
        self,
        scope: Scope,
        rt: Runtime,
        session: ServerSession,
        claims: AccessClaims,
        receive: Receive,
        send: Send,
    ) -> None:
        hub = rt.hub
        user_id = claims.user_id
        conn = Connection(hub, user_id, transport="ws")
        conn.expires_at = claims.expires_at
        conn.sid = claims.sid
        limiter = getattr(scope["app"].state, "limiter", None)
        pump = _Pump(
            rt, session, conn, send, limiter, (scope.get("extensions") or {}).get(EXTENSION)
        )
        heartbeat_ms = int(rt.settings.heartbeat_interval * 1000)

        def ready(rooms: dict[str, int]) -> None:
            conn.push(f.ready_frame(user_id, conn.session_id, heartbeat_ms, rooms))

        try:
            await hub.attach(conn, ready)
            rt.presence.connected(conn)
            if pump.inbound is not None:
                pump.inbound.on_text(pump.on_text)
            while True:
                message = await receive()
                if message["type"] != "websocket.receive":
                    break
                frame = message.get(_JUDGED)
                if frame is None:
                    frame = pump.accept(_payload(message))
                if frame is not None:
                    await pump.handle(frame)
        except asyncio.CancelledError:
            if not pump.aborted:
                raise
            task = asyncio.current_task()
            if task is not None:
                task.uncancel()
        except ParleyError as exc:
            log.warning("connection of %s failed: %s", user_id, exc)
            with contextlib.suppress(Exception):
                await _send_close(send, CLOSE_TRY_AGAIN, "unavailable; retry later")
        finally:
            session.closed()
            pump.stop()
            rt.presence.disconnected(conn)


def _timestamp(unix: float) -> str:
    return format_ts(datetime.fromtimestamp(unix, UTC))


def _payload(message: dict[str, Any] | Any) -> str | bytes:
    text = message.get("text")
    if text is not None:
        return str(text)
    return bytes(message.get("bytes") or b"")


async def _send_text(send: Send, frame: bytes) -> None:
    await send({"type": "websocket.send", "text": frame.decode()})


async def _send_close(send: Send, code: int, reason: str) -> None:
    await send({"type": "websocket.close", "code": code, "reason": reason})


ws_endpoint: Final = WebSocketEndpoint()
router = APIRouter()
router.routes.append(WebSocketRoute(PATH, ws_endpoint, name="websocket"))
