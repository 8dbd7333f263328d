"""Live connections follow their token and their session, against a real node: a
WebSocket or SSE stream ends at its access token's expiry unless the client sends a
fresh token on it; a logout ends that session's connections, a password change
every other session's."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Iterator
from typing import Any

import httpx
import jwt
import pytest
from websockets.exceptions import ConnectionClosed, InvalidStatus

from parley.client import AuthError, ParleyClient
from parley.testing.server import ServerThread
from tests.realtime_support import (
    PASSWORD,
    TIMEOUT,
    closing,
    frames_until_closed,
    recv,
    recv_until,
    room,
    running_server,
    send_frame,
    user,
    ws_connect,
)

TTL = 3


@pytest.fixture(scope="module")
def node(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerThread]:
    with running_server(
        tmp_path_factory.mktemp("sessions"), rate_limits="off", access_token_ttl=TTL
    ) as server:
        yield server


@pytest.fixture(scope="module")
def asgi_node(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerThread]:
    """uvicorn's plain WebSocket protocol: the endpoint writes through ASGI ``send``."""
    with running_server(
        tmp_path_factory.mktemp("sessions-asgi"),
        rate_limits="off",
        access_token_ttl=TTL,
        asgi_websockets=True,
    ) as server:
        yield server


async def call(method: str, url: str, **kwargs: Any) -> httpx.Response:
    async with httpx.AsyncClient(timeout=TIMEOUT) as http:
        return await http.request(method.upper(), url, **kwargs)


def exp_of(token: str) -> float:
    return float(jwt.decode(token, options={"verify_signature": False})["exp"])


async def sleep_until(moment: float) -> None:
    await asyncio.sleep(max(0.0, moment - time.time()))


async def another_session(client: ParleyClient) -> ParleyClient:
    """The same user logged in again: a second refresh family."""
    second = ParleyClient(client.base_url)
    await second.login(client.username, PASSWORD)  # type: ignore[attr-defined]
    return second


async def test_an_expired_tokens_socket_gets_no_events_and_no_acks(node: ServerThread) -> None:
    alice, bob = await user(node.url, "a"), await user(node.url, "b")
    async with closing(alice, bob):
        room_id = await room(alice, bob)
        token = alice.access_token
        assert token is not None
        ws = await ws_connect(node.url, token)
        ready = await recv(ws)
        assert ready["type"] == "ready"
        await send_frame(ws, type="send", id="before", room_id=room_id, body="in time")
        acked = await recv_until(ws, lambda fr: fr["type"] == "ack")
        assert acked[-1]["id"] == "before"
        await sleep_until(exp_of(token) + 0.05)
        await bob.post_message(room_id, "after the expiry")
        with_stale = True
        try:
            await send_frame(ws, type="send", id="late", room_id=room_id, body="too late")
        except ConnectionClosed:
            with_stale = False
        frames, code = await frames_until_closed(ws)
        assert code == 1008 and ws.close_reason == "token_expired"
        assert frames, "an error frame precedes the close"
        assert frames[-1]["type"] == "error" and frames[-1]["code"] == "token_expired"
        assert not [fr for fr in frames if fr["type"] in ("ack", "event")], (frames, with_stale)
        listed = await bob.request("GET", f"/api/v1/rooms/{room_id}/messages")
        assert "too late" not in [m["body"] for m in listed["messages"]]
        metrics = (await call("get", f"{node.url}/metrics")).text
        name = "parley_tokens_expired_total"
        expired = [ln for ln in metrics.splitlines() if ln.startswith(name)]
        assert float(expired[0].split()[1]) >= 1


async def test_expiry_through_asgi_send(asgi_node: ServerThread) -> None:
    alice = await user(asgi_node.url, "a")
    async with closing(alice):
        token = alice.access_token
        assert token is not None
        ws = await ws_connect(asgi_node.url, token)
        assert (await recv(ws))["type"] == "ready"
        frames, code = await frames_until_closed(ws)
        assert code == 1008 and ws.close_reason == "token_expired"
        assert frames[-1]["code"] == "token_expired"
        assert time.time() >= exp_of(token) - 0.05


