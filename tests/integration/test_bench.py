"""``parley bench`` end to end at tiny scale: its own server (and the ceiling), real
generator processes, the JSON report."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

PARLEY = [sys.executable, "-m", "parley.cli.main", "bench"]


def bench(tmp_path: Path, *args: str) -> dict[str, Any]:
    out = tmp_path / "results"
    env = {k: v for k, v in os.environ.items() if not k.startswith("PARLEY_")}
    argv = [*PARLEY, *args, "--processes", "1", "--out", str(out)]
    done = subprocess.run(argv, env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stdout + done.stderr
    [report] = [json.loads(p.read_text()) for p in out.glob("*.json")]
    assert len(list(out.glob("*.png"))) == 1
    return report


def test_fanout_with_lean_receivers_against_parley_and_the_ceiling(tmp_path: Path) -> None:
    report = bench(
        tmp_path, "fanout", "--receivers", "3", "--senders", "2", "--messages", "20",
        "--lean-receivers",
    )  # fmt: skip
    runs = {run["server"]: run for run in report["runs"]}
    assert set(runs) == {"parley", "baseline"}
    for run in runs.values():
        assert run["sends"] == 40
        # what the receivers got (the senders, members too, do not count theirs)
        assert run["deliveries"] == 3 * 40
        assert (run["lost"], run["duplicated"], run["protocol_errors"]) == (0, 0, 0)
        assert len(run["generator_cpu_percent_while_sending"]) == 1
        [lag] = run["generator_loop_lag_ms"]  # None: sent in under 10 ms, never sampled
        assert lag is None or 0 <= lag["p99"] <= lag["max"]
    assert runs["parley"]["sdk_gaps_repaired"] == 0
    # the server's commits and its disk, probed beside the load (the ceiling has neither)
    assert runs["parley"]["server_commit_ms"]["count"] >= 1
    disk = runs["parley"]["disk_fsync_ms"]
    assert disk["count"] >= 1 and 0 < disk["p50"] <= disk["p99"] <= disk["max"]
    assert runs["baseline"]["server_commit_ms"] is None
    assert runs["baseline"]["disk_fsync_ms"] is None
    # the store floor, at the commit sizes the server reached
    floor = runs["parley"]["store_floor"]
    assert floor["sends_per_commit"] == pytest.approx(
        40 / runs["parley"]["server_commit_ms"]["count"], abs=0.01
    )
    assert floor["cpu_us_per_send"] > 0 and len(floor["rounds_us_per_send"]) == 3
    assert "store_floor" not in runs["baseline"]
    assert set(report["ratio_to_ceiling"]) >= {"sends_per_s", "deliveries_per_s"}
    if runs["parley"]["server_cpu_s"] and runs["baseline"]["server_cpu_s"]:
        per_send = {name: run["server_cpu_s"] * 1e6 / 40 for name, run in runs.items()}
        assert report["server_cpu_us_per_send_over_ceiling"] == pytest.approx(
            per_send["parley"] - per_send["baseline"]
        )
        assert report["server_cpu_us_per_send_over_ceiling_and_store_floor"] == pytest.approx(
            per_send["parley"] - per_send["baseline"] - floor["cpu_us_per_send"]
        )


def test_reconnect_storm_brings_every_client_back(tmp_path: Path) -> None:
    report = bench(
        tmp_path, "reconnect-storm", "--clients", "10", "--messages", "30",
        "--storm-after", "0.2", "--no-baseline",
    )  # fmt: skip
    [run] = report["runs"]
    assert (run["lost"], run["duplicated"]) == (0, 0)
    assert run["reconnects"] == 10
    back = run["client_back_ms"]
    assert (back["count"], back["not_back"]) == (10, 0)
    assert 0 < back["p50"] <= back["max"]
    assert run["server_resume_ms"]["count"] == 10
    # sending lasted past the drop (0.2 s): the generator's loop lag was sampled
    [lag] = run["generator_loop_lag_ms"]
    assert 0 <= lag["p99"] <= lag["max"]
