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
import html
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


class UsageError(ClientError):
    """A mistake in what was asked: the CLI prints it as one line."""


def _server(args: argparse.Namespace, config: dict[str, Any]) -> str:
    """The server's base URL, checked before any request: a URL with the API's
    path would answer every call with 404 or 405, which says nothing useful."""
    server = str(
        getattr(args, "server", None)
        or os.environ.get("PARLEY_SERVER")
        or config.get("server")
        or DEFAULT_SERVER
    ).rstrip("/")
    url = httpx.URL(server) if "://" in server else None
    if url is None or url.scheme not in ("http", "https") or not url.host:
        raise UsageError(
            f"{server!r} is not a server URL: give one like {DEFAULT_SERVER} (--server)"
        )
    if "/api/" in url.path + "/":
        base = server[: server.index("/api")]
        raise UsageError(f"give the server's base URL, {base}, not its API path {server}")
    return server


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


def _run(args: argparse.Namespace, main: Callable[[], Coroutine[Any, Any, int]]) -> int:
    """Run a command; any failure is one line on stderr and exit status 1."""
    server = DEFAULT_SERVER
    try:
        server = _server(args, load_config())
        return asyncio.run(main())
    except AuthError as exc:
        print(f"parley: {exc.message} (run `parley login`)", file=sys.stderr)
    except ApiError as exc:
        if exc.code == "error":  # not the API's error shape: some other server
            print(
                f"parley: {server} answered {exc.status} {exc.message}: is that a Parley "
                "server's base URL? (set it with --server or PARLEY_SERVER)",
                file=sys.stderr,
            )
        else:
            print(f"parley: {exc.message} ({exc.code})", file=sys.stderr)
    except httpx.ConnectError:
        print(
            f"parley: cannot connect to {server}: is Parley running there? "
            "(set it with --server or PARLEY_SERVER)",
            file=sys.stderr,
        )
    except httpx.TimeoutException:
        print(f"parley: {server} did not answer in time", file=sys.stderr)
    except (ClientError, httpx.HTTPError, OSError) as exc:
        print(f"parley: {exc}", file=sys.stderr)
    return 1


# commands


def cmd_login(args: argparse.Namespace) -> int:
    config = load_config()
    try:
        server = _server(args, config)  # before asking for a password
    except UsageError as exc:
        print(f"parley: {exc}", file=sys.stderr)
        return 1
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

    return _run(args, main)


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

    return _run(args, main)


async def _user(client: ParleyClient, username: str) -> dict[str, Any]:
    """A user by exact username (a leading ``@`` is allowed)."""
    user = await client.find_user(username.removeprefix("@"))
    if user is None:
        raise UsageError(f"there is no user named {username.removeprefix('@')!r}")
    return user


async def _dm_names(client: ParleyClient, rooms: list[dict[str, Any]]) -> None:
    """Name each direct room ``@other`` (a group one ``@a, @b``: they have no name
    of their own)."""
    me = (await client.me())["id"]
    for room in rooms:
        if room.get("kind") in ("dm", "group_dm"):
            others = [
                "@" + m["user"]["username"]
                for m in await client.members(room["id"])
                if m["user"]["id"] != me
            ]
            room["name"] = ", ".join(others) if others else "@(nobody)"


def cmd_rooms(args: argparse.Namespace) -> int:
    async def main() -> int:
        async with _client(args) as client:
            rooms = await client.rooms()
            if args.json:
                print(json.dumps(rooms, indent=2))
                return 0
            await _dm_names(client, rooms)
        if not rooms:
            print("you are in no room yet: `parley rooms create NAME`, or `parley dm USERNAME`")
        for room in rooms:
            unread = f"  ({room['unread']} unread)" if room.get("unread") else ""
            kind = {"dm": "dm", "group_dm": "group"}.get(room["kind"], room["visibility"])
            print(f"{room['id']}  {kind:<7}  {room['name']}{unread}")
        return 0

    return _run(args, main)


async def _resolve_room(client: ParleyClient, ref: str, *, joinable: bool = False) -> str:
    """A room of the caller by id, by name when that name is theirs once, or
    ``@username`` for the direct room with that user. ``joinable`` also looks
    among public rooms and lets an unknown id through (the server judges it)."""
    if ref.startswith("@"):
        user = await _user(client, ref)
        return str((await client.open_dm(user["id"]))["id"])
    rooms = await client.rooms()
    if joinable:
        mine = {r["id"] for r in rooms}
        rooms += [r for r in await client.public_rooms() if r["id"] not in mine]
    if any(r["id"] == ref for r in rooms):
        return ref
    matches = [r["id"] for r in rooms if r["name"] == ref]
    if len(matches) == 1:
        return str(matches[0])
    if matches:
        listing = "`parley rooms`" if not joinable else "`parley rooms` and the public rooms"
        raise UsageError(f"{len(matches)} rooms are named {ref!r}: give its id (see {listing})")
    if joinable:
        raise UsageError(f"no public room is named {ref!r}: give its id, or ask to be invited")
    raise UsageError(f"you are in no room {ref!r} (see `parley rooms`)")


