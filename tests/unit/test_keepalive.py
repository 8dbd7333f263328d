"""The heartbeat wheel (``parley.gateway.direct.Keepalive``) on a fake clock: who
is pinged when, who is closed when, and that one timer chain serves everyone."""

from __future__ import annotations

import heapq
import itertools
from collections.abc import Callable, Iterator

import pytest

from parley.gateway import direct
from parley.gateway.direct import Keepalive

INTERVAL = 20.0
RESOLUTION = 1.0  # min(1 s, interval / 10)


class Handle:
    def __init__(self, when: float, callback: Callable[[], None]) -> None:
        self.when = when
        self.callback = callback
        self.cancelled = False

    def cancel(self) -> None:
        self.cancelled = True


class FakeLoop:
    """``time`` and ``call_at`` (the wheel's timers) on a clock the test moves,
    plus ``at`` for what the peers do. ``early`` runs the wheel's timers that
    much before they are due, as uvloop's millisecond timers may."""

    def __init__(self, early: float = 0.0) -> None:
        self.now = 10_000.0
        self.early = early
        self.timers: list[Handle] = []
        self.fired = 0
        self._events: list[tuple[float, int, Callable[[], None]]] = []
        self._seq = itertools.count()

    def time(self) -> float:
        return self.now

    def call_at(self, when: float, callback: Callable[[], None]) -> Handle:
        handle = Handle(when, callback)
        self.timers.append(handle)
        return handle

    def at(self, when: float, action: Callable[[], None]) -> None:
        heapq.heappush(self._events, (when, next(self._seq), action))

    def pending(self) -> list[Handle]:
        return [h for h in self.timers if not h.cancelled]

    def run_until(self, end: float) -> None:
        while True:
            pending = self.pending()
            assert len(pending) <= 1, "more than one timer chain"
            timer_at = pending[0].when - self.early if pending else float("inf")
            event_at = self._events[0][0] if self._events else float("inf")
            when = min(timer_at, event_at)
            if when > end:
                break
            self.now = max(self.now, when)
            if timer_at <= event_at:
                handle = pending[0]
                handle.cancelled = True  # it ran
                self.fired += 1
                handle.callback()
            else:
                heapq.heappop(self._events)[2]()
        self.now = max(self.now, end)


class Peer:
    """A connection: it answers a ping after ``rtt`` when ``answers``."""

    def __init__(self, loop: FakeLoop, *, answers: bool = True, rtt: float = 0.05) -> None:
        self.loop = loop
        self.answers = answers
        self.rtt = rtt
        self.open = True
        self.last_heard = loop.time()
        self.keepalive_bucket: object = None
        self.pings: list[float] = []
        self.closed_at: float | None = None

    def hear(self) -> None:
        self.last_heard = self.loop.time()

    def keepalive_ping(self) -> bool:
        if not self.open:
            return False
        self.pings.append(self.loop.time())
        if self.answers:
            self.loop.at(self.loop.time() + self.rtt, self.hear)
        return True

    def keepalive_timeout(self) -> None:
        assert self.open
        self.open = False
        self.closed_at = self.loop.time()


@pytest.fixture(autouse=True)
def no_leftover_wheels() -> Iterator[None]:
    yield
    for key in [k for k in direct._WHEELS if isinstance(k[0], FakeLoop)]:
        del direct._WHEELS[key]


def start(loop: FakeLoop, peer: Peer) -> Keepalive:
    wheel = Keepalive.of(loop, INTERVAL)  # type: ignore[arg-type]
    peer.last_heard = loop.time()
    wheel.add(peer, loop.time() + INTERVAL)  # type: ignore[arg-type]
    return wheel


@pytest.mark.parametrize("early", [0.0, 0.0009])
def test_an_idle_peer_that_answers_gets_one_ping_an_interval_and_stays(early: float) -> None:
    loop = FakeLoop(early)
    peer = Peer(loop)
    t0 = loop.now
    start(loop, peer)
    loop.run_until(t0 + 20 * INTERVAL)
    assert peer.closed_at is None
    assert 18 <= len(peer.pings) <= 20
    assert peer.pings[0] - t0 >= INTERVAL - early
    gaps = [b - a for a, b in itertools.pairwise(peer.pings)]
    assert all(INTERVAL <= gap <= INTERVAL + peer.rtt + RESOLUTION for gap in gaps), gaps


@pytest.mark.parametrize("early", [0.0, 0.0009])
def test_a_silent_peer_is_pinged_once_and_closed_after_two_intervals(early: float) -> None:
    loop = FakeLoop(early)
    peer = Peer(loop, answers=False)
    t0 = loop.now + 0.3  # heard between two slots
    loop.run_until(t0)
    start(loop, peer)
    loop.run_until(t0 + 10 * INTERVAL)
    assert len(peer.pings) == 1
    assert INTERVAL - early <= peer.pings[0] - t0 <= INTERVAL + RESOLUTION
    assert peer.closed_at is not None
    assert 2 * INTERVAL - early <= peer.closed_at - t0 <= 2 * INTERVAL + RESOLUTION
    # Empty now: the chain stopped and the loop's wheel is gone.
    assert loop.pending() == []
    assert (loop, INTERVAL) not in direct._WHEELS


