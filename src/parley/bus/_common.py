"""What every bus backend shares: URL options, handler dispatch, the reconnect signal,
the backoff between connection attempts, and the life of a broker connection
(``BrokerBus``, and ``ReconnectingBus`` for the backends that reconnect by themselves)."""

from __future__ import annotations

import abc
import asyncio
import contextlib
import inspect
import logging
import random
from collections.abc import Iterator
from typing import ClassVar
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

from parley.errors import Unavailable
from parley.ports import Bus, BusHandler, BusSignal

log = logging.getLogger("parley.bus")

PARLEY_OPTIONS = frozenset({"prefix"})
"""Query parameters Parley reads from a bus URL and strips before the driver sees it."""


def split_url(url: str) -> tuple[str, dict[str, str]]:
    """The driver's URL (without Parley's options) and Parley's options.

    ``?prefix=NAME`` namespaces channels, so that several clusters (or parallel test
    runs) can share one broker without hearing each other.
    """
    parts = urlsplit(url)
    query = parse_qsl(parts.query, keep_blank_values=True)
    ours = {k: v for k, v in query if k in PARLEY_OPTIONS}
    rest = [(k, v) for k, v in query if k not in PARLEY_OPTIONS]
    prefix = ours.get("prefix")
    if prefix is not None and (not prefix or any(c in prefix for c in " .*>#\t\r\n")):
        raise ValueError(f"bus URL prefix must be a non-empty word, not {prefix!r}")
    return urlunsplit(parts._replace(query=urlencode(rest))), ours


async def dispatch(handler: BusHandler | None, channel: str, data: bytes) -> None:
    """Pass one message to the node's handler; a handler that raises is logged, as a
    broker would not let one consumer's bug stop the stream."""
    if handler is None:
        return
    try:
        result = handler(channel, data)
        if inspect.isawaitable(result):
            await result
    except Exception:
        log.exception("bus handler failed on channel %s", channel)


def signal(on_reconnect: BusSignal | None) -> None:
    """Tell the node it may have missed messages (it repairs from the store)."""
    if on_reconnect is None:
        return
    try:
        on_reconnect()
    except Exception:
        log.exception("bus on_reconnect callback failed")


class Backoff:
    """Exponential delays with full jitter between ``low`` and ``high`` seconds, so
    that a cluster's nodes do not reconnect to a restarted broker in lockstep."""

    def __init__(self, low: float, high: float) -> None:
        self.low = low
        self.high = high
        self._next = low

    def reset(self) -> None:
        self._next = self.low

    def delay(self) -> float:
        current = self._next
        self._next = min(self.high, self._next * 2)
        return random.uniform(self.low, current) if current > self.low else current


async def stop(task: asyncio.Task[None] | None) -> None:
    """Cancel ``task`` and wait until it has ended."""
    if task is not None and not task.done():
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


