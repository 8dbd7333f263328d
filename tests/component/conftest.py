"""A real node (uvicorn on an ephemeral port, SQLite in a temp dir) per test module,
and a small client that speaks its REST API."""

from __future__ import annotations

import contextlib
import os
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from parley.testing.postgres import fresh_database
from parley.testing.server import ServerThread
from tests.conftest import require_service


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerThread]:
    data_dir: Path = tmp_path_factory.mktemp("parley")
    # Tests register hundreds of users from one address; test_rate_limits covers limits.
    with ServerThread(data_dir, rate_limits="off") as running:
        yield running


@contextlib.contextmanager
def node_on(database: str, data_dir: Path, name: str, **kw: Any) -> Iterator[ServerThread]:
    """A node on SQLite (``database`` "sqlite"), or on a PostgreSQL database of its own,
    made as ``name…`` and dropped afterwards: the data dir's master key must open the
    database's data keys, and a shared database may hold others'."""
    if database == "sqlite":
        with ServerThread(data_dir, rate_limits="off", **kw) as running:
            yield running
        return
    require_service("postgres")
    admin = os.environ.get("PARLEY_TEST_POSTGRES", "postgresql://postgres@127.0.0.1:5432/test")
    with (
        fresh_database(admin, name) as url,
        ServerThread(data_dir, rate_limits="off", database_url=url, **kw) as running,
    ):
        yield running


@dataclass
class Account:
    """A registered user with a logged-in client."""

    id: str
    username: str
    password: str
    http: httpx.Client
    access_token: str
    refresh_token: str

    def get(self, path: str, **kw: Any) -> httpx.Response:
        return self.http.get(path, **kw)

    def post(self, path: str, **kw: Any) -> httpx.Response:
        return self.http.post(path, **kw)

    def put(self, path: str, **kw: Any) -> httpx.Response:
        return self.http.put(path, **kw)

    def patch(self, path: str, **kw: Any) -> httpx.Response:
        return self.http.patch(path, **kw)

    def delete(self, path: str, **kw: Any) -> httpx.Response:
        return self.http.delete(path, **kw)


class Api:
    """Registers users against ``server`` and hands out authenticated clients."""

    def __init__(self, server: ServerThread) -> None:
        self.server = server
        self.anon = httpx.Client(base_url=server.url, timeout=30)
        self._clients: list[httpx.Client] = [self.anon]

    def user(self, prefix: str = "u") -> Account:
        username = f"{prefix}{uuid.uuid4().hex[:10]}"
        password = "correct horse battery"
        r = self.anon.post(
            "/api/v1/auth/register", json={"username": username, "password": password}
        )
        assert r.status_code == 201, r.text
        user_id = r.json()["user"]["id"]
        tokens = self.login(username, password)
        http = httpx.Client(
            base_url=self.server.url,
            timeout=30,
            headers={"Authorization": f"Bearer {tokens['access_token']}"},
        )
        self._clients.append(http)
        return Account(
            user_id, username, password, http, tokens["access_token"], tokens["refresh_token"]
        )

    def login(self, username: str, password: str) -> dict[str, Any]:
        r = self.anon.post(
            "/api/v1/auth/token",
            data={"grant_type": "password", "username": username, "password": password},
        )
        assert r.status_code == 200, r.text
        body: dict[str, Any] = r.json()
        return body

    def close(self) -> None:
        for client in self._clients:
            client.close()


@pytest.fixture
def api(server: ServerThread) -> Iterator[Api]:
    client = Api(server)
    yield client
    client.close()


def assert_error(response: httpx.Response, status: int, code: str | None = None) -> None:
    """The API's error shape, with the expected status (and code, if given)."""
    assert response.status_code == status, response.text
    body = response.json()
    assert set(body) == {"error"}, body
    assert isinstance(body["error"]["code"], str) and body["error"]["code"]
    assert isinstance(body["error"]["message"], str)
    if code is not None:
        assert body["error"]["code"] == code, body


@pytest.fixture(scope="module")
def fuzz_target(server: ServerThread) -> Iterator[tuple[httpx.Client, str]]:
    """An authenticated client and a room of its own, shared by hypothesis examples."""
    api = Api(server)
    user = api.user("fz")
    room = user.post("/api/v1/rooms", json={"name": "fuzz"}).json()["id"]
    yield user.http, room
    api.close()
