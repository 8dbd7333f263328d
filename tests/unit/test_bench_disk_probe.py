"""``DiskProbe``: fsync times of the disk under a directory, and nothing left behind."""

from __future__ import annotations

import time
from pathlib import Path

from parley.cli.bench import DiskProbe, Recorder


def test_the_probe_times_fsyncs_and_removes_its_file(tmp_path: Path) -> None:
    probe = DiskProbe(tmp_path, interval=0.005).start()
    time.sleep(0.1)
    seen = probe.stop()
    assert seen is not None
    assert seen["count"] >= 2
    assert 0 < seen["p50"] <= seen["p99"] <= seen["max"]
    assert 0 <= seen["over_50ms"] <= seen["count"]
    assert list(tmp_path.iterdir()) == []


def test_a_probe_that_cannot_write_reports_nothing(tmp_path: Path) -> None:
    probe = DiskProbe(tmp_path / "missing").start()
    assert probe.stop() is None


def test_a_receipt_splits_the_latency_at_the_store() -> None:
    rec = Recorder()
    sent = time.time_ns() - 30_000_000
    stored = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime((sent + 10_000_000) / 1e9))
    stored += f".{((sent + 10_000_000) // 1000) % 1_000_000:06d}Z"
    assert rec.receipt(set(), f"{sent} s0 1 xxx", stored)
    [to_store], [from_store], [total] = rec.to_store_ns, rec.from_store_ns, rec.latency_ns
    assert abs(to_store - 10_000_000) < 2_000
    assert to_store + from_store == total
