"""The WebSocket's edges against a real node: authentication, Origin, hostile
frames (a hypothesis fuzz), frame limits, rate limits, heartbeats."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from websockets.exceptions import ConnectionClosed, InvalidStatus
from websockets.frames import Frame, Opcode
from websockets.sync.client import ClientConnection as SyncConnection
from websockets.sync.client import connect as sync_connect

import parley.gateway.ws as ws_module
from parley.gateway.ws import origin_allowed
from parley.protocol.frames import CLIENT_FRAME_TYPES
from parley.testing.server import ServerThread
from tests.realtime_support import (
    TIMEOUT,
    Proxy,
    closing,
    frames_until_closed,
    poll_until,
    recv,
    recv_until,
    room,
    running_server,
    send_frame,
    uid,
    user,
    ws_connect,
)

SERVER_FRAME_TYPES = {"ready", "event", "ack", "error", "typing", "presence", "resumed", "pong"}


@pytest.fixture(scope="module")
def node(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerThread]:
    with running_server(tmp_path_factory.mktemp("wsp"), rate_limits="off") as server:
        yield server


# authentication


async def test_header_auth_with_a_bad_token_is_refused_before_the_upgrade(
    node: ServerThread,
) -> None:
    with pytest.raises(InvalidStatus) as info:
        await ws_connect(node.url, "not-a-token")
    response = info.value.response
    assert response.status_code == 401
    assert json.loads(response.body or b"")["error"]["code"] == "invalid_token"


async def test_first_frame_auth(node: ServerThread) -> None:
    alice = await user(node.url, "alice")
    async with closing(alice):
        ws = await ws_connect(node.url)
        try:
            await send_frame(ws, type="ping", id="early")
            assert await recv(ws) == {"type": "pong", "id": "early"}
            await send_frame(ws, type="send", id=1, room_id="r", body="x")
            refused = await recv(ws)
            assert (refused["code"], refused["id"]) == ("unauthorized", 1)
            await send_frame(ws, type="auth", id="a", token=alice.access_token)
            ready = await recv(ws)
            assert ready["type"] == "ready" and ready["user_id"] == alice.user_id  # type: ignore[attr-defined]
            assert ready["heartbeat_interval_ms"] > 0 and isinstance(ready["session_id"], str)
            await send_frame(ws, type="auth", id="b", token=alice.access_token)
            ok = await recv(ws)
            assert (ok["type"], ok["id"]) == ("auth.ok", "b") and ok["expires_at"].endswith("Z")
        finally:
            await ws.close()


async def test_first_frame_auth_with_a_bad_token_closes_1008(node: ServerThread) -> None:
    ws = await ws_connect(node.url)
    await send_frame(ws, type="auth", id="a", token="forged")
    error = await recv(ws)
    assert (error["type"], error["code"], error["id"]) == ("error", "invalid_token", "a")
    with pytest.raises(ConnectionClosed) as info:
        await recv(ws)
    assert info.value.rcvd is not None and info.value.rcvd.code == 1008


async def test_authentication_is_due_within_the_time_limit(
    node: ServerThread, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(ws_module, "AUTH_TIMEOUT", 0.3)
    ws = await ws_connect(node.url)
    with pytest.raises(ConnectionClosed) as info:
        await recv(ws)
    assert info.value.rcvd is not None
    assert (info.value.rcvd.code, info.value.rcvd.reason) == (1008, "authentication timeout")


# origin


async def test_origin_is_checked_on_the_upgrade(node: ServerThread) -> None:
    alice = await user(node.url, "alice")
    async with closing(alice):
        with pytest.raises(InvalidStatus) as info:
            await ws_connect(node.url, alice.access_token, origin="https://evil.example")
        assert info.value.response.status_code == 403
        own = await ws_connect(node.url, alice.access_token, origin=node.url)
        assert (await recv(own))["type"] == "ready"
        await own.close()


@pytest.mark.parametrize(
    ("origin", "host", "allowed", "ok"),
    [
        (None, "chat.example", [], True),
        ("https://chat.example", "chat.example", [], True),
        ("https://chat.example:443", "chat.example", [], True),
        ("http://chat.example", "chat.example:80", [], True),
        ("http://127.0.0.1:8000", "127.0.0.1:8000", [], True),
        ("http://127.0.0.1:8001", "127.0.0.1:8000", [], False),
        ("https://evil.example", "chat.example", [], False),
        ("null", "chat.example", [], False),
        ("https://app.example", "chat.example", ["https://app.example"], True),
        ("https://APP.example/", "chat.example", ["https://app.example"], True),
        ("https://chat.example", "chat.example", ["https://app.example"], False),
    ],
)
def test_origin_rule(origin: str | None, host: str, allowed: list[str], ok: bool) -> None:
    assert origin_allowed(origin, host, allowed) is ok


def test_origin_rule_accepts_the_public_url() -> None:
    assert origin_allowed("https://chat.example", "10.0.0.5:8000", [], "https://chat.example/")


# hostile frames


@pytest.fixture(scope="module")
def fuzz_socket(node: ServerThread) -> Iterator[dict[str, Any]]:
    """One authenticated synchronous socket, reopened when a frame closes it."""
    token = asyncio.run(_token(node.url))
    state: dict[str, Any] = {"url": node.ws_url, "token": token, "ws": None}
    yield state
    if state["ws"] is not None:
        state["ws"].close()


async def _token(url: str) -> str:
    client = await user(url, "fuzz")
    async with closing(client):
        await room(client)
        assert client.access_token is not None
        return client.access_token


def _open(state: dict[str, Any]) -> SyncConnection:
    if state["ws"] is None:
        ws = sync_connect(
            state["url"],
            additional_headers={"Authorization": f"Bearer {state['token']}"},
            compression=None,
            max_size=None,
            legacy=True,
        )
        assert json.loads(ws.recv(timeout=TIMEOUT))["type"] == "ready"
        state["ws"] = ws
    conn: SyncConnection = state["ws"]
    return conn


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(),
    lambda children: st.lists(children, max_size=5) | st.dictionaries(st.text(), children),
    max_leaves=25,
)
hostile = st.one_of(
    st.text(max_size=300),
    st.binary(max_size=300),
    json_values.map(json.dumps),
    st.integers(1, 30_000).map(lambda n: "[" * n + "]" * n),
    st.integers(1, 10_000).map(lambda n: '{"type":"ping","x":' + '{"a":' * n + "1" + "}" * n + "}"),
    st.builds(
        lambda t, fields: json.dumps({"type": t, **fields}),
        st.sampled_from([*sorted(CLIENT_FRAME_TYPES - {"auth"}), "nope", "", "EVENT"]),
        st.dictionaries(
            st.sampled_from(["id", "room_id", "body", "cursors", "seq", "user_ids", "status"]),
            json_values,
            max_size=5,
        ),
    ),
)


@settings(
    max_examples=120,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(frame=hostile)
def test_hostile_frames_get_error_frames_and_never_break_the_connection(
    fuzz_socket: dict[str, Any], frame: str | bytes
) -> None:
    ws = _open(fuzz_socket)
    probe = f"probe-{time.monotonic_ns()}"
    ws.send(frame)
    ws.send(json.dumps({"type": "ping", "id": probe}))
    answers = []
    while True:
        answer = json.loads(ws.recv(timeout=TIMEOUT))
        assert isinstance(answer, dict) and answer.get("type") in SERVER_FRAME_TYPES, answer
        if answer == {"type": "pong", "id": probe}:
            break
        answers.append(answer)
    kinds = [a["type"] for a in answers]
    known = _is_known_frame(frame) if isinstance(frame, str) else False
    # ``None``: deeper than Python's own parser goes, which is no rule of the
    # protocol; such a frame may be answered either way, as long as it is answered.
    if known is False:
        assert kinds[:1] == ["error"], (frame, answers)
        assert isinstance(answers[0]["code"], str) and isinstance(answers[0]["message"], str)


def _is_known_frame(frame: str) -> bool | None:
    try:
        value = json.loads(frame)
    except RecursionError:
        return None
    except ValueError:
        return False
    return isinstance(value, dict) and value.get("type") in CLIENT_FRAME_TYPES


async def test_frames_are_carried_out_in_the_order_sent(node: ServerThread) -> None:
    """Frames that wait (a presence subscription: the first one reads the store for
    each of alice's 30 rooms; typing) and frames carried out as they are read, in
    writes of their own or together: every answer comes in the order asked."""
    alice, bob, stranger = [await user(node.url, n) for n in ("alice", "bob", "stranger")]
    async with closing(alice, bob, stranger):
        room_id = await room(alice, bob)
        for _ in range(29):
            await room(alice)
        ws = await ws_connect(node.url, alice.access_token)
        try:
            await recv(ws)

            def write(*frames: dict[str, Any]) -> None:
                ws.transport.write(
                    b"".join(
                        Frame(Opcode.TEXT, json.dumps(frame).encode()).serialize(mask=True)
                        for frame in frames
                    )
                )

            subscribe = {"type": "presence.subscribe", "user_ids": [uid(stranger)]}
            write({**subscribe, "id": "s"})
            await asyncio.sleep(0.002)  # the subscription is reading the store
            write({"type": "ping", "id": "p"})
            asked = ["s", "p"]
            batch: list[dict[str, Any]] = []
            for i in range(20):
                batch.append({**subscribe, "id": f"s{i}"})
                batch.append({"type": "ping", "id": f"p{i}"})
                batch.append({"type": "typing", "room_id": room_id, "id": f"t{i}"})
                batch.append({"type": "ping", "id": f"q{i}"})
                asked += [f"s{i}", f"p{i}", f"q{i}"]
            write(*batch)
            got = await recv_until(ws, lambda frame: frame.get("id") == "q19")
            assert [frame["id"] for frame in got if frame.get("id") in asked] == asked
            assert all(frame["code"] == "forbidden" for frame in got if frame["type"] == "error")
        finally:
            await ws.close()


async def test_a_frame_over_the_limit_closes_1009_and_the_server_carries_on(
    node: ServerThread,
) -> None:
    alice = await user(node.url, "alice")
    async with closing(alice):
        ws = await ws_connect(node.url, alice.access_token, max_size=None)
        await recv(ws)
        await ws.send('{"type":"ping","pad":"' + "x" * 70_000 + '"}')
        with pytest.raises(ConnectionClosed) as info:
            await recv(ws)
        assert info.value.rcvd is not None and info.value.rcvd.code == 1009
        again = await ws_connect(node.url, alice.access_token)
        assert (await recv(again))["type"] == "ready"
        await again.close()


async def test_rate_limited_frames_then_close_on_a_flood(tmp_path: Path) -> None:
    with running_server(tmp_path, frames_per_second=5) as server:
        alice = await user(server.url, "alice")
        async with closing(alice):
            ws = await ws_connect(server.url, alice.access_token)
            await recv(ws)
            for i in range(40):
                await send_frame(ws, type="ping", id=i)
            frames, close = await frames_until_closed(ws)
            assert close == 1008
            assert [f["id"] for f in frames if f["type"] == "pong"] == [0, 1, 2, 3, 4]
            limited = [f for f in frames if f["type"] == "error"]
            assert limited and all(f["code"] == "rate_limited" for f in limited)
            assert all(f["retry_after"] > 0 for f in limited)


# heartbeats


async def _ws_connections(url: str) -> float:
    async with httpx.AsyncClient() as http:
        text = (await http.get(f"{url}/metrics")).text
    line = next(x for x in text.splitlines() if x.startswith('parley_connections{transport="ws"}'))
    return float(line.split()[1])


async def test_silent_and_half_open_connections_are_closed_after_two_intervals(
    tmp_path: Path,
) -> None:
    interval = 0.4
    with running_server(tmp_path, heartbeat_interval=interval) as server:
        alice = await user(server.url, "alice")
        async with closing(alice), Proxy(server.port) as proxy:
            healthy = await ws_connect(server.url, alice.access_token, ping_interval=None)
            silent = await ws_connect(proxy.url, alice.access_token, ping_interval=None)
            for ws in (healthy, silent):
                assert (await recv(ws))["type"] == "ready"
            assert await _ws_connections(server.url) == 2
            muted_at = time.monotonic()
            proxy.mute()  # no pong comes back, no FIN either: a half-open link
            await poll_until(lambda: _ws_connections(server.url), 1)
            waited = time.monotonic() - muted_at
            assert interval <= waited <= 2 * interval + 2.0
            # The healthy client answered every ping (the library does) and stays.
            await send_frame(healthy, type="ping", id="still-here")
            frames = await recv_until(healthy, lambda f: f.get("id") == "still-here")
            assert frames[-1]["type"] == "pong"
            await healthy.close()
