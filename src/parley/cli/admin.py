"""``parley admin``: work on the database directly, with no server running."""

from __future__ import annotations

import argparse
import getpass
import sys

from parley import errors
from parley.auth.passwords import Passwords
from parley.cli import admin_commands
from parley.domain.admin import AuditAction, AuditRecord
from parley.domain.models import RoomId
from parley.gateway.runtime import open_key_ring
from parley.settings import Settings
from parley.store import SqlStore, migrate


async def run(args: argparse.Namespace, settings: Settings) -> int:
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    url = settings.resolved_database_url
    await migrate(url)
    if args.admin_command == "migrate":
        print(f"database at head: {settings.database_url or settings.data_dir}")
        return 0
    store = SqlStore(url, keys=open_key_ring(settings), reseal=False)
    try:
        await store.start()
    except errors.ParleyError as exc:
        print(f"error: {exc.message}", file=sys.stderr)
        return 1
    try:
        handled = await admin_commands.run(args, settings, store)
        if handled is not None:
            return handled
        if args.admin_command == "keys":
            return await _keys(args, settings, store)
        if args.admin_command == "search":
            count = await store.reindex_search(rebuild=args.all)
            print(f"indexed {count} messages for search")
            return 0
        if args.admin_command == "create-user":
            return await _create_user(args, settings, store)
        if args.admin_command == "export-room":
            if await store.get_room(RoomId(args.room_id)) is None:
                print(f"no room {args.room_id}", file=sys.stderr)
                return 1
            async for event in store.export_room(RoomId(args.room_id)):
                sys.stdout.buffer.write(event.raw + b"\n")
            sys.stdout.flush()
            return 0
    except admin_commands.UsageError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except errors.ParleyError as exc:
        print(f"error: {exc.message}", file=sys.stderr)
        return 1
    finally:
        await store.close()
    return 2


async def _keys(args: argparse.Namespace, settings: Settings, store: SqlStore) -> int:
    """``keys rotate [--reseal]`` and ``keys status``."""
    if args.keys_command == "rotate":
        key_id = await store.rotate_key()
        await store.record_audit(AuditRecord(AuditAction.KEY_ROTATED, details={"key_id": key_id}))
        print(f"key {key_id} now seals new writes")
        if args.reseal:
            print(f"re-sealed {await store.reencrypt()} rows under key {key_id}")
        else:
            print(
                f"running nodes switch to it within {settings.key_check_interval:g} s and "
                "re-seal older rows in the background"
            )
        return 0
    status = await store.key_status()
    for table in ("messages", "events"):
        counts = status[table]
        parts = [f"key {k}: {n}" for k, n in sorted((k, n) for k, n in counts.items() if k)]
        if counts.get(None):
            parts.append(f"plain text: {counts[None]}")
        print(f"{table}: {', '.join(parts) or 'no rows'}")
    return 0


async def _create_user(args: argparse.Namespace, settings: Settings, store: SqlStore) -> int:
    from parley.domain import validation

    if args.password_stdin:
        password = sys.stdin.readline().rstrip("\n")
    else:
        password = getpass.getpass("password: ")
    passwords = Passwords(
        time_cost=settings.argon2_time_cost, memory_kib=settings.argon2_memory_kib
    )
    try:
        validation.check_username(args.username)
        validation.check_password(password)
        name = validation.check_display_name(args.display_name or args.username)
        user = await store.create_user(
            args.username, await passwords.hash(password), name, is_admin=args.admin
        )
    except errors.ParleyError as exc:
        print(f"error: {exc.message}", file=sys.stderr)
        return 1
    print(user.id)
    return 0
