"""A private PostgreSQL primary and a streaming standby on free ports, built with the
Debian binaries (``initdb``, ``pg_basebackup``, ``pg_ctl``) run as the ``postgres``
user: the failover and read-replica tests kill, promote and pause them without
touching the machine's own server.

Synchronous replication is on (``synchronous_standby_names = '*'``,
``synchronous_commit = remote_apply``): a commit returns once the standby has applied
it, so an acknowledged message survives the primary's death. ``fsync`` is off: a
``kill -9`` loses no page the kernel holds, and the tests stay quick.
"""

from __future__ import annotations

import contextlib
import glob
import os
import pwd
import shutil
import signal
import subprocess
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from parley.testing.cluster import free_port

PG_USER = "postgres"


def find_pg_bin() -> Path | None:
    """The newest Debian PostgreSQL ``bin`` directory with every tool the tests run."""
    for candidate in sorted(glob.glob("/usr/lib/postgresql/*/bin"), reverse=True):
        path = Path(candidate)
        if all((path / tool).exists() for tool in ("initdb", "pg_basebackup", "pg_ctl")):
            return path
    return None


def require_pg_binaries() -> Path:
    """The binaries' directory; skip (fail under CI=true) when they, the ``postgres``
    user or the right to become it are missing."""
    path = find_pg_bin()
    problem = None
    if path is None:
        problem = "PostgreSQL server binaries are not installed (apt-get install postgresql)"
    else:
        try:
            pwd.getpwnam(PG_USER)
        except KeyError:
            problem = f"there is no {PG_USER!r} user to run PostgreSQL as"
        if os.geteuid() != 0 and problem is None:
            problem = "building a private PostgreSQL needs root (to run it as postgres)"
    if problem is not None:
        if os.environ.get("CI") == "true":
            pytest.fail(f"{problem} (CI=true: services are required)")
        pytest.skip(problem)
    assert path is not None
    return path


@dataclass
class Server:
    """One private PostgreSQL server."""

    bin: Path
    data: Path
    port: int
    log: Path
    orphans: list[int] = field(default_factory=list)

    def run(self, tool: str, *args: str, timeout: float = 60) -> str:
        """A PostgreSQL tool as the ``postgres`` user; its output."""
        done = subprocess.run(
            ["runuser", "-u", PG_USER, "--", str(self.bin / tool), *args],
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )
        if done.returncode != 0:
            raise RuntimeError(f"{tool} {' '.join(args)} failed: {done.stderr or done.stdout}")
        return done.stdout

    def start(self) -> None:
        self.run("pg_ctl", "-D", str(self.data), "-l", str(self.log), "-w", "-t", "60", "start")

    def sql(self, statement: str, database: str = "postgres") -> str:
        """One statement through ``psql``; its unaligned output."""
        return self.run(
            "psql",
            "-h",
            "127.0.0.1",
            "-p",
            str(self.port),
            "-U",
            PG_USER,
            "-d",
            database,
            "-XAtc",
            statement,
        ).strip()

    def postmaster_pid(self) -> int | None:
        try:
            return int((self.data / "postmaster.pid").read_text().split()[0])
        except (OSError, ValueError, IndexError):
            return None

    def kill(self) -> None:
        """``kill -9`` the postmaster: no checkpoint, no goodbye to the standby. Its
        backends end on their own when they notice; ``stop`` ends any that did not."""
        pid = self.postmaster_pid()
        if pid is None:
            return
        self.orphans += _children(pid)
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)

    def stop(self) -> None:
        """Stop it if it runs (immediate mode), and any backend a kill left behind."""
        pid = self.postmaster_pid()
        if pid is not None:
            self.orphans += _children(pid)
        with contextlib.suppress(RuntimeError, subprocess.TimeoutExpired):
            self.run("pg_ctl", "-D", str(self.data), "-m", "immediate", "-w", "stop", timeout=30)
        for child in self.orphans:
            with contextlib.suppress(ProcessLookupError):
                os.kill(child, signal.SIGKILL)


