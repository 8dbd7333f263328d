"""Rate limits, class by class: 429 with ``Retry-After`` on REST, an ``error``
frame ``rate_limited`` with ``retry_after_ms`` on the socket, and nothing changed
over the limit; the per-address classes key on the client address, which a
trusted proxy's ``X-Forwarded-For`` sets and nobody else's does; two nodes on one
Redis share the buckets.

The node trusts 127.0.0.1 as a proxy, so each test picks its own client address
with ``X-Forwarded-For`` and starts from full buckets.
"""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from parley.testing.server import ServerThread
from tests.component.conftest import assert_error
from tests.conftest import require_service
from tests.realtime_support import ws_connect

PASSWORD = "correct horse battery"
LIMITS: dict[str, Any] = {
    "rate_limits": "on",
    "trusted_proxies": "127.0.0.1",
    "rate_limit_send": "5/60",
    "rate_limit_edit": "4/60",
    "rate_limit_rooms": "3/60",
    "rate_limit_membership": "4/60",
    "rate_limit_read": "10/60",
    "rate_limit_typing": "3/60",
    "rate_limit_presence": "3/60",
    "rate_limit_register": "3/3600",
    "rate_limit_login": "6/300",
    "rate_limit_login_user": "3/300",
    "rate_limit_refresh": "3/60",
    "rate_limit_revoke": "3/60",
}


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerThread]:
    data_dir: Path = tmp_path_factory.mktemp("parley-rl")
    with ServerThread(data_dir, **LIMITS) as running:
        yield running


def address() -> str:
    """A client address of the documentation range nobody else in the test uses."""
    n = uuid.uuid4().int
    return f"198.51.{n % 256}.{(n >> 8) % 254 + 1}"


def client(server: ServerThread, ip: str | None = None, token: str | None = None) -> httpx.Client:
    headers = {"X-Forwarded-For": ip or address()}
    if token:
        headers["Authorization"] = f"Bearer {token}"
    return httpx.Client(base_url=server.url, headers=headers, timeout=30)


def login(http: httpx.Client, username: str, password: str = PASSWORD) -> httpx.Response:
    return http.post(
        "/api/v1/auth/token",
        data={"grant_type": "password", "username": username, "password": password},
    )


def new_user(server: ServerThread) -> tuple[str, dict[str, Any], httpx.Client]:
    """Register and log in from an address of its own: (username, tokens, client)."""
    username = f"u{uuid.uuid4().hex[:10]}"
    with client(server) as anon:
        r = anon.post("/api/v1/auth/register", json={"username": username, "password": PASSWORD})
        assert r.status_code == 201, r.text
        tokens = login(anon, username).json()
    return username, tokens, client(server, token=tokens["access_token"])


def until_limited(call: Any, most: int = 50) -> list[httpx.Response]:
    """Call until a 429 (at most ``most`` times); every answer, the 429 last."""
    answers: list[httpx.Response] = []
    while len(answers) < most:
        answers.append(call(len(answers)))
        if answers[-1].status_code == 429:
            return answers
    raise AssertionError(f"no 429 in {most} calls: {[a.status_code for a in answers]}")


def assert_limited(answer: httpx.Response) -> None:
    assert_error(answer, 429, "rate_limited")
    assert int(answer.headers["Retry-After"]) >= 1


def test_logins_for_one_account_from_one_address_are_limited(server: ServerThread) -> None:
    username, _, _ = new_user(server)
    with client(server) as guesser:
        answers = until_limited(lambda _: login(guesser, username, "wrong pw!"))
        assert [a.status_code for a in answers[:-1]] == [400] * 3
        assert_limited(answers[-1])
        assert_limited(login(guesser, username))  # even the right password waits
    # Keyed by address: the owner, elsewhere, is not locked out.
    with client(server) as owner:
        assert login(owner, username).status_code == 200


def test_password_spraying_across_usernames_is_limited(server: ServerThread) -> None:
    with client(server) as sprayer:
        answers = until_limited(lambda i: login(sprayer, f"nobody{i}{uuid.uuid4().hex[:6]}"))
    assert [a.status_code for a in answers[:-1]] == [400] * 6
    assert_limited(answers[-1])


def test_a_forwarded_for_from_an_untrusted_peer_is_ignored(tmp_path: Path) -> None:
    """Without trusted proxies, a client cannot pick a fresh identity per request."""
    settings = LIMITS | {"trusted_proxies": None}
    with (
        ServerThread(tmp_path, **settings) as node,
        httpx.Client(base_url=node.url, timeout=30) as anon,
    ):
        r = anon.post("/api/v1/auth/register", json={"username": "vic", "password": PASSWORD})
        assert r.status_code == 201
        answers = until_limited(
            lambda _: anon.post(
                "/api/v1/auth/token",
                headers={"X-Forwarded-For": address()},
                data={"grant_type": "password", "username": "vic", "password": "bad pw!!"},
            )
        )
    assert len(answers) == 4


def test_only_the_right_most_untrusted_hop_counts(server: ServerThread) -> None:
    """What a client writes into ``X-Forwarded-For`` sits left of what the trusted
    proxy appended: varying it does not give a fresh identity."""
    username, _, _ = new_user(server)
    real = address()
    with httpx.Client(base_url=server.url, timeout=30) as raw:
        answers = until_limited(
            lambda _: raw.post(
                "/api/v1/auth/token",
                headers={"X-Forwarded-For": f"{address()}, {real}, 127.0.0.1"},
                data={"grant_type": "password", "username": username, "password": "bad pw!!"},
            )
        )
    assert len(answers) == 4


