"""The parts of uvicorn that are not its public API but that Parley builds on
(``gateway/direct.py``, ``gateway/server.py``, ``testing/server.py``). An upgrade
that moves one fails here, naming it, rather than at a connection's first frame.
``pyproject.toml`` pins uvicorn to the releases that have them all."""

from __future__ import annotations

import importlib
import inspect
import re
from importlib.metadata import version

import pytest

SANSIO = "uvicorn.protocols.websockets.websockets_sansio_impl.WebSocketsSansIOProtocol"
HTTPTOOLS = "uvicorn.protocols.http.httptools_impl.HttpToolsProtocol"
SERVER = "uvicorn.server.Server"

METHODS = {
    # DirectWebSocketProtocol overrides or calls these (keepalive ones since 0.44).
    SANSIO: (
        "data_received",
        "send_receive_event_to_app",
        "start_keepalive",
        "stop_keepalive",
        "handle_pong",
        "schedule_ping",
        "send_keepalive_ping",
        "send",
        "handle_connect",
        "on_task_complete",
        "resume_writing",
        "connection_lost",
    ),
    HTTPTOOLS: ("handle_websocket_upgrade", "send_400_response"),
    SERVER: ("run", "startup", "shutdown"),
}

ATTRIBUTES = {
    # set by uvicorn's own code, read or replaced by ours
    SANSIO: (
        "queue",
        "frames",
        "curr_msg_data_type",
        "close_sent",
        "conn",
        "transport",
        "handshake_complete",
        "request",
        "response",
        "scope",
        "writable",
        "disconnected",
        "ping_interval",
        "loop",
    ),
    HTTPTOOLS: ("parser",),
    SERVER: ("servers", "started", "should_exit"),
}


def resolve(dotted: str) -> type:
    module, _, name = dotted.rpartition(".")
    try:
        cls: type = getattr(importlib.import_module(module), name)
    except (ImportError, AttributeError):
        pytest.fail(f"uvicorn {version('uvicorn')} has no {dotted}: pin uvicorn below it")
    return cls


@pytest.mark.parametrize("dotted", sorted(METHODS))
def test_methods_we_override_exist(dotted: str) -> None:
    cls = resolve(dotted)
    missing = [name for name in METHODS[dotted] if not callable(getattr(cls, name, None))]
    assert not missing, f"uvicorn {version('uvicorn')}: {dotted} lost {missing}"


@pytest.mark.parametrize("dotted", sorted(ATTRIBUTES))
def test_attributes_we_use_are_still_set(dotted: str) -> None:
    source = "".join(
        inspect.getsource(c) for c in resolve(dotted).__mro__ if c.__module__.startswith("uvicorn")
    )
    missing = [
        name for name in ATTRIBUTES[dotted] if not re.search(rf"self\.{name}\b[^=\n]*=", source)
    ]
    assert not missing, f"uvicorn {version('uvicorn')}: {dotted} no longer sets {missing}"


def test_server_run_takes_bound_sockets() -> None:
    """``parley serve`` binds its port first and hands the socket over."""
    assert "sockets" in inspect.signature(resolve(SERVER).run).parameters
