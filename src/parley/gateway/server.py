"""Run the app under uvicorn with the stack measured fastest here (FIELD-NOTES):
uvloop, httptools, the sans-I/O ``websockets`` implementation, no per-message
compression (it costs ~300 KiB per connection and most of the CPU)."""

from __future__ import annotations

import contextlib
import errno
import gc
import signal
import socket
from typing import Any

import uvicorn
from fastapi import FastAPI
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from parley.gateway import ws
from parley.gateway.app import create_app
from parley.gateway.hub import Hub
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


class HttpProtocol(HttpToolsProtocol):
    """uvicorn's httptools protocol, without leaving a reference cycle behind for
    every WebSocket: its parser holds its bound callbacks, a cycle uvicorn breaks
    in ``connection_lost``, which never comes to a protocol that handed its
    transport over to a WebSocket protocol. Broken at the upgrade instead, it is
    freed there, not by the next full collection."""

    def handle_websocket_upgrade(self) -> None:
        super().handle_websocket_upgrade()
        self.parser = None  # type: ignore[assignment]


class ParleyServer(uvicorn.Server):
    """uvicorn, but WebSockets and SSE streams are told 1001 (going away) before
    uvicorn closes what is left, so clients reconnect elsewhere and resume; and
    the collector is tuned once it has started (``tune_gc``)."""

    async def startup(self, sockets: Any = None) -> None:
        await super().startup(sockets)
        if self.started:
            hub = None
            if isinstance(self.config.app, FastAPI):
                runtime = getattr(self.config.app.state, "runtime", None)
                hub = runtime.hub if runtime is not None else None
            tune_gc(hub)

    async def shutdown(self, sockets: Any = None) -> None:
        if isinstance(self.config.app, FastAPI):
            await ws.drain(self.config.app)
        await super().shutdown(sockets)


def uvicorn_config(settings: Settings) -> uvicorn.Config:
    app = create_app(settings)
    config = uvicorn.Config(
        app,
        host=settings.host,
        port=settings.port,
        loop="uvloop",
        http=HttpProtocol,
        lifespan="on",
        log_level=settings.log_level,
        access_log=False,
        server_header=False,
        timeout_graceful_shutdown=10,
        **ws.uvicorn_ws_options(settings),
    )
    return config


def _raise_open_files() -> None:
    """One open file per connection: take the whole hard limit, not the soft one
    (often 1,024), so a node's connection count is what the operator allowed."""
    try:
        import resource
    except ImportError:  # not on this platform
        return
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard != resource.RLIM_INFINITY and soft < hard:
        with contextlib.suppress(OSError, ValueError):
            resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))


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
    _raise_open_files()
    server = ParleyServer(uvicorn_config(settings))
    try:
        server.run(sockets=[sock])
    finally:
        sock.close()
    return 0 if server.started else 1
