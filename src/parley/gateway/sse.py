"""``GET /api/v1/events/stream``: Server-Sent Events, receive-only.

Each room event is one SSE event whose ``data`` is the same ``{"type": "event",
"event": ...}`` frame the WebSocket sends, and whose ``id`` is the connection's
per-room cursors after it (``parley.protocol.cursors``). A client that reconnects
sends it back as ``Last-Event-ID`` (``EventSource`` does so by itself) and every
room resumes after its cursor, replayed from the store, with nothing lost or
repeated. The stream opens with a ``ready`` event (named, so ``onmessage`` handlers
see only room events) carrying the same object as the WebSocket's ``ready``.

Authentication: ``Authorization: Bearer``, or ``?access_token=`` because
``EventSource`` cannot set headers (access tokens are short-lived; keep them out of
access logs). A comment line every ``heartbeat_interval`` keeps proxies from timing
the stream out and finds dead clients; a client that reads too slowly has its
stream ended (it reconnects and resumes). The stream ends at the access token's
expiry (an ``error`` event, ``token_expired``), and when its session is logged out:
``EventSource`` reconnects by itself, and the page gives it a fresh token in the URL.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import TYPE_CHECKING, Annotated, Final

from fastapi import APIRouter, Header, Query, Request
from starlette.responses import Response
from starlette.types import Receive, Scope, Send

from parley.auth.tokens import AccessClaims
from parley.delivery.fanout import Fanout
from parley.delivery.session import Connection
from parley.errors import ParleyError, Unauthorized, Unavailable
from parley.gateway.ws import parse_bearer
from parley.protocol import codec
from parley.protocol.cursors import decode_cursors, encode_entry, join_entries
from parley.protocol.frames import cursor_ahead_frame, ready_frame
from parley.protocol.session import CLOSE_TRY_AGAIN

if TYPE_CHECKING:
    from parley.gateway.runtime import Runtime

PATH: Final = "/api/v1/events/stream"
RETRY_MS: Final = 1000

router = APIRouter()


class EventStream(Response):
    """The SSE response: attaches a hub connection for as long as it streams."""

    media_type = "text/event-stream"

    def __init__(self, rt: Runtime, claims: AccessClaims, last_event_id: str | None) -> None:
        super().__init__(media_type=self.media_type)
        self.rt = rt
        self.claims = claims
        self.user_id = claims.user_id
        self.last_event_id = last_event_id
        self._entries: dict[str, str] = {}

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        rt = self.rt
        hub = rt.hub
        conn = Connection(hub, self.user_id, transport="sse")
        conn.expires_at = self.claims.expires_at
        conn.sid = self.claims.sid
        task = asyncio.current_task()
        aborted = False

        def abort() -> None:
            nonlocal aborted
            if not aborted and task is not None:
                aborted = True
                task.cancel()

        conn.on_abort = abort
        heartbeat_ms = int(rt.settings.heartbeat_interval * 1000)

        def before_live(rooms: dict[str, int]) -> None:
            conn.push(ready_frame(self.user_id, conn.session_id, heartbeat_ms, rooms))

        listener: asyncio.Task[None] | None = None
        try:
            try:
                cursors = await self._start(conn, before_live)
            except ParleyError as exc:
                body = codec.dumps({"error": {"code": exc.code, "message": exc.message}})
                await _respond(send, 503, body)
                return
            self._entries = {r: encode_entry(r, s) for r, s in cursors.items() if s > 0}
            await send(
                {
                    "type": "http.response.start",
                    "status": 200,
                    "headers": [
                        (b"content-type", b"text/event-stream; charset=utf-8"),
                        (b"cache-control", b"no-cache, no-transform"),
                        (b"x-accel-buffering", b"no"),
                    ],
                }
            )
            listener = asyncio.create_task(_listen(receive, conn), name="parley-sse-listen")
            await self._pump(conn, send)
            await send({"type": "http.response.body", "body": b"", "more_body": False})
        except asyncio.CancelledError:
            if not aborted:
                raise
            if task is not None:
                task.uncancel()
        except OSError:
            pass  # the client went away mid-write
        finally:
            if listener is not None:
                listener.cancel()
            hub.detach(conn)

    async def _start(
        self, conn: Connection, before_live: Callable[[dict[str, int]], None]
    ) -> dict[str, int]:
        """Attach, and resume from ``Last-Event-ID``: each room's cursor. A cursor
        beyond a room's head is answered by an ``error`` event (``cursor_ahead``) and
        the room goes on live from where the connection stands."""
        hub = self.rt.hub
        cursors = dict(await hub.attach(conn, before_live))
        if self.last_event_id:
            resumed = decode_cursors(self.last_event_id, list(conn.rooms))
            result = await hub.resume(conn, resumed)
            for room_id, head in result.ahead.items():
                del resumed[room_id]
                conn.push(cursor_ahead_frame(room_id, head))
            cursors.update(resumed)
        return cursors

    async def _pump(self, conn: Connection, send: Send) -> None:
        interval = self.rt.settings.heartbeat_interval
        stats = self.rt.hub.stats
        await send(
            {"type": "http.response.body", "body": b"retry: %d\n\n" % RETRY_MS, "more_body": True}
        )
        while True:
            try:
                items = await asyncio.wait_for(conn.take(), interval)
            except TimeoutError:
                await send({"type": "http.response.body", "body": b": ping\n\n", "more_body": True})
                continue
            if not items:
                return
            conn.writing = True
            chunk = b"".join(self._format(item) for item in items)
            await send({"type": "http.response.body", "body": chunk, "more_body": True})
            conn.writing = False
            conn.sent += len(items)
            stats.frames_out += len(items)

    def _format(self, item: bytes | Fanout) -> bytes:
        if isinstance(item, Fanout):
            self._entries[item.room_id] = encode_entry(item.room_id, item.seq)
            event_id = join_entries(self._entries.values()).encode()
            return b"id: " + event_id + b"\ndata: " + item.frame + b"\n\n"
        event_id = join_entries(self._entries.values()).encode()
        name = str(codec.loads(item)["type"]).encode()
        return b"event: " + name + b"\nid: " + event_id + b"\ndata: " + item + b"\n\n"


async def _listen(receive: Receive, conn: Connection) -> None:
    """End the stream as soon as the client disconnects, even when it is idle."""
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            conn.close(CLOSE_TRY_AGAIN, "client gone", flush=False)
            return


async def _respond(send: Send, status: int, body: bytes) -> None:
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [(b"content-type", b"application/json")],
        }
    )
    await send({"type": "http.response.body", "body": body})


@router.get(
    PATH,
    tags=["events"],
    status_code=200,
    response_class=EventStream,
    responses={200: {"content": {"text/event-stream": {}}, "description": "An SSE stream."}},
)
async def event_stream(
    request: Request,
    authorization: Annotated[str | None, Header()] = None,
    last_event_id: Annotated[str | None, Header(alias="Last-Event-ID", max_length=65536)] = None,
    access_token: Annotated[str | None, Query(max_length=8192)] = None,
    last_event_id_query: Annotated[
        str | None, Query(alias="last_event_id", max_length=65536)
    ] = None,
) -> EventStream:
    """Every event of every room the caller is in, as Server-Sent Events; send the
    last ``id`` back as ``Last-Event-ID`` (or ``?last_event_id=``, for a new
    ``EventSource`` opened with a fresh token) to resume without loss."""
    rt: Runtime = request.app.state.runtime
    token = parse_bearer(authorization) or access_token
    if not token:
        raise Unauthorized("missing bearer token")
    claims = rt.tokens.verify_claims(token)
    if rt.hub.closing:
        raise Unavailable("the server is shutting down")
    return EventStream(rt, claims, last_event_id or last_event_id_query)
