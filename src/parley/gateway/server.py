"""Run the app under uvicorn with the stack measured fastest here (FIELD-NOTES):
uvloop, httptools, the sans-I/O ``websockets`` implementation, no per-message
compression (it costs ~300 KiB per connection and most of the CPU)."""

from __future__ import annotations

import signal

import uvicorn

from parley.gateway.app import create_app
from parley.settings import Settings


def uvicorn_config(settings: Settings) -> uvicorn.Config:
    return uvicorn.Config(
        create_app(settings),
        host=settings.host,
        port=settings.port,
        loop="uvloop",
        http="httptools",
        ws="websockets-sansio",
        ws_max_size=settings.max_frame_bytes,
        ws_per_message_deflate=False,
        ws_ping_interval=None,
        lifespan="on",
        log_level=settings.log_level,
        access_log=False,
        server_header=False,
        timeout_graceful_shutdown=10,
    )


def serve(settings: Settings) -> int:
    """Serve until SIGINT or SIGTERM, then shut down cleanly and exit 0.

    uvicorn re-raises the stop signal once it has shut down; with these handlers in
    place that re-raise is a no-op instead of the default kill, so a clean stop is a
    zero exit status that supervisors do not report as a crash.
    """
    for stop in (signal.SIGINT, signal.SIGTERM):
        signal.signal(stop, lambda *_: None)
    server = uvicorn.Server(uvicorn_config(settings))
    server.run()
    return 0 if server.started else 1
