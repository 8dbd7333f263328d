"""``parley serve`` and ``parley admin`` as a user runs them: real processes."""

from __future__ import annotations

import json
import os
import signal
import socket
import sqlite3
import stat
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

PARLEY = [sys.executable, "-m", "parley.cli.main"]
FAST = {"PARLEY_ARGON2_MEMORY_KIB": "1024", "PARLEY_ARGON2_TIME_COST": "1"}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def env_for(data_dir: Path, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("PARLEY_")}
    return env | FAST | {"PARLEY_DATA_DIR": str(data_dir)} | extra


def wait_ready(url: str, proc: subprocess.Popen[bytes], timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise AssertionError(f"parley serve exited with {proc.returncode}")
        try:
            if httpx.get(f"{url}/healthz", timeout=1).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.05)
    raise AssertionError("parley serve did not answer /healthz")


@pytest.fixture
def node(tmp_path: Path) -> Iterator[tuple[str, Path, subprocess.Popen[bytes]]]:
    data_dir = tmp_path / "fresh" / "data"
    port = free_port()
    proc = subprocess.Popen(
        [*PARLEY, "serve", "--port", str(port)],
        env=env_for(data_dir),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        wait_ready(url, proc)
        yield url, data_dir, proc
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.wait()
        if proc.stdout:
            proc.stdout.close()


def test_first_start_creates_data_dir_and_serves(
    node: tuple[str, Path, subprocess.Popen[bytes]],
) -> None:
    url, data_dir, _ = node
    key = data_dir / "jwt.key"
    assert stat.S_IMODE(key.stat().st_mode) == 0o600
    db = sqlite3.connect(data_dir / "parley.db")
    try:
        assert db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    finally:
        db.close()
    ready = httpx.get(f"{url}/readyz").json()
    assert ready["status"] == "ready"
    assert set(ready["checks"]) == {"database", "bus", "cache"}
    spec = httpx.get(f"{url}/openapi.json").json()
    assert "/api/v1/rooms/{room_id}/messages" in spec["paths"]
    assert "/api/v1/auth/token" in spec["paths"]
    docs = httpx.get(f"{url}/docs")
    assert docs.status_code == 200 and "swagger" in docs.text.lower()
    missing = httpx.get(f"{url}/api/v1/no-such-thing")
    assert missing.status_code == 404 and "error" in missing.json()


def test_sigterm_shuts_down_cleanly(node: tuple[str, Path, subprocess.Popen[bytes]]) -> None:
    _, _, proc = node
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=20) == 0