class BrokerBus(Bus):
    """A bus over a network broker: the life of its connection, the same for each.

    ``start`` hands the connection to a background task (``_run``) and waits for its
    first attempt, at most ``connect_timeout`` plus a second: a broker that is down
    does not hold up the node, which serves its local clients meanwhile. From then on
    ``connected`` says whether the connection is up *and* every subscription active
    (``_connected_now``); each time it is so again after a loss (``_lost``), or for the
    first time after ``start`` gave up waiting, ``on_reconnect`` is called, since what
    was published meanwhile may be gone. ``close`` stops the task, then lets go.

    A subclass names its broker (``_broker``: logs, task, errors), implements ``_run``
    and ``_release``, and may add to ``connected`` (``_link_up``) and ``close``
    (``_leave``).
    """

    _broker: ClassVar[str]
    _log: ClassVar[logging.Logger]
    _link_errors: ClassVar[tuple[type[BaseException], ...]]
    """What the driver raises when the connection fails under a call."""

    def __init__(self, *, connect_timeout: float, op_timeout: float) -> None:
        self._connect_timeout = connect_timeout
        self._op_timeout = op_timeout
        self._handler: BusHandler | None = None
        self._on_reconnect: BusSignal | None = None
        self._channels: set[str] = set()
        self._connected = False
        self._starting = False
        self._closed = False
        self._tried = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    @property
    def connected(self) -> bool:
        return self._connected and self._link_up()

    async def start(self, handler: BusHandler, *, on_reconnect: BusSignal | None = None) -> None:
        self._handler = handler
        self._on_reconnect = on_reconnect
        self._starting = True
        self._task = asyncio.create_task(self._run(), name=f"parley-bus-{self._broker}")
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(self._connect_timeout + 1):
                await self._tried.wait()
        self._starting = False

    async def close(self) -> None:
        self._closed = True
        self._connected = False
        await self._leave()
        await stop(self._task)
        await self._release()

    @abc.abstractmethod
    async def _run(self) -> None:
        """Make the connection and keep it, for the bus's whole life; set ``_tried``
        once the first attempt has succeeded or failed."""

    @abc.abstractmethod
    async def _release(self) -> None:
        """Close what is left of the connection, after ``_run`` has stopped."""

    async def _leave(self) -> None:
        """What ``close`` does on the broker before the connection goes."""

    def _link_up(self) -> bool:
        """Whether the driver still counts the connection up (checked with ``_connected``)."""
        return True

    def _check(self) -> None:
        if not self.connected:
            raise Unavailable(f"not connected to {self._broker}")

    @contextlib.contextmanager
    def _as_unavailable(self, what: str) -> Iterator[None]:
        """Report a call that the connection failed as ``Unavailable``."""
        try:
            yield
        except self._link_errors as exc:
            raise Unavailable(f"{self._broker} {what} failed: {exc!r}") from exc

    def _connected_now(self, active: str = "subscriptions active") -> None:
        """The connection is up and everything subscribed is active: say so, and
        signal it unless this is the connection ``start`` is waiting for."""
        self._connected = True
        self._tried.set()
        if not self._starting:
            self._log.info("%s bus connected; %s", self._broker, active)
            signal(self._on_reconnect)

    def _lost(self, exc: BaseException | None = None) -> None:
        """The connection is down, or could not be made: a loss is a warning (once:
        the loss of a live connection), a failed attempt with its error is news."""
        if self._connected and not self._closed:
            detail = f": {exc!r}" if exc is not None else ""
            self._log.warning("%s bus connection lost%s", self._broker, detail)
        elif exc is not None:
            self._log.info("%s bus cannot connect: %r", self._broker, exc)
        self._connected = False


class ReconnectingBus(BrokerBus):
    """A broker bus that makes each connection itself (the driver does not
    reconnect, or not in a way we can hook): one ``_session`` after another, with
    backoff between ``retry_min`` and ``retry_max`` seconds, reset once connected.

    A session connects, subscribes everything, calls ``_connected_now`` and lasts
    until the connection breaks; ``_end_session`` then drops what it held.
    """

    def __init__(
        self, *, connect_timeout: float, op_timeout: float, retry_min: float, retry_max: float
    ) -> None:
        super().__init__(connect_timeout=connect_timeout, op_timeout=op_timeout)
        self._backoff = Backoff(retry_min, retry_max)

    async def _run(self) -> None:
        while not self._closed:
            try:
                await self._session()
            except self._link_errors as exc:
                self._lost(exc)
            except Exception:
                self._log.exception("%s bus link failed; reconnecting", self._broker)
            finally:
                self._connected = False
                self._tried.set()
                await self._end_session()
            if not self._closed:
                await asyncio.sleep(self._backoff.delay())

    @abc.abstractmethod
    async def _session(self) -> None:
        """One connection, from connecting until it breaks (it raises then)."""

    @abc.abstractmethod
    async def _end_session(self) -> None:
        """Forget and close the session's connection, however it ended."""

    def _connected_now(self, active: str = "subscriptions active") -> None:
        self._backoff.reset()
        super()._connected_now(active)
