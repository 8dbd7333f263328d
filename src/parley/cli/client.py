"""``parley login | logout | rooms | send | tail``: a terminal client on the SDK.

The server URL and tokens live in ``$XDG_CONFIG_HOME/parley/config.json`` (by
default ``~/.config/parley/config.json``), created 0600 in a 0700 directory and
rewritten atomically whenever the refresh token rotates. ``--server`` or
``PARLEY_SERVER`` overrides the saved server.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import getpass
import json
import os
import sys
import tempfile
import uuid
from collections.abc import Callable, Coroutine
from pathlib import Path
from typing import Any

import httpx

from parley.client import ApiError, AuthError, ClientError, ParleyClient, Tokens

DEFAULT_SERVER = "http://127.0.0.1:8000"


def config_path() -> Path:
    """Where the CLI keeps the server URL and tokens."""
    base = os.environ.get("XDG_CONFIG_HOME") or str(Path.home() / ".config")
    return Path(base) / "parley" / "config.json"


def load_config() -> dict[str, Any]:
    try:
        data = json.loads(config_path().read_text())
    except (FileNotFoundError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def save_config(data: dict[str, Any]) -> None:
    """Write the config atomically, readable by its owner only."""
    path = config_path()
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".config-")
    try:
        os.fchmod(fd, 0o600)
        with os.fdopen(fd, "w") as f:
            json.dump(data, f, indent=2)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


def _server(args: argparse.Namespace, config: dict[str, Any]) -> str:
    server = args.server or os.environ.get("PARLEY_SERVER") or config.get("server")
    return str(server or DEFAULT_SERVER).rstrip("/")


def _client(args: argparse.Namespace) -> ParleyClient:
    """A client with the saved tokens, saving them again whenever they rotate."""
    config = load_config()
    server = _server(args, config)

    def keep(tokens: Tokens) -> None:
        save_config(
            load_config()
            | {
                "server": server,
                "access_token": tokens.access_token,
                "refresh_token": tokens.refresh_token,
            }
        )

    return ParleyClient(
        server,
        access_token=config.get("access_token"),
        refresh_token=config.get("refresh_token"),
        on_tokens=keep,
    )


def _run(main: Callable[[], Coroutine[Any, Any, int]]) -> int:
    try:
        return asyncio.run(main())
    except AuthError as exc:
        print(f"parley: {exc.message} (run `parley login`)", file=sys.stderr)
        return 1
    except ApiError as exc:
        print(f"parley: {exc.message} ({exc.code})", file=sys.stderr)
        return 1
    except (ClientError, httpx.HTTPError, OSError) as exc:
        print(f"parley: {exc}", file=sys.stderr)
        return 1


# commands


def cmd_login(args: argparse.Namespace) -> int:
    config = load_config()
    server = _server(args, config)
    username = args.username or config.get("username") or input("username: ").strip()
    if args.password_stdin:
        password = sys.stdin.readline().rstrip("\n")
    else:
        password = getpass.getpass("password: ")

    async def main() -> int:
        async with ParleyClient(server) as client:
            tokens = await client.login(username, password)
            me = await client.me()
        save_config(
            config
            | {
                "server": server,
                "username": username,
                "user_id": me["id"],
                "access_token": tokens.access_token,
                "refresh_token": tokens.refresh_token,
            }
        )
        print(f"logged in to {server} as {me['username']}")
        return 0

    return _run(main)


def cmd_logout(args: argparse.Namespace) -> int:
    config = load_config()

    async def main() -> int:
        refresh = config.get("refresh_token")
        if refresh:
            async with ParleyClient(_server(args, config)) as client:
                with contextlib.suppress(ApiError, httpx.HTTPError):
                    await client.request(
                        "POST", "/api/v1/auth/revoke", json={"token": refresh}, auth=False
                    )
        save_config({k: v for k, v in config.items() if not k.endswith("_token")})
        print("logged out")
        return 0

    return _run(main)


def cmd_rooms(args: argparse.Namespace) -> int:
    async def main() -> int:
        async with _client(args) as client:
            rooms = await client.rooms()
        if args.json:
            print(json.dumps(rooms, indent=2))
            return 0
        for room in rooms:
            unread = f"  ({room['unread']} unread)" if room.get("unread") else ""
            print(f"{room['id']}  {room['kind']:<4}  {room['name']}{unread}")
        return 0

    return _run(main)


async def _resolve_room(client: ParleyClient, name_or_id: str) -> str:
    """A room of the caller by id, or by name when that name is unambiguous."""
    rooms = await client.rooms()
    if any(r["id"] == name_or_id for r in rooms):
        return name_or_id
    matches = [r["id"] for r in rooms if r["name"] == name_or_id]
    if len(matches) == 1:
        return str(matches[0])
    if matches:
        raise ClientError(f"several rooms are named {name_or_id!r}: use the id")
    raise ClientError(f"you are in no room {name_or_id!r} (see `parley rooms`)")


def cmd_send(args: argparse.Namespace) -> int:
    text = " ".join(args.text) if args.text != ["-"] else sys.stdin.read()

    async def main() -> int:
        async with _client(args) as client:
            room_id = await _resolve_room(client, args.room)
            client_msg_id = f"cli-{uuid.uuid4().hex}"
            for attempt in range(3):  # the same id each time: stored once
                try:
                    message = await client.post_message(room_id, text, client_msg_id)
                    break
                except httpx.TransportError:
                    if attempt == 2:
                        raise
                    await asyncio.sleep(0.5 * 2**attempt)
        print(f"sent #{message['seq']}")
        return 0

    return _run(main)


def _line(event: dict[str, Any], names: dict[str, str]) -> str:
    kind = event.get("type")
    when = str(event.get("created_at", ""))[11:19]
    actor = names.get(str(event.get("actor_id")), str(event.get("actor_id", ""))[:8])
    message = event.get("message")
    if kind == "message.created" and isinstance(message, dict):
        return f"[{when}] {actor}: {message.get('body', '')}"
    if kind == "message.edited" and isinstance(message, dict):
        return f"[{when}] {actor} edited #{message.get('seq')}: {message.get('body', '')}"
    if kind == "message.deleted" and isinstance(message, dict):
        return f"[{when}] {actor} deleted #{message.get('seq')}"
    if kind in ("member.joined", "member.left"):
        who = names.get(str(event.get("user_id")), str(event.get("user_id", ""))[:8])
        verb = "joined" if kind == "member.joined" else f"left ({event.get('reason', 'left')})"
        return f"[{when}] {who} {verb}"
    return f"[{when}] {kind} by {actor}"


def cmd_tail(args: argparse.Namespace) -> int:
    async def main() -> int:
        async with _client(args) as client:
            room_id = await _resolve_room(client, args.room)
            names: dict[str, str] = {}

            async def name_of(user_id: object) -> None:
                if isinstance(user_id, str) and user_id not in names:
                    try:
                        names[user_id] = (await client.request("GET", f"/api/v1/users/{user_id}"))[
                            "username"
                        ]
                    except ApiError:
                        names[user_id] = user_id[:8]

            cursors = None
            if args.last:
                rooms = {r["id"]: r["last_seq"] for r in await client.rooms()}
                cursors = {room_id: max(0, rooms.get(room_id, 0) - args.last)}
            async with client.live(cursors=cursors) as live:
                async for event in live:
                    if event.get("room_id") != room_id:
                        continue
                    await name_of(event.get("actor_id"))
                    await name_of(event.get("user_id"))
                    print(_line(event, names), flush=True)
                    if event.get("type") == "member.left" and event.get("user_id") == live.user_id:
                        return 0
        return 0

    return _run(main)


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add the client commands to ``parley``."""

    def add(name: str, help_text: str, func: Callable[[argparse.Namespace], int]) -> Any:
        parser = subparsers.add_parser(name, help=help_text)
        parser.add_argument(
            "--server", help=f"server URL (PARLEY_SERVER; default {DEFAULT_SERVER})"
        )
        parser.set_defaults(func=func)
        return parser

    login = add("login", "log in and save the tokens in the config file", cmd_login)
    login.add_argument("--username")
    login.add_argument("--password-stdin", action="store_true", help="read it from stdin")
    add("logout", "revoke the saved refresh token and forget it", cmd_logout)
    rooms = add("rooms", "list your rooms", cmd_rooms)
    rooms.add_argument("--json", action="store_true", help="print the API's JSON")
    send = add("send", "send a message to a room", cmd_send)
    send.add_argument("room", help="room id or name")
    send.add_argument("text", nargs="+", help="the message ('-' reads stdin)")
    tail = add("tail", "print a room's events as they happen", cmd_tail)
    tail.add_argument("room", help="room id or name")
    tail.add_argument("--last", type=int, default=0, help="first replay this many events")
