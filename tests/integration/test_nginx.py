"""nginx in front of Parley, from the configuration ``render_nginx_conf`` writes (and
``deploy/nginx.conf`` is): the headers a node receives, WebSocket upgrades, unbuffered
event streams, no sticky sessions; then a real node behind it over all three paths.

nginx is Debian's (``apt-get install nginx``): without it these tests skip, and fail
under ``CI=true``."""

from __future__ import annotations

import asyncio
import json
import signal
import subprocess
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import httpx
import pytest
from websockets.asyncio.client import connect

from parley.testing.cluster import (
    LocalCluster,
    free_port,
    render_nginx_conf,
    start_nginx,
    wait_ready,
)
from tests.integration.cluster_support import require_nginx
from tests.realtime_support import TIMEOUT, body_of, closing, room, take_events, user

DEPLOY = Path(__file__).resolve().parents[2] / "deploy"


def test_deploy_conf_is_the_rendered_one() -> None:
    rendered = render_nginx_conf(listen="80", upstreams=[f"parley-{i}:8000" for i in (1, 2, 3)])
    assert (DEPLOY / "nginx.conf").read_text() == rendered, (
        "deploy/nginx.conf is out of step: regenerate it with "
        "`parley cluster nginx-conf --listen 80 --upstream parley-1:8000 "
        "--upstream parley-2:8000 --upstream parley-3:8000 > deploy/nginx.conf`"
    )


def test_render_refuses_no_upstream() -> None:
    with pytest.raises(ValueError, match="upstream"):
        render_nginx_conf(listen="80", upstreams=[])


