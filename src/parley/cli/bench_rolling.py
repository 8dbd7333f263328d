"""``parley bench rolling-restart``: throughput during a rolling restart against
steady state, measured in the same run.

Each run starts its own cluster (``--nodes`` nodes on a fresh PostgreSQL database
when ``--fresh-database``, the broker, Redis, nginx in front) and ``--senders`` SDK
clients in one room, each sending one message after another through nginx and
waiting for its ack. Acknowledged sends are timed for ``--seconds`` (steady state),
then during a rolling restart as ``LocalCluster.rolling_restart`` does it, timed
per node (each node in turn: SIGTERM, it drains and closes its sockets with 1012,
exits, starts again, is ready, then the next), then for ``--seconds`` after. The
steady rate, the run's own baseline, is both windows' together (the load of a
shared machine drifts). Every acknowledged message must be stored, and none twice.
``--runs`` runs give medians; the JSON has each run's acks per second over time
and the nodes' restart windows, which the PNG draws.
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import json
import secrets
import statistics
import sys
import tempfile
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

from parley.cli.bench import _register
from parley.cli.bench_cluster import NODE_ENV, _options, _stored, cache_for, database, with_prefix
from parley.client import ParleyClient
from parley.testing.cluster import LocalCluster

DRAIN_SECONDS = 10.0
"""The nodes' ``PARLEY_DRAIN_SECONDS``; a node that needs more is killed and reported."""
WARM_UP = 2.0
"""Seconds of sending before the steady window opens (connections made, caches warm)."""
STOP_TIMEOUT = 30.0
"""Seconds the senders get to finish their last send once told to stop; a sender
still waiting then is reported as ``stuck`` (a send that never ends)."""
BIN = 0.25
WS_GAUGE = 'parley_connections{transport="ws"}'
"""Seconds per bin of the acks-per-second series."""


@dataclass
class Window:
    """One node's restart, in seconds since the steady window opened."""

    node: int
    stopped_at: float
    exited_at: float
    ready_at: float
    exit_code: int | None


@dataclass
class Timeline:
    """What a run saw: ack times (monotonic seconds) and the phases' bounds."""

    acks: list[float] = field(default_factory=list)
    bodies: list[str] = field(default_factory=list)
    latencies: list[float] = field(default_factory=list)


def rate(times: list[float], start: float, end: float) -> float:
    """Acks per second in ``[start, end)``."""
    if end <= start:
        return 0.0
    return sum(1 for t in times if start <= t < end) / (end - start)


def max_gap(times: list[float], start: float, end: float) -> float:
    """The longest stretch of ``[start, end]`` with no ack in it (seconds)."""
    inside = sorted(t for t in times if start <= t <= end)
    edges = [start, *inside, end]
    return max(b - a for a, b in itertools.pairwise(edges))


def series(times: list[float], origin: float, end: float, width: float = BIN) -> list[float]:
    """Acks per second in bins of ``width`` seconds from ``origin`` to ``end``."""
    bins = [0] * max(1, int((end - origin) / width) + 1)
    for t in times:
        if origin <= t <= end:
            bins[int((t - origin) / width)] += 1
    return [n / width for n in bins]


async def _setup(url: str, senders: int) -> tuple[str, ParleyClient, list[ParleyClient]]:
    async with httpx.AsyncClient(timeout=60) as http:
        tag = secrets.token_hex(2)
        users = await _register(http, url, senders + 1, tag)
        owner = users[0]
        room = str((await owner.create_room(f"rolling-{tag}"))["id"])
        for user in users[1:]:
            await user.join(room)
    # Their own HTTP clients from here on: the setup's is closed.
    fresh = [
        ParleyClient(url, access_token=u.access_token, refresh_token=u.refresh_token) for u in users
    ]
    return room, fresh[0], fresh[1:]


async def ws_connections(cluster: LocalCluster) -> list[int | None]:
    """Each node's open WebSockets (its ``/metrics``): where nginx put the senders."""
    out: list[int | None] = []
    async with httpx.AsyncClient(timeout=5) as http:
        for node in cluster.nodes:
            try:
                text = (await http.get(f"{node.url}/metrics")).text
            except httpx.HTTPError:
                out.append(None)
                continue
            line = next((x for x in text.splitlines() if x.startswith(WS_GAUGE)), None)
            out.append(None if line is None else int(float(line.split()[-1])))
    return out


