"""``parley``: one command for the server, its administration and its clients."""

from __future__ import annotations

import argparse
import asyncio
import logging
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from parley import __version__
from parley.settings import Settings


def build_settings(args: argparse.Namespace) -> Settings:
    """Settings from ``PARLEY_*`` variables, overridden by the flags given."""
    overrides: dict[str, Any] = {}
    for name in ("host", "port", "data_dir", "database_url", "bus_url", "cache_url", "node_id"):
        value = getattr(args, name, None)
        if value is not None:
            overrides[name] = value
    return Settings(**overrides)


def add_server_flags(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--data-dir", type=Path, help="default ./parley-data (PARLEY_DATA_DIR)")
    parser.add_argument("--database-url", help="sqlite:///… or postgresql://… ")


def cmd_serve(args: argparse.Namespace) -> int:
    from parley.gateway.server import serve

    settings = build_settings(args)
    logging.basicConfig(
        level=settings.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s %(message)s"
    )
    return serve(settings)


def cmd_admin(args: argparse.Namespace) -> int:
    from parley.cli import admin

    settings = build_settings(args)
    result: int = asyncio.run(admin.run(args, settings))
    return result


def make_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="parley", description="Parley chat server and tools.")
    parser.add_argument("--version", action="version", version=f"parley {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)

    serve = sub.add_parser("serve", help="run a chat node (all-in-one by default)")
    serve.add_argument("--host", help="default 127.0.0.1 (PARLEY_HOST)")
    serve.add_argument("--port", type=int, help="default 8000 (PARLEY_PORT)")
    add_server_flags(serve)
    serve.add_argument("--bus-url", help="memory:// (PARLEY_BUS_URL)")
    serve.add_argument("--cache-url", help="memory:// (PARLEY_CACHE_URL)")
    serve.add_argument("--node-id", help="this node's name (PARLEY_NODE_ID)")
    serve.set_defaults(func=cmd_serve)

    admin = sub.add_parser("admin", help="administer the database directly")
    add_server_flags(admin)
    admin_sub = admin.add_subparsers(dest="admin_command", required=True)
    create = admin_sub.add_parser("create-user", help="create a user (prompts for a password)")
    create.add_argument("username")
    create.add_argument("--display-name")
    create.add_argument("--admin", action="store_true", help="a server administrator")
    create.add_argument("--password-stdin", action="store_true", help="read it from stdin")
    admin_sub.add_parser("migrate", help="upgrade the database schema to this version")
    export = admin_sub.add_parser("export-room", help="print a room's events as JSON lines")
    export.add_argument("room_id")
    admin.set_defaults(func=cmd_admin)

    for module in ("client", "bench", "cluster"):
        try:
            register = __import__(f"parley.cli.{module}", fromlist=["register"]).register
        except ImportError:  # pragma: no cover - optional parts of the CLI
            continue
        register(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = make_parser().parse_args(argv)
    try:
        code: int = args.func(args)
    except KeyboardInterrupt:
        return 130
    return code


if __name__ == "__main__":
    sys.exit(main())
