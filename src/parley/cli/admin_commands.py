"""``parley admin users|registration|invites|audit``: server administration on the
database directly, as the operator (no server needs to run, no admin account is
needed: whoever can read the database is the operator).

A deactivation or password reset here revokes the account's refresh tokens in the
database, then tells the running nodes on the bus (``PARLEY_BUS_URL``), as the API
does, so that the account's live connections end at once. With the in-memory bus (one
embedded node) no other process can be told: those connections end when their access
tokens expire (``PARLEY_ACCESS_TOKEN_TTL``); the admin API ends them at once.
"""

from __future__ import annotations

import argparse
import getpass
import json
import secrets
import sys
from collections.abc import Callable
from typing import Any

from parley.auth.passwords import Passwords
from parley.bus import connect_bus
from parley.domain.admin import AuditAction, AuditEntry, RegistrationMode
from parley.domain.models import User
from parley.errors import ParleyError
from parley.gateway.hub import SESSIONS_CHANNEL, sessions_message
from parley.service.admin import AdminService
from parley.settings import Settings
from parley.store import SqlStore

USER_ACTIONS = ("deactivate", "reactivate", "promote", "demote", "reset-password")


def register(admin_sub: Any, admin_command: Callable[[str, str], argparse.ArgumentParser]) -> None:
    """Add the commands to ``parley admin``'s subparsers."""
    users = admin_command("users", "list accounts; deactivate, promote, reset a password")
    users_sub = users.add_subparsers(dest="users_command", required=True)
    listing = users_sub.add_parser("list", help="accounts by username (deactivated too)")
    listing.add_argument("--prefix", default="", help="usernames that start with this")
    listing.add_argument("--limit", type=int, default=100, help="at most this many (1-1000)")
    listing.add_argument("--json", action="store_true", help="one JSON object a line")
    helps = {
        "deactivate": "no login or refresh; every token revoked",
        "reactivate": "undo a deactivation",
        "promote": "make a server admin",
        "demote": "no longer a server admin",
        "reset-password": "set a password (prompts); every session ends",
    }
    for name in USER_ACTIONS:
        command = users_sub.add_parser(name, help=helps[name])
        command.add_argument("username")
        if name == "reset-password":
            command.add_argument("--password-stdin", action="store_true", help="read it from stdin")

    registration = admin_command("registration", "show or set who may sign up")
    registration.add_argument(
        "mode", nargs="?", choices=[m.value for m in RegistrationMode], help="the new mode"
    )

    invites = admin_command("invites", "invites to register (registration mode invite)")
    invites_sub = invites.add_subparsers(dest="invites_command", required=True)
    create = invites_sub.add_parser("create", help="make an invite; prints its code once")
    create.add_argument("--expires-in", type=int, help="seconds until it expires")
    create.add_argument("--max-uses", type=int, help="accounts it may create")
    invites_list = invites_sub.add_parser("list", help="the newest invites")
    invites_list.add_argument("--json", action="store_true", help="one JSON object a line")

    audit = admin_command("audit", "print the audit log, oldest first")
    audit.add_argument(
        "--action",
        action="append",
        choices=[a.value for a in AuditAction],
        help="only this action (repeatable)",
    )
    audit.add_argument("--limit", type=int, default=100, help="the newest this many (1-500)")
    audit.add_argument("--after", type=int, help="entries after this id, oldest first")
    audit.add_argument("--json", action="store_true", help="one JSON object a line")


def service(settings: Settings, store: SqlStore) -> AdminService:
    passwords = Passwords(
        time_cost=settings.argon2_time_cost, memory_kib=settings.argon2_memory_kib
    )
    return AdminService(store, passwords, registration=RegistrationMode(settings.registration))


async def run(args: argparse.Namespace, settings: Settings, store: SqlStore) -> int | None:
    """The command's exit code, or None if it is none of these."""
    admin = service(settings, store)
    command = args.admin_command
    if command == "users":
        return await _users(args, settings, admin)
    if command == "registration":
        if args.mode is not None:
            await admin.set_registration(None, RegistrationMode(args.mode))
        print(f"registration: {(await admin.registration()).value}")
        return 0
    if command == "invites":
        return await _invites(args, admin)
    if command == "audit":
        return await _audit(args, admin)
    return None


