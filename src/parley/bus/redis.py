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

from parley.bus._common import ReconnectingBus, dispatch

log = logging.getLogger("parley.bus.redis")

_LINK_ERRORS = (RedisError, OSError, asyncio.TimeoutError, EOFError)


class RedisBus(ReconnectingBus):
    """A node's bus over Redis pub/sub.

    ``url`` is a redis-py URL (``redis://[:password@]host:port/db``); ``prefix`` is
    prepended to every channel (``prefix.room.<id>``). ``connect_timeout`` bounds one
    connection attempt (and how long ``start`` waits for the first), ``op_timeout`` one
    publish; the subscriber connection is pinged every ``health_interval`` seconds and
    counted lost when two intervals pass without a word from Redis. Reconnection waits
    between ``retry_min`` and ``retry_max`` seconds, doubling.
    """

    _broker = "redis"
    _log = log
    _link_errors = _LINK_ERRORS

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
        super().__init__(
            connect_timeout=connect_timeout,
            op_timeout=op_timeout,
            retry_min=retry_min,
            retry_max=retry_max,
        )
        self._prefix = f"{prefix}." if prefix else ""
        self._health_interval = health_interval
        self._pool = ConnectionPool.from_url(
            url,
            socket_connect_timeout=connect_timeout,
            socket_timeout=op_timeout,
            retry=Retry(NoBackoff(), 0),
            protocol=2,
        )
        self._client = Redis(connection_pool=self._pool)
        self._waiters: dict[bytes, asyncio.Future[None]] = {}
        # The session's subscriber connection from its first attempt (to close it),
        # and the same once connected (what ``subscribe`` sends on).
        self._link: AbstractConnection | None = None
        self._conn: AbstractConnection | None = None
        self._last_heard = 0.0
        self._dispatching = False

    async def _release(self) -> None:
        await self._client.aclose()
        await self._pool.disconnect()

    async def publish(self, channel: str, data: bytes) -> None:
        self._check()
        with self._as_unavailable("publish"):
            await self._client.publish(self._prefix + channel, data)

    async def publish_batch(self, messages: Sequence[tuple[str, bytes]]) -> None:
        self._check()
        if not messages:
            return
        with self._as_unavailable("publish"):
            async with self._client.pipeline(transaction=False) as pipe:
                for channel, data in messages:
                    pipe.publish(self._prefix + channel, data)
                await pipe.execute()

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
        with self._as_unavailable("ping"):
            await self._client.ping()

    async def _session(self) -> None:
        """One connection: subscribe to everything, then read until it breaks."""
        conn: AbstractConnection = self._pool.make_connection()  # type: ignore[no-untyped-call]
        self._link = conn
        await conn.connect()  # type: ignore[no-untyped-call]
        loop = asyncio.get_running_loop()
        self._last_heard = loop.time()
        pending = {(self._prefix + c).encode() for c in self._channels}
        self._conn = conn
        if pending:
            await conn.send_command("SUBSCRIBE", *pending, check_health=False)
        else:
            self._connected_now()
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
                            self._connected_now()
        finally:
            pinger.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await pinger

    async def _end_session(self) -> None:
        self._conn = None
        for waiter in self._waiters.values():
            if not waiter.done():
                waiter.set_result(None)  # re-subscribed on reconnect
        self._waiters.clear()
        conn, self._link = self._link, None
        if conn is not None:
            with contextlib.suppress(Exception):
                await conn.disconnect(nowait=True)

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
