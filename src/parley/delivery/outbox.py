"""The bus outbox: committed events ring the other nodes in the background.

The store's commit hook hands a commit's events to the hub, which fans them out to
this node's connections at once and puts one bus message per room here. A task
publishes what is queued in batches (``Bus.publish_batch``), retrying with backoff
while the broker is away, so that no caller waits on the broker (an ack follows the
commit, not the publish) and no cancelled caller can drop a doorbell.

Bounded: past ``limit`` messages (a broker gone for long) the oldest are dropped and
counted. Nothing is lost by that: the other nodes read their rooms' heads from the
database after their own reconnect and every ``repair_interval``, and fill the gap.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import deque
from dataclasses import dataclass
from typing import Final

from parley.ports import Bus

log = logging.getLogger("parley.outbox")

BATCH: Final = 256
"""Most messages in one ``publish_batch``."""
RETRY_FIRST: Final = 0.05
RETRY_MAX: Final = 2.0
LOG_EVERY: Final = 30.0
"""Seconds between two warnings about a failing broker (one per outage, not per try)."""


@dataclass(slots=True)
class OutboxStats:
    published: int = 0
    batches: int = 0
    failures: int = 0
    dropped: int = 0


class Outbox:
    """A bounded queue of ``(channel, data)`` and the task that publishes it."""

    def __init__(self, bus: Bus, *, limit: int = 10_000) -> None:
        self._bus = bus
        self._limit = limit
        self._queue: deque[tuple[str, bytes]] = deque()
        self._wake = asyncio.Event()
        self._idle = asyncio.Event()
        self._idle.set()
        self._task: asyncio.Task[None] | None = None
        self._warned = 0.0
        self.stats = OutboxStats()

    def start(self) -> None:
        if self._task is None:
            self._task = asyncio.create_task(self._run(), name="parley-bus-outbox")

    def put(self, channel: str, data: bytes) -> None:
        """Queue one message (no await: called from the commit hook)."""
        queue = self._queue
        if len(queue) >= self._limit:
            queue.popleft()
            self.stats.dropped += 1
        queue.append((channel, data))
        self._idle.clear()
        self._wake.set()

    @property
    def pending(self) -> int:
        return len(self._queue)

    async def wait_sent(self) -> None:
        """Until everything queued so far was taken by the broker."""
        await self._idle.wait()

    async def close(self, grace: float = 2.0) -> None:
        """Publish what is queued, for at most ``grace`` seconds, then stop."""
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(grace):
                await self.wait_sent()
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

    async def _run(self) -> None:
        queue = self._queue
        delay = RETRY_FIRST
        while True:
            if not queue:
                self._idle.set()
                self._wake.clear()
                await self._wake.wait()
                continue
            batch = [queue.popleft() for _ in range(min(BATCH, len(queue)))]
            try:
                await self._bus.publish_batch(batch)
            except asyncio.CancelledError:
                queue.extendleft(reversed(batch))
                raise
            except Exception as exc:
                # Put it back in front, in order; what overflows meanwhile is dropped
                # from the oldest end by ``put`` and repaired from the store.
                queue.extendleft(reversed(batch))
                while len(queue) > self._limit:
                    queue.popleft()
                    self.stats.dropped += 1
                self.stats.failures += 1
                now = time.monotonic()
                if now - self._warned > LOG_EVERY:
                    self._warned = now
                    log.warning("bus publish failed (%s); retrying, %d queued", exc, len(queue))
                await asyncio.sleep(delay)
                delay = min(delay * 2, RETRY_MAX)
                continue
            delay = RETRY_FIRST
            self.stats.published += len(batch)
            self.stats.batches += 1
