"""``parley.store.floor``: the database's own CPU per send, as ``parley bench`` uses it."""

from __future__ import annotations

from pathlib import Path

import pytest

from parley.cli.bench import ServerProcess, store_floor
from parley.store import floor


@pytest.mark.parametrize("mean", [1.0, 2.4, 2.5, 3.0, 4.9])
def test_commit_sizes_have_the_mean_asked_spread_evenly(mean: float) -> None:
    sizes = floor.commit_sizes(mean, 100)
    assert len(sizes) == 100
    assert sum(sizes) / 100 == pytest.approx(mean, abs=0.01)
    assert set(sizes) <= {int(mean), int(mean) + 1}
    # evenly: any ten commits in a row are within one send of their share
    for start in range(0, 90):
        assert abs(sum(sizes[start : start + 10]) - 10 * mean) <= 1


def test_the_floor_stores_every_send_and_leaves_nothing_behind(tmp_path: Path) -> None:
    figures = floor.measure(tmp_path, 2.5, sends=50, rounds=2)
    assert figures["sends_per_commit"] == 2.5
    assert figures["messages_stored"] == 3 * 50  # a warm-up round and two measured
    rounds = figures["rounds_us_per_send"]
    assert len(rounds) == 2 and min(rounds) > 0
    assert min(rounds) <= figures["cpu_us_per_send"] <= max(rounds)  # their median
    assert list(tmp_path.iterdir()) == []


def test_a_floor_that_cannot_run_gives_nothing_and_no_hang(tmp_path: Path) -> None:
    server = ServerProcess("http://127.0.0.1:9", None, data_dir=tmp_path / "missing")
    run = {"server_commit_ms": {"count": 10.0}, "sends": 20}
    assert store_floor(server, run, set()) is None  # its traceback went to stderr


def test_no_floor_without_the_server_s_disk_or_commits(tmp_path: Path) -> None:
    run = {"server_commit_ms": {"count": 10.0}, "sends": 20}
    assert store_floor(ServerProcess("http://127.0.0.1:9", None), run, set()) is None
    here = ServerProcess("http://127.0.0.1:9", None, data_dir=tmp_path)
    assert store_floor(here, {"server_commit_ms": None, "sends": 20}, set()) is None