class Recorder:
    """An HTTP/1.1 upstream that records each request's line and headers. The event
    stream's path answers one event at once and the next only when ``release`` is set, so a client
    that sees the first before the release saw it unbuffered."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.requests: list[tuple[str, dict[str, str]]] = []
        self.release = asyncio.Event()
        self.port = 0
        self._server: asyncio.Server | None = None
        self._writers: set[asyncio.StreamWriter] = set()

    async def __aenter__(self) -> Recorder:
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    async def __aexit__(self, *exc: object) -> None:
        self.release.set()
        assert self._server is not None
        self._server.close()
        for writer in self._writers:
            writer.transport.abort()
        await self._server.wait_closed()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self._writers.add(writer)
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                line, *lines = head.decode().split("\r\n")
                headers = {}
                for h in lines:
                    if h:
                        k, _, v = h.partition(":")
                        headers[k.strip().lower()] = v.strip()
                self.requests.append((line, headers))
                path = line.split()[1]
                if path == "/api/v1/events/stream":
                    writer.write(
                        b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\n"
                        b"transfer-encoding: chunked\r\n\r\n"
                    )
                    writer.write(_chunk(b"data: first\n\n"))
                    await writer.drain()
                    await self.release.wait()
                    writer.write(_chunk(b"data: second\n\n") + b"0\r\n\r\n")
                    await writer.drain()
                    continue
                body = self.name.encode()
                writer.write(
                    b"HTTP/1.1 200 OK\r\ncontent-type: text/plain\r\n"
                    + f"content-length: {len(body)}\r\n\r\n".encode()
                    + body
                )
                await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            self._writers.discard(writer)
            writer.close()


def _chunk(data: bytes) -> bytes:
    return f"{len(data):x}\r\n".encode() + data + b"\r\n"


@pytest.fixture
async def recorded_nginx(tmp_path: Path) -> AsyncIterator[tuple[str, Recorder, Recorder]]:
    require_nginx()
    async with Recorder("one") as one, Recorder("two") as two:
        port = free_port()
        proc = start_nginx(
            tmp_path / "nginx", port, [f"127.0.0.1:{one.port}", f"127.0.0.1:{two.port}"]
        )
        try:
            await asyncio.to_thread(wait_ready, f"http://127.0.0.1:{port}", proc, TIMEOUT)
            one.requests.clear()
            two.requests.clear()
            yield f"http://127.0.0.1:{port}", one, two
        finally:
            proc.send_signal(signal.SIGQUIT)
            try:
                await asyncio.to_thread(proc.wait, TIMEOUT)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


async def test_rest_gets_proxy_headers_and_no_sticky_node(
    recorded_nginx: tuple[str, Recorder, Recorder],
) -> None:
    url, one, _ = recorded_nginx
    async with httpx.AsyncClient(base_url=url, timeout=TIMEOUT) as http:
        answers = [
            (await http.get("/api/v1/me", headers={"X-Forwarded-For": "203.0.113.7"})).text
            for _ in range(4)
        ]
    assert sorted(answers) == ["one", "one", "two", "two"]  # round robin, same client
    line, headers = one.requests[0]
    assert line == "GET /api/v1/me HTTP/1.1"
    assert headers["host"] == url.removeprefix("http://")
    assert headers["x-real-ip"] == "127.0.0.1"
    assert headers["x-forwarded-for"] == "203.0.113.7, 127.0.0.1"
    assert headers["x-forwarded-proto"] == "http"
    assert "upgrade" not in headers
    assert headers.get("connection", "") != "close"  # kept alive towards the node


async def test_websocket_path_asks_the_node_to_upgrade(
    recorded_nginx: tuple[str, Recorder, Recorder],
) -> None:
    url, one, two = recorded_nginx
    ws_url = url.replace("http://", "ws://") + "/api/v1/ws"
    with pytest.raises(Exception, match="200"):  # the recorder does not upgrade
        async with connect(ws_url, open_timeout=TIMEOUT):
            pass
    [(line, headers)] = one.requests + two.requests
    assert line == "GET /api/v1/ws HTTP/1.1"
    assert headers["upgrade"] == "websocket"
    assert headers["connection"] == "upgrade"
    assert "sec-websocket-key" in headers
    assert headers["x-forwarded-for"] == "127.0.0.1"


async def test_event_stream_reaches_the_client_as_written(
    recorded_nginx: tuple[str, Recorder, Recorder],
) -> None:
    """The first event arrives while the node still holds the stream open: nothing
    between (a cache, compression, a buffer held to the end) waits for more. nginx
    here forwards a fast client's stream promptly even with ``proxy_buffering on``;
    the ``off`` in the conf is for slow clients, whose events would otherwise pile
    up in nginx's buffers instead of reaching the node's slow-consumer policy."""
    url, one, two = recorded_nginx
    async with (
        httpx.AsyncClient(base_url=url, timeout=TIMEOUT) as http,
        http.stream("GET", "/api/v1/events/stream") as response,
    ):
        lines = response.aiter_lines()
        async with asyncio.timeout(TIMEOUT):
            assert await anext(lines) == "data: first"
        assert not (one.release.is_set() or two.release.is_set())
        one.release.set()
        two.release.set()
        rest = [line async for line in lines if line]
    assert rest == ["data: second"]


@pytest.fixture(scope="module")
def one_node(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalCluster]:
    require_nginx()
    cluster = LocalCluster(
        tmp_path_factory.mktemp("nginx-node"),
        nodes_count=1,
        database_url=None,
        bus_url="memory://",
        extra_env={"PARLEY_RATE_LIMITS": "off"},
    )
    with cluster:
        yield cluster


async def test_a_node_behind_nginx_over_rest_websocket_and_sse(one_node: LocalCluster) -> None:
    url = one_node.url
    alice, bob = await user(url, "alice"), await user(url, "bob")
    async with closing(alice, bob):
        room_id = await room(alice, bob)
        async with (
            httpx.AsyncClient(base_url=url, timeout=TIMEOUT) as http,
            http.stream(
                "GET",
                "/api/v1/events/stream",
                headers={"Authorization": f"Bearer {bob.access_token}"},
            ) as stream,
            bob.live() as b,
        ):
            assert stream.status_code == 200
            await b.wait_ready()
            origin = {"Origin": url}  # the browser's: nginx must pass Host with its port
            async with connect(
                one_node.ws_url,
                additional_headers={"Authorization": f"Bearer {alice.access_token}", **origin},
                open_timeout=TIMEOUT,
            ) as raw:
                ready = json.loads(await raw.recv())
                assert ready["type"] == "ready"
            await alice.post_message(room_id, "through nginx")
            [event] = await take_events(b, 1)
            assert body_of(event) == "through nginx"
            async with asyncio.timeout(TIMEOUT):
                async for line in stream.aiter_lines():
                    if line.startswith("data:") and "through nginx" in line:
                        break
