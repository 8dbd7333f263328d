"""Engines: URLs with their drivers, SQLite's set-up, and the driver's errors as the
domain sees them.

SQLite
    WAL (readers never wait for the writer), ``synchronous=FULL`` (an acknowledged write
    survives power loss), ``busy_timeout=5000``, foreign keys on, ``secure_delete``
    (erased text is zeroed in the file, ``parley.store.erase``). The driver's own
    transaction handling is off (``isolation_level=None``) and a batch starts with
    ``BEGIN IMMEDIATE``, so it takes the lock up front (waiting up to the busy timeout)
    rather than failing with "database is locked" on upgrade: one writer per process
    anyway, this is for another process on the same file (a CLI next to the server).
    Migrations keep the async engine (``make_engine``, aiosqlite), where a ``begin``
    hook does the same.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any

from sqlalchemy import create_engine, event
from sqlalchemy.engine import URL, Connection, Engine, make_url
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine
from sqlalchemy.pool import NullPool

from parley.errors import Unavailable

__all__ = ["make_engine", "normalize_url", "prepare_sqlite_path", "writer_engine"]

log = logging.getLogger(__name__)

_WRITE = "parley_write"
_PG_PORT = 5432


def normalize_url(url: str) -> URL:
    """The URL with its async driver named: ``sqlite://`` → aiosqlite, ``postgresql://``
    (or ``postgres://``) → asyncpg. A libpq multi-host URL
    (``postgresql://u@h1:5432,h2:5433/db?target_session_attrs=read-write``) becomes the
    form SQLAlchemy's asyncpg dialect reads (``?host=h1:5432&host=h2:5433``); asyncpg
    then tries the hosts in order and keeps the first whose role matches
    ``target_session_attrs``, so a promoted standby is found on the next connect."""
    parsed = make_url(_multi_host(url.replace("postgres://", "postgresql://", 1)))
    if parsed.drivername == "sqlite":
        parsed = parsed.set(drivername="sqlite+aiosqlite")
    elif parsed.drivername == "postgresql":
        parsed = parsed.set(drivername="postgresql+asyncpg")
    return parsed


def _multi_host(url: str) -> str:
    """``scheme://user@h1:p1,h2:p2/db?q`` → ``scheme://user@/db?host=h1:p1&host=h2:p2&q``
    (every port spelled out: the dialect wants one for each host); other URLs as they
    are."""
    scheme, sep, rest = url.partition("://")
    if not sep or not scheme.startswith("postgresql"):
        return url
    netloc, slash, tail = rest.partition("/")
    if not slash:
        netloc, _, query = netloc.partition("?")
        tail = f"?{query}" if query else ""
    userinfo, at, hosts = netloc.rpartition("@")
    if "," not in hosts:
        return url
    pairs = []
    for entry in hosts.split(","):
        if not entry or entry.startswith("["):
            raise ValueError(
                f"cannot read host {entry!r} of a multi-host database URL: give each "
                "host as name:port or IPv4:port (no IPv6 literals)"
            )
        host, colon, port = entry.partition(":")
        if colon and not port.isdigit():
            raise ValueError(f"bad port {port!r} in a multi-host database URL")
        pairs.append(f"host={host}:{port or _PG_PORT}")
    database, _, query = tail.partition("?")
    params = "&".join([*pairs, query] if query else pairs)
    return f"{scheme}://{userinfo}{at}/{database}?{params}"


def prepare_sqlite_path(url: URL) -> None:
    """Make a SQLite database private whatever the umask: its directory, if missing,
    is created 0700, the file itself created 0600 before SQLite opens it, and the file
    and its ``-wal``, ``-shm`` and ``-journal`` made 0600 if they exist (an older
    install made them 0644). SQLite creates the WAL and shared-memory files with the
    database file's mode, so they stay 0600 too."""
    if url.get_backend_name() != "sqlite" or url.database in (None, "", ":memory:"):
        return
    path = Path(str(url.database))
    if not path.parent.exists():
        path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    os.close(os.open(path, os.O_WRONLY | os.O_CREAT, 0o600))
    for file in (path, *(path.with_name(path.name + s) for s in ("-wal", "-shm", "-journal"))):
        try:
            if file.exists() and file.stat().st_mode & 0o077:
                file.chmod(0o600)
        except OSError as exc:
            log.warning("cannot make %s private (0600): %s", file, exc)


def make_engine(url: str | URL, *, pool_size: int = 10) -> AsyncEngine:
    """An async engine set up for Parley, used by the migrations (the store itself runs
    SQLite on the sync driver). On SQLite: WAL, ``synchronous=FULL``, a 5 s busy
    timeout, foreign keys, and ``BEGIN IMMEDIATE`` for connections run with the
    ``parley_write`` execution option (see ``writer_engine``)."""
    parsed = normalize_url(url) if isinstance(url, str) else url
    if parsed.get_backend_name() == "sqlite":
        engine = create_async_engine(
            parsed,
            connect_args={"isolation_level": None},
            pool_size=pool_size,
            max_overflow=pool_size,
        )
        event.listen(engine.sync_engine, "connect", _sqlite_connect)
        event.listen(engine.sync_engine, "begin", _sqlite_begin)
        return engine
    return _postgres_engine(parsed, pool_size=pool_size, max_overflow=pool_size * 2)


def writer_engine(engine: AsyncEngine) -> AsyncEngine:
    """The same pool, marked so that SQLite transactions begin ``IMMEDIATE``."""
    return engine.execution_options(**{_WRITE: True})


def _postgres_engine(
    url: URL, *, pool_size: int, max_overflow: int, autocommit: bool = False
) -> AsyncEngine:
    options: dict[str, Any] = {"isolation_level": "AUTOCOMMIT"} if autocommit else {}
    return create_async_engine(
        url,
        connect_args={"timeout": 10},
        pool_size=pool_size,
        max_overflow=max_overflow,
        pool_pre_ping=False,
        **options,
    )


def _sqlite_engine(url: URL) -> Engine:
    """A sync engine on the stdlib driver. No pool: each of the store's threads opens
    one connection and keeps it for the store's life. No ``begin`` hook either: with the
    driver's transactions off, SQLAlchemy's ``begin()`` emits nothing, so a read runs
    without ``BEGIN`` and ``_run_batch`` says ``BEGIN IMMEDIATE`` itself (a connection
    event listener would also switch on event dispatch for every statement: ~10 %)."""
    engine = create_engine(
        url.set(drivername="sqlite+pysqlite"),
        connect_args={"isolation_level": None, "check_same_thread": False},
        poolclass=NullPool,
    )
    event.listen(engine, "connect", _sqlite_connect)  # a pool event: no dispatch cost
    return engine


def _sqlite_connect(dbapi_connection: Any, _record: Any) -> None:
    cursor = dbapi_connection.cursor()
    try:
        # busy_timeout first: switching to WAL may itself wait for a lock.
        for pragma in (
            "PRAGMA busy_timeout = 5000",
            "PRAGMA journal_mode = WAL",
            "PRAGMA synchronous = FULL",
            "PRAGMA foreign_keys = ON",
            # Deleted content is overwritten with zeros, not left in free space.
            "PRAGMA secure_delete = ON",
        ):
            cursor.execute(pragma)
    finally:
        cursor.close()


def _sqlite_begin(conn: Any) -> None:
    """The async engine's ``begin`` hook (migrations): ``IMMEDIATE`` when writing."""
    write = conn.get_execution_options().get(_WRITE, False)
    conn.exec_driver_sql("BEGIN IMMEDIATE" if write else "BEGIN")


def _unavailable(exc: BaseException) -> Unavailable:
    """A driver error as the domain sees it; the cause stays attached for the logs."""
    err = Unavailable("the database is unavailable")
    err.__cause__ = exc
    return err


def _raw_cursor(conn: Connection) -> Any:
    return conn.connection.dbapi_connection.cursor()  # type: ignore[union-attr]
