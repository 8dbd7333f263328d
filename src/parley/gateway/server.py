"""Run the app under uvicorn with the stack measured fastest here (measured on 2 cores):
uvloop, httptools, the sans-I/O ``websockets`` implementation, no per-message
compression (it costs ~300 KiB per connection and most of the CPU)."""

from __future__ import annotations

import asyncio
import contextlib
import errno
import gc
import logging
import signal
import socket
import time
from typing import Any, Final

import uvicorn
from fastapi import FastAPI
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol
from uvicorn.protocols.websockets.websockets_sansio_impl import WebSocketsSansIOProtocol

from parley.gateway import ws
from parley.gateway.app import create_app
from parley.gateway.hub import Hub
from parley.gateway.limits import LOG_EVERY, ConnectionLimits, TrustedProxies
from parley.protocol import codec
from parley.settings import Settings

GC_YOUNG_THRESHOLD = 7_000
"""Allocations between young collections (CPython's default: 700). A chat node
allocates a few objects per frame, nearly all short-lived; ten times fewer young
collections promote fewer in-flight objects into the older generations."""


GC_FREEZE_GROWTH = 1_000
"""Connections gained before the hub freezes again (``Hub.refreeze_gc``)."""


def tune_gc(hub: Hub | None = None) -> None:
    """Once the node is up: move everything alive (modules, the app, the ORM's
    caches: ~130,000 objects) out of the collector's sight, so that a full
    collection, which ran for ~90 ms here, walks only what the node made since;
    and have ``hub`` do the same for connections as they accumulate."""
    gc.collect()
    gc.freeze()
    _, older, oldest = gc.get_threshold()
    gc.set_threshold(GC_YOUNG_THRESHOLD, older, oldest)
    if hub is not None:
        hub.gc_freeze_growth = GC_FREEZE_GROWTH


_REFUSED = codec.dumps(
    {"error": {"code": "unavailable", "message": "too many connections; retry later"}}
)
_TIMED_OUT = codec.dumps(
    {"error": {"code": "request_timeout", "message": "the request took too long to arrive"}}
)
_MALFORMED = codec.dumps({"error": {"code": "bad_request", "message": "malformed HTTP request"}})


def _raw_response(status: bytes, body: bytes, extra: bytes = b"") -> bytes:
    return (
        b"HTTP/1.1 " + status + b"\r\ncontent-type: application/json\r\n"
        b"content-length: %d\r\nconnection: close\r\n" % len(body) + extra + b"\r\n" + body
    )


class ParleyConfig(uvicorn.Config):
    """uvicorn's config, carrying what ``HttpProtocol`` enforces per connection."""

    limits: ConnectionLimits | None = None
    request_timeout: float | None = None

    def load(self) -> None:
        super().load()
        ws_class = self.ws_protocol_class
        if (
            ws_class is not None
            and issubclass(ws_class, WebSocketsSansIOProtocol)
            and not issubclass(ws_class, _CountedWebSocket)
        ):
            self.ws_protocol_class = type(
                f"Counted{ws_class.__name__}", (_CountedWebSocket, ws_class), {}
            )


class _CountedWebSocket(WebSocketsSansIOProtocol):
    """Mixed into the WebSocket protocol: gives the connection's slot in
    ``ConnectionLimits`` back when it closes (the HTTP protocol that counted it
    handed its transport over at the upgrade and hears nothing more); and marks a
    refused upgrade's HTTP answer as the end of the handshake, which uvicorn
    forgets, logging an error for every refusal."""

    parley_slot: tuple[ConnectionLimits, str] | None = None

    def connection_lost(self, exc: Exception | None) -> None:
        slot = self.parley_slot
        if slot is not None:
            self.parley_slot = None
            slot[0].close(slot[1])
        super().connection_lost(exc)

    async def send(self, message: Any) -> None:
        await super().send(message)
        if message["type"] == "websocket.http.response.body" and not message.get("more_body"):
            self.handshake_complete = True


class QuietClientErrors(logging.Filter):
    """uvicorn's log lines about what a client got wrong, which any client can
    repeat at will: a text frame of invalid UTF-8 (an ERROR with a traceback per
    frame), an upgrade to anything but WebSocket and a malformed request (a WARNING
    per request). Each becomes one INFO line without traceback, at most once a
    minute."""

    QUIETED: Final = {
        "Invalid UTF-8 sequence received from client.": (
            "a client sent invalid UTF-8 in a WebSocket text frame: closed 1007"
        ),
        "Unsupported upgrade request.": "a client asked to upgrade to an unsupported protocol",
        "Invalid HTTP request received.": "a client sent a malformed HTTP request: answered 400",
    }

    def __init__(self) -> None:
        super().__init__()
        self.last: dict[str, float] = {}

    def filter(self, record: logging.LogRecord) -> bool:
        quiet = self.QUIETED.get(record.msg) if isinstance(record.msg, str) else None
        if quiet is None:
            return True
        now = time.monotonic()
        if now - self.last.get(quiet, -LOG_EVERY) < LOG_EVERY:
            return False
        self.last[quiet] = now
        record.msg, record.args = quiet + " (logged once a minute)", ()
        record.levelno, record.levelname = logging.INFO, "INFO"
        record.exc_info, record.exc_text = None, None
        return True


