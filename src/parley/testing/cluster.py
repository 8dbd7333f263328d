"""N ``parley serve`` processes and nginx in front, on this machine.

``parley cluster up`` runs one for trying a cluster out; the cluster tests run one per
module and crash, restart and cut its parts. Every node is a real process with its own
data dir, on a free port, sharing one PostgreSQL database, one broker, one Redis and
one signing key; nginx balances them without sticky sessions (a client that lands on
another node resumes there), from the configuration ``render_nginx_conf`` writes,
which is also ``deploy/nginx.conf``.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from urllib.request import urlopen

NGINX_CANDIDATES = ("/usr/sbin/nginx", "/usr/local/sbin/nginx", "/usr/local/nginx/sbin/nginx")

FAST_ARGON2 = {"PARLEY_ARGON2_TIME_COST": "1", "PARLEY_ARGON2_MEMORY_KIB": "1024"}
"""Test-strength password hashing (``parley.testing.server.FAST_TEST_SETTINGS``)."""

LONG_READ_TIMEOUT = "3600s"
"""How long nginx keeps a quiet WebSocket or event stream open. Parley pings a
WebSocket every 20 s and writes an SSE keep-alive as often, so an open stream is
never this quiet; the bound only reaps connections whose node vanished without a
FIN (a node's host lost)."""


def find_nginx() -> str | None:
    """The nginx binary, or ``None`` (Debian: ``apt-get install nginx``)."""
    found = shutil.which("nginx")
    if found:
        return found
    for path in NGINX_CANDIDATES:
        if os.access(path, os.X_OK):
            return path
    return None


def render_nginx_conf(
    *,
    listen: str,
    upstreams: Sequence[str],
    runtime_dir: Path | None = None,
    worker_processes: str = "auto",
) -> str:
    """A whole ``nginx.conf`` that balances ``upstreams`` (``host:port``) on ``listen``.

    ``runtime_dir`` puts the pid file, logs and temporary files under that directory, so
    an unprivileged nginx (or several at once, as the tests run) shares nothing with
    the system's; ``None`` keeps the distribution's paths (the container image).

    No sticky sessions: every WebSocket, event stream and REST call may land on any
    node, which is correct because a client resumes from its cursors on whichever node
    it reaches. ``proxy_next_upstream`` retries a refused connection (a node that is
    down or restarting) on the next node, and a 503 to an idempotent request (a
    draining node refusing a WebSocket upgrade), never a request a node has started to
    answer otherwise. ``max_fails=0``: no node is taken out of rotation for a while
    after a failure; during a rolling restart every node fails once within seconds,
    and marking them down would leave none (502 "no live upstreams"); a refused
    connection costs next to nothing to retry.
    """
    if not upstreams:
        raise ValueError("nginx needs at least one upstream node")
    if runtime_dir is None:
        prologue = ["pid /run/nginx.pid;", "error_log /dev/stderr warn;"]
        temp: list[str] = []
    else:
        rd = runtime_dir.resolve()
        prologue = [f"pid {rd}/nginx.pid;", f"error_log {rd}/error.log warn;"]
        temp = [
            f"client_body_temp_path {rd}/client_body;",
            f"proxy_temp_path {rd}/proxy;",
            f"fastcgi_temp_path {rd}/fastcgi;",
            f"uwsgi_temp_path {rd}/uwsgi;",
            f"scgi_temp_path {rd}/scgi;",
        ]
    servers = "\n".join(f"        server {u} max_fails=0;" for u in upstreams)
    temp_lines = "".join(f"    {line}\n" for line in temp)
    return f"""# Parley behind nginx: REST, WebSocket and Server-Sent Events over N nodes.
# Written by parley.testing.cluster.render_nginx_conf (kept in step by a test).
worker_processes {worker_processes};
{prologue[0]}
{prologue[1]}

events {{
    worker_connections 16384;
}}

http {{
    access_log off;
{temp_lines}
    # The node sees "Connection: upgrade" only on a WebSocket handshake (nginx drops
    # hop-by-hop headers); a plain request to the WebSocket path gets "close".
    map $http_upgrade $connection_upgrade {{
        default upgrade;
        ''      close;
    }}

    upstream parley {{
{servers}
        keepalive 32;
    }}

    server {{
        listen {listen};
        client_max_body_size 1m;

        proxy_http_version 1.1;
        # $http_host keeps the port the browser used: the node checks a WebSocket's
        # Origin against this Host.
        proxy_set_header Host $http_host;
        proxy_set_header X-Real-IP $remote_addr;
        proxy_set_header X-Forwarded-For $proxy_add_x_forwarded_for;
        proxy_set_header X-Forwarded-Proto $scheme;
        proxy_set_header Connection "";
        proxy_next_upstream error timeout http_503;
        proxy_connect_timeout 2s;

        location = /api/v1/ws {{
            proxy_pass http://parley;
            proxy_set_header Host $http_host;
            proxy_set_header X-Real-IP $remote_addr;
            proxy_set_header X-Forwarded-For $proxy_add_x_forwarded_for;
            proxy_set_header X-Forwarded-Proto $scheme;
            proxy_set_header Upgrade $http_upgrade;
            proxy_set_header Connection $connection_upgrade;
            proxy_read_timeout {LONG_READ_TIMEOUT};
            proxy_send_timeout {LONG_READ_TIMEOUT};
        }}

        location = /api/v1/events/stream {{
            proxy_pass http://parley;
            # Each event must reach the client as the node writes it.
            proxy_buffering off;
            proxy_cache off;
            proxy_read_timeout {LONG_READ_TIMEOUT};
        }}

        location / {{
            proxy_pass http://parley;
        }}
    }}
}}
"""


def free_port() -> int:
    """A TCP port nobody listens on now (the caller binds it soon after)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_ready(url: str, proc: subprocess.Popen[bytes], timeout: float) -> None:
    """Until ``url/readyz`` answers 200; raise if ``proc`` exits or time runs out."""
    deadline = time.monotonic() + timeout
    last = "no answer"
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"{url}: the process exited with {proc.returncode}")
        try:
            with urlopen(f"{url}/readyz", timeout=3) as r:  # noqa: S310 - our own http URL
                if r.status == 200:
                    return
        except OSError as exc:  # URLError included: refused, reset, 503
            last = str(exc)
        time.sleep(0.1)
    raise RuntimeError(f"{url}/readyz did not answer 200 within {timeout:g} s ({last})")


def start_nginx(run_dir: Path, port: int, upstreams: Sequence[str]) -> subprocess.Popen[bytes]:
    """nginx in the foreground on ``127.0.0.1:port`` with everything it writes under
    ``run_dir``; stop it with SIGQUIT (graceful) or SIGKILL."""
    binary = find_nginx()
    if binary is None:
        raise RuntimeError("nginx is not installed (Debian: apt-get install nginx)")
    run_dir.mkdir(parents=True, exist_ok=True)
    conf = run_dir / "nginx.conf"
    conf.write_text(
        render_nginx_conf(
            listen=f"127.0.0.1:{port}",
            upstreams=upstreams,
            runtime_dir=run_dir,
            worker_processes="1",
        )
    )
    with (run_dir / "stdout.log").open("ab") as log:
        return subprocess.Popen(  # noqa: S603 - the nginx find_nginx found
            [binary, "-p", str(run_dir), "-c", str(conf), "-g", "daemon off;"],
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
        )


DEV_MASTER_KEY = "de" * 32
"""The master key of development clusters that name none (see ``LocalCluster``)."""


@dataclass
class Node:
    """One ``parley serve`` process of a ``LocalCluster``."""

    index: int
    port: int
    data_dir: Path
    env: dict[str, str]
    log_path: Path
    proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def ws_url(self) -> str:
        return f"ws://127.0.0.1:{self.port}/api/v1/ws"

    @property
    def node_id(self) -> str:
        return self.env["PARLEY_NODE_ID"]

    @property
    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None


@dataclass
class LocalCluster:
    """``with LocalCluster(...) as cluster: cluster.url`` runs N nodes and nginx.

    ``database_url`` must be PostgreSQL for more than one node (SQLite cannot be shared
    between processes on the network's terms); ``bus_url`` a broker every node reaches.
    ``port`` is nginx's (0: a free one). ``nginx=False`` runs the nodes alone.
    ``extra_env`` is added to every node's environment (``PARLEY_*`` settings).
    ``master_key``: the nodes' ``PARLEY_MASTER_KEY``, shared by all; by default this
    process's ``PARLEY_MASTER_KEY``, else ``DEV_MASTER_KEY``, a published development
    key, so that clusters started again on one database (test runs, ``parley cluster
    up``) open its key ring: set your own for data worth protecting.
    """

    workdir: Path
    nodes_count: int
    database_url: str | None
    bus_url: str
    cache_url: str = "memory://"
    port: int = 0
    nginx: bool = True
    extra_env: Mapping[str, str] = field(default_factory=dict)
    ready_timeout: float = 60.0
    master_key: str = field(
        default_factory=lambda: os.environ.get("PARLEY_MASTER_KEY") or DEV_MASTER_KEY
    )
    nodes: list[Node] = field(default_factory=list, init=False)
    nginx_port: int = field(default=0, init=False)
    _nginx_proc: subprocess.Popen[bytes] | None = field(default=None, init=False)
    _name: str = field(default_factory=lambda: secrets.token_hex(3), init=False)

    @property
    def url(self) -> str:
        """nginx's URL (the cluster as users reach it)."""
        return f"http://127.0.0.1:{self.nginx_port}"

    @property
    def ws_url(self) -> str:
        return f"ws://127.0.0.1:{self.nginx_port}/api/v1/ws"

    def check(self) -> None:
        """Raise ``ValueError`` with one line saying what is missing."""
        if self.nodes_count < 1:
            raise ValueError("a cluster needs at least one node")
        if self.nodes_count > 1:
            if not self.database_url or not self.database_url.startswith(
                ("postgresql://", "postgres://")
            ):
                raise ValueError(
                    "more than one node needs a shared PostgreSQL database "
                    "(--database-url postgresql://…); SQLite cannot be shared"
                )
            if self.bus_url.startswith("memory:"):
                raise ValueError(
                    "more than one node needs a broker (--bus amqp://, redis:// or nats://); "
                    "memory:// reaches one process only"
                )
            if self.cache_url.startswith("memory:"):
                raise ValueError(
                    "more than one node needs a shared Redis cache (--cache-url redis://…)"
                )
        if self.nginx and find_nginx() is None:
            raise ValueError("nginx is not installed (Debian: apt-get install nginx)")

    def _node_env(
        self, index: int, port: int, data_dir: Path, secret: str, master_key: str
    ) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith("PARLEY_")}
        env.update(
            {
                "PARLEY_HOST": "127.0.0.1",
                "PARLEY_PORT": str(port),
                "PARLEY_DATA_DIR": str(data_dir),
                "PARLEY_BUS_URL": self.bus_url,
                "PARLEY_CACHE_URL": self.cache_url,
                "PARLEY_SECRET_KEY": secret,
                "PARLEY_MASTER_KEY": master_key,
                "PARLEY_NODE_ID": f"node-{self._name}-{index + 1}",
                "PARLEY_LOG_LEVEL": "warning",
                # nginx runs on loopback: its X-Forwarded-For is believed, and its
                # connections are not counted as one client's.
                "PARLEY_TRUSTED_PROXIES": "127.0.0.1",
            }
        )
        if self.database_url:
            env["PARLEY_DATABASE_URL"] = self.database_url
        env.update(self.extra_env)
        return env

    def start(self) -> LocalCluster:
        """Start the nodes (the first alone, so that it migrates the database), then
        nginx; return once every node's ``/readyz`` and nginx answer."""
        self.check()
        self.workdir.mkdir(parents=True, exist_ok=True)
        secret = secrets.token_hex(32)
        for i in range(self.nodes_count):
            port = free_port()
            data_dir = self.workdir / f"node{i + 1}"
            self.nodes.append(
                Node(
                    index=i,
                    port=port,
                    data_dir=data_dir,
                    env=self._node_env(i, port, data_dir, secret, self.master_key),
                    log_path=self.workdir / f"node{i + 1}.log",
                )
            )
        try:
            self.start_node(self.nodes[0])
            for node in self.nodes[1:]:
                self._spawn(node)
            for node in self.nodes[1:]:
                assert node.proc is not None
                wait_ready(node.url, node.proc, self.ready_timeout)
            if self.nginx:
                self._start_nginx()
        except BaseException:
            self.stop()
            raise
        return self

    def _spawn(self, node: Node) -> None:
        node.data_dir.mkdir(parents=True, exist_ok=True)
        log = node.log_path.open("ab")
        try:
            node.proc = subprocess.Popen(
                [sys.executable, "-m", "parley.cli.main", "serve"],
                env=node.env,
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
            )
        finally:
            log.close()

    def start_node(self, node: Node) -> None:
        """(Re)start ``node`` on its port and wait until it is ready."""
        if node.alive:
            raise RuntimeError(f"node {node.index + 1} is running")
        self._spawn(node)
        assert node.proc is not None
        wait_ready(node.url, node.proc, self.ready_timeout)

    def kill_node(self, node: Node) -> None:
        """``kill -9``: the node dies without closing a socket or finishing a write."""
        if node.proc is not None and node.proc.poll() is None:
            node.proc.send_signal(signal.SIGKILL)
            node.proc.wait()

    def stop_node(self, node: Node, timeout: float = 20.0) -> int | None:
        """SIGTERM and wait (SIGKILL after ``timeout``); the exit status."""
        proc = node.proc
        if proc is None:
            return None
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        return proc.returncode

    def rolling_restart(self, timeout: float = 30.0) -> Iterator[tuple[Node, int | None, float]]:
        """Restart every node in turn: SIGTERM (the node drains: its clients move to
        the others with 1012), wait for it to exit, start it again and wait until
        it is ready, before the next. Yields each node with its exit status and the
        seconds it was out."""
        for node in self.nodes:
            started = time.monotonic()
            code = self.stop_node(node, timeout)
            self.start_node(node)
            yield node, code, time.monotonic() - started

    def _start_nginx(self) -> None:
        self.nginx_port = self.port or free_port()
        self._nginx_proc = start_nginx(
            self.workdir / "nginx", self.nginx_port, [f"127.0.0.1:{n.port}" for n in self.nodes]
        )
        wait_ready(self.url, self._nginx_proc, self.ready_timeout)

    @property
    def processes(self) -> list[subprocess.Popen[bytes]]:
        """Every process started and not yet reaped (nodes, nginx)."""
        procs = [n.proc for n in self.nodes if n.proc is not None]
        if self._nginx_proc is not None:
            procs.append(self._nginx_proc)
        return procs

    def wait_any_exit(self, poll: float = 0.2) -> subprocess.Popen[bytes]:
        """Block until one process exits; that process."""
        while True:
            for proc in self.processes:
                if proc.poll() is not None:
                    return proc
            time.sleep(poll)

    def stop(self) -> None:
        """nginx first (no new connections), then every node with SIGTERM."""
        if self._nginx_proc is not None:
            with contextlib.suppress(ProcessLookupError):
                self._nginx_proc.send_signal(signal.SIGQUIT)
            try:
                self._nginx_proc.wait(10)
            except subprocess.TimeoutExpired:
                self._nginx_proc.kill()
                self._nginx_proc.wait()
            self._nginx_proc = None
        for node in self.nodes:
            if node.proc is not None and node.proc.poll() is None:
                node.proc.send_signal(signal.SIGTERM)
        for node in self.nodes:
            self.stop_node(node)

    def __enter__(self) -> LocalCluster:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()