def _children(pid: int) -> list[int]:
    """The processes whose parent is ``pid`` (a postmaster's backends)."""
    out = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        with contextlib.suppress(OSError, ValueError, IndexError):
            fields = stat.read_text().rsplit(")", 1)[1].split()
            if int(fields[1]) == pid:
                out.append(int(stat.parent.name))
    return out


@dataclass
class Replicated:
    """A primary, its synchronous streaming standby, and the URL Parley is given."""

    primary: Server
    standby: Server
    database: str

    def url(self, *, target: str = "read-write") -> str:
        """The multi-host URL: the primary first, then the standby."""
        hosts = f"127.0.0.1:{self.primary.port},127.0.0.1:{self.standby.port}"
        return f"postgresql://{PG_USER}@{hosts}/{self.database}?target_session_attrs={target}"

    def standby_url(self) -> str:
        return f"postgresql://{PG_USER}@127.0.0.1:{self.standby.port}/{self.database}"

    def wait_sync(self, timeout: float = 30) -> None:
        """Until the primary reports its standby ``sync`` and streaming."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            state = self.primary.sql("SELECT sync_state FROM pg_stat_replication")
            if state == "sync":
                return
            time.sleep(0.1)
        raise RuntimeError("the standby never became synchronous")

    def wait_caught_up(self, timeout: float = 30) -> None:
        """Until the standby has replayed everything the primary has written."""
        lsn = self.primary.sql("SELECT pg_current_wal_lsn()")
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.standby.sql(f"SELECT pg_last_wal_replay_lsn() >= '{lsn}'::pg_lsn") == "t":
                return
            time.sleep(0.05)
        raise RuntimeError("the standby never caught up")


def _configure_primary(server: Server, socket_dir: Path, *, synchronous: bool) -> None:
    settings = {
        "port": str(server.port),
        "listen_addresses": "'127.0.0.1'",
        "unix_socket_directories": f"'{socket_dir}'",
        "wal_level": "replica",
        "max_wal_senders": "5",
        "hot_standby": "on",
        "synchronous_standby_names": "'*'" if synchronous else "''",
        "synchronous_commit": "remote_apply",
        "fsync": "off",
        "full_page_writes": "off",
        "max_connections": "100",
        "shared_buffers": "32MB",
        "wal_receiver_status_interval": "1s",
        "hot_standby_feedback": "on",
    }
    with (server.data / "postgresql.conf").open("a") as conf:
        for key, value in settings.items():
            conf.write(f"{key} = {value}\n")


@contextlib.contextmanager
def replicated_postgres(bin_dir: Path, *, synchronous: bool = True) -> Iterator[Replicated]:
    """A primary and a standby (synchronous unless told), both running, with a
    database ``parley``; everything stopped and deleted afterwards."""
    root = Path(tempfile.mkdtemp(prefix="parley-pg-"))
    entry = pwd.getpwnam(PG_USER)
    os.chown(root, entry.pw_uid, entry.pw_gid)
    root.chmod(0o700)
    primary = Server(bin_dir, root / "primary", free_port(), root / "primary.log")
    standby = Server(bin_dir, root / "standby", free_port(), root / "standby.log")
    try:
        primary.run("initdb", "-D", str(primary.data), "-U", PG_USER, "-A", "trust", "-N")
        _configure_primary(primary, root, synchronous=synchronous)
        primary.start()
        standby.run(
            "pg_basebackup",
            "-h",
            "127.0.0.1",
            "-p",
            str(primary.port),
            "-U",
            PG_USER,
            "-D",
            str(standby.data),
            "-R",
            "-X",
            "stream",
            "-c",
            "fast",
        )
        with (standby.data / "postgresql.conf").open("a") as conf:
            conf.write(f"port = {standby.port}\n")
            # Promoted, it stands alone: kept, '*' would make every commit wait for
            # a standby that does not exist (Patroni rewrites this on promotion).
            conf.write("synchronous_standby_names = ''\n")
        standby.start()
        pair = Replicated(primary, standby, "parley")
        if synchronous:
            pair.wait_sync()
        primary.sql("CREATE DATABASE parley")
        yield pair
    finally:
        standby.stop()
        primary.stop()
        shutil.rmtree(root, ignore_errors=True)
