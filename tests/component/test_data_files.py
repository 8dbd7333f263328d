"""The data dir is private whatever the umask: the directory 0700, every file in it
(database, WAL, shared memory, keys) 0600, while the node runs and after it stops."""

from __future__ import annotations

import os
import stat
from collections.abc import Iterator
from pathlib import Path

import pytest

from parley.testing.server import ServerThread
from tests.component.conftest import Api


@pytest.fixture
def umask_022() -> Iterator[None]:
    old = os.umask(0o022)
    try:
        yield
    finally:
        os.umask(old)


def modes(data_dir: Path) -> dict[str, int]:
    found = {".": stat.S_IMODE(data_dir.stat().st_mode)}
    for path in data_dir.iterdir():
        found[path.name] = stat.S_IMODE(path.stat().st_mode)
    return found


@pytest.mark.usefixtures("umask_022")
def test_the_data_dir_is_private_under_umask_022(tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    data_dir.mkdir(mode=0o755)
    data_dir.chmod(0o755)
    (data_dir / "left-over.txt").write_text("from an older install")
    assert modes(data_dir) == {".": 0o755, "left-over.txt": 0o644}
    with ServerThread(data_dir, rate_limits="off") as server:
        api = Api(server)
        try:
            alice = api.user()
            room = alice.post("/api/v1/rooms", json={"name": "files"}).json()["id"]
            sent = alice.post(f"/api/v1/rooms/{room}/messages", json={"body": "hello"})
            assert sent.status_code == 201
        finally:
            api.close()
        running = modes(data_dir)
    assert {"parley.db", "parley.db-wal", "parley.db-shm", "jwt.key"} <= set(running)
    expected = dict.fromkeys(running, 0o600) | {".": 0o700}
    assert running == expected
    stopped = modes(data_dir)
    assert stopped == dict.fromkeys(stopped, 0o600) | {".": 0o700}