async def _users(args: argparse.Namespace, settings: Settings, admin: AdminService) -> int:
    if args.users_command == "list":
        if not 1 <= args.limit <= 1000:
            raise UsageError("--limit: 1 to 1000")
        users, more = await admin.list_users(args.prefix, None, args.limit)
        for user in users:
            print(json.dumps(user.admin_view()) if args.json else _user_line(user))
        if more and not args.json:
            print(f"(more: raise --limit past {args.limit})", file=sys.stderr)
        return 0
    user = await admin.find_user(args.username)
    action = args.users_command
    if action in ("deactivate", "reactivate"):
        user, ended = await admin.set_active(None, user.id, action == "reactivate")
        await tell_nodes(settings, user.id, ended)
    elif action in ("promote", "demote"):
        user = await admin.set_admin(None, user.id, action == "promote")
    else:
        if args.password_stdin:
            password = sys.stdin.readline().rstrip("\n")
        else:
            password = getpass.getpass("new password: ")
        ended = await admin.reset_password(None, user.id, password)
        await tell_nodes(settings, user.id, ended)
        print(f"{user.username}: password set; {len(ended)} sessions ended")
        return 0
    print(_user_line(user))
    return 0


async def tell_nodes(settings: Settings, user_id: str, sids: list[str]) -> None:
    """Publish the ended sessions on the bus, as ``Hub.end_sessions`` does, so that
    running nodes close those connections now; a warning if no broker took it."""
    if not sids or settings.bus_url.startswith("memory:"):
        return
    origin = f"admin-{secrets.token_hex(4)}"
    bus = connect_bus(settings.bus_url, node_id=origin)
    try:
        await bus.start(_ignore)  # waits for the first connection attempt
        await bus.publish(SESSIONS_CHANNEL, sessions_message(origin.encode(), user_id, sids))
    except ParleyError as exc:
        print(
            f"warning: {exc.message}: open connections end when their access tokens expire",
            file=sys.stderr,
        )
    finally:
        await bus.close()


async def _ignore(channel: str, data: bytes) -> None:
    return None


def _user_line(user: User) -> str:
    flags = [f for f, on in (("admin", user.is_admin), ("deactivated", user.deactivated_at)) if on]
    return f"{user.id}  {user.username}  {user.display_name}  {','.join(flags) or 'active'}"


async def _invites(args: argparse.Namespace, admin: AdminService) -> int:
    if args.invites_command == "create":
        invite, code = await admin.create_invite(
            None, expires_in=args.expires_in, max_uses=args.max_uses
        )
        print(code)
        limits = f"expires {invite.expires_at or 'never'}, uses {invite.max_uses or 'any'}"
        print(f"invite {invite.id}: {limits}", file=sys.stderr)
        return 0
    for invite in await admin.list_invites():
        if args.json:
            print(json.dumps(invite.public()))
        else:
            print(
                f"{invite.id}  made {invite.created_at}  expires {invite.expires_at or 'never'}"
                f"  used {invite.uses}/{invite.max_uses or 'any'}"
            )
    return 0


async def _audit(args: argparse.Namespace, admin: AdminService) -> int:
    if not 1 <= args.limit <= 500:
        raise UsageError("--limit: 1 to 500")
    actions = args.action or ()
    if args.after is not None:
        entries, _ = await admin.audit(after=args.after, limit=args.limit, actions=actions)
    else:
        entries, _ = await admin.audit(before=2**53, limit=args.limit, actions=actions)
    for entry in entries:
        print(json.dumps(entry.public()) if args.json else audit_line(entry))
    return 0


def audit_line(entry: AuditEntry) -> str:
    """One entry on one line: id, time, action, actor, target, ip, details."""
    r = entry.record
    target = " ".join(
        f"{name}={value}"
        for name, value in (
            ("user", r.target_user_id),
            ("room", r.target_room_id),
            ("message", r.target_message_id),
        )
        if value
    )
    parts = [str(entry.id), r.at, r.action.value, f"actor={r.actor_id or '-'}"]
    if target:
        parts.append(target)
    if r.ip:
        parts.append(f"ip={r.ip}")
    if r.details:
        parts.append(json.dumps(r.details, sort_keys=True))
    return "  ".join(parts)


class UsageError(Exception):
    """A bad option value: one line, exit 2."""
