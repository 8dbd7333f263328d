"""A WebSocket frame fuzzer: batches of generated hostile frames on one
authenticated connection; after every batch that connection, and a fresh one,
still get normal service (a send is acked *and* its event delivered), the server
thread is alive, and nothing was logged at ERROR or with a traceback.

Bounded (300 batches, ~15 s here); the counts are printed. Frames that
end a connection by design (invalid UTF-8, over the size limit, a flood) have
tests of their own; this one keeps to frames a connection must survive.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import Iterator
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from websockets.sync.client import ClientConnection
from websockets.sync.client import connect as sync_connect

from parley.protocol.frames import CLIENT_FRAME_TYPES
from tests.realtime_support import TIMEOUT, closing, room, running_server, user

BATCHES = 300
SERVER_FRAME_TYPES = {"ready", "event", "ack", "error", "typing", "presence", "resumed", "pong"}


class Problems(logging.Handler):
    """Records at ERROR or with a traceback, from any logger it is attached to."""

    def __init__(self) -> None:
        super().__init__()
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        if record.levelno >= logging.ERROR or record.exc_info:
            self.records.append(record)


@pytest.fixture(scope="module")
def target(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    problems = Problems()
    loggers = [logging.getLogger(name) for name in ("parley", "uvicorn.error", "uvicorn")]
    for logger in loggers:
        logger.addHandler(problems)
    with running_server(tmp_path_factory.mktemp("wsfuzz"), rate_limits="off") as server:
        token, room_id = asyncio.run(_account(server.url))
        state: dict[str, Any] = {
            "server": server,
            "token": token,
            "room": room_id,
            "ws": None,
            "problems": problems.records,
            "batches": 0,
            "frames": 0,
            "probes": 0,
        }
        yield state
        if state["ws"] is not None:
            state["ws"].close()
    for logger in loggers:
        logger.removeHandler(problems)
    print(
        f"\nWebSocket fuzz: {state['batches']} batches, {state['frames']} hostile frames, "
        f"{state['probes']} probe sends acked and delivered"
    )


async def _account(url: str) -> tuple[str, str]:
    client = await user(url, "wsfuzz")
    async with closing(client):
        room_id = await room(client)
        assert client.access_token is not None
        return client.access_token, room_id


def _connect(state: dict[str, Any]) -> ClientConnection:
    ws = sync_connect(
        state["server"].ws_url,
        additional_headers={"Authorization": f"Bearer {state['token']}"},
        compression=None,
        max_size=None,
        legacy=True,
    )
    ready = json.loads(ws.recv(timeout=TIMEOUT))
    assert ready["type"] == "ready"
    return ws


def _probe(state: dict[str, Any], ws: ClientConnection) -> None:
    """A send on ``ws``: its ack, and its event on the same connection."""
    state["probes"] += 1
    probe_id = f"probe-{time.monotonic_ns()}"
    body = f"probe body {probe_id}"
    ws.send(json.dumps({"type": "send", "id": probe_id, "room_id": state["room"], "body": body}))
    acked = delivered = False
    deadline = time.monotonic() + TIMEOUT
    while not (acked and delivered):
        frame = json.loads(ws.recv(timeout=max(0.1, deadline - time.monotonic())))
        assert isinstance(frame, dict) and frame.get("type") in SERVER_FRAME_TYPES, frame
        if frame["type"] == "ack" and frame.get("id") == probe_id:
            assert frame["message"]["body"] == body
            acked = True
        elif frame["type"] == "event" and frame["event"].get("room_id") == state["room"]:
            delivered = delivered or probe_id in json.dumps(frame["event"])
        elif frame["type"] == "error":
            assert frame.get("id") != probe_id, frame


json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-(2**70), 2**70)
    | st.floats(allow_nan=False)
    | st.text(max_size=50),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children)
    ),
    max_leaves=12,
)
fields = st.dictionaries(
    st.sampled_from(
        ["id", "room_id", "body", "cursors", "seq", "user_ids", "status", "client_msg_id", "token"]
    ),
    json_values,
    max_size=5,
)
hostile = st.one_of(
    st.text(max_size=200),
    st.binary(max_size=200),
    json_values.map(json.dumps),
    st.integers(1, 5_000).map(lambda n: "[" * n + "]" * n),
    st.builds(
        lambda t, f: json.dumps({"type": t, **f}),
        st.sampled_from([*sorted(CLIENT_FRAME_TYPES), "nope", "", "ack", "event"]),
        fields,
    ),
    # Real frame shapes with hostile values, aimed at the real room.
    st.builds(
        lambda room_marker, body, cmid: json.dumps(
            {"type": "send", "room_id": room_marker, "body": body, "client_msg_id": cmid}
        ),
        st.just("ROOM"),
        st.text(max_size=300),
        st.none() | st.text(max_size=70),
    ),
    st.builds(lambda seq: json.dumps({"type": "read", "room_id": "ROOM", "seq": seq}), json_values),
    st.just(json.dumps({"type": "typing", "room_id": "ROOM"})),
)


@settings(
    max_examples=BATCHES,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(batch=st.lists(hostile, min_size=1, max_size=20))
def test_fuzzed_frames_leave_the_connection_and_the_node_serving(
    target: dict[str, Any], batch: list[str | bytes]
) -> None:
    state = target
    if state["ws"] is None:
        state["ws"] = _connect(state)
    ws: ClientConnection = state["ws"]
    for frame in batch:
        if isinstance(frame, str):
            frame = frame.replace('"ROOM"', json.dumps(state["room"]))
        ws.send(frame)
    state["batches"] += 1
    state["frames"] += len(batch)
    _probe(state, ws)
    fresh = _connect(state)
    try:
        _probe(state, fresh)
    finally:
        fresh.close()
    assert state["server"]._thread is not None and state["server"]._thread.is_alive()
    assert state["problems"] == [], [r.getMessage() for r in state["problems"]]
