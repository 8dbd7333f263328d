"""``parley``: one command for the server, its administration and its clients."""

from __future__ import annotations

import argparse
import asyncio
import errno
import importlib
import logging
import sys
from collections.abc import Iterable, Sequence
from typing import Any, Literal, get_args, get_origin

from pydantic import ValidationError

from parley import __version__
from parley.settings import Settings


class SettingsError(Exception):
    """A setting's value was refused: one line naming the flag, its variable and why."""


def _flag(name: str) -> str:
    return "--" + name.replace("_", "-")


def _describe(error: Any) -> str:
    """One pydantic error as ``--flag (PARLEY_FLAG) 'value': why``."""
    name = str(error["loc"][0]) if error.get("loc") else "?"
    reason = str(error.get("msg", "invalid")).removeprefix("Value error, ")
    reason = reason[:1].lower() + reason[1:]
    shown = "" if name in ("secret_key", "master_key") else f" {error.get('input')!r}"
    return f"{_flag(name)} (PARLEY_{name.upper()}){shown}: {reason}"


def build_settings(args: argparse.Namespace) -> Settings:
    """Settings from ``PARLEY_*`` variables, overridden by the flags given.

    ``SettingsError`` names the first bad value (flags and variables alike)."""
    overrides = {
        name: getattr(args, name)
        for name in Settings.model_fields
        if getattr(args, name, None) is not None
    }
    try:
        return Settings(**overrides)
    except ValidationError as exc:
        raise SettingsError(_describe(exc.errors()[0])) from None


def add_settings_flags(
    parser: argparse.ArgumentParser, names: Iterable[str] | None = None, *, nested: bool = False
) -> None:
    """A flag for each field of ``Settings`` (or the ``names`` given), its help and
    default taken from the field, so a new setting is a new flag with no edit here.

    Values stay strings for ``Settings`` to check, with one error message for a
    flag and its variable alike. ``nested``: the flags of a subcommand whose parent
    has them too must not reset a value given before the subcommand's name."""
    group = parser.add_argument_group("settings (each also a PARLEY_* variable)")
    for name, field in Settings.model_fields.items():
        if names is not None and name not in names:
            continue
        env = f"PARLEY_{name.upper()}"
        default = "unset" if field.default is None else field.default
        if name == "data_dir":
            default = str(default)
        help_text = f"{field.description} ({env}; default: {default})"
        if field.repr is False:  # a secret: the process list shows flags to every user
            help_text += "; prefer the variable"
        help_text = help_text.replace("%", "%%")
        options: dict[str, Any] = {"dest": name, "help": help_text}
        if nested:
            options["default"] = argparse.SUPPRESS
        if field.annotation is bool:
            group.add_argument(_flag(name), action=argparse.BooleanOptionalAction, **options)
            continue
        metavar = name.upper()
        if get_origin(field.annotation) is Literal:
            metavar = "{" + ",".join(map(str, get_args(field.annotation))) + "}"
        group.add_argument(_flag(name), metavar=metavar, **options)


def add_server_flags(parser: argparse.ArgumentParser, *, nested: bool = False) -> None:
    """The settings ``parley admin`` needs: where the database is."""
    add_settings_flags(parser, ("data_dir", "database_url"), nested=nested)


def ensure_data_dir(settings: Settings) -> None:
    """Create the data directory up front: a failure is one line, not a traceback
    from deep inside the start-up."""
    try:
        settings.data_dir.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        reason = "a file is in the way" if exc.errno == errno.EEXIST else exc.strerror or str(exc)
        raise SettingsError(
            f"--data-dir (PARLEY_DATA_DIR) {str(settings.data_dir)!r}: cannot create it "
            f"({reason}): choose a directory you can write to"
        ) from None