def test_registrations_per_address_are_limited(server: ServerThread) -> None:
    with client(server) as anon:
        answers = until_limited(
            lambda _: anon.post(
                "/api/v1/auth/register",
                json={"username": f"r{uuid.uuid4().hex[:10]}", "password": PASSWORD},
            )
        )
    assert [a.status_code for a in answers[:-1]] == [201] * 3
    assert_limited(answers[-1])


def test_refreshes_and_revocations_per_address_are_limited(server: ServerThread) -> None:
    with client(server) as anon:
        refreshes = until_limited(
            lambda _: anon.post(
                "/api/v1/auth/token",
                data={"grant_type": "refresh_token", "refresh_token": "not-a-token"},
            )
        )
        revokes = until_limited(lambda _: anon.post("/api/v1/auth/revoke", json={"token": "x"}))
    assert len(refreshes) == 4
    assert len(revokes) == 4
    assert_limited(revokes[-1])


def test_sends_are_limited_and_nothing_is_stored_over_the_limit(server: ServerThread) -> None:
    _, _, alice = new_user(server)
    with alice:
        room = alice.post("/api/v1/rooms", json={"name": "rl"}).json()["id"]
        answers = until_limited(
            lambda i: alice.post(f"/api/v1/rooms/{room}/messages", json={"body": f"m{i}"})
        )
        assert_limited(answers[-1])
        stored = alice.get(f"/api/v1/rooms/{room}/messages").json()["messages"]
    assert len(stored) == 5


def test_edits_deletions_and_reactions_share_a_limit(server: ServerThread) -> None:
    _, _, alice = new_user(server)
    with alice:
        room = alice.post("/api/v1/rooms", json={"name": "edits"}).json()["id"]
        msg = alice.post(f"/api/v1/rooms/{room}/messages", json={"body": "v1"}).json()
        base = f"/api/v1/rooms/{room}/messages/{msg['id']}"
        assert alice.put(f"{base}/reactions/%F0%9F%91%8D").status_code == 200
        assert alice.delete(f"{base}/reactions/%F0%9F%91%8D").status_code == 200
        version = msg["version"]
        for i in range(2):
            r = alice.patch(base, json={"body": f"edit {i}", "version": version})
            assert r.status_code == 200, r.text
            version = r.json()["version"]
        over = alice.patch(base, json={"body": "too many", "version": version})
        assert_limited(over)
        assert_limited(alice.delete(base))
        current = alice.get(f"/api/v1/rooms/{room}/messages").json()["messages"][0]
    assert current["body"] == "edit 1"
    assert current["version"] == version


def test_room_creation_is_limited(server: ServerThread) -> None:
    _, _, alice = new_user(server)
    with alice:
        answers = until_limited(lambda i: alice.post("/api/v1/rooms", json={"name": f"r{i}"}))
        assert [a.status_code for a in answers[:-1]] == [201] * 3
        assert_limited(answers[-1])
        rooms = alice.get("/api/v1/rooms").json()["rooms"]
    assert len(rooms) == 3


def test_membership_changes_are_limited(server: ServerThread) -> None:
    _, _, owner = new_user(server)
    _, _, bob = new_user(server)
    with owner, bob:
        room = owner.post("/api/v1/rooms", json={"name": "m", "visibility": "public"}).json()
        answers = until_limited(
            lambda i: bob.post(f"/api/v1/rooms/{room['id']}/{'join' if i % 2 == 0 else 'leave'}")
        )
        assert [a.status_code for a in answers[:-1]] == [200] * 4
        assert_limited(answers[-1])


def test_rest_reads_are_limited(server: ServerThread) -> None:
    _, _, alice = new_user(server)
    with alice:
        answers = until_limited(lambda _: alice.get("/api/v1/users/me"))
    assert [a.status_code for a in answers[:-1]] == [200] * 10
    assert_limited(answers[-1])


async def test_typing_and_presence_frames_are_limited(server: ServerThread) -> None:
    _, tokens, alice = new_user(server)
    with alice:
        room = alice.post("/api/v1/rooms", json={"name": "typing"}).json()["id"]
    ws = await ws_connect(server.url, tokens["access_token"])
    try:
        for kind, frame in (
            ("typing", {"type": "typing", "room_id": room}),
            ("presence", {"type": "presence.set", "status": "idle"}),
        ):
            for i in range(4):
                await ws.send(json.dumps(frame | {"id": f"{kind}{i}"}))
            error = await _error_for(ws, f"{kind}3")
            assert error["code"] == "rate_limited"
            assert error["retry_after_ms"] >= 1
    finally:
        await ws.close()


async def _error_for(ws: Any, frame_id: str) -> dict[str, Any]:
    async with asyncio.timeout(10):
        while True:
            frame = json.loads(await ws.recv())
            if frame.get("type") == "error":
                assert frame.get("id") == frame_id, frame
                return dict(frame)


def test_two_nodes_on_one_redis_share_the_buckets(tmp_path: Path) -> None:
    require_service("redis")
    shared = LIMITS | {"cache_url": "redis://127.0.0.1:6379/0"}
    with ServerThread(tmp_path, **shared) as one, ServerThread(tmp_path, **shared) as two:
        _, tokens, alice = new_user(one)
        room = alice.post("/api/v1/rooms", json={"name": "two"}).json()["id"]
        alice.close()
        with client(one, token=tokens["access_token"]) as on_one:
            for i in range(3):
                sent = on_one.post(f"/api/v1/rooms/{room}/messages", json={"body": f"a{i}"})
                assert sent.status_code == 201
        with client(two, token=tokens["access_token"]) as on_two:
            answers = until_limited(
                lambda i: on_two.post(f"/api/v1/rooms/{room}/messages", json={"body": f"b{i}"})
            )
    assert len(answers) == 3  # two left of five, then 429
