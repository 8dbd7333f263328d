"""``parley login | rooms | send | tail`` as a user runs them, against a real node."""

from __future__ import annotations

import asyncio
import os
import stat
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from parley.testing.server import ServerThread
from tests.realtime_support import PASSWORD, TIMEOUT, closing, room, running_server, user

PARLEY = [sys.executable, "-m", "parley.cli.main"]


@pytest.fixture(scope="module")
def node(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerThread]:
    with running_server(tmp_path_factory.mktemp("cli"), rate_limits="off") as server:
        yield server


def env(config_home: Path) -> dict[str, str]:
    clean = {k: v for k, v in os.environ.items() if not k.startswith("PARLEY_")}
    return clean | {"XDG_CONFIG_HOME": str(config_home)}


def parley(config_home: Path, *args: str, stdin: str = "") -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*PARLEY, *args],
        input=stdin,
        capture_output=True,
        text=True,
        env=env(config_home),
        timeout=TIMEOUT,
        check=False,
    )


async def test_login_rooms_send_and_tail(node: ServerThread, tmp_path: Path) -> None:
    alice = await user(node.url, "alice")
    async with closing(alice):
        room_id = await room(alice)
        config_home = tmp_path / "config"
        name = str(alice.username)  # type: ignore[attr-defined]
        done = await asyncio.to_thread(
            parley,
            config_home,
            "login",
            "--server",
            node.url,
            "--username",
            name,
            "--password-stdin",
            stdin=PASSWORD + "\n",
        )
        assert done.returncode == 0, done.stderr
        config = config_home / "parley" / "config.json"
        assert stat.S_IMODE(config.stat().st_mode) == 0o600
        assert stat.S_IMODE(config.parent.stat().st_mode) == 0o700

        listed = await asyncio.to_thread(parley, config_home, "rooms")
        assert listed.returncode == 0 and room_id in listed.stdout

        sent = await asyncio.to_thread(parley, config_home, "send", room_id, "hello", "there")
        assert sent.returncode == 0 and sent.stdout.startswith("sent #"), sent.stderr
        tail = await asyncio.create_subprocess_exec(
            *PARLEY,
            "tail",
            room_id,
            "--last",
            "1",
            env=env(config_home),
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
        )
        assert tail.stdout is not None
        try:
            async with asyncio.timeout(TIMEOUT):
                first = (await tail.stdout.readline()).decode()
                assert f"{name}: hello there" in first  # replayed: sent before tail began
                await alice.post_message(room_id, "from the sdk")
                live = (await tail.stdout.readline()).decode()
                assert f"{name}: from the sdk" in live
        finally:
            tail.terminate()
            await tail.wait()


def test_not_logged_in_is_a_clear_error(tmp_path: Path, node: ServerThread) -> None:
    result = parley(tmp_path, "rooms", "--server", node.url)
    assert result.returncode == 1
    assert "parley login" in result.stderr
