"""A real Parley node on an ephemeral port, in a background thread.

Tests, the benchmark and bot authors use it to talk to a real server over real HTTP
and WebSocket connections, with no mocks.
"""

from __future__ import annotations

import threading
import time
from pathlib import Path
from types import TracebackType
from typing import Any

import uvicorn

from parley.gateway.server import ParleyServer, uvicorn_config
from parley.settings import Settings

FAST_TEST_SETTINGS: dict[str, Any] = {
    # Argon2 at OWASP strength costs ~30 ms a hash; tests create many users.
    "argon2_time_cost": 1,
    "argon2_memory_kib": 1024,
}


class ServerThread:
    """``with ServerThread(data_dir) as server: server.url`` runs one node.

    ``asgi_websockets=True`` serves WebSockets with uvicorn's plain protocol, as any
    ASGI server would: the endpoint then writes through ASGI ``send`` instead of
    the direct socket (both paths are tested). ``loop="uvloop"`` runs it on the
    event loop ``parley serve`` uses, instead of asyncio's."""

    def __init__(
        self,
        data_dir: Path,
        *,
        asgi_websockets: bool = False,
        loop: str = "asyncio",
        **settings: Any,
    ) -> None:
        values: dict[str, Any] = {"data_dir": data_dir, "port": 0, "log_level": "warning"}
        self.settings = Settings.model_validate(values | FAST_TEST_SETTINGS | settings)
        self.asgi_websockets = asgi_websockets
        self.loop = loop
        self._server: uvicorn.Server | None = None
        self._thread: threading.Thread | None = None
        self.port = 0

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def ws_url(self) -> str:
        return f"ws://127.0.0.1:{self.port}/api/v1/ws"

    def start(self, timeout: float = 20.0) -> ServerThread:
        config = uvicorn_config(self.settings)
        config.loop = self.loop
        if self.asgi_websockets:
            config.ws = "websockets-sansio"
        server = ParleyServer(config)
        self._server = server
        self._thread = threading.Thread(target=server.run, name="parley-server", daemon=True)
        self._thread.start()
        deadline = time.monotonic() + timeout
        while not server.started:
            if not self._thread.is_alive() or time.monotonic() > deadline:
                raise RuntimeError("the Parley test server did not start")
            time.sleep(0.01)
        self.port = server.servers[0].sockets[0].getsockname()[1]
        return self

    def stop(self, timeout: float = 20.0) -> None:
        if self._server is not None and self._thread is not None:
            self._server.should_exit = True
            self._thread.join(timeout)
        self._server = None
        self._thread = None

    def __enter__(self) -> ServerThread:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()
