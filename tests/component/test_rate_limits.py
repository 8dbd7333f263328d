"""Rate limits answer 429 with ``Retry-After`` and change nothing."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from parley.testing.server import ServerThread
from tests.component.conftest import Api, assert_error


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerThread]:
    data_dir: Path = tmp_path_factory.mktemp("parley-rl")
    with ServerThread(data_dir, rate_limits="on") as running:
        yield running


def test_login_attempts_are_limited(api: Api) -> None:
    alice = api.user()
    statuses: list[int] = []
    while 429 not in statuses and len(statuses) < 25:
        r = api.anon.post(
            "/api/v1/auth/token",
            data={"grant_type": "password", "username": alice.username, "password": "wrong pw!"},
        )
        statuses.append(r.status_code)
    assert statuses[0] == 400
    assert statuses[-1] == 429
    limited = api.anon.post(
        "/api/v1/auth/token",
        data={"grant_type": "password", "username": alice.username, "password": alice.password},
    )
    assert_error(limited, 429, "rate_limited")
    assert int(limited.headers["Retry-After"]) >= 1


def test_sends_are_limited_and_nothing_is_stored_over_the_limit(api: Api) -> None:
    alice = api.user()
    room = alice.post("/api/v1/rooms", json={"name": "rl"}).json()["id"]
    codes: list[int] = []
    # Fixed 10 s windows: a burst may straddle two, so allow up to two windows' worth.
    while 429 not in codes and len(codes) < 130:
        r = alice.post(f"/api/v1/rooms/{room}/messages", json={"body": f"m{len(codes)}"})
        codes.append(r.status_code)
    assert 429 in codes
    assert codes.count(201) <= 120
    stored = alice.get(f"/api/v1/rooms/{room}/messages", params={"limit": 200}).json()
    assert len(stored["messages"]) == codes.count(201)
