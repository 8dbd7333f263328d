"""``parley cluster up``: N nodes and nginx on this machine, to try a cluster out;
``parley cluster nginx-conf``: the nginx configuration for nodes anywhere."""

from __future__ import annotations

import argparse
import signal
import sys
import tempfile
from pathlib import Path
from types import FrameType

from parley.testing.cluster import LocalCluster, render_nginx_conf


class _Stop(Exception):
    """SIGINT or SIGTERM arrived: stop everything."""


def _raise_stop(signum: int, frame: FrameType | None) -> None:
    raise _Stop(signum)


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
        died = cluster.wait_any_exit()
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

    conf = sub.add_parser("nginx-conf", help="print an nginx.conf balancing the given nodes")
    conf.add_argument("--listen", default="80", help="nginx's listen address (default 80)")
    conf.add_argument(
        "--upstream", action="append", required=True, help="a node's host:port (repeat)"
    )
    conf.set_defaults(func=cmd_nginx_conf)
