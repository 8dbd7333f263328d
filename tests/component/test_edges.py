"""The smaller holes an attacker (or a fuzzer) finds: loose types at the edge,
wrong methods under the web client's mount, ``/metrics`` for all, any ``Host``,
a CSP open to any WebSocket host, invisible characters in names, and log lines
any client can multiply."""

from __future__ import annotations

import asyncio
import logging
import socket
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed

from parley.testing.server import ServerThread
from tests.component.conftest import Api, assert_error

UPGRADE = (
    b"GET /api/v1/ws HTTP/1.1\r\nHost: %s\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
    b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n%s\r\n"
)


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerThread]:
    data_dir: Path = tmp_path_factory.mktemp("parley-edges")
    with ServerThread(data_dir, rate_limits="off", trusted_proxies="127.0.0.1") as running:
        yield running


@pytest.fixture(scope="module")
def public(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerThread]:
    """A node that knows its public URL, and has a metrics token."""
    data_dir: Path = tmp_path_factory.mktemp("parley-public")
    with ServerThread(
        data_dir,
        rate_limits="off",
        public_url="https://chat.example.com",
        metrics_token="s3cret-metrics",
        metrics_allow="192.0.2.0/24",
    ) as running:
        yield running


class Records(logging.Handler):
    """What a logger emits (uvicorn's loggers do not propagate to the root)."""

    def __init__(self) -> None:
        super().__init__()
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


@pytest.fixture
def uvicorn_log() -> Iterator[list[logging.LogRecord]]:
    logger = logging.getLogger("uvicorn.error")
    handler = Records()
    logger.addHandler(handler)
    yield handler.records
    logger.removeHandler(handler)


def raw_exchange(port: int, request: bytes) -> bytes:
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        sock.sendall(request)
        answer = b""
        while chunk := sock.recv(4096):
            answer += chunk
            if b"\r\n\r\n" in answer and b"}" in answer:
                break
        return answer


@pytest.mark.parametrize("seq", [False, True, "0", "1", 0.5, 1e-9, None, [1], {"n": 1}])
def test_integers_are_strict(api: Api, seq: object) -> None:
    alice = api.user()
    room = alice.post("/api/v1/rooms", json={"name": "strict"}).json()["id"]
    alice.post(f"/api/v1/rooms/{room}/messages", json={"body": "one"})
    before = alice.get("/api/v1/rooms").json()["rooms"][0]["read_seq"]
    assert_error(alice.put(f"/api/v1/rooms/{room}/read", json={"seq": seq}), 422, "invalid_input")
    assert alice.get("/api/v1/rooms").json()["rooms"][0]["read_seq"] == before
    assert alice.put(f"/api/v1/rooms/{room}/read", json={"seq": 1}).status_code == 200


def test_before_and_after_seq_together_are_the_window_between(api: Api) -> None:
    alice = api.user()
    room = alice.post("/api/v1/rooms", json={"name": "window"}).json()["id"]
    seqs = [
        alice.post(f"/api/v1/rooms/{room}/messages", json={"body": f"m{i}"}).json()["seq"]
        for i in range(5)
    ]
    page = alice.get(
        f"/api/v1/rooms/{room}/messages", params={"after_seq": seqs[0], "before_seq": seqs[3]}
    ).json()
    assert [m["seq"] for m in page["messages"]] == seqs[1:3]
    assert page["has_more"] is False
    empty = alice.get(f"/api/v1/rooms/{room}/messages", params={"after_seq": 0, "before_seq": 0})
    assert empty.status_code == 200 and empty.json()["messages"] == []


