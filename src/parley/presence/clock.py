"""The real clock behind the ``Clock`` port."""

from __future__ import annotations

import time

from parley.ports import Clock


class SystemClock(Clock):
    """Wall time for what other nodes and clients read, monotonic time for timers."""

    def now(self) -> float:
        return time.time()

    def monotonic(self) -> float:
        return time.monotonic()
