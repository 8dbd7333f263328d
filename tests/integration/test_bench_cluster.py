"""``parley bench`` against a cluster on this machine, end to end at tiny scale: real
nodes on PostgreSQL and Redis, real generator processes, the JSON report."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import require_service
from tests.integration.cluster_support import require_broker, require_nginx

PARLEY = [sys.executable, "-m", "parley.cli.main", "bench"]
ADMIN_DB = os.environ.get("PARLEY_TEST_POSTGRES", "postgresql://postgres@127.0.0.1:5432/test")


def bench(tmp_path: Path, *args: str) -> dict[str, Any]:
    require_service("postgres")
    bus = require_broker("redis")
    out = tmp_path / "results"
    env = {k: v for k, v in os.environ.items() if not k.startswith("PARLEY_")}
    argv = [
        *PARLEY, *args, "--bus", bus, "--database-url", ADMIN_DB, "--fresh-database",
        "--processes", "1", "--out", str(out),
    ]  # fmt: skip
    done = subprocess.run(argv, env=env, capture_output=True, text=True, timeout=240)
    assert done.returncode == 0, done.stdout + done.stderr
    [report] = [json.loads(p.read_text()) for p in out.glob("*.json")]
    return report


def test_fanout_on_two_nodes_against_the_in_process_bus(tmp_path: Path) -> None:
    report = bench(
        tmp_path, "fanout", "--nodes", "2", "--receivers", "4", "--senders", "2",
        "--messages", "10", "--no-baseline",
    )  # fmt: skip
    cluster, reference = report["runs"]
    assert (cluster["server"], reference["server"]) == ("parley 2xredis", "parley 1xmemory")
    for run, nodes in ((cluster, 2), (reference, 1)):
        assert run["sends"] == 20
        assert run["deliveries"] == 4 * 20
        assert (run["lost"], run["duplicated"]) == (0, 0)
        assert run["nodes"] == nodes and len(run["node_cpu_s"]) == nodes
        assert run["server_cpu_s"] == pytest.approx(sum(run["node_cpu_s"]))
        assert run["postgres_cpu_s"] >= 0
    # the broker on this machine was found by its port and measured
    assert cluster["broker_cpu_s"] >= 0 and "broker_cpu_s" not in reference
    assert set(report["bus_cost"]) >= {"broker_us_per_event"}
    # URLs are reported by scheme, host and port only (one may carry a password)
    assert report["options"]["database_url"] == "postgresql://127.0.0.1:5432"


def test_failover_brings_the_killed_nodes_clients_back(tmp_path: Path) -> None:
    require_nginx()
    report = bench(tmp_path, "failover", "--nodes", "3", "--clients", "12")
    assert report["clients"] == 12
    # nginx round-robins the connections: some landed on the killed node
    assert 0 < report["killed_node_clients"] < 12
    assert report["back_ms"]["count"] == report["killed_node_clients"]
    assert report["all_back_s"] is not None and report["not_back"] == 0
    assert (report["lost"], report["duplicated"]) == (0, 0)
    assert report["stored_messages"] == report["stored_expected"] == 15
    assert report["stored_duplicates"] == 0


def test_rolling_restart_measures_acks_through_every_node_restart(tmp_path: Path) -> None:
    require_nginx()
    report = bench(
        tmp_path, "rolling-restart", "--nodes", "2", "--senders", "2", "--seconds", "1.5",
        "--runs", "1",
    )  # fmt: skip
    [run] = report["runs"]
    assert [n["node"] for n in run["nodes"]] == [1, 2]
    assert all(n["exit_code"] == 0 for n in run["nodes"])
    assert run["steady_acks_per_s"] > 0 and run["after_acks_per_s"] > 0
    assert 0 < run["restart_max_gap_s"] <= run["restart_s"]
    assert (run["lost"], run["duplicated"], run["stuck_senders"]) == (0, 0, 0)
    assert run["stored"] >= run["acked"] > 0
    summary = report["summary"]
    assert summary["steady_acks_per_s"]["median"] == run["steady_acks_per_s"]
    assert summary["exit_codes"] == [0]
    assert list((tmp_path / "results").glob("*.png")), "no plot"
