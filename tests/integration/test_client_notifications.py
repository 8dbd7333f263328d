"""The SDK's notifications against a real node: the live ``notification`` frames
reach ``on_notification``, the feed lists them, read marks and room levels work, and
the server's refusals arrive as ``ApiError``."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from parley.client import ApiError
from parley.testing.server import ServerThread
from tests.integration.test_client_cli import parley
from tests.realtime_support import PASSWORD, TIMEOUT, closing, room, running_server, uid, user


@pytest.fixture(scope="module")
def node(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerThread]:
    with running_server(tmp_path_factory.mktemp("sdk-notify"), rate_limits="off") as server:
        yield server


async def test_notifications_through_the_sdk(node: ServerThread) -> None:
    alice, bob = await user(node.url, "al"), await user(node.url, "bo")
    async with closing(alice, bob):
        room_id = await room(alice, bob)
        got: list[dict[str, Any]] = []
        arrived = asyncio.Event()

        def on_notification(notification: dict[str, Any]) -> None:
            got.append(notification)
            arrived.set()

        async with bob.live(on_notification=on_notification) as live:
            await live.wait_ready()
            assert await bob.notification_level(room_id) == "mentions"
            await alice.post_message(room_id, f"hello @{bob.username}")  # type: ignore[attr-defined]
            async with asyncio.timeout(TIMEOUT):
                await arrived.wait()
        assert got[0]["kind"] == "mention"
        assert got[0]["message"]["mentions"] == [uid(bob)]
        feed, unread, more = await bob.notifications()
        assert [n["id"] for n in feed] == [got[0]["id"]] and unread == 1 and not more
        assert await bob.mark_notifications_read([got[0]["id"]]) == 0
        assert await bob.set_notification_level(room_id, "none") == "none"
        await alice.post_message(room_id, f"@{bob.username} again")  # type: ignore[attr-defined]
        assert (await bob.notifications(unread_only=True))[0] == []
        assert await bob.mark_notifications_read() == 0
        with pytest.raises(ApiError) as refused:
            await bob.set_notification_level(room_id, "loud")
        assert refused.value.status == 422


async def test_notifications_from_the_command_line(node: ServerThread, tmp_path: Path) -> None:
    alice, bob = await user(node.url, "al"), await user(node.url, "bo")
    async with closing(alice, bob):
        room_id = await room(alice, bob)
        await alice.post_message(room_id, f"ping @{bob.username}")  # type: ignore[attr-defined]
        config_home = tmp_path / "config"
        name = str(bob.username)  # type: ignore[attr-defined]
        login = await asyncio.to_thread(
            parley,
            config_home,
            "login",
            "--server",
            node.url,
            "--username",
            name,
            "--password-stdin",
            stdin=PASSWORD,
        )
        assert login.returncode == 0, login.stderr
        listed = await asyncio.to_thread(parley, config_home, "notifications", "--mark-read")
        assert listed.returncode == 0, listed.stderr
        lines = listed.stdout.splitlines()
        assert lines[0].startswith("* ") and f"mentioned you: ping @{name}" in lines[0]
        assert lines[-1] == "1 unread"
        assert (await bob.notifications())[1] == 0
        level = await asyncio.to_thread(parley, config_home, "rooms", "notify", room_id, "none")
        assert level.stdout.strip() == "none", level.stderr
        assert await bob.notification_level(room_id) == "none"
        shown = await asyncio.to_thread(parley, config_home, "rooms", "notify", room_id)
        assert shown.stdout.strip() == "none"