async def _measure(
    cluster: LocalCluster, senders: int, steady: float
) -> tuple[Timeline, dict[str, float], list[Window], dict[str, Any]]:
    room, owner, clients = await _setup(cluster.url, senders)
    seen = Timeline()
    stop = asyncio.Event()

    async def send(client: ParleyClient, tag: int) -> None:
        async with client.live() as live:
            i = 0
            while not stop.is_set():
                body = f"s{tag}:{i}"
                started = time.monotonic()
                await live.send(room, body)
                now = time.monotonic()
                seen.acks.append(now)
                seen.bodies.append(body)
                seen.latencies.append(now - started)
                i += 1

    tasks = [asyncio.create_task(send(c, n)) for n, c in enumerate(clients)]
    await asyncio.sleep(WARM_UP)
    marks = {"steady_from": time.monotonic()}
    await asyncio.sleep(steady)
    marks["restart_from"] = time.monotonic()
    spread = {"before": await ws_connections(cluster)}

    def roll() -> list[Window]:
        out = []
        for node in cluster.nodes:
            stopped = time.monotonic()
            code = cluster.stop_node(node, DRAIN_SECONDS + 10)
            exited = time.monotonic()
            cluster.start_node(node)
            out.append(Window(node.index + 1, stopped, exited, time.monotonic(), code))
        return out

    windows = await asyncio.to_thread(roll)
    marks["restart_to"] = time.monotonic()
    await asyncio.sleep(steady)
    marks["after_to"] = time.monotonic()
    spread["after"] = await ws_connections(cluster)
    stop.set()
    done, pending = await asyncio.wait(tasks, timeout=STOP_TIMEOUT)
    for task in pending:
        task.cancel()
    await asyncio.gather(*pending, return_exceptions=True)
    errors = [repr(t.exception()) for t in done if t.exception() is not None]
    token = str(owner.access_token)
    stored = await _stored(cluster.url, token, room)
    for client in (owner, *clients):
        await client.aclose()
    extra = {
        "stuck_senders": len(pending),
        "sender_errors": errors,
        "stored": stored,
        "ws_connections": spread,
    }
    return seen, marks, windows, extra


def one_run(
    args: argparse.Namespace, nodes: int, bus_url: str, database_url: str | None, cache_url: str
) -> dict[str, Any]:
    """One cluster, one steady window, one rolling restart, one steady window."""
    env = NODE_ENV | {"PARLEY_DRAIN_SECONDS": str(DRAIN_SECONDS)}
    with (
        tempfile.TemporaryDirectory(prefix="parley-bench-rolling-") as work,
        LocalCluster(
            Path(work),
            nodes_count=nodes,
            database_url=database_url,
            bus_url=bus_url,
            cache_url=cache_url,
            extra_env=env,
        ) as cluster,
    ):
        seen, marks, windows, extra = asyncio.run(_measure(cluster, args.senders, args.seconds))
    return summarize(seen, marks, windows, extra)


