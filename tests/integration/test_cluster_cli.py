"""``parley cluster up`` as a user runs it: starts nodes and nginx, prints the URL,
and on SIGINT stops every process it started."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from tests.integration.cluster_support import (
    cache_url,
    fresh_database,
    require_broker,
    require_nginx,
)

PARLEY = [sys.executable, "-m", "parley.cli.main"]


def descendants(pid: int) -> set[int]:
    """Every process below ``pid`` now (from /proc)."""
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        ppid = int(stat.rsplit(")", 1)[1].split()[1])
        children.setdefault(ppid, []).append(int(entry.name))
    found: set[int] = set()
    todo = [pid]
    while todo:
        for child in children.get(todo.pop(), []):
            found.add(child)
            todo.append(child)
    return found


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    try:  # a zombie waiting for its reaper is gone for our purpose
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def run_up(tmp_path: Path, *flags: str) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("PARLEY_")}
    proc = subprocess.Popen(
        [*PARLEY, "cluster", "up", "--workdir", str(tmp_path / "cluster"), *flags],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stdout is not None
        first = proc.stdout.readline()
        assert first.startswith("Parley cluster at http://127.0.0.1:"), (
            first + proc.communicate(timeout=30)[1]
        )
        url = first.split()[-1]
        assert "nodes:" in proc.stdout.readline()
        ready = httpx.get(f"{url}/readyz", timeout=10)
        assert ready.status_code == 200, ready.text
        started = descendants(proc.pid)
        nodes = int(flags[flags.index("--nodes") + 1])
        assert len(started) >= nodes + 1  # the nodes, nginx (and its worker)
        proc.send_signal(signal.SIGINT)
        assert proc.wait(timeout=60) == 0, proc.communicate()[1]
        deadline = time.monotonic() + 10
        while {p for p in started if alive(p)} and time.monotonic() < deadline:
            time.sleep(0.05)
        assert not {p for p in started if alive(p)}
        with pytest.raises(httpx.HTTPError):
            httpx.get(f"{url}/readyz", timeout=2)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def test_one_node_starts_and_sigint_stops_everything(tmp_path: Path) -> None:
    require_nginx()
    run_up(tmp_path, "--nodes", "1", "--bus", "memory://")


def test_two_nodes_start_and_sigint_stops_everything(tmp_path: Path) -> None:
    """One broker is enough here: the cluster tests run every broker. A database of
    its own: a shared one may hold data keys sealed under other master keys."""
    require_nginx()
    bus = require_broker("redis")
    with fresh_database() as database:
        run_up(
            tmp_path,
            *("--nodes", "2", "--bus", bus, "--database-url", database),
            *("--cache-url", cache_url()),
        )


def test_refuses_several_nodes_without_postgresql(tmp_path: Path) -> None:
    done = subprocess.run(
        [*PARLEY, "cluster", "up", "--nodes", "2", "--bus", "redis://127.0.0.1:6379/0"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 2
    [line] = done.stderr.splitlines()
    assert "PostgreSQL" in line and "SQLite cannot be shared" in line
    assert done.stdout == ""


def test_cluster_restart_restarts_every_node_in_turn(tmp_path: Path) -> None:
    """``parley cluster restart`` against a running ``cluster up``: every node is
    stopped (exit 0: it drained) and started again, one after the other, and the
    cluster answers throughout and after."""
    require_nginx()
    bus = require_broker("redis")
    with fresh_database() as database:
        _restart_a_cluster(tmp_path / "cluster", bus, database)


def _restart_a_cluster(workdir: Path, bus: str, database: str) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("PARLEY_")}
    flags = ["--nodes", "2", "--bus", bus, "--database-url", database]
    proc = subprocess.Popen(
        [*PARLEY, "cluster", "up", "--workdir", str(workdir), *flags, "--cache-url", cache_url()],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stdout is not None
        url = proc.stdout.readline().split()[-1]
        assert "nodes:" in proc.stdout.readline()
        before = descendants(proc.pid)
        done = subprocess.run(
            [*PARLEY, "cluster", "restart", "--workdir", str(workdir), "--timeout", "120"],
            env=env,
            capture_output=True,
            text=True,
            timeout=150,
        )
        assert done.returncode == 0, done.stderr
        assert [proc.stdout.readline().split()[:4] for _ in range(2)] == [
            ["node", "1", "restarted", "(exit"],
            ["node", "2", "restarted", "(exit"],
        ]
        assert httpx.get(f"{url}/readyz", timeout=10).status_code == 200
        after = descendants(proc.pid)
        assert len(before - after) >= 2  # both nodes are new processes
        proc.send_signal(signal.SIGINT)
        assert proc.wait(timeout=60) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def test_cluster_restart_without_a_running_cluster_says_so(tmp_path: Path) -> None:
    done = subprocess.run(
        [*PARLEY, "cluster", "restart", "--workdir", str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 2
    [line] = done.stderr.splitlines()
    assert "no running `parley cluster up" in line