async def test_a_fresh_token_on_the_socket_keeps_it_open(node: ServerThread) -> None:
    alice, bob = await user(node.url, "a"), await user(node.url, "b")
    async with closing(alice, bob):
        room_id = await room(alice, bob)
        first = alice.access_token
        assert first is not None
        ws = await ws_connect(node.url, first)
        assert (await recv(ws))["type"] == "ready"
        await asyncio.sleep(1.1)  # the next token's exp is a later second
        fresh = (await alice.refresh()).access_token
        assert exp_of(fresh) > exp_of(first)
        await send_frame(ws, type="auth", id="re", token=fresh)
        ok = (await recv_until(ws, lambda fr: fr["type"] == "auth.ok"))[-1]
        assert ok["id"] == "re" and ok["expires_at"].endswith("Z")
        await sleep_until(exp_of(first) + 0.2)
        await bob.post_message(room_id, "still there")
        got = await recv_until(ws, lambda fr: fr["type"] == "event")
        assert got[-1]["event"]["message"]["body"] == "still there"
        await send_frame(ws, type="send", id="s", room_id=room_id, body="mine")
        assert (await recv_until(ws, lambda fr: fr["type"] == "ack"))[-1]["id"] == "s"
        frames, code = await frames_until_closed(ws)  # the fresh token's expiry
        assert code == 1008 and frames[-1]["code"] == "token_expired"
        assert time.time() >= exp_of(fresh) - 0.05


async def test_the_sdk_renews_its_token_on_the_open_socket(node: ServerThread) -> None:
    alice, bob = await user(node.url, "a"), await user(node.url, "b")
    async with closing(alice, bob):
        room_id = await room(alice, bob)
        first = alice.access_token
        assert first is not None
        async with alice.live() as live:
            await live.wait_ready()
            await sleep_until(exp_of(first) + TTL)  # past two token lifetimes
            await bob.post_message(room_id, "across renewals")
            async with asyncio.timeout(TIMEOUT):
                async for event in live:
                    message = event.get("message")
                    if isinstance(message, dict) and message["body"] == "across renewals":
                        break
            assert live.connects == 1
            assert alice.access_token != first


@pytest.mark.parametrize("whose", ["other user", "invalid"])
async def test_a_bad_token_on_the_socket_ends_it(node: ServerThread, whose: str) -> None:
    alice, bob = await user(node.url, "a"), await user(node.url, "b")
    async with closing(alice, bob):
        assert alice.access_token is not None
        ws = await ws_connect(node.url, alice.access_token)
        assert (await recv(ws))["type"] == "ready"
        token = bob.access_token if whose == "other user" else "not-a-token"
        await send_frame(ws, type="auth", id=7, token=token)
        frames, code = await frames_until_closed(ws)
        assert code == 1008
        assert frames[-1]["type"] == "error" and frames[-1]["id"] == 7
        assert frames[-1]["code"] == ("wrong_user" if whose == "other user" else "invalid_token")


async def read_stream(url: str, params: dict[str, str]) -> list[str]:
    """Every line of an SSE stream until the server ends it."""
    lines: list[str] = []
    async with (
        httpx.AsyncClient(timeout=TIMEOUT) as http,
        http.stream("GET", f"{url}/api/v1/events/stream", params=params) as response,
    ):
        assert response.status_code == 200
        async with asyncio.timeout(TIMEOUT):
            async for line in response.aiter_lines():
                lines.append(line)
    return lines


async def test_sse_ends_at_the_tokens_expiry_and_resumes_with_a_fresh_one(
    node: ServerThread,
) -> None:
    alice = await user(node.url, "a")
    async with closing(alice):
        room_id = await room(alice)
        token = alice.access_token
        assert token is not None
        lines = await read_stream(node.url, {"access_token": token})
        assert time.time() >= exp_of(token) - 0.05
        data = [json.loads(line[6:]) for line in lines if line.startswith("data: ")]
        assert data[0]["type"] == "ready"
        assert data[-1] == {
            "type": "error",
            "code": "token_expired",
            "message": data[-1]["message"],
        }
        last_id = [line[4:] for line in lines if line.startswith("id: ")][-1]
        await alice.post_message(room_id, "while away")  # the client refreshes first
        assert alice.access_token is not None and alice.access_token != token
        again = await read_stream(
            node.url, {"access_token": alice.access_token, "last_event_id": last_id}
        )
        events = [json.loads(line[6:]) for line in again if line.startswith("data: ")]
        bodies = [e["event"]["message"]["body"] for e in events if e.get("type") == "event"]
        assert bodies == ["while away"]


# logout and password change (a node with the default token lifetime)


@pytest.fixture(scope="module")
def long_node(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerThread]:
    with running_server(tmp_path_factory.mktemp("logout"), rate_limits="off") as server:
        yield server


