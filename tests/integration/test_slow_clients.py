"""Slow, idle, half-sent and numerous connections against a real node, over raw
sockets: each is closed within the configured time, the caps refuse the surplus
with 503 (logged once per address), and a normal client is served throughout.

The attackers connect from 127.0.0.1; the normal client from 127.0.0.2 (Linux
routes all of 127/8 to the loopback), so the per-address cap does not apply to it.
"""

from __future__ import annotations

import asyncio
import logging
import socket
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from websockets.exceptions import ConnectionClosed

from parley.testing.server import ServerThread
from tests.realtime_support import ws_connect

REQUEST_TIMEOUT = 1.0
KEEPALIVE = 1
SLACK = 2.0
"""Seconds allowed beyond a timeout for the timer, the close and a loaded machine."""
PER_IP = 100
ATTACKERS = 2000


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerThread]:
    data_dir: Path = tmp_path_factory.mktemp("parley-slow")
    with ServerThread(
        data_dir,
        request_timeout=REQUEST_TIMEOUT,
        keepalive_timeout=KEEPALIVE,
        max_connections_per_ip=PER_IP,
        max_unauthenticated_ws_per_ip=3,
        rate_limits="off",
    ) as running:
        yield running


def raw(server: ServerThread) -> socket.socket:
    sock = socket.create_connection(("127.0.0.1", server.port), timeout=10)
    return sock


def wait_closed(sock: socket.socket, limit: float) -> tuple[float, bytes]:
    """Seconds until the server closes ``sock``, and what it said before."""
    start = time.monotonic()
    sock.settimeout(limit)
    said = b""
    try:
        while chunk := sock.recv(4096):
            said += chunk
    except TimeoutError:
        raise AssertionError(f"still open after {limit} s") from None
    except ConnectionResetError:
        pass
    return time.monotonic() - start, said


def get_healthz(sock: socket.socket) -> bytes:
    """One ``GET /healthz`` over ``sock``: the whole answer."""
    sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
    answer = b""
    while not answer.endswith(b'{"status":"ok"}'):
        chunk = sock.recv(4096)
        assert chunk, f"closed after {answer!r}"
        answer += chunk
    return answer


def normal_client(server: ServerThread) -> httpx.Client:
    transport = httpx.HTTPTransport(local_address="127.0.0.2")
    return httpx.Client(base_url=server.url, transport=transport, timeout=10)


def test_a_silent_connection_is_closed_after_the_request_timeout(server: ServerThread) -> None:
    with raw(server) as sock:
        took, said = wait_closed(sock, REQUEST_TIMEOUT + SLACK)
    assert took >= REQUEST_TIMEOUT * 0.9
    assert said.startswith(b"HTTP/1.1 408 ")
    assert b'"request_timeout"' in said


def test_a_partial_header_then_silence_is_closed(server: ServerThread) -> None:
    with raw(server) as sock:
        sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Slow: ")
        took, said = wait_closed(sock, REQUEST_TIMEOUT + SLACK)
    assert said.startswith(b"HTTP/1.1 408 ")
    assert took < REQUEST_TIMEOUT + SLACK


def test_headers_trickled_byte_by_byte_are_cut_off(server: ServerThread) -> None:
    request = b"GET /healthz HTTP/1.1\r\nHost: x\r\n" + b"X-Pad: " + b"a" * 200 + b"\r\n\r\n"
    start = time.monotonic()
    closed = False
    with raw(server) as sock:
        for byte in request:
            try:
                sock.sendall(bytes([byte]))
            except OSError:
                closed = True
                break
            time.sleep(0.05)  # the attack is the pacing: 20 bytes a second
            if time.monotonic() - start > REQUEST_TIMEOUT + SLACK:
                break
        if not closed:
            _, said = wait_closed(sock, SLACK)
            assert said.startswith(b"HTTP/1.1 408 ")
    assert time.monotonic() - start < REQUEST_TIMEOUT + SLACK


def test_a_body_that_never_finishes_is_cut_off(server: ServerThread) -> None:
    with raw(server) as sock:
        sock.sendall(
            b"POST /api/v1/auth/register HTTP/1.1\r\nHost: x\r\n"
            b'Content-Type: application/json\r\nContent-Length: 100\r\n\r\n{"user'
        )
        took, _ = wait_closed(sock, REQUEST_TIMEOUT + SLACK)
    assert took < REQUEST_TIMEOUT + SLACK