def test_integral_numbers_are_integers(api: Api) -> None:
    """JSON Schema's ``integer``, which the document promises: ``1.0`` is 1."""
    alice = api.user()
    room = alice.post("/api/v1/rooms", json={"name": "integral"}).json()["id"]
    seq = alice.post(f"/api/v1/rooms/{room}/messages", json={"body": "one"}).json()["seq"]
    r = alice.put(
        f"/api/v1/rooms/{room}/read",
        content=b'{"seq": %d.0}' % seq,
        headers={"content-type": "application/json"},
    )
    assert r.status_code == 200, r.text
    assert r.json() == {"read_seq": seq}


@pytest.mark.parametrize("body", [b"[]", b'[{"name": "x"}]', b'"name"', b"42", b"null"])
def test_json_of_the_wrong_shape_is_422_not_malformed(api: Api, body: bytes) -> None:
    alice = api.user()
    r = alice.post("/api/v1/rooms", content=body, headers={"content-type": "application/json"})
    assert_error(r, 422, "invalid_input")
    assert alice.get("/api/v1/rooms").json()["rooms"] == []


def test_malformed_json_is_still_400(api: Api) -> None:
    alice = api.user()
    r = alice.post("/api/v1/rooms", content=b"{nope", headers={"content-type": "application/json"})
    assert_error(r, 400, "malformed_json")


@pytest.mark.parametrize(
    ("method", "path", "allow"),
    [
        ("GET", "/api/v1/auth/token", "POST"),
        ("OPTIONS", "/api/v1/rooms", "GET, POST"),
        ("DELETE", "/api/v1/rooms", "GET, POST"),
        ("PUT", "/api/v1/rooms/00000000-0000-4000-8000-000000000000/messages", "GET, POST"),
        ("PATCH", "/api/v1/rooms/public", "GET"),
    ],
)
def test_wrong_methods_on_api_paths_are_405_with_the_paths_allow(
    api: Api, method: str, path: str, allow: str
) -> None:
    r = api.anon.request(method, path)
    assert_error(r, 405, "method_not_allowed")
    assert r.headers["allow"] == allow


def test_unknown_api_paths_are_404_and_the_web_client_is_still_served(api: Api) -> None:
    assert_error(api.anon.get("/api/v1/nothing-here"), 404, "not_found")
    # Ids are UUIDs: anything else in their place is no path of the API.
    assert_error(api.anon.patch("/api/v1/rooms/not-an-id"), 404, "not_found")
    page = api.anon.get("/")
    assert page.status_code == 200
    assert page.headers["content-type"].startswith("text/html")


def test_metrics_from_loopback_but_not_from_elsewhere(server: ServerThread) -> None:
    with httpx.Client(base_url=server.url, timeout=10) as http:
        assert http.get("/metrics").status_code == 200
        # Through the trusted proxy, on behalf of a client out there:
        outside = http.get("/metrics", headers={"X-Forwarded-For": "203.0.113.9"})
    assert_error(outside, 403, "forbidden")


def test_metrics_with_the_token_from_anywhere(public: ServerThread) -> None:
    host = {"Host": "chat.example.com"}
    with httpx.Client(base_url=public.url, timeout=10, headers=host) as http:
        assert_error(http.get("/metrics"), 403, "forbidden")  # loopback not allowed here
        wrong = http.get("/metrics", headers={"Authorization": "Bearer nope"})
        assert_error(wrong, 403, "forbidden")
        right = http.get("/metrics", headers={"Authorization": "Bearer s3cret-metrics"})
    assert right.status_code == 200
    assert "parley_" in right.text


def test_host_must_be_the_public_one(public: ServerThread) -> None:
    with httpx.Client(base_url=public.url, timeout=10) as http:
        ok = http.get("/api/v1/rooms/public", headers={"Host": "chat.example.com"})
        assert_error(ok, 401)  # served (and asks for a token)
        ok_port = http.get("/api/v1/rooms/public", headers={"Host": "chat.example.com:443"})
        assert_error(ok_port, 401)
        rebound = http.get("/api/v1/rooms/public", headers={"Host": "evil.example"})
        assert_error(rebound, 421, "misdirected_request")
        # Health probes dial an address, not the public name.
        assert http.get("/healthz", headers={"Host": "10.0.0.7:8000"}).status_code == 200
    answer = raw_exchange(public.port, UPGRADE % (b"evil.example", b""))
    assert answer.startswith(b"HTTP/1.1 421 ")