def cmd_rooms_create(args: argparse.Namespace) -> int:
    async def main() -> int:
        async with _client(args) as client:
            visibility = "private" if args.private else "public"
            room = await client.create_room(args.name, visibility=visibility, topic=args.topic)
        print(f"created {visibility} room {room['name']}: {room['id']}")
        return 0

    return _run(args, main)


def cmd_rooms_join(args: argparse.Namespace) -> int:
    async def main() -> int:
        async with _client(args) as client:
            room = await client.join(await _resolve_room(client, args.room, joinable=True))
        print(f"joined {room['name']}: {room['id']}")
        return 0

    return _run(args, main)


def cmd_rooms_leave(args: argparse.Namespace) -> int:
    async def main() -> int:
        async with _client(args) as client:
            room_id = await _resolve_room(client, args.room)
            await client.leave(room_id)
        print(f"left {args.room}")
        return 0

    return _run(args, main)


def cmd_rooms_invite(args: argparse.Namespace) -> int:
    async def main() -> int:
        async with _client(args) as client:
            room_id = await _resolve_room(client, args.room)
            user = await _user(client, args.username)
            await client.add_member(room_id, user["id"])
        print(f"added {user['username']} to {args.room}")
        return 0

    return _run(args, main)


def cmd_rooms_members(args: argparse.Namespace) -> int:
    async def main() -> int:
        async with _client(args) as client:
            members = await client.members(await _resolve_room(client, args.room))
        if args.json:
            print(json.dumps(members, indent=2))
            return 0
        for member in members:
            user = member["user"]
            print(f"{user['username']:<24} {member['role']:<7} {user['display_name']}")
        return 0

    return _run(args, main)


def cmd_dm(args: argparse.Namespace) -> int:
    async def main() -> int:
        async with _client(args) as client:
            users = [await _user(client, name) for name in args.usernames]
            if len(users) > 1:
                room = await client.open_group_dm([u["id"] for u in users])
                names = ", ".join(u["username"] for u in users)
                print(f"group direct room with {names}: {room['id']} (`parley send ID TEXT`)")
                return 0
            room = await client.open_dm(users[0]["id"])
        name = users[0]["username"]
        print(f"direct room with {name}: {room['id']} (`parley send @{name} TEXT`)")
        return 0

    return _run(args, main)


def _stdin_text() -> str:
    """Standard input as one message, without the newline(s) that end it."""
    text = sys.stdin.read().rstrip("\r\n")
    if not text.strip():
        raise UsageError("nothing to send: standard input was empty")
    return text


def cmd_send(args: argparse.Namespace) -> int:
    async def main() -> int:
        text = _stdin_text() if args.text == ["-"] else " ".join(args.text)
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

    return _run(args, main)


class _Tail:
    """Turns a room's events into lines: names instead of ids, ``#seq`` for the
    messages that reactions point at (by id) once they have been seen."""

    def __init__(self, client: ParleyClient) -> None:
        self.client = client
        self.names: dict[str, str] = {}
        self.seqs: dict[str, int] = {}

    async def name(self, user_id: object) -> str:
        if not isinstance(user_id, str):
            return "?"
        if user_id not in self.names:
            try:
                user = await self.client.request("GET", f"/api/v1/users/{user_id}")
                self.names[user_id] = str(user["username"])
            except ApiError:
                self.names[user_id] = user_id[:8]
        return self.names[user_id]

    def message_ref(self, message_id: object) -> str:
        seq = self.seqs.get(str(message_id))
        return f"#{seq}" if seq is not None else "a message"

    async def line(self, event: dict[str, Any]) -> str:
        kind = event.get("type")
        when = f"[{str(event.get('created_at', ''))[11:19]}]"
        actor = await self.name(event.get("actor_id"))
        message = event.get("message")
        if isinstance(message, dict):
            self.seqs[str(message.get("id"))] = int(message.get("seq", 0))
            seq = message.get("seq")
            if kind == "message.created":
                root = message.get("thread_root_id")
                where = f" (thread of {self.message_ref(root)})" if root else ""
                return f"{when} {actor}{where}: {message.get('body', '')}"
            if kind == "message.edited":
                return f"{when} {actor} edited #{seq}: {message.get('body', '')}"
            if kind == "message.deleted":
                return f"{when} {actor} deleted #{seq}"
        if kind in ("reaction.added", "reaction.removed"):
            emoji = event.get("emoji", "?")
            target = self.message_ref(event.get("message_id"))
            if kind == "reaction.added":
                return f"{when} {actor} reacted {emoji} to {target}"
            return f"{when} {actor} took back {emoji} from {target}"
        if kind in ("member.joined", "member.left"):
            who = await self.name(event.get("user_id"))
            if kind == "member.joined":
                if event.get("invited_by") and event.get("invited_by") != event.get("user_id"):
                    return f"{when} {await self.name(event['invited_by'])} added {who}"
                return f"{when} {who} joined"
            reason = event.get("reason", "left")
            if reason == "kicked":
                return f"{when} {actor} removed {who}"
            if reason == "banned":
                return f"{when} {actor} banned {who}"
            return f"{when} {who} left"
        room = event.get("room")
        if kind in ("room.created", "room.updated") and isinstance(room, dict):
            topic = f" (topic: {room['topic']})" if room.get("topic") else ""
            verb = "created" if kind == "room.created" else "updated"
            return f"{when} {actor} {verb} the room {room.get('name', '')}{topic}"
        return f"{when} {kind} by {actor}"


