"""The NATS bus: core subjects, the cheapest doorbell of the three brokers.

Core NATS is at most once, like Redis pub/sub: what is published while a node is
disconnected is gone. JetStream would keep it, but at a cost per event measured
tens of times higher (an acked store per publish) for a log the node already has
in its database, so this bus uses core subjects and signals every lost connection:
nats-py reconnects forever (``max_reconnect_attempts=-1``), re-sends the
subscriptions and flushes before ``reconnected_cb``; the bus then subscribes to
anything added while it was down, flushes again, and calls ``on_reconnect``.

A subscriber that falls behind its pending limits makes nats-py drop messages with a
``SlowConsumerError``: that is a loss too, so it is logged and signalled the same way
(once per burst), and the node repairs from the store.

The first connection is made in a background task: nats-py's own first ``connect``
to a server that is down does not return while it retries, and ``start`` must not
wait for a broker. Channels map to subjects one to one (``room.<id>``: the dot is
NATS's token separator, which is fine), behind ``prefix.`` when a prefix is set.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

from nats.aio.client import Client
from nats.aio.msg import Msg
from nats.aio.subscription import Subscription
from nats.errors import Error as NatsError
from nats.errors import SlowConsumerError

from parley.bus._common import dispatch, signal
from parley.errors import Unavailable
from parley.ports import Bus, BusHandler, BusSignal

log = logging.getLogger("parley.bus.nats")

_LINK_ERRORS = (NatsError, OSError, asyncio.TimeoutError)


class NatsBus(Bus):
    """A node's bus over core NATS.

    ``url`` is ``nats://[user:password@]host:port`` (several servers: comma-separated).
    ``connect_timeout`` bounds one connection attempt and how long ``start`` waits for
    the first; ``reconnect_wait`` is the pause between attempts; the client pings every
    ``ping_interval`` seconds and counts the connection lost after
    ``max_outstanding_pings`` unanswered. ``pending_msgs_limit`` and
    ``pending_bytes_limit`` bound what one subscription buffers for a slow handler.
    """

    def __init__(
        self,
        url: str,
        *,
        prefix: str = "",
        node_id: str = "",
        connect_timeout: float = 2.0,
        op_timeout: float = 5.0,
        reconnect_wait: float = 1.0,
        ping_interval: float = 10.0,
        max_outstanding_pings: int = 2,
        pending_msgs_limit: int = 1_000_000,
        pending_bytes_limit: int = 256 * 1024 * 1024,
    ) -> None:
        self._servers = url.split(",")
        self._prefix = f"{prefix}." if prefix else ""
        self._connect_timeout = connect_timeout
        self._op_timeout = op_timeout
        self._options: dict[str, Any] = {
            "name": f"parley-{node_id}" if node_id else "parley",
            "connect_timeout": connect_timeout,
            "reconnect_time_wait": reconnect_wait,
            "max_reconnect_attempts": -1,
            "allow_reconnect": True,
            "ping_interval": ping_interval,
            "max_outstanding_pings": max_outstanding_pings,
        }
        self._pending_msgs_limit = pending_msgs_limit
        self._pending_bytes_limit = pending_bytes_limit
        self._nc = Client()
        self._handler: BusHandler | None = None
        self._on_reconnect: BusSignal | None = None
        self._channels: set[str] = set()
        self._subs: dict[str, Subscription] = {}
        self._ready = False
        self._starting = False
        self._closed = False
        self._failures = 0
        self._signal_pending = False
        self._tried = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    @property
    def connected(self) -> bool:
        return self._ready and self._nc.is_connected

    async def start(self, handler: BusHandler, *, on_reconnect: BusSignal | None = None) -> None:
        self._handler = handler
        self._on_reconnect = on_reconnect
        self._starting = True
        self._task = asyncio.create_task(self._connect(), name="parley-bus-nats-connect")
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(self._connect_timeout + 1):
                await self._tried.wait()
        self._starting = False

    async def close(self) -> None:
        self._closed = True
        self._ready = False
        if self._task is not None and not self._task.done():
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        if not self._nc.is_closed:
            with contextlib.suppress(*_LINK_ERRORS):
                await self._nc.close()
        self._subs.clear()

    async def publish(self, channel: str, data: bytes) -> None:
        """Hand one message to the client's buffer, which its flusher sends at once."""
        self._check()
        try:
            await self._nc.publish(self._prefix + channel, data)
        except _LINK_ERRORS as exc:
            raise Unavailable(f"nats publish failed: {exc}") from exc

    async def publish_batch(self, messages: Sequence[tuple[str, bytes]]) -> None:
        """Buffer every message, then one ``flush`` (a PING/PONG round trip): the
        server has them all when this returns."""
        self._check()
        if not messages:
            return
        try:
            for channel, data in messages:
                await self._nc.publish(self._prefix + channel, data)
            await self._round_trip()
        except _LINK_ERRORS as exc:
            raise Unavailable(f"nats publish failed: {exc}") from exc

    async def subscribe(self, channel: str) -> None:
        self._channels.add(channel)
        if channel in self._subs or not self.connected:
            return  # subscribed on (re)connect
        try:
            await self._subscribe(channel)
            await self._round_trip()
        except _LINK_ERRORS:
            log.info("nats subscribe to %s deferred to the reconnect", channel)

    async def unsubscribe(self, channel: str) -> None:
        self._channels.discard(channel)
        sub = self._subs.pop(channel, None)
        if sub is not None:
            with contextlib.suppress(*_LINK_ERRORS):
                await sub.unsubscribe()

    async def ping(self) -> None:
        self._check()
        try:
            await self._round_trip()
        except _LINK_ERRORS as exc:
            raise Unavailable(f"nats ping failed: {exc}") from exc

    def _check(self) -> None:
        if not self.connected:
            raise Unavailable("not connected to nats")

    async def _round_trip(self) -> None:
        """Return once the server has read everything sent so far.

        nats-py's ``flush`` writes its PING straight to the socket, ahead of commands
        still waiting in its buffer for the flusher task (a SUB, PUBs); its PONG then
        covers nothing after it. So the buffer is pushed out first (nats-py 2.16 has no
        public call for that), then the PING goes.
        """
        with contextlib.suppress(asyncio.TimeoutError):
            await asyncio.wait_for(self._nc._flush_pending(force_flush=True), self._op_timeout)
        await self._nc.flush(timeout=self._op_timeout)  # type: ignore[arg-type]

    async def _connect(self) -> None:
        """The first connection; nats-py keeps it (and reconnects) from then on."""
        try:
            await self._nc.connect(
                servers=self._servers,
                error_cb=self._on_error,
                disconnected_cb=self._on_disconnected,
                reconnected_cb=self._on_reconnected,
                **self._options,
            )
            await self._resubscribe()
        except _LINK_ERRORS as exc:
            log.warning("nats bus: subscribing after the first connect failed (%r)", exc)
        except Exception:
            log.exception("nats bus: the first connection failed for good")
        finally:
            self._tried.set()

    async def _subscribe(self, channel: str) -> None:
        self._subs[channel] = await self._nc.subscribe(
            self._prefix + channel,
            cb=self._callback(channel),
            pending_msgs_limit=self._pending_msgs_limit,
            pending_bytes_limit=self._pending_bytes_limit,
        )

    def _callback(self, channel: str) -> Callable[[Msg], Awaitable[None]]:
        async def deliver(msg: Msg) -> None:
            if channel in self._subs:
                await dispatch(self._handler, channel, msg.data)

        return deliver

    async def _resubscribe(self) -> None:
        """Subscribe to what was added while disconnected, confirm, then say so."""
        for channel in tuple(self._channels - self._subs.keys()):
            if channel in self._channels:  # not unsubscribed meanwhile
                await self._subscribe(channel)
        await self._round_trip()
        self._ready = True
        self._tried.set()
        self._failures = 0
        if not self._starting:
            log.info("nats bus connected; subscriptions active")
            signal(self._on_reconnect)

    async def _on_error(self, exc: Exception) -> None:
        if isinstance(exc, SlowConsumerError):
            log.warning("nats bus: slow consumer on %s, messages dropped", exc.subject)
            self._signal_soon()
            return
        self._failures += 1
        self._tried.set()
        level = logging.WARNING if self._failures == 1 else logging.DEBUG
        log.log(level, "nats bus error: %r", exc)

    async def _on_disconnected(self) -> None:
        if self._ready and not self._closed:
            log.warning("nats bus connection lost")
        self._ready = False

    async def _on_reconnected(self) -> None:
        try:
            await self._resubscribe()
        except _LINK_ERRORS as exc:
            log.warning("nats bus: re-subscribing failed (%r); waiting for the next reconnect", exc)

    def _signal_soon(self) -> None:
        """One signal per burst of drops, not one per dropped message."""
        if self._signal_pending:
            return
        self._signal_pending = True

        def fire() -> None:
            self._signal_pending = False
            signal(self._on_reconnect)

        asyncio.get_running_loop().call_later(0.1, fire)
