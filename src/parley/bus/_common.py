"""What every bus backend shares: URL options, handler dispatch, the reconnect signal,
and the backoff between connection attempts."""

from __future__ import annotations

import inspect
import logging
import random
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

from parley.ports import BusHandler, BusSignal

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