def test_admin_create_user_then_login_and_export(tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    env = env_for(data_dir)
    migrated = subprocess.run([*PARLEY, "admin", "migrate"], env=env, capture_output=True)
    assert migrated.returncode == 0, migrated.stderr
    created = subprocess.run(
        [*PARLEY, "admin", "create-user", "root.admin", "--admin", "--password-stdin"],
        env=env,
        input=b"a long admin password\n",
        capture_output=True,
    )
    assert created.returncode == 0, created.stderr
    user_id = created.stdout.decode().strip()
    bad = subprocess.run(
        [*PARLEY, "admin", "create-user", "Bad Name", "--password-stdin"],
        env=env,
        input=b"a long admin password\n",
        capture_output=True,
    )
    assert bad.returncode == 1 and b"username" in bad.stderr

    port = free_port()
    proc = subprocess.Popen(
        [*PARLEY, "serve", "--port", str(port)], env=env, stderr=subprocess.DEVNULL
    )
    url = f"http://127.0.0.1:{port}"
    try:
        wait_ready(url, proc)
        tokens = httpx.post(
            f"{url}/api/v1/auth/token",
            data={
                "grant_type": "password",
                "username": "root.admin",
                "password": "a long admin password",
            },
        ).json()
        auth = {"Authorization": f"Bearer {tokens['access_token']}"}
        assert httpx.get(f"{url}/api/v1/users/me", headers=auth).json()["id"] == user_id
        room = httpx.post(f"{url}/api/v1/rooms", json={"name": "exported"}, headers=auth).json()
        for i in range(3):
            httpx.post(
                f"{url}/api/v1/rooms/{room['id']}/messages", json={"body": f"m{i}"}, headers=auth
            )
    finally:
        proc.terminate()
        proc.wait(20)
    exported = subprocess.run(
        [*PARLEY, "admin", "export-room", room["id"]], env=env, capture_output=True
    )
    assert exported.returncode == 0, exported.stderr
    events = [json.loads(line) for line in exported.stdout.splitlines()]
    assert [e["seq"] for e in events] == list(range(1, len(events) + 1))
    assert [e["message"]["body"] for e in events if e["type"] == "message.created"] == [
        "m0",
        "m1",
        "m2",
    ]
    missing = subprocess.run(
        [*PARLEY, "admin", "export-room", "nope"], env=env, capture_output=True
    )
    assert missing.returncode == 1


def test_keys_rotate_and_status_beside_a_running_node(tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    env = env_for(data_dir, PARLEY_KEY_CHECK_INTERVAL="0.2")

    def admin(*args: str, **extra: str) -> subprocess.CompletedProcess[bytes]:
        return subprocess.run([*PARLEY, "admin", *args], env=env | extra, capture_output=True)

    port = free_port()
    proc = subprocess.Popen(
        [*PARLEY, "serve", "--port", str(port)], env=env, stderr=subprocess.PIPE
    )
    url = f"http://127.0.0.1:{port}"
    try:
        wait_ready(url, proc)
        assert stat.S_IMODE((data_dir / "master.key").stat().st_mode) == 0o600
        account = {"username": "keeper", "password": "a long enough password"}
        assert httpx.post(f"{url}/api/v1/auth/register", json=account).status_code == 201
        tokens = httpx.post(
            f"{url}/api/v1/auth/token", data={"grant_type": "password", **account}
        ).json()
        auth = {"Authorization": f"Bearer {tokens['access_token']}"}
        room = httpx.post(f"{url}/api/v1/rooms", json={"name": "sealed"}, headers=auth).json()
        messages = f"{url}/api/v1/rooms/{room['id']}/messages"
        for i in range(3):
            assert httpx.post(messages, json={"body": f"secret-{i}"}, headers=auth).is_success
        status = admin("keys", "status")
        assert status.returncode == 0, status.stderr
        assert status.stdout.decode().splitlines() == ["messages: key 1: 3", "events: key 1: 3"]
        rotated = admin("keys", "rotate")
        assert rotated.returncode == 0 and b"key 2 now seals new writes" in rotated.stdout
        assert httpx.post(messages, json={"body": "secret-3"}, headers=auth).is_success
        deadline = time.monotonic() + 20
        while (lines := admin("keys", "status").stdout.decode().splitlines()) != [
            "messages: key 2: 4",
            "events: key 2: 4",
        ]:
            assert time.monotonic() < deadline, lines
            time.sleep(0.2)
        page = httpx.get(messages, headers=auth).json()["messages"]
        assert [m["body"] for m in page] == [f"secret-{i}" for i in range(4)]
    finally:
        proc.terminate()
        proc.wait(20)
        assert proc.stderr is not None
        log = proc.stderr.read().decode()
        proc.stderr.close()
    assert "generated the master key" in log and "back it up" in log
    for path in data_dir.iterdir():
        assert b"secret-" not in path.read_bytes(), path
    exported = admin("export-room", room["id"])
    assert exported.returncode == 0, exported.stderr
    bodies = [
        json.loads(line).get("message", {}).get("body") for line in exported.stdout.splitlines()
    ]
    assert [b for b in bodies if b] == [f"secret-{i}" for i in range(4)]
    wrong = admin("export-room", room["id"], PARLEY_MASTER_KEY="00" * 32)
    assert wrong.returncode == 1 and b"wrong master key" in wrong.stderr