def test_an_idle_keep_alive_connection_is_closed(server: ServerThread) -> None:
    with raw(server) as sock:
        assert get_healthz(sock).startswith(b"HTTP/1.1 200 ")
        took, said = wait_closed(sock, KEEPALIVE + SLACK)
    assert said == b""
    assert took >= KEEPALIVE * 0.9


def test_a_keep_alive_connection_serves_requests_in_time(server: ServerThread) -> None:
    """The deadline is per request: a connection that keeps asking is not cut."""
    with raw(server) as sock:
        for _ in range(3):
            assert get_healthz(sock).startswith(b"HTTP/1.1 200 ")
            time.sleep(REQUEST_TIMEOUT * 0.6)


def test_a_normal_client_is_served_while_2000_slow_ones_attack(
    server: ServerThread, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="parley.limits")
    attackers: list[socket.socket] = []
    refused = 0
    try:
        for i in range(ATTACKERS):
            sock = raw(server)
            attackers.append(sock)
            if i % 3 == 1:
                sock.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n")
            elif i % 3 == 2:
                sock.sendall(b"G")
        with normal_client(server) as client:
            for _ in range(5):
                assert client.get("/healthz").status_code == 200
        for sock in attackers:
            sock.settimeout(REQUEST_TIMEOUT + SLACK)
            try:
                said = sock.recv(4096)
            except TimeoutError:
                raise AssertionError("a slow connection outlived the timeout") from None
            except ConnectionResetError:
                said = b""
            if said.startswith(b"HTTP/1.1 503 "):
                refused += 1
            else:
                assert said.startswith(b"HTTP/1.1 408 ") or said == b""
    finally:
        for sock in attackers:
            sock.close()
    assert refused >= ATTACKERS - PER_IP
    refusals = [r for r in caplog.records if "refusing connections" in r.getMessage()]
    assert len(refusals) == 1
    with normal_client(server) as client:
        assert client.get("/healthz").status_code == 200


async def test_unauthenticated_websockets_per_address_are_capped(server: ServerThread) -> None:
    waiting = [await ws_connect(server.url) for _ in range(3)]
    try:
        surplus = await ws_connect(server.url)
        with pytest.raises(ConnectionClosed) as closed:
            await asyncio.wait_for(surplus.recv(), 5)
        assert closed.value.rcvd is not None
        assert closed.value.rcvd.code == 1013
    finally:
        for ws in waiting:
            await ws.close()
    # Their slots are given back as they close.
    again = await ws_connect(server.url)
    await again.send('{"type":"ping","id":"p"}')
    assert "pong" in str(await asyncio.wait_for(again.recv(), 5))
    await again.close()


def test_the_total_cap_refuses_with_503(tmp_path: Path) -> None:
    with ServerThread(tmp_path, max_connections=5, rate_limits="off") as node:
        held = [raw(node) for _ in range(5)]
        try:
            with raw(node) as extra:
                _, said = wait_closed(extra, 5)
            assert said.startswith(b"HTTP/1.1 503 ")
            assert b"retry-after: 5" in said.lower()
        finally:
            for sock in held:
                sock.close()
        deadline = time.monotonic() + 5
        while True:  # the closes reach the server asynchronously
            with httpx.Client(base_url=node.url, timeout=5) as client:
                status = client.get("/healthz").status_code
            if status == 200 or time.monotonic() > deadline:
                break
            time.sleep(0.05)
        assert status == 200


def test_a_trusted_proxy_is_capped_by_the_total_only(tmp_path: Path) -> None:
    """A proxy carries many clients' connections: the per-address cap spares it."""
    with ServerThread(
        tmp_path, max_connections_per_ip=2, trusted_proxies="127.0.0.1", rate_limits="off"
    ) as node:
        held = [raw(node) for _ in range(4)]
        try:
            with normal_client(node) as other:  # 127.0.0.2: not a proxy, still served
                assert other.get("/healthz").status_code == 200
            with httpx.Client(base_url=node.url, timeout=5) as proxied:
                assert proxied.get("/healthz").status_code == 200
        finally:
            for sock in held:
                sock.close()