def cmd_tail(args: argparse.Namespace) -> int:
    async def main() -> int:
        async with _client(args) as client:
            room_id = await _resolve_room(client, args.room)
            tail = _Tail(client)
            cursors = None
            if args.last:
                rooms = {r["id"]: r["last_seq"] for r in await client.rooms()}
                cursors = {room_id: max(0, rooms.get(room_id, 0) - args.last)}
            async with client.live(cursors=cursors) as live:
                async for event in live:
                    if event.get("room_id") != room_id:
                        continue
                    print(await tail.line(event), flush=True)
                    if event.get("type") == "member.left" and event.get("user_id") == live.user_id:
                        return 0
        return 0

    return _run(args, main)


_WHY = {
    "mention": "mentioned you",
    "room_mention": "said @room",
    "reply": "replied",
    "dm": "wrote",
    "message": "wrote",
}


def cmd_notifications(args: argparse.Namespace) -> int:
    async def main() -> int:
        async with _client(args) as client:
            feed, unread, _ = await client.notifications(unread_only=args.unread, limit=args.limit)
            if args.json:
                print(json.dumps({"notifications": feed, "unread": unread}, indent=2))
            else:
                rooms = await client.rooms()
                await _dm_names(client, rooms)
                names = {
                    r["id"]: r["name"] if r["kind"] == "dm" else f"#{r['name']}" for r in rooms
                }
                senders: dict[str, str] = {}
                for n in reversed(feed):
                    sender = n["message"]["sender_id"]
                    if sender not in senders:
                        senders[sender] = (await client.user(sender))["username"]
                    mark = " " if n["read"] else "*"
                    body = " ".join(n["message"]["body"].split())[:100]
                    where = names.get(n["room_id"], n["room_id"])
                    why = _WHY.get(n["kind"], "wrote")
                    print(
                        f"{mark} {n['created_at'][:16]}  {where}  {senders[sender]} {why}: {body}"
                    )
                print(f"{unread} unread")
            if args.mark_read and feed:
                await client.mark_notifications_read([n["id"] for n in feed])
        return 0

    return _run(args, main)


def cmd_rooms_notify(args: argparse.Namespace) -> int:
    async def main() -> int:
        async with _client(args) as client:
            room_id = await _resolve_room(client, args.room)
            if args.level is None:
                print(await client.notification_level(room_id))
            else:
                print(await client.set_notification_level(room_id, args.level))
        return 0

    return _run(args, main)


def _marked(highlight: str, *, tty: bool) -> str:
    """A search result's HTML highlight as terminal text: matches bold (or in ``*``)."""
    start, end = ("\x1b[1m", "\x1b[0m") if tty else ("*", "*")
    return html.unescape(highlight.replace("<mark>", start).replace("</mark>", end))


