"""The RabbitMQ bus: a topic exchange, one queue per node, a binding per channel.

Topology. One exchange per cluster, ``parley.bus`` (``parley.bus.<prefix>`` with a
prefix), of type ``topic``, not durable: a doorbell carries nothing that must outlive
the broker, and every node re-declares it on (re)connect. The routing key is the
channel. Each node declares one queue of its own, named from its node id and a random
suffix (not exclusive: an exclusive queue re-declared right after a reconnect can hit
``RESOURCE_LOCKED``), expiring ``queue_expiry`` seconds after its node last used it
(``x-expires``), capped at ``queue_max_length`` messages (the oldest dropped). The
queue outlives a short cut, so what was published meanwhile waits there; the node
still gets ``on_reconnect`` and repairs, since the cap or the expiry may have dropped
some. ``subscribe`` binds the queue (it returns on ``bind-ok``: active), ``unsubscribe``
unbinds it.

Publishing uses publisher confirms (a publish returns once the broker has it) and
``mandatory=False``: a message no queue is bound for has no listener, which for a
doorbell is no error. ``publish_batch`` packs the messages of each channel into one
AMQP message (4-byte big-endian length before each payload, message type
``parley.batch``) and awaits all confirms together: per-message cost dominates on
RabbitMQ, and the hub sends a commit's events for a room in one batch.

Consuming is auto-ack (manual ack with a small prefetch cut throughput by two thirds
here); with auto-ack the broker's prefetch does not apply, so deliveries wait in a
local queue of at most ``buffer_limit`` for one dispatcher task that calls the
handler in order (aio-pika starts a task per delivery, which would not keep order
with an async handler). Past the limit, messages are dropped and the loss signalled.

Reconnection is this module's own loop rather than ``connect_robust``: the robust
objects are held weakly and restored in an order we cannot hook, while the port needs
``on_reconnect`` strictly after the queue, its bindings and the consumer are back.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import secrets
from collections.abc import Sequence
from typing import Any

import aio_pika
from aio_pika.abc import (
    AbstractChannel,
    AbstractConnection,
    AbstractExchange,
    AbstractIncomingMessage,
    AbstractQueue,
)
from aio_pika.exceptions import AMQPError
from yarl import URL

from parley.bus._common import Backoff, dispatch, signal
from parley.errors import Unavailable
from parley.ports import Bus, BusHandler, BusSignal

log = logging.getLogger("parley.bus.rabbitmq")

BATCH_TYPE = "parley.batch"
_LINK_ERRORS = (AMQPError, OSError, asyncio.TimeoutError, RuntimeError)


def pack(payloads: Sequence[bytes]) -> bytes:
    """Several payloads in one body: each behind its length, 4 bytes big-endian."""
    return b"".join(len(p).to_bytes(4, "big") + p for p in payloads)


def unpack(body: bytes) -> list[bytes]:
    """The payloads of a ``pack``ed body; ``ValueError`` if it is truncated."""
    out: list[bytes] = []
    at = 0
    while at < len(body):
        size = int.from_bytes(body[at : at + 4], "big")
        end = at + 4 + size
        if end > len(body) or at + 4 > len(body):
            raise ValueError("truncated batch")
        out.append(body[at + 4 : end])
        at = end
    return out


class RabbitBus(Bus):
    """A node's bus over RabbitMQ.

    ``url`` is ``amqp://user:password@host:port/vhost``. ``connect_timeout`` bounds
    one connection attempt and how long ``start`` waits for the first;
    ``heartbeat`` (seconds) is the AMQP heartbeat that finds a silent dead line;
    reconnection waits between ``retry_min`` and ``retry_max`` seconds, doubling.
    """

    def __init__(
        self,
        url: str,
        *,
        prefix: str = "",
        node_id: str = "",
        connect_timeout: float = 2.0,
        op_timeout: float = 5.0,
        heartbeat: int = 10,
        queue_expiry: float = 60.0,
        queue_max_length: int = 100_000,
        buffer_limit: int = 100_000,
        retry_min: float = 0.1,
        retry_max: float = 5.0,
    ) -> None:
        parsed = URL(url)
        if "heartbeat" not in parsed.query:
            parsed = parsed.update_query(heartbeat=heartbeat)
        self._url = str(parsed)
        self._exchange_name = f"parley.bus.{prefix}" if prefix else "parley.bus"
        self._queue_name = f"parley.{node_id or 'node'}.{secrets.token_hex(4)}"
        self._queue_args: dict[str, Any] = {
            "x-expires": int(queue_expiry * 1000),
            "x-max-length": queue_max_length,
        }
        self._connect_timeout = connect_timeout
        self._op_timeout = op_timeout
        self._backoff = Backoff(retry_min, retry_max)
        self._handler: BusHandler | None = None
        self._on_reconnect: BusSignal | None = None
        self._channels: set[str] = set()
        self._bound: set[str] = set()
        # Strong references for the life of one connection.
        self._conn: AbstractConnection | None = None
        self._channel: AbstractChannel | None = None
        self._exchange: AbstractExchange | None = None
        self._queue: AbstractQueue | None = None
        self._consumer_tag: str | None = None
        self._connected = False
        self._starting = False
        self._closed = False
        self._tried = asyncio.Event()
        self._inbox: asyncio.Queue[tuple[str, str | None, bytes]] = asyncio.Queue()
        self._buffer_limit = buffer_limit
        self._dropping = False
        self._task: asyncio.Task[None] | None = None
        self._dispatcher: asyncio.Task[None] | None = None

    @property
    def queue_name(self) -> str:
        """This node's queue on the broker."""
        return self._queue_name

    @property
    def connected(self) -> bool:
        conn = self._conn
        return self._connected and conn is not None and not conn.is_closed

    async def start(self, handler: BusHandler, *, on_reconnect: BusSignal | None = None) -> None:
        self._handler = handler
        self._on_reconnect = on_reconnect
        self._starting = True
        self._dispatcher = asyncio.create_task(self._dispatch(), name="parley-bus-amqp-dispatch")
        self._task = asyncio.create_task(self._run(), name="parley-bus-amqp")
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(self._connect_timeout + 1):
                await self._tried.wait()
        self._starting = False

    async def close(self) -> None:
        """Leave: delete this node's queue (``x-expires`` covers a node that cannot)."""
        self._closed = True
        self._connected = False
        queue, tag = self._queue, self._consumer_tag
        if queue is not None:
            with contextlib.suppress(*_LINK_ERRORS):
                if tag is not None:
                    await queue.cancel(tag, timeout=self._op_timeout)
                await queue.delete(if_unused=False, if_empty=False, timeout=self._op_timeout)
        for task in (self._task, self._dispatcher):
            if task is not None:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
        conn, self._conn = self._conn, None
        if conn is not None:
            with contextlib.suppress(*_LINK_ERRORS):
                await conn.close()

    async def publish(self, channel: str, data: bytes) -> None:
        await self._publish([(channel, aio_pika.Message(data))])

    async def publish_batch(self, messages: Sequence[tuple[str, bytes]]) -> None:
        by_channel: dict[str, list[bytes]] = {}
        for channel, data in messages:
            by_channel.setdefault(channel, []).append(data)
        await self._publish(
            [
                (ch, aio_pika.Message(ds[0]))
                if len(ds) == 1
                else (ch, aio_pika.Message(pack(ds), type=BATCH_TYPE))
                for ch, ds in by_channel.items()
            ]
        )

    async def _publish(self, messages: list[tuple[str, aio_pika.Message]]) -> None:
        exchange = self._exchange
        if not self.connected or exchange is None:
            raise Unavailable("not connected to rabbitmq")
        if not messages:
            return
        try:
            await asyncio.gather(
                *(
                    exchange.publish(msg, routing_key=ch, mandatory=False, timeout=self._op_timeout)
                    for ch, msg in messages
                )
            )
        except _LINK_ERRORS as exc:
            raise Unavailable(f"rabbitmq publish failed: {exc!r}") from exc

    async def subscribe(self, channel: str) -> None:
        self._channels.add(channel)
        queue, exchange = self._queue, self._exchange
        if queue is None or exchange is None or channel in self._bound:
            return  # bound by the link when it connects
        try:
            await queue.bind(exchange, routing_key=channel, timeout=self._op_timeout)
            self._bound.add(channel)
        except _LINK_ERRORS:
            log.info("rabbitmq bind of %s deferred to the reconnect", channel)

    async def unsubscribe(self, channel: str) -> None:
        self._channels.discard(channel)
        queue, exchange = self._queue, self._exchange
        if queue is None or exchange is None or channel not in self._bound:
            return  # unbound by the link when it connects
        try:
            await queue.unbind(exchange, routing_key=channel, timeout=self._op_timeout)
            self._bound.discard(channel)
        except _LINK_ERRORS:
            log.info("rabbitmq unbind of %s deferred to the reconnect", channel)

    async def ping(self) -> None:
        if not self.connected:
            raise Unavailable("not connected to rabbitmq")

    async def _run(self) -> None:
        """Keep a connection, its queue and bindings up, for the bus's whole life."""
        while not self._closed:
            try:
                await self._session()
            except _LINK_ERRORS as exc:
                if self._connected:
                    log.warning("rabbitmq bus connection lost: %r", exc)
                else:
                    log.info("rabbitmq bus cannot connect: %r", exc)
            except Exception:
                log.exception("rabbitmq bus link failed; reconnecting")
            finally:
                self._connected = False
                self._queue = self._exchange = self._channel = None
                self._consumer_tag = None
                conn, self._conn = self._conn, None
                self._tried.set()
                if conn is not None:
                    with contextlib.suppress(*_LINK_ERRORS):
                        await conn.close()
            if not self._closed:
                await asyncio.sleep(self._backoff.delay())

    async def _session(self) -> None:
        conn = await aio_pika.connect(self._url, timeout=self._connect_timeout)
        self._conn = conn
        lost = asyncio.Event()

        def on_close(_sender: object, *_args: object) -> None:
            lost.set()

        conn.close_callbacks.add(on_close)
        channel = await conn.channel(publisher_confirms=True)
        channel.close_callbacks.add(on_close)
        self._channel = channel
        exchange = await channel.declare_exchange(
            self._exchange_name, aio_pika.ExchangeType.TOPIC, durable=False
        )
        queue = await channel.declare_queue(
            self._queue_name, durable=False, exclusive=False, arguments=self._queue_args
        )
        self._exchange, self._queue = exchange, queue
        # Every channel, not only those missing from ``_bound``: the queue may have
        # expired during a long cut and been declared afresh, with no bindings. With
        # ``nowait`` (no bind-ok each): a channel's methods are carried out in order,
        # so the consume-ok below answers for them all, and thousands of rooms are
        # bound in one round trip rather than one each.
        underlay = await channel.get_underlay_channel()
        for name in tuple(self._channels):
            await underlay.queue_bind(
                self._queue_name, self._exchange_name, routing_key=name, nowait=True
            )
            self._bound.add(name)
        # Unsubscribed while down, or while the loop above ran.
        for stale in tuple(self._bound - self._channels):
            await queue.unbind(exchange, routing_key=stale, timeout=self._op_timeout)
            self._bound.discard(stale)
        self._consumer_tag = await queue.consume(self._on_message, no_ack=True)
        self._connected = True
        self._backoff.reset()
        self._tried.set()
        if not self._starting:
            log.info("rabbitmq bus connected; queue and bindings active")
            signal(self._on_reconnect)
        await lost.wait()
        raise ConnectionError("connection or channel closed")

    async def _on_message(self, message: AbstractIncomingMessage) -> None:
        if self._inbox.qsize() >= self._buffer_limit:
            if not self._dropping:
                log.warning(
                    "rabbitmq bus: handler behind by %d messages; dropping", self._buffer_limit
                )
                self._dropping = True
            return
        self._inbox.put_nowait((message.routing_key or "", message.type, message.body))

    async def _dispatch(self) -> None:
        """Call the handler for each delivery, in arrival order."""
        while True:
            channel, kind, body = await self._inbox.get()
            if self._dropping and self._inbox.empty():
                self._dropping = False
                signal(self._on_reconnect)
            if channel not in self._channels:
                continue
            if kind == BATCH_TYPE:
                try:
                    payloads = unpack(body)
                except ValueError:
                    log.warning("rabbitmq bus: dropped a malformed batch on %s", channel)
                    continue
                for data in payloads:
                    await dispatch(self._handler, channel, data)
            else:
                await dispatch(self._handler, channel, body)