async def alive(ws: Any) -> bool:
    await send_frame(ws, type="ping", id="alive")
    return (await recv_until(ws, lambda fr: fr["type"] == "pong"))[-1]["id"] == "alive"


async def test_revoke_ends_that_sessions_connections_only(long_node: ServerThread) -> None:
    url = long_node.url
    first = await user(url, "a")
    second = await another_session(first)
    async with closing(first, second):
        ws1 = await ws_connect(url, first.access_token)
        ws2 = await ws_connect(url, second.access_token)
        assert (await recv(ws1))["type"] == (await recv(ws2))["type"] == "ready"
        revoked = await first.request(
            "POST", "/api/v1/auth/revoke", auth=False, json={"token": first.refresh_token}
        )
        assert revoked == {"ok": True}
        frames, code = await frames_until_closed(ws1)
        assert code == 1008 and ws1.close_reason == "session_ended"
        assert frames[-1]["code"] == "session_ended"
        assert await alive(ws2)
        with pytest.raises(InvalidStatus) as refused:
            await ws_connect(url, first.access_token)
        assert refused.value.response.status_code == 401
        me = await call(
            "get",
            f"{url}/api/v1/users/me",
            headers={"Authorization": f"Bearer {first.access_token}"},
        )
        assert me.status_code == 401
        await ws2.close()


async def test_the_sdk_stops_for_good_when_its_session_is_logged_out(
    long_node: ServerThread,
) -> None:
    alice = await user(long_node.url, "a")
    async with closing(alice), alice.live() as live:
        await live.wait_ready()
        revoked = await call(
            "post", f"{long_node.url}/api/v1/auth/revoke", json={"token": alice.refresh_token}
        )
        assert revoked.status_code == 200
        with pytest.raises(AuthError):
            async with asyncio.timeout(TIMEOUT):
                await live.next_event()
        assert live.connects == 1


async def test_password_change_ends_every_other_session(long_node: ServerThread) -> None:
    url = long_node.url
    mine = await user(url, "a")
    other = await another_session(mine)
    async with closing(mine, other):
        ws_mine = await ws_connect(url, mine.access_token)
        ws_other = await ws_connect(url, other.access_token)
        assert (await recv(ws_mine))["type"] == (await recv(ws_other))["type"] == "ready"
        headers = {"Authorization": f"Bearer {mine.access_token}"}
        path = f"{url}/api/v1/users/me/password"
        wrong = await call(
            "post",
            path,
            headers=headers,
            json={"current_password": "nope", "new_password": "x" * 12},
        )
        assert wrong.status_code == 403 and wrong.json()["error"]["code"] == "wrong_password"
        short = await call(
            "post", path, headers=headers, json={"current_password": PASSWORD, "new_password": "x"}
        )
        assert short.status_code == 400 and short.json()["error"]["code"] == "invalid_password"
        assert await alive(ws_other)
        changed = await call(
            "post",
            path,
            headers=headers,
            json={"current_password": PASSWORD, "new_password": "a brand new passphrase"},
        )
        assert changed.status_code == 200, changed.text
        frames, code = await frames_until_closed(ws_other)
        assert code == 1008 and frames[-1]["code"] == "session_ended"
        assert await alive(ws_mine)
        refresh = await call(
            "post",
            f"{url}/api/v1/auth/token",
            data={"grant_type": "refresh_token", "refresh_token": other.refresh_token},
        )
        assert refresh.status_code == 400
        await mine.refresh()  # this session goes on
        login = await call(
            "post",
            f"{url}/api/v1/auth/token",
            data={
                "grant_type": "password",
                "username": mine.username,  # type: ignore[attr-defined]
                "password": "a brand new passphrase",
            },
        )
        assert login.status_code == 200
        await ws_mine.close()


async def test_the_token_response_is_never_cached(long_node: ServerThread) -> None:
    client = await user(long_node.url, "a")
    async with closing(client):
        response = await call(
            "post",
            f"{long_node.url}/api/v1/auth/token",
            data={
                "grant_type": "refresh_token",
                "refresh_token": client.refresh_token,
            },
        )
        assert response.status_code == 200
        assert response.headers["cache-control"] == "no-store"
        assert response.headers["pragma"] == "no-cache"
        bad = await call(
            "post",
            f"{long_node.url}/api/v1/auth/token",
            data={"grant_type": "refresh_token", "refresh_token": "nope"},
        )
        assert bad.status_code == 400
