"""The Redis bus: pub/sub, a doorbell that rings while the line is up.

Why pub/sub and not Streams. Pub/sub is at most once: what is published while a
subscriber's connection is down is gone, and redis-py's own ``PubSub`` re-subscribes
after a reconnect without a word, so the loss is invisible. Streams keep entries
until trimmed and let a reader resume from an id, but each node would then need its
own cursor per stream, trimming, and a stream per room or one big stream every node
reads in full; and the store already keeps exactly that log, by ``(room_id, seq)``.
So this bus uses pub/sub and makes the loss *visible*: it owns its subscriber
connection, notices when it drops (a read error, or no answer to its periodic
``PING``), reconnects with backoff, re-subscribes every channel, waits for Redis to
confirm each, and only then calls ``on_reconnect``, on which the node repairs its
rooms from the store. Pub/sub ignores the database number in the URL: channels are
server-wide, hence ``?prefix=``.

Two connections: publishes go through a client (a pipeline for ``publish_batch``: one
round trip), messages arrive on a dedicated subscriber connection read by one task,
which calls the handler in arrival order. A handler that is slow holds up reading;
Redis then buffers for us up to its ``client-output-buffer-limit pubsub`` and drops the
connection past it, which this bus reports like any other loss.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
from collections.abc import Sequence
from typing import Any

from redis.asyncio import ConnectionPool, Redis
from redis.asyncio.connection import AbstractConnection
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.exceptions import RedisError

from parley.bus._common import Backoff, dispatch, signal
from parley.errors import Unavailable
from parley.ports import Bus, BusHandler, BusSignal

log = logging.getLogger("parley.bus.redis")

_LINK_ERRORS = (RedisError, OSError, asyncio.TimeoutError, EOFError)


class RedisBus(Bus):
    """A node's bus over Redis pub/sub.

    ``url`` is a redis-py URL (``redis://[:password@]host:port/db``); ``prefix`` is
    prepended to every channel (``prefix.room.<id>``). ``connect_timeout`` bounds one
    connection attempt (and how long ``start`` waits for the first), ``op_timeout`` one
    publish; the subscriber connection is pinged every ``health_interval`` seconds and
    counted lost when two intervals pass without a word from Redis. Reconnection waits
    between ``retry_min`` and ``retry_max`` seconds, doubling.
    """

    def __init__(
        self,
        url: str,
        *,
        prefix: str = "",
        connect_timeout: float = 2.0,
        op_timeout: float = 5.0,
        health_interval: float = 5.0,
        retry_min: float = 0.1,
        retry_max: float = 5.0,
    ) -> None:
        self._prefix = f"{prefix}." if prefix else ""
        self._connect_timeout = connect_timeout
        self._health_interval = health_interval
        self._backoff = Backoff(retry_min, retry_max)
        self._pool = ConnectionPool.from_url(
            url,
            socket_connect_timeout=connect_timeout,
            socket_timeout=op_timeout,
            retry=Retry(NoBackoff(), 0),
            protocol=2,
        )
        self._client = Redis(connection_pool=self._pool)
        self._handler: BusHandler | None = None
        self._on_reconnect: BusSignal | None = None
        self._channels: set[str] = set()
        self._waiters: dict[bytes, asyncio.Future[None]] = {}
        self._conn: AbstractConnection | None = None
        self._connected = False
        self._starting = False
        self._closed = False
        self._tried = asyncio.Event()
        self._last_heard = 0.0
        self._dispatching = False
        self._task: asyncio.Task[None] | None = None

    @property
    def connected(self) -> bool:
        return self._connected

    async def start(self, handler: BusHandler, *, on_reconnect: BusSignal | None = None) -> None:
        self._handler = handler
        self._on_reconnect = on_reconnect
        self._starting = True
        self._task = asyncio.create_task(self._run(), name="parley-bus-redis")
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(self._connect_timeout + 1):
                await self._tried.wait()
        self._starting = False

    async def close(self) -> None:
        self._closed = True
        self._connected = False
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        await self._client.aclose()
        await self._pool.disconnect()

    async def publish(self, channel: str, data: bytes) -> None:
        self._check()
        try:
            await self._client.publish(self._prefix + channel, data)
        except _LINK_ERRORS as exc:
            raise Unavailable(f"redis publish failed: {exc}") from exc

    async def publish_batch(self, messages: Sequence[tuple[str, bytes]]) -> None:
        self._check()
        if not messages:
            return
        try:
            async with self._client.pipeline(transaction=False) as pipe:
                for channel, data in messages:
                    pipe.publish(self._prefix + channel, data)
                await pipe.execute()
        except _LINK_ERRORS as exc:
            raise Unavailable(f"redis publish failed: {exc}") from exc

    async def subscribe(self, channel: str) -> None:
        name = (self._prefix + channel).encode()
        if channel in self._channels and name not in self._waiters:
            return
        self._channels.add(channel)
        conn = self._conn
        if conn is None:
            return  # subscribed by the link when it connects
        waiter = self._waiters.get(name)
        if waiter is None:
            waiter = self._waiters[name] = asyncio.get_running_loop().create_future()
            try:
                await conn.send_command("SUBSCRIBE", name, check_health=False)
            except _LINK_ERRORS:
                self._waiters.pop(name, None)
                return  # the link is going down; it re-subscribes on reconnect
        await asyncio.shield(waiter)

    async def unsubscribe(self, channel: str) -> None:
        if channel not in self._channels:
            return
        self._channels.discard(channel)
        conn = self._conn
        if conn is not None:
            with contextlib.suppress(*_LINK_ERRORS):
                await conn.send_command("UNSUBSCRIBE", self._prefix + channel, check_health=False)

    async def ping(self) -> None:
        self._check()
        try:
            await self._client.ping()
        except _LINK_ERRORS as exc:
            raise Unavailable(f"redis ping failed: {exc}") from exc

    def _check(self) -> None:
        if not self._connected:
            raise Unavailable("not connected to redis")

    async def _run(self) -> None:
        """Keep the subscriber connection up, for the bus's whole life."""
        while not self._closed:
            conn = self._pool.make_connection()  # type: ignore[no-untyped-call]
            try:
                await self._session(conn)
            except _LINK_ERRORS as exc:
                if self._connected:
                    log.warning("redis bus connection lost: %s", exc)
                else:
                    log.info("redis bus cannot connect: %s", exc)
            except Exception:
                log.exception("redis bus link failed; reconnecting")
            finally:
                self._conn = None
                self._connected = False
                self._tried.set()
                for waiter in self._waiters.values():
                    if not waiter.done():
                        waiter.set_result(None)  # re-subscribed on reconnect
                self._waiters.clear()
                with contextlib.suppress(Exception):
                    await conn.disconnect(nowait=True)
            if not self._closed:
                await asyncio.sleep(self._backoff.delay())

    async def _session(self, conn: AbstractConnection) -> None:
        """One connection: subscribe to everything, then read until it breaks."""
        await conn.connect()  # type: ignore[no-untyped-call]
        loop = asyncio.get_running_loop()
        self._last_heard = loop.time()
        pending = {(self._prefix + c).encode() for c in self._channels}
        self._conn = conn
        if pending:
            await conn.send_command("SUBSCRIBE", *pending, check_health=False)
        else:
            self._up()
        pinger = asyncio.create_task(self._keepalive(conn), name="parley-bus-redis-ping")
        try:
            while True:
                reply: Any = await conn.read_response(timeout=math.inf)
                self._last_heard = loop.time()
                if not isinstance(reply, list) or not reply:
                    continue  # PONG outside subscribed mode
                kind = reply[0]
                if kind == b"message":
                    channel = reply[1].decode()[len(self._prefix) :]
                    if channel in self._channels:
                        self._dispatching = True
                        try:
                            await dispatch(self._handler, channel, reply[2])
                        finally:
                            self._dispatching = False
                            self._last_heard = loop.time()
                elif kind == b"subscribe":
                    name = reply[1]
                    waiter = self._waiters.pop(name, None)
                    if waiter is not None and not waiter.done():
                        waiter.set_result(None)
                    if pending:
                        pending.discard(name)
                        if not pending:
                            self._up()
        finally:
            pinger.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await pinger

    def _up(self) -> None:
        self._connected = True
        self._backoff.reset()
        self._tried.set()
        if not self._starting:
            log.info("redis bus connected; subscriptions active")
            signal(self._on_reconnect)

    async def _keepalive(self, conn: AbstractConnection) -> None:
        """PING so that a silent dead line is found; drop the link past two
        intervals without a word (the reader then sees the error)."""
        loop = asyncio.get_running_loop()
        while True:
            await asyncio.sleep(self._health_interval)
            if self._dispatching:
                continue  # a slow handler, not a silent line, holds up reading
            if loop.time() - self._last_heard > 2 * self._health_interval:
                log.warning("redis bus: no answer to PING; reconnecting")
                await conn.disconnect(nowait=True)
                return
            with contextlib.suppress(*_LINK_ERRORS):
                await conn.send_command("PING", check_health=False)
