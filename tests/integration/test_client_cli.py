"""The command-line client (login, rooms, dm, send, tail) as a user runs it, against a real node."""

from __future__ import annotations

import asyncio
import os
import stat
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from parley.cli.client import _Tail
from parley.client import ParleyClient
from parley.testing.server import ServerThread
from tests.realtime_support import PASSWORD, TIMEOUT, closing, room, running_server, user

PARLEY = [sys.executable, "-m", "parley.cli.main"]


@pytest.fixture(scope="module")
def node(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerThread]:
    with running_server(tmp_path_factory.mktemp("cli"), rate_limits="off") as server:
        yield server


def env(config_home: Path) -> dict[str, str]:
    # Not CI's asyncio debug mode either: its slow-callback warnings would be lines
    # of stderr a user never sees, and the one-line errors are checked.
    skip = ("PARLEY_", "PYTHONASYNCIODEBUG")
    clean = {k: v for k, v in os.environ.items() if not k.startswith(skip)}
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


class Terminal:
    """One user's shell: ``parley`` commands with their own config directory."""

    def __init__(self, config_home: Path) -> None:
        self.config_home = config_home

    async def ok(self, *args: str, stdin: str = "") -> str:
        done = await asyncio.to_thread(parley, self.config_home, *args, stdin=stdin)
        assert done.returncode == 0, (args, done.stderr)
        return done.stdout

    async def fails(self, *args: str) -> str:
        """The one-line error of a refused command."""
        done = await asyncio.to_thread(parley, self.config_home, *args)
        assert done.returncode != 0, (args, done.stdout)
        assert done.stderr.count("\n") == 1 and done.stderr.startswith("parley: "), done.stderr
        return done.stderr


async def readline_with(stream: asyncio.StreamReader, text: str) -> str:
    """Lines until one that contains ``text`` (earlier ones are other events)."""
    async with asyncio.timeout(TIMEOUT):
        while True:
            line = (await stream.readline()).decode()
            assert line, f"tail ended before {text!r}"
            if text in line:
                return line


async def test_the_readme_walkthrough(node: ServerThread, tmp_path: Path) -> None:
    """From nothing to a conversation, as the README's "Using it" tells it: no curl."""
    tag = uuid.uuid4().hex[:8]
    alice_name, bob_name = f"alice{tag}", f"bob{tag}"
    alice, bob = Terminal(tmp_path / "alice"), Terminal(tmp_path / "bob")
    await alice.ok(
        "admin", "--data-dir", str(node.settings.data_dir),
        "create-user", alice_name, "--password-stdin", stdin=PASSWORD + "\n",
    )  # fmt: skip
    sdk_bob = ParleyClient(node.url)
    async with closing(sdk_bob):
        await sdk_bob.register(bob_name, PASSWORD)
        await sdk_bob.login(bob_name, PASSWORD)
        for who, name in ((alice, alice_name), (bob, bob_name)):
            await who.ok(
                "login", "--server", node.url, "--username", name, "--password-stdin",
                stdin=PASSWORD + "\n",
            )  # fmt: skip
        assert "no room yet" in await alice.ok("rooms")

        general = f"general-{tag}"
        created = await alice.ok("rooms", "create", general, "--topic", "all things")
        assert f"public room {general}" in created
        await bob.ok("rooms", "join", general)  # by name: a public room bob is not in yet
        secret = f"secret-{tag}"
        await alice.ok("rooms", "create", secret, "--private")
        assert "no public room" in await bob.fails("rooms", "join", secret)
        await alice.ok("rooms", "invite", secret, bob_name)
        members = await bob.ok("rooms", "members", secret)
        assert f"{alice_name} " in members and "owner" in members and f"{bob_name} " in members

        dm = await alice.ok("dm", bob_name)
        dm_id = dm.split(": ")[1].split()[0]
        assert "no user named" in await alice.fails("dm", bob_name, f"nobody{tag}")
        assert "each user once" in await alice.fails("dm", bob_name, bob_name)
        assert "no user named" in await alice.fails("dm", f"nobody{tag}")

        tail = await asyncio.create_subprocess_exec(
            # --last: what is sent before tail is connected (a slow start) is shown too
            *PARLEY, "tail", general, "--last", "20",
            env=env(bob.config_home), stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
        )  # fmt: skip
        assert tail.stdout is not None
        try:
            await alice.ok("send", general, "hello", "everyone")
            await readline_with(tail.stdout, f"{alice_name}: hello everyone")
            sent = await alice.ok("send", general, "-", stdin="from a pipe\n")
            seq = int(sent.removeprefix("sent #"))
            await readline_with(tail.stdout, f"{alice_name}: from a pipe")
            room_id = next(r["id"] for r in await sdk_bob.rooms() if r["name"] == general)
            messages, _ = await sdk_bob.messages(room_id)
            piped = next(m for m in messages if m["seq"] == seq)
            assert piped["body"] == "from a pipe"  # the trailing newline is not stored
            await sdk_bob.request(
                "PUT", f"/api/v1/rooms/{room_id}/messages/{piped['id']}/reactions/👍"
            )
            await readline_with(tail.stdout, f"{bob_name} reacted 👍 to #{seq}")
            await alice.ok("rooms", "leave", general)
            await readline_with(tail.stdout, f"{alice_name} left")
        finally:
            tail.terminate()
            await tail.wait()

        await alice.ok("send", f"@{bob_name}", "just between us")
        dm_messages, _ = await sdk_bob.messages(dm_id)
        assert [m["body"] for m in dm_messages] == ["just between us"]
        assert f"@{alice_name}" in await bob.ok("rooms")  # a direct room is named by the other

        await alice.ok("rooms", "create", secret)  # a second room of that name
        assert "2 rooms are named" in await alice.fails("send", secret, "hi")
        assert "you are in no room" in await alice.fails("send", f"nowhere-{tag}", "hi")
        assert "standard input was empty" in await alice.fails("send", dm_id, "-")


