"""``/readyz``: its shape, and a check that fails while the others answer.

The failing backend is real: a private ``redis-server`` on a free port as the node's
cache, paused (SIGSTOP, so its ping hangs and the probe's timeout answers) and then
resumed."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from parley.gateway.app import READY_TIMEOUT
from parley.testing.server import ServerThread


def test_readyz_shape_when_ready(server: ServerThread) -> None:
    r = httpx.get(f"{server.url}/readyz", timeout=10)
    assert r.status_code == 200, r.text
    body = r.json()
    assert body == {
        "status": "ready",
        "node_id": body["node_id"],
        "checks": {"database": "ok", "bus": "ok", "cache": "ok"},
    }
    assert body["node_id"].startswith("node-")
    assert httpx.get(f"{server.url}/healthz", timeout=10).json() == {"status": "ok"}


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture
def private_redis(tmp_path: Path) -> Iterator[tuple[int, subprocess.Popen[bytes]]]:
    binary = shutil.which("redis-server")
    if binary is None:
        message = "redis-server is not installed"
        if os.environ.get("CI") == "true":
            pytest.fail(f"{message} (CI=true: services are required)")
        pytest.skip(message)
    port = _free_port()
    proc = subprocess.Popen(
        [binary, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"],
        cwd=tmp_path,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 10
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                assert time.monotonic() < deadline, "the private redis-server did not start"
                time.sleep(0.05)
        yield port, proc
    finally:
        proc.send_signal(signal.SIGCONT)
        proc.kill()
        proc.wait()


def test_readyz_names_the_failing_check_and_recovers(
    tmp_path: Path, private_redis: tuple[int, subprocess.Popen[bytes]]
) -> None:
    port, redis_proc = private_redis
    cache_url = f"redis://127.0.0.1:{port}/0"
    with ServerThread(tmp_path / "data", cache_url=cache_url) as node:
        assert httpx.get(f"{node.url}/readyz", timeout=10).status_code == 200
        redis_proc.send_signal(signal.SIGSTOP)
        try:
            r = httpx.get(f"{node.url}/readyz", timeout=READY_TIMEOUT * 5)
        finally:
            redis_proc.send_signal(signal.SIGCONT)
        assert r.status_code == 503, r.text
        body = r.json()
        assert body["status"] == "unavailable"
        assert body["checks"]["database"] == "ok"
        assert body["checks"]["bus"] == "ok"
        assert body["checks"]["cache"] == f"timed out after {READY_TIMEOUT:g} s"
        assert httpx.get(f"{node.url}/healthz", timeout=10).status_code == 200
        assert httpx.get(f"{node.url}/readyz", timeout=10).status_code == 200
        redis_proc.kill()
        redis_proc.wait()
        r = httpx.get(f"{node.url}/readyz", timeout=READY_TIMEOUT * 5)
        assert r.status_code == 503, r.text
        assert r.json()["checks"]["cache"].startswith("ConnectionError"), r.text