def cmd_search(args: argparse.Namespace) -> int:
    async def main() -> int:
        query = " ".join(args.query)
        async with _client(args) as client:
            room_id = await _resolve_room(client, args.room) if args.room else None
            sender_id = (await _user(client, args.sender))["id"] if args.sender else None
            results, _ = await client.search(
                query, room_id=room_id, sender_id=sender_id, limit=args.limit
            )
            if args.json:
                print(json.dumps(results, indent=2, ensure_ascii=False))
                return 0
            names = {r["id"]: r["name"] for r in await client.rooms()}
            tail = _Tail(client)
            tty = sys.stdout.isatty()
            for result in results:
                message = result["message"]
                where = names.get(result["room_id"], result["room_id"][:8])
                who = await tail.name(message["sender_id"])
                text = _marked(result["highlight"], tty=tty)
                print(f"{where} #{message['seq']} [{message['created_at'][:16]}] {who}: {text}")
        if not results:
            print("no messages found", file=sys.stderr)
        return 0

    return _run(args, main)


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add the client commands to ``parley``."""
    server_help = f"server URL (PARLEY_SERVER; default: the saved one, or {DEFAULT_SERVER})"

    def add(
        parent: argparse._SubParsersAction[argparse.ArgumentParser],
        name: str,
        help_text: str,
        func: Callable[[argparse.Namespace], int],
        *,
        nested: bool = False,
    ) -> argparse.ArgumentParser:
        parser = parent.add_parser(name, help=help_text, description=help_text)
        # A nested command must not reset a --server given before its name.
        default = argparse.SUPPRESS if nested else None
        parser.add_argument("--server", default=default, help=server_help)
        parser.set_defaults(func=func)
        return parser

    room_help = "room id, name, or @username for a direct room"
    login = add(subparsers, "login", "log in and save the tokens in the config file", cmd_login)
    login.add_argument("--username")
    login.add_argument("--password-stdin", action="store_true", help="read it from stdin")
    add(subparsers, "logout", "revoke the saved refresh token and forget it", cmd_logout)

    rooms = add(subparsers, "rooms", "list your rooms, or manage them", cmd_rooms)
    rooms.add_argument("--json", action="store_true", help="print the API's JSON")
    rooms_sub = rooms.add_subparsers(dest="rooms_command", metavar="COMMAND")
    create = add(rooms_sub, "create", "create a room (you own it)", cmd_rooms_create, nested=True)
    create.add_argument("name")
    create.add_argument("--private", action="store_true", help="members join by invitation")
    create.add_argument("--topic", default="", help="what the room is about")
    join = add(rooms_sub, "join", "join a public room", cmd_rooms_join, nested=True)
    join.add_argument("room", help="room id, or the name of a public room")
    leave = add(rooms_sub, "leave", "leave a room", cmd_rooms_leave, nested=True)
    leave.add_argument("room", help=room_help)
    invite = add(rooms_sub, "invite", "add a user to a room", cmd_rooms_invite, nested=True)
    invite.add_argument("room", help=room_help)
    invite.add_argument("username")
    members = add(rooms_sub, "members", "list a room's members", cmd_rooms_members, nested=True)
    members.add_argument("room", help=room_help)
    members.add_argument("--json", action="store_true", help="print the API's JSON")

    notify = add(
        rooms_sub,
        "notify",
        "show or set your notification level for a room",
        cmd_rooms_notify,
        nested=True,
    )
    notify.add_argument("room", help=room_help)
    notify.add_argument(
        "level",
        nargs="?",
        choices=["all", "mentions", "none"],
        help="all: every message; mentions: mentions, @room, replies; none: nothing",
    )
    feed = add(
        subparsers, "notifications", "list your notifications, newest last", cmd_notifications
    )
    feed.add_argument("--unread", action="store_true", help="only the unread ones")
    feed.add_argument("--limit", type=int, default=20, help="how many (1 to 200)")
    feed.add_argument("--mark-read", action="store_true", help="mark the listed ones read")
    feed.add_argument("--json", action="store_true", help="print the API's JSON")

    dm = add(subparsers, "dm", "open the direct room with a user (or 2 to 9: a group)", cmd_dm)
    dm.add_argument("usernames", nargs="+", metavar="USERNAME")
    send = add(subparsers, "send", "send a message to a room", cmd_send)
    send.add_argument("room", help=room_help)
    send.add_argument("text", nargs="+", help="the message ('-' reads stdin)")
    search = add(subparsers, "search", "search the messages of your rooms", cmd_search)
    search.add_argument(
        "query", nargs="+", help='words (all must match), "a phrase", -word to exclude'
    )
    search.add_argument("--room", help=room_help)
    search.add_argument("--from", dest="sender", metavar="USERNAME", help="sent by this user")
    search.add_argument("--limit", type=int, default=20, help="at most this many (1-100)")
    search.add_argument("--json", action="store_true", help="print the API's JSON")
    tail = add(subparsers, "tail", "print a room's events as they happen", cmd_tail)
    tail.add_argument("room", help=room_help)
    tail.add_argument("--last", type=int, default=0, help="first replay this many events")
