"""``parley bench presence`` end to end at tiny scale: its own server, real processes."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest

from parley.cli.bench_presence import check_topology, room_members, watched

PARLEY = [sys.executable, "-m", "parley.cli.main"]


@pytest.mark.parametrize(("users", "subscriptions"), [(20, 5), (2000, 100), (7, 3), (10, 9)])
def test_every_subscription_shares_a_room(users: int, subscriptions: int) -> None:
    rooms = room_members(users, subscriptions)
    check_topology(users, subscriptions, rooms)
    assert all(len(watched(i, users, subscriptions)) == subscriptions for i in range(users))


def test_bench_presence_tiny(tmp_path: Path) -> None:
    out = tmp_path / "results"
    env = {k: v for k, v in os.environ.items() if not k.startswith("PARLEY_")}
    argv = [*PARLEY, "bench", "presence", "--users", "20", "--subscriptions", "5"]
    argv += ["--change-rate", "0.2", "--seconds", "2", "--processes", "1", "--out", str(out)]
    done = subprocess.run(argv, env=env, capture_output=True, text=True, timeout=90)
    assert done.returncode == 0, done.stdout + done.stderr
    assert done.stdout.startswith("presence: 20 users × 5:"), done.stdout
    [report] = [json.loads(p.read_text()) for p in out.glob("presence-*.json")]
    run = report["run"]
    assert run["unsettled"] == 0
    assert run["errors"] == 0, run["error_samples"]
    assert run["reconnects"] == 0
    # 4 changes a second for 2 s, each to its user's 5 subscribers
    assert run["changes"] == 8
    assert run["frames"] > 0
    counts = run["change_deliveries"]
    assert counts["expected"] == 8 * 5
    assert counts["delivered"] > 0
    assert counts["delivered"] + counts["coalesced"] == counts["expected"]
    assert run["frames"] == counts["delivered"]
    assert run["lost"] == 0
    assert run["redundant"] == 0
    assert run["unmatched"] == 0
    p99 = run["delay_ms"]["p99"]
    assert math.isfinite(p99)
    assert 0 < p99 < 5000
    # measured (the bench started the server), though 40 frames may take less CPU
    # than one clock tick (10 ms), so it can read 0
    assert run["server_cpu_s"] >= 0 and run["server_cpu_pct"] is not None
    assert [g["connections"] for g in run["generators"]] == [20]