def test_csp_connect_src_names_the_servers_own_origin(
    server: ServerThread, public: ServerThread
) -> None:
    with httpx.Client(base_url=server.url, timeout=10) as http:
        csp = http.get("/").headers["content-security-policy"]
    own = f"127.0.0.1:{server.port}"
    assert f"connect-src 'self' ws://{own} wss://{own};" in csp
    assert " ws: " not in csp and "wss:;" not in csp
    with httpx.Client(base_url=public.url, timeout=10) as http:
        csp = http.get("/", headers={"Host": "chat.example.com"}).headers["content-security-policy"]
    assert "connect-src 'self' wss://chat.example.com;" in csp
    with httpx.Client(base_url=server.url, timeout=10) as http:
        odd = http.get("/", headers={"Host": "x; script-src *"}).headers["content-security-policy"]
    assert "connect-src 'self';" in odd


@pytest.mark.parametrize(
    "name",
    ["gnp\u202eexe.png", "a\u200bb", "\u2066admin\u2069", "x\ufeff", "left\u200fright"],
)
def test_names_refuse_bidi_overrides_and_zero_width_characters(api: Api, name: str) -> None:
    r = api.anon.post(
        "/api/v1/auth/register",
        json={
            "username": f"n{uuid.uuid4().hex[:10]}",
            "password": "correct horse battery",
            "display_name": name,
        },
    )
    assert_error(r, 400)
    alice = api.user()
    assert_error(alice.post("/api/v1/rooms", json={"name": name}), 400)
    assert alice.get("/api/v1/rooms").json()["rooms"] == []


def test_joiners_that_scripts_need_are_kept(api: Api) -> None:
    alice = api.user()
    for name in ("\u0645\u06cc\u200c\u0634\u0648\u062f", "family \U0001f468\u200d\U0001f469"):
        r = alice.post("/api/v1/rooms", json={"name": name})
        assert r.status_code == 201, r.text
        assert r.json()["name"] == name


async def test_invalid_utf8_is_closed_1007_with_one_quiet_line(
    server: ServerThread, uvicorn_log: list[logging.LogRecord]
) -> None:
    for _ in range(10):
        ws = await connect(server.ws_url, compression=None)
        await ws.send(b"\xff\xfe not utf-8", text=True)
        with pytest.raises(ConnectionClosed) as closed:
            await asyncio.wait_for(ws.recv(), 5)
        assert closed.value.rcvd is not None
        assert closed.value.rcvd.code == 1007
    await asyncio.sleep(0.2)  # the server's last log lines, from its thread
    assert [r for r in uvicorn_log if r.levelno >= logging.WARNING] == []
    assert [r for r in uvicorn_log if r.exc_info] == []
    utf8 = [r for r in uvicorn_log if "UTF-8" in r.getMessage()]
    assert len(utf8) <= 1  # once a minute, for the whole process


def test_refused_upgrades_log_no_error(
    server: ServerThread, uvicorn_log: list[logging.LogRecord]
) -> None:
    host = b"127.0.0.1:%d" % server.port
    bad_origin = raw_exchange(server.port, UPGRADE % (host, b"Origin: http://evil.example\r\n"))
    assert bad_origin.startswith(b"HTTP/1.1 403 ")
    bad_token = raw_exchange(server.port, UPGRADE % (host, b"Authorization: Bearer nope\r\n"))
    assert bad_token.startswith(b"HTTP/1.1 401 ")
    time.sleep(0.2)  # uvicorn logs after the answer is out, from the server's thread
    assert [r for r in uvicorn_log if r.levelno >= logging.WARNING] == []