def quiet_client_errors() -> None:
    """Install ``QuietClientErrors`` on uvicorn's error logger, once."""
    logger = logging.getLogger("uvicorn.error")
    if not any(isinstance(f, QuietClientErrors) for f in logger.filters):
        logger.addFilter(QuietClientErrors())


class HttpProtocol(HttpToolsProtocol):
    """uvicorn's httptools protocol, with the connection caps and a deadline for
    each request, and without leaving a reference cycle behind for every WebSocket.

    uvicorn times out idle keep-alive connections, but nothing else: a client that
    connects and says nothing, or sends a request a byte at a time, holds its socket
    for ever (slowloris). Here a request (headers and body) must arrive within
    ``request_timeout`` of its first byte, or of the connection's start; else the
    connection is answered 408 and closed.

    The reference cycle: uvicorn's parser holds its bound callbacks, a cycle uvicorn
    breaks in ``connection_lost``, which never comes to a protocol that handed its
    transport over to a WebSocket protocol. Broken at the upgrade instead, it is
    freed there, not by the next full collection."""

    def __init__(self, config: uvicorn.Config, *args: Any, **kwargs: Any) -> None:
        super().__init__(config, *args, **kwargs)
        self.limits = config.limits if isinstance(config, ParleyConfig) else None
        self.request_timeout = config.request_timeout if isinstance(config, ParleyConfig) else None
        self.deadline: asyncio.TimerHandle | None = None
        self.slot: str | None = None

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        if self.limits is not None:
            ip = self.client[0] if self.client else ""
            if self.limits.open(ip) is not None:
                transport.write(
                    _raw_response(b"503 Service Unavailable", _REFUSED, b"retry-after: 5\r\n")
                )
                transport.close()
                return
            self.slot = ip
        self._arm()

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm()
        slot, self.slot = self.slot, None
        if slot is not None and self.limits is not None:
            self.limits.close(slot)
        super().connection_lost(exc)

    def _arm(self) -> None:
        if self.deadline is None and self.request_timeout is not None:
            self.deadline = self.loop.call_later(self.request_timeout, self._timed_out)

    def _disarm(self) -> None:
        if self.deadline is not None:
            self.deadline.cancel()
            self.deadline = None

    def _timed_out(self) -> None:
        self.deadline = None
        if self.transport.is_closing():
            return
        if self.cycle is None or self.cycle.response_complete:
            self.transport.write(_raw_response(b"408 Request Timeout", _TIMED_OUT))
        self.transport.close()

    def send_400_response(self, msg: str) -> None:
        """A request the parser refused (a NUL in a header, a broken request line):
        400 in the API's error shape, not uvicorn's plain text."""
        self._disarm()
        self.transport.write(_raw_response(b"400 Bad Request", _MALFORMED))
        self.transport.close()

    def on_message_begin(self) -> None:
        self._arm()
        super().on_message_begin()

    def on_message_complete(self) -> None:
        self._disarm()
        super().on_message_complete()

    def handle_websocket_upgrade(self) -> None:
        self._disarm()
        super().handle_websocket_upgrade()
        self.parser = None  # type: ignore[assignment]
        slot, self.slot = self.slot, None
        if slot is not None and self.limits is not None:
            protocol = self.transport.get_protocol()
            if isinstance(protocol, _CountedWebSocket):
                protocol.parley_slot = (self.limits, slot)
            else:
                self.limits.close(slot)


class ParleyServer(uvicorn.Server):
    """uvicorn, but a stop (SIGTERM, SIGINT) drains first: ``/readyz`` turns 503
    (``draining``) at once, the listening sockets close, the sends already
    accepted finish, and WebSockets are closed with 1012 (service restart) and SSE
    streams ended, so clients reconnect to another node at once and resume; then
    uvicorn closes what is left, within ``PARLEY_DRAIN_SECONDS`` in all. The
    collector is tuned once the server has started (``tune_gc``)."""

    async def startup(self, sockets: Any = None) -> None:
        await super().startup(sockets)
        if self.started:
            hub = None
            if isinstance(self.config.app, FastAPI):
                runtime = getattr(self.config.app.state, "runtime", None)
                hub = runtime.hub if runtime is not None else None
            tune_gc(hub)

    async def shutdown(self, sockets: Any = None) -> None:
        app = self.config.app
        runtime = getattr(app.state, "runtime", None) if isinstance(app, FastAPI) else None
        if runtime is not None:
            runtime.hub.closing = True
            for server in self.servers:
                server.close()
            await runtime.hub.drain(runtime.settings.drain_seconds / 2)
        await super().shutdown(sockets)