def test_a_peer_that_stops_answering_is_closed_two_intervals_after_it_was_last_heard() -> None:
    loop = FakeLoop()
    peer = Peer(loop)
    t0 = loop.now
    start(loop, peer)
    loop.run_until(t0 + 5.5 * INTERVAL)
    peer.answers = False
    last_heard = peer.last_heard
    loop.run_until(t0 + 20 * INTERVAL)
    assert peer.closed_at is not None
    assert 2 * INTERVAL <= peer.closed_at - last_heard <= 2 * INTERVAL + RESOLUTION
    [ping] = [p for p in peer.pings if p > last_heard]
    assert INTERVAL <= ping - last_heard <= INTERVAL + RESOLUTION


def test_a_peer_that_talks_is_never_pinged_and_checked_about_once_an_interval() -> None:
    loop = FakeLoop()
    peer = Peer(loop)
    t0 = loop.now
    for k in range(1, 4 * 30):
        loop.at(t0 + k * INTERVAL / 4, peer.hear)
    start(loop, peer)
    loop.run_until(t0 + 30 * INTERVAL)
    assert peer.pings == []
    assert peer.closed_at is None
    # Checked an interval after it was last heard: here every 3/4 interval.
    assert loop.fired <= 30 * 4 / 3 + 2


def test_a_peer_taken_off_is_neither_pinged_nor_closed_and_the_chain_stops() -> None:
    loop = FakeLoop()
    quiet, other = Peer(loop, answers=False), Peer(loop, answers=False)
    t0 = loop.now
    wheel = start(loop, quiet)
    start(loop, other)
    assert len(wheel) == 2
    Keepalive.remove(quiet)  # type: ignore[arg-type]
    Keepalive.remove(quiet)  # type: ignore[arg-type]  # twice: harmless
    assert quiet.keepalive_bucket is None and len(wheel) == 1
    loop.run_until(t0 + 1.5 * INTERVAL)
    assert quiet.pings == [] and len(other.pings) == 1
    Keepalive.remove(other)  # type: ignore[arg-type]
    assert loop.pending() == []
    assert (loop, INTERVAL) not in direct._WHEELS
    loop.run_until(t0 + 10 * INTERVAL)
    assert quiet.closed_at is None and other.closed_at is None
    # The next connection starts a new wheel.
    again = Peer(loop, answers=False)
    assert start(loop, again) is not wheel
    loop.run_until(loop.now + 3 * INTERVAL)
    assert again.closed_at is not None


def test_a_connection_no_longer_open_is_dropped_without_a_ping() -> None:
    loop = FakeLoop()
    peer = Peer(loop)
    t0 = loop.now
    start(loop, peer)
    peer.open = False  # closing: keepalive_ping refuses
    loop.run_until(t0 + 1.5 * INTERVAL)
    assert peer.pings == [] and peer.keepalive_bucket is None
    assert loop.pending() == []


def test_one_timer_chain_serves_thousands_of_peers() -> None:
    loop = FakeLoop()
    t0 = loop.now
    peers = []
    for k in range(2000):
        loop.run_until(t0 + k * 0.01)
        peer = Peer(loop, answers=k % 10 != 0)
        peers.append(peer)
        start(loop, peer)
    loop.run_until(t0 + 10 * INTERVAL)
    # FakeLoop.run_until asserts there is never more than one pending timer;
    # the chain runs about once a slot, whatever the number of peers.
    assert loop.fired <= 10 * INTERVAL / RESOLUTION + 2
    silent = [p for p in peers if not p.answers]
    assert all(p.closed_at is not None and len(p.pings) == 1 for p in silent)
    alive = [p for p in peers if p.answers]
    assert all(p.closed_at is None and 7 <= len(p.pings) <= 10 for p in alive)
    assert len(Keepalive.of(loop, INTERVAL)) == len(alive)  # type: ignore[arg-type]


def test_a_failing_check_does_not_stop_the_others(caplog: pytest.LogCaptureFixture) -> None:
    loop = FakeLoop()
    broken, fine = Peer(loop), Peer(loop)

    def boom() -> bool:
        raise OSError("gone")

    broken.keepalive_ping = boom  # type: ignore[method-assign]
    t0 = loop.now
    start(loop, broken)
    start(loop, fine)
    loop.run_until(t0 + 3 * INTERVAL)
    assert "keepalive check failed" in caplog.text
    assert len(fine.pings) >= 2 and fine.closed_at is None