def cmd_serve(args: argparse.Namespace) -> int:
    from parley.gateway.server import ServeError, serve

    settings = build_settings(args)
    ensure_data_dir(settings)
    logging.basicConfig(
        level=settings.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s %(message)s"
    )
    if settings.log_level.lower() != "debug":  # seven lines of plugin set-up at every start
        logging.getLogger("alembic.runtime.plugins").setLevel(logging.WARNING)
    try:
        return serve(settings)
    except ServeError as exc:
        print(f"parley: {exc}", file=sys.stderr)
        return 1


def cmd_admin(args: argparse.Namespace) -> int:
    from parley.cli import admin

    settings = build_settings(args)
    ensure_data_dir(settings)
    result: int = asyncio.run(admin.run(args, settings))
    return result


LAZY_COMMANDS = {
    "bench": "load-test a server: fanout, dms, idle, reconnect-storm, presence",
    "cluster": "run or configure a cluster of nodes",
}
"""Commands whose modules (the benchmark, the local cluster) are imported only
when run: ``parley serve`` and the client commands never load them."""


def make_parser(command: str | None = None) -> argparse.ArgumentParser:
    """The CLI's parser; ``command`` (the first word of the command line) decides
    whether a ``LAZY_COMMANDS`` parser is built, which imports its module."""
    parser = argparse.ArgumentParser(prog="parley", description="Parley chat server and tools.")
    parser.add_argument("--version", action="version", version=f"parley {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)

    serve = sub.add_parser(
        "serve",
        help="run a chat node (all-in-one by default)",
        description="Run a chat node. Every setting is a flag here and a PARLEY_* variable; "
        "a flag wins over its variable.",
    )
    add_settings_flags(serve)
    serve.set_defaults(func=cmd_serve)

    admin = sub.add_parser("admin", help="administer the database directly")
    add_server_flags(admin)
    admin_sub = admin.add_subparsers(dest="admin_command", required=True)

    def admin_command(name: str, help_text: str) -> argparse.ArgumentParser:
        command = admin_sub.add_parser(name, help=help_text)
        add_server_flags(command, nested=True)
        return command

    create = admin_command("create-user", "create a user (prompts for a password)")
    create.add_argument("username")
    create.add_argument("--display-name")
    create.add_argument("--admin", action="store_true", help="a server administrator")
    create.add_argument("--password-stdin", action="store_true", help="read it from stdin")
    admin_command("migrate", "upgrade the database schema to this version")
    export = admin_command("export-room", "print a room's events as JSON lines")
    export.add_argument("room_id")
    keys = admin_sub.add_parser("keys", help="the keys that seal message text at rest")
    keys_sub = keys.add_subparsers(dest="keys_command", required=True)
    rotate = keys_sub.add_parser("rotate", help="add a key; new writes use it")
    rotate.add_argument(
        "--reseal", action="store_true", help="re-seal older rows now, in this process"
    )
    keys_sub.add_parser("status", help="rows holding text under each key")
    from parley.cli import admin_commands

    admin_commands.register(admin_sub, admin_command)
    search = admin_sub.add_parser("search", help="the blind search index")
    search_sub = search.add_subparsers(dest="search_command", required=True)
    reindex = search_sub.add_parser(
        "reindex", help="index the messages stored before the index (safe while nodes run)"
    )
    add_server_flags(reindex, nested=True)
    reindex.add_argument(
        "--all", action="store_true", help="empty the index first and index every message"
    )
    admin.set_defaults(func=cmd_admin)

    from parley.cli import client

    client.register(sub)
    for name, help_text in LAZY_COMMANDS.items():
        if command == name:
            importlib.import_module(f"parley.cli.{name}").register(sub)
        else:  # listed in the help, never parsed: the server does not import them
            sub.add_parser(name, help=help_text)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    words = list(sys.argv[1:] if argv is None else argv)
    command = next((word for word in words if not word.startswith("-")), None)
    args = make_parser(command).parse_args(words)
    try:
        code: int = args.func(args)
    except SettingsError as exc:
        print(f"parley: bad setting {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130
    return code


if __name__ == "__main__":
    sys.exit(main())
