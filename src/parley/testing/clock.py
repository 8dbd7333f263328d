"""A clock that moves only when told: expiry, idling and coalescing are tested by
advancing it, never by sleeping."""

from __future__ import annotations

from parley.ports import Clock

START = 1_767_225_600.0
"""2026-01-01T00:00:00Z: an epoch time far from zero, as real ones are."""


class FakeClock(Clock):
    """Wall and monotonic time that advance together, by ``advance`` only."""

    def __init__(self, start: float = START, monotonic_start: float = 1000.0) -> None:
        self._now = start
        self._monotonic = monotonic_start

    def now(self) -> float:
        return self._now

    def monotonic(self) -> float:
        return self._monotonic

    def advance(self, seconds: float) -> None:
        """Move both clocks forward (time never runs backwards)."""
        if seconds < 0:
            raise ValueError("a clock does not go back")
        self._now += seconds
        self._monotonic += seconds
