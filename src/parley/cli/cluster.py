"""``parley cluster up``: N nodes and nginx on this machine, to try a cluster out;
``parley cluster restart``: restart its nodes one by one (a rolling restart: each
drains, its clients move to the others, and it comes back before the next goes);
``parley cluster nginx-conf``: the nginx configuration for nodes anywhere.

``up`` writes its pid to ``WORKDIR/cluster.pid``; ``restart`` sends it SIGHUP and
waits until ``WORKDIR/restarted`` says the restart it asked for is done."""

from __future__ import annotations

import argparse
import os
import signal
import sys
import tempfile
import time
from pathlib import Path
from types import FrameType

from parley.testing.cluster import LocalCluster, render_nginx_conf


class _Stop(Exception):
    """SIGINT or SIGTERM arrived: stop everything."""


def _raise_stop(signum: int, frame: FrameType | None) -> None:
    raise _Stop(signum)


class _Restart(Exception):
    """SIGHUP arrived: restart the nodes one by one."""


def _raise_restart(signum: int, frame: FrameType | None) -> None:
    raise _Restart(signum)


PID_FILE = "cluster.pid"
DONE_FILE = "restarted"


def _roll(cluster: LocalCluster, workdir: Path) -> None:
    for node, code, took in cluster.rolling_restart():
        print(
            f"node {node.index + 1} restarted (exit {code}, back after {took:.1f} s)",
            flush=True,
        )
    (workdir / DONE_FILE).write_text(f"{time.time()}\n")


def cmd_up(args: argparse.Namespace) -> int:
    workdir = args.workdir or Path(tempfile.mkdtemp(prefix="parley-cluster-"))
    cluster = LocalCluster(
        workdir,
        nodes_count=args.nodes,
        database_url=args.database_url,
        bus_url=args.bus,
        cache_url=args.cache_url,
        port=args.port,
    )
    try:
        cluster.check()
    except ValueError as exc:
        print(f"parley cluster up: {exc}", file=sys.stderr)
        return 2
    previous = {s: signal.signal(s, _raise_stop) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        try:
            cluster.start()
        except RuntimeError as exc:
            print(f"parley cluster up: {exc} (logs in {workdir})", file=sys.stderr)
            return 1
        nodes = ", ".join(n.url for n in cluster.nodes)
        print(f"Parley cluster at {cluster.url}", flush=True)
        print(f"nodes: {nodes}; logs in {workdir}; Ctrl-C stops it", flush=True)
        previous[signal.SIGHUP] = signal.signal(signal.SIGHUP, _raise_restart)
        (workdir / PID_FILE).write_text(f"{os.getpid()}\n")
        while True:
            try:
                died = cluster.wait_any_exit()
                break
            except _Restart:
                signal.signal(signal.SIGHUP, signal.SIG_IGN)
                try:
                    _roll(cluster, workdir)
                finally:
                    signal.signal(signal.SIGHUP, _raise_restart)
        print(
            f"parley cluster up: process {died.pid} exited with {died.returncode}; "
            f"stopping (logs in {workdir})",
            file=sys.stderr,
        )
        return 1
    except _Stop:
        return 0
    finally:
        for s in previous:
            signal.signal(s, signal.SIG_IGN)
        cluster.stop()
        for s, handler in previous.items():
            signal.signal(s, handler)


def cmd_restart(args: argparse.Namespace) -> int:
    workdir: Path = args.workdir
    try:
        pid = int((workdir / PID_FILE).read_text())
        os.kill(pid, 0)
    except (OSError, ValueError):
        print(
            f"parley cluster restart: no running `parley cluster up --workdir {workdir}`",
            file=sys.stderr,
        )
        return 2
    done = workdir / DONE_FILE
    before = done.stat().st_mtime if done.exists() else 0.0
    os.kill(pid, signal.SIGHUP)
    deadline = time.monotonic() + args.timeout
    while time.monotonic() < deadline:
        if done.exists() and done.stat().st_mtime > before:
            print("every node restarted", flush=True)
            return 0
        time.sleep(0.2)
    print(f"parley cluster restart: not done after {args.timeout:g} s", file=sys.stderr)
    return 1


def cmd_nginx_conf(args: argparse.Namespace) -> int:
    sys.stdout.write(render_nginx_conf(listen=args.listen, upstreams=args.upstream))
    return 0


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add ``parley cluster`` to ``parley``."""
    cluster = subparsers.add_parser("cluster", help="run or configure a cluster of nodes")
    sub = cluster.add_subparsers(dest="cluster_command", required=True)

    up = sub.add_parser("up", help="start N nodes and nginx here; Ctrl-C stops them")
    up.add_argument("--nodes", type=int, default=3, help="how many nodes (default 3)")
    up.add_argument("--bus", required=True, help="amqp://…, redis://… or nats://…")
    up.add_argument("--database-url", help="postgresql://… (required for more than one node)")
    up.add_argument("--cache-url", default="memory://", help="redis://… (more than one node)")
    up.add_argument("--port", type=int, default=0, help="nginx's port (default: a free one)")
    up.add_argument("--workdir", type=Path, help="data dirs and logs (default: a temp dir)")
    up.set_defaults(func=cmd_up)

    restart = sub.add_parser(
        "restart", help="restart the nodes of a running `cluster up` one by one (rolling)"
    )
    restart.add_argument(
        "--workdir", type=Path, required=True, help="the --workdir of `parley cluster up`"
    )
    restart.add_argument(
        "--timeout", type=float, default=300.0, help="seconds to wait (default 300)"
    )
    restart.set_defaults(func=cmd_restart)

    conf = sub.add_parser("nginx-conf", help="print an nginx.conf balancing the given nodes")
    conf.add_argument("--listen", default="80", help="nginx's listen address (default 80)")
    conf.add_argument(
        "--upstream", action="append", required=True, help="a node's host:port (repeat)"
    )
    conf.set_defaults(func=cmd_nginx_conf)