def summarize(
    seen: Timeline, marks: dict[str, float], windows: list[Window], extra: dict[str, Any]
) -> dict[str, Any]:
    """One run's figures: rates per phase, the longest silence, lost and repeated."""
    t0, r0, r1, t3 = (marks[k] for k in ("steady_from", "restart_from", "restart_to", "after_to"))
    acks = seen.acks
    before, during, after = rate(acks, t0, r0), rate(acks, r0, r1), rate(acks, r1, t3)
    # Both windows, so that a machine whose load drifts during the run (a shared one)
    # is compared with what it did on either side of the restart.
    steady = (before * (r0 - t0) + after * (t3 - r1)) / ((r0 - t0) + (t3 - r1))
    stored: list[str] = extra["stored"]
    latencies = sorted(seen.latencies)
    return {
        "steady_acks_per_s": steady,
        "restart_acks_per_s": during,
        "before_acks_per_s": before,
        "after_acks_per_s": after,
        "ratio_restart_to_steady": during / steady if steady else None,
        "restart_max_gap_s": max_gap(acks, r0, r1),
        "steady_max_gap_s": max_gap(acks, t0, r0),
        "restart_s": r1 - r0,
        "steady_s": r0 - t0,
        "send_latency_ms": {
            "p50": 1e3 * latencies[len(latencies) // 2] if latencies else None,
            "p99": 1e3 * latencies[int(len(latencies) * 0.99)] if latencies else None,
            "max": 1e3 * latencies[-1] if latencies else None,
        },
        "nodes": [
            {
                "node": w.node,
                "exit_code": w.exit_code,
                "stop_s": w.exited_at - w.stopped_at,
                "out_s": w.ready_at - w.stopped_at,
                "window_s": [w.stopped_at - t0, w.ready_at - t0],
            }
            for w in windows
        ],
        "acked": len(seen.bodies),
        "stored": len(stored),
        "lost": len(set(seen.bodies) - set(stored)),
        "duplicated": len(stored) - len(set(stored)),
        "stuck_senders": extra["stuck_senders"],
        "sender_errors": extra["sender_errors"],
        "ws_connections_per_node": extra["ws_connections"],
        "acks_per_s_series": {"bin_s": BIN, "values": series(acks, t0, t3)},
    }


MEDIANS = (
    "steady_acks_per_s",
    "restart_acks_per_s",
    "before_acks_per_s",
    "after_acks_per_s",
    "ratio_restart_to_steady",
    "restart_max_gap_s",
    "restart_s",
)


def aggregate(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """Medians over the runs (and each run's value), and the runs' sums of what must
    be zero."""
    out: dict[str, Any] = {}
    for key in MEDIANS:
        values = [r[key] for r in runs if r[key] is not None]
        out[key] = {
            "median": statistics.median(values) if values else None,
            "runs": [r[key] for r in runs],
        }
    for key in ("lost", "duplicated", "stuck_senders"):
        out[key] = sum(r[key] for r in runs)
    out["sender_errors"] = sum(len(r["sender_errors"]) for r in runs)
    out["exit_codes"] = sorted({n["exit_code"] for r in runs for n in r["nodes"]}, key=str)
    return out


def write_plot(path: Path, runs: list[dict[str, Any]]) -> bool:
    """Acks per second over time, one panel per run, each node's restart shaded
    (from its SIGTERM to its ``/readyz`` 200) and the run's steady rate dashed."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return False
    fig, axes_list = plt.subplots(len(runs), 1, figsize=(11, 2.6 * len(runs)), squeeze=False)
    colours = ("tab:orange", "tab:green", "tab:purple", "tab:red", "tab:brown")
    for n, (axes, run) in enumerate(zip((a[0] for a in axes_list), runs, strict=True)):
        width = run["acks_per_s_series"]["bin_s"]
        values = run["acks_per_s_series"]["values"]
        axes.plot([i * width for i in range(len(values))], values, lw=0.9, label="acks/s")
        axes.axhline(
            run["steady_acks_per_s"], ls="--", c="grey", lw=0.8, label="steady (before+after)"
        )
        for node in run["nodes"]:
            start, end = node["window_s"]
            colour = colours[(node["node"] - 1) % len(colours)]
            axes.axvspan(start, end, alpha=0.2, color=colour, label=f"node {node['node']} out")
        ratio = run["ratio_restart_to_steady"]
        axes.set_title(
            f"run {n + 1}: steady {run['steady_acks_per_s']:.0f} acks/s, during the restart"
            f" {run['restart_acks_per_s']:.0f} ({ratio:.0%}), longest silence"
            f" {run['restart_max_gap_s']:.2f} s",
            fontsize=9,
        )
        axes.set_ylabel(f"acks/s ({width:g} s bins)")
        axes.legend(fontsize=7, loc="lower left")
    axes_list[-1][0].set_xlabel("seconds since the steady window opened")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return True


def run(args: argparse.Namespace) -> int:
    """``parley bench rolling-restart``: ``--runs`` runs, their medians, JSON and PNG."""
    if not args.bus:
        print(
            "parley bench: rolling-restart needs --bus (redis://, nats:// or amqp://)",
            file=sys.stderr,
        )
        return 2
    nodes = args.nodes or 3
    runs: list[dict[str, Any]] = []
    for n in range(args.runs):
        prefix = f"bench{secrets.token_hex(5)}"
        bus_url = with_prefix(args.bus, prefix)
        cache_url = cache_for(args, prefix)
        try:
            LocalCluster(
                Path("."),
                nodes_count=nodes,
                database_url=args.database_url,
                bus_url=bus_url,
                cache_url=cache_url,
            ).check()
        except ValueError as exc:
            print(f"parley bench: {exc}", file=sys.stderr)
            return 2
        with database(args.database_url, args.fresh_database) as db:
            runs.append(one_run(args, nodes, bus_url, db, cache_url))
        print(_line(n + 1, runs[-1]))
    report: dict[str, Any] = {
        "scenario": args.scenario,
        "options": _options(args),
        "nodes": nodes,
        "senders": args.senders,
        "summary": aggregate(runs),
        "runs": runs,
    }
    print("medians: " + json.dumps({k: report["summary"][k]["median"] for k in MEDIANS}))
    args.out.mkdir(parents=True, exist_ok=True)
    stem = args.out / (
        f"{args.scenario}-{nodes}nodes-{time.strftime('%Y%m%d-%H%M%S')}-{uuid.uuid4().hex[:4]}"
    )
    stem.with_suffix(".json").write_text(json.dumps(report, indent=2))
    plotted = write_plot(stem.with_suffix(".png"), runs)
    print(f"wrote {stem}.json" + (f" and {stem}.png" if plotted else ""), file=sys.stderr)
    summary = report["summary"]
    failed = summary["lost"] or summary["duplicated"] or summary["stuck_senders"]
    return 1 if failed or summary["sender_errors"] else 0


def _line(n: int, run: dict[str, Any]) -> str:
    ratio = run["ratio_restart_to_steady"]
    return (
        f"run {n}: steady {run['steady_acks_per_s']:.0f} acks/s, restart"
        f" {run['restart_acks_per_s']:.0f} acks/s"
        + (f" ({ratio:.0%})" if ratio is not None else "")
        + f" over {run['restart_s']:.1f} s, longest silence {run['restart_max_gap_s']:.2f} s,"
        f" before {run['before_acks_per_s']:.0f}, after {run['after_acks_per_s']:.0f};"
        f" acked {run['acked']}, lost {run['lost']},"
        f" duplicated {run['duplicated']}, stuck {run['stuck_senders']};"
        f" exits {[x['exit_code'] for x in run['nodes']]},"
        f" stops {[round(x['stop_s'], 2) for x in run['nodes']]} s;"
        f" WebSockets per node before {run['ws_connections_per_node']['before']},"
        f" after {run['ws_connections_per_node']['after']}"
    )
