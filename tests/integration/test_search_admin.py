"""``parley admin search reindex``: messages stored before the index was made become
searchable."""

from __future__ import annotations

import sqlite3
import subprocess
import sys
from pathlib import Path

from parley.testing.server import ServerThread
from tests.component.conftest import Api
from tests.integration.test_client_cli import env


def test_reindex_makes_older_messages_searchable(tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    with ServerThread(data_dir, rate_limits="off") as server:
        api = Api(server)
        try:
            alice = api.user()
            room = alice.post("/api/v1/rooms", json={"name": "old"}).json()["id"]
            for i in range(5):
                alice.post(f"/api/v1/rooms/{room}/messages", json={"body": f"ancient {i}"})
        finally:
            api.close()
    with sqlite3.connect(data_dir / "parley.db") as db:  # as before the index existed
        db.execute("DELETE FROM search_docs")
    command = [sys.executable, "-m", "parley.cli.main", "admin", "search", "reindex"]
    done = subprocess.run(
        [*command, "--data-dir", str(data_dir)],
        capture_output=True,
        text=True,
        env=env(tmp_path / "config"),
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "indexed 5 messages for search"
    with ServerThread(data_dir, rate_limits="off") as server:
        api = Api(server)
        try:
            token = api.login(alice.username, alice.password)["access_token"]
            found = api.anon.get(
                "/api/v1/search",
                params={"q": "ancient"},
                headers={"Authorization": f"Bearer {token}"},
            )
            assert found.status_code == 200, found.text
            bodies = sorted(r["message"]["body"] for r in found.json()["results"])
            assert bodies == [f"ancient {i}" for i in range(5)]
        finally:
            api.close()
