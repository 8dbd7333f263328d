"""The rolling-restart bench's arithmetic: rates per phase, the longest silence,
the series it plots, the medians over runs."""

from __future__ import annotations

from typing import Any

import pytest

from parley.cli.bench_rolling import MEDIANS, aggregate, max_gap, rate, series


def test_rate_counts_acks_in_a_half_open_window() -> None:
    acks = [0.0, 0.5, 1.0, 1.5, 2.0]
    assert rate(acks, 0.0, 2.0) == 2.0  # 2.0 itself belongs to the next window
    assert rate(acks, 1.0, 1.0) == 0.0


def test_the_longest_silence_includes_the_windows_edges() -> None:
    assert max_gap([1.0, 1.2, 3.0], 0.0, 4.0) == pytest.approx(1.8)
    assert max_gap([0.1, 0.2], 0.0, 5.0) == pytest.approx(4.8)  # silent to the end
    assert max_gap([], 2.0, 3.0) == pytest.approx(1.0)


def test_series_bins_acks_per_second_from_the_origin() -> None:
    assert series([10.0, 10.1, 10.3, 11.0], 10.0, 11.0, width=0.5) == [6.0, 0.0, 2.0]


def run(steady: float, during: float, lost: int = 0) -> dict[str, Any]:
    values = dict.fromkeys(MEDIANS, 1.0) | {
        "steady_acks_per_s": steady,
        "restart_acks_per_s": during,
        "ratio_restart_to_steady": during / steady,
    }
    return values | {
        "lost": lost,
        "duplicated": 0,
        "stuck_senders": 0,
        "sender_errors": [],
        "nodes": [{"exit_code": 0}],
    }


def test_medians_over_runs_and_sums_of_what_must_be_zero() -> None:
    summary = aggregate([run(100, 50), run(200, 180), run(150, 120, lost=1)])
    assert summary["steady_acks_per_s"] == {"median": 150, "runs": [100, 200, 150]}
    assert summary["ratio_restart_to_steady"]["median"] == pytest.approx(0.8)
    assert (summary["lost"], summary["duplicated"], summary["exit_codes"]) == (1, 0, [0])