async def test_tail_lines_name_people_and_changes() -> None:
    """What ``parley tail`` prints for each kind of event (names already known)."""
    async with ParleyClient("http://127.0.0.1:9") as client:  # never called
        tail = _Tail(client)
        tail.names |= {"A": "alice", "B": "bob"}
        at = "2026-01-02T03:04:05Z"

        async def line(type_: str, **fields: object) -> str:
            return await tail.line({"type": type_, "created_at": at, "actor_id": "A", **fields})

        message = {"id": "m1", "seq": 7, "body": "hi"}
        assert await line("message.created", message=message) == "[03:04:05] alice: hi"
        reply = {"id": "m2", "seq": 8, "body": "yes", "thread_root_id": "m1"}
        assert await line("message.created", message=reply) == (
            "[03:04:05] alice (thread of #7): yes"
        )
        assert await line("reaction.added", message_id="m1", user_id="B", emoji="🎉") == (
            "[03:04:05] alice reacted 🎉 to #7"
        )
        assert await line("reaction.removed", message_id="m0", emoji="👍") == (
            "[03:04:05] alice took back 👍 from a message"
        )
        assert await line("member.joined", user_id="B", invited_by="A") == (
            "[03:04:05] alice added bob"
        )
        assert await line("member.joined", user_id="B") == "[03:04:05] bob joined"
        assert await line("member.left", user_id="B", reason="kicked") == (
            "[03:04:05] alice removed bob"
        )
        assert await line("member.left", user_id="B", reason="banned") == (
            "[03:04:05] alice banned bob"
        )
        assert await line("member.left", user_id="A", reason="left") == "[03:04:05] alice left"
        assert await line("room.updated", room={"name": "ops", "topic": "pager"}) == (
            "[03:04:05] alice updated the room ops (topic: pager)"
        )


async def test_search_from_the_sdk_and_the_command_line(node: ServerThread, tmp_path: Path) -> None:
    alice = await user(node.url, "alice")
    async with closing(alice):
        room_id = await room(alice)
        word = f"w{uuid.uuid4().hex[:8]}"
        for i in range(3):
            await alice.post_message(room_id, f"{word} number {i} <b>", f"s{i}")
        first, cursor = await alice.search(word, limit=2)
        assert len(first) == 2 and cursor is not None
        rest, end = await alice.search(word, limit=2, cursor=cursor)
        assert len(rest) == 1 and end is None
        bodies = {r["message"]["body"] for r in first + rest}
        assert bodies == {f"{word} number {i} <b>" for i in range(3)}
        only, _ = await alice.search(f'"{word} number 1"', room_id=room_id)
        assert [r["message"]["body"] for r in only] == [f"{word} number 1 <b>"]

        config_home = tmp_path / "config"
        name = str(alice.username)  # type: ignore[attr-defined]
        login = ("login", "--server", node.url, "--username", name, "--password-stdin")
        done = await asyncio.to_thread(parley, config_home, *login, stdin=PASSWORD + "\n")
        assert done.returncode == 0, done.stderr
        found = await asyncio.to_thread(parley, config_home, "search", word, "number", "2")
        assert found.returncode == 0, found.stderr
        assert found.stdout.count("\n") == 1
        assert f"*{word}* *number* *2* <b>" in found.stdout and f" {name}: " in found.stdout
        bad = await asyncio.to_thread(parley, config_home, "search", '"unclosed')
        assert bad.returncode != 0 and "unclosed quote" in bad.stderr