def uvicorn_config(settings: Settings) -> ParleyConfig:
    limits = ConnectionLimits(
        max_connections=settings.max_connections,
        max_per_ip=settings.max_connections_per_ip,
        max_unauthenticated_ws_per_ip=settings.max_unauthenticated_ws_per_ip,
        trusted=TrustedProxies(settings.proxies),
    )
    app = create_app(settings)
    app.state.connection_limits = limits
    config = ParleyConfig(
        app,
        host=settings.host,
        port=settings.port,
        loop="uvloop",
        http=HttpProtocol,
        lifespan="on",
        log_level=settings.log_level,
        access_log=False,
        server_header=False,
        timeout_graceful_shutdown=max(1, round(settings.drain_seconds / 2)),
        timeout_keep_alive=settings.keepalive_timeout,
        # Forwarded headers only from the configured proxies (uvicorn's default
        # believes any loopback peer), right-most untrusted hop first.
        proxy_headers=bool(settings.proxies),
        forwarded_allow_ips=settings.proxies or None,
        ssl_certfile=str(settings.tls_cert) if settings.tls_cert else None,
        ssl_keyfile=str(settings.tls_key) if settings.tls_key else None,
        **ws.uvicorn_ws_options(settings),
    )
    config.limits = limits
    config.request_timeout = settings.request_timeout
    quiet_client_errors()
    return config


FILES_IN_RESERVE = 256
"""Open files a node needs besides its connections: database, bus, cache, logs."""


def _raise_open_files(max_connections: int) -> None:
    """One open file per connection: take the whole hard limit, not the soft one
    (often 1,024), so a node's connection count is what the operator allowed; and
    say so if ``PARLEY_MAX_CONNECTIONS`` is more than the limit leaves room for
    (accept() would fail instead of the cap answering 503)."""
    try:
        import resource
    except ImportError:  # not on this platform
        return
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard != resource.RLIM_INFINITY and soft < hard:
        with contextlib.suppress(OSError, ValueError):
            resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft != resource.RLIM_INFINITY and max_connections > soft - FILES_IN_RESERVE:
        logging.getLogger("parley").warning(
            "PARLEY_MAX_CONNECTIONS=%d but only %d files may be open: "
            "raise the limit (ulimit -n) or lower the setting",
            max_connections,
            soft,
        )


class ServeError(Exception):
    """The node cannot start for a reason its operator can fix (the message says how)."""


def bind(settings: Settings) -> socket.socket:
    """The listening socket, bound before anything else starts, so a port in use is
    found before migrations run and before anything says the node is ready."""
    try:
        family, kind, proto, _, address = socket.getaddrinfo(
            settings.host, settings.port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE
        )[0]
    except socket.gaierror as exc:
        raise ServeError(
            f"cannot listen on host {settings.host!r} ({exc.strerror}): "
            "give an address of this machine with --host or PARLEY_HOST"
        ) from None
    sock = socket.socket(family, kind, proto)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind(address)
    except OSError as exc:
        sock.close()
        where = f"{settings.host} port {settings.port}"
        if exc.errno == errno.EADDRINUSE:
            raise ServeError(
                f"{where} is already in use (another Parley?): "
                "choose another with --port or PARLEY_PORT"
            ) from None
        if exc.errno == errno.EACCES:
            raise ServeError(
                f"not allowed to listen on {where}: use a port above 1023 (--port)"
            ) from None
        raise ServeError(
            f"cannot listen on {where} ({exc.strerror}): check --host and --port"
        ) from None
    sock.set_inheritable(True)
    return sock


def serve(settings: Settings) -> int:
    """Serve until SIGINT or SIGTERM, then shut down cleanly and exit 0.

    uvicorn re-raises the stop signal once it has shut down; with these handlers in
    place that re-raise is a no-op instead of the default kill, so a clean stop is a
    zero exit status that supervisors do not report as a crash.
    """
    for stop in (signal.SIGINT, signal.SIGTERM):
        signal.signal(stop, lambda *_: None)
    sock = bind(settings)
    _raise_open_files(settings.max_connections)
    server = ParleyServer(uvicorn_config(settings))
    try:
        server.run(sockets=[sock])
    finally:
        sock.close()
    return 0 if server.started else 1
