"""``GET /metrics``: Prometheus text format, one ``CollectorRegistry`` per app.

Hot-path counts (deliveries, frames) are plain integers on ``HubStats``, read by a
custom collector at scrape time: a prometheus-client ``Counter.inc()`` takes a lock,
which per delivery would cost more than the delivery's own bookkeeping. Histograms
are observed once per fan-out, send or commit, not per recipient, and are
``LoopHistogram``s for the same reason: a prometheus-client ``Histogram.observe``
takes two locks (2 µs here, against 0.3), and a send observes three or four.

The store's group commit reports through ``Metrics.observe_commit(seconds, size)``;
wire it where the store is built (``SqlStore(..., on_commit=hub.metrics.observe_commit)``
or the equivalent hook the store offers). The presence service's ``PresenceStats``
are read the same way as ``HubStats``, once wired with ``Metrics.watch_presence``;
the read replicas' ``ReplicaStats`` with ``Metrics.watch_replicas``.
"""

from __future__ import annotations

from bisect import bisect_left
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, fields

from fastapi import APIRouter, Request, Response
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.registry import Collector
from prometheus_client.utils import floatToGoString

from parley.delivery.outbox import Outbox
from parley.presence import PresenceStats
from parley.store.replicas import ReplicaStats

_COUNTERS = {
    "frames_in": "WebSocket frames received from clients.",
    "frames_out": "Frames written to clients (WebSocket frames and SSE events).",
    "events": "Room events fanned out by this node.",
    "deliveries": "Events queued for a local connection by the live fan-out.",
    "replayed": "Events sent by a replay (resume, gap or join).",
    "replayed_from_memory": "Replayed events served from the room's recent events, not the store.",
    "sends": "Messages accepted over the WebSocket (acknowledged).",
    "notifications_out": "Notification frames this node gave its users' connections (per user).",
    "send_errors": "WebSocket sends answered with an error frame.",
    "bad_frames": "Inbound frames answered with an error (malformed, too large, ...).",
    "queue_drops": "Connections closed because their outbound queue was full.",
    "stalled": "Connections aborted because their writer made no progress.",
    "tokens_expired": "Connections closed because their access token expired (token_expired).",
    "sessions_ended": "Connections closed because their session was logged out.",
    "resumes": "resume requests.",
    "gap_repairs": "Store reads that filled a gap left by the bus.",
    "bus_reconnects": "Times the bus connection was lost and restored (heads re-checked).",
    "head_checks": "Checks of this node's room heads against the store.",
}

OUTBOX_COUNTERS = {
    "published": "Bus messages the broker took (a commit's events for one room each).",
    "failures": "Failed bus publishes (retried with backoff).",
    "dropped": "Bus messages dropped while the broker was away (repaired from the store).",
}
"""``parley_bus_<field>_total`` for each ``OutboxStats`` field."""

PRESENCE_COUNTERS = {
    "frames_sent": (
        "Presence updates queued for local subscribers on a change of a watched user "
        "(not the answers to presence.subscribe)."
    ),
    "notices_sent": "Presence change notices published on the bus for other nodes.",
    "notices_heard": "Presence change notices received from other nodes.",
    "reaped": (
        "Users whose lapsed presence entries this node removed (closed connections "
        "after the grace period, connections of a node that died)."
    ),
    "tick_errors": "Presence ticks that failed (store or bus unavailable; retried next tick).",
}
"""``parley_presence_<field>_total`` for each ``PresenceStats`` field."""

REPLICA_FALLBACKS = {"lag": "lagged", "failure": "failed", "resting": "resting"}
"""``parley_replica_fallbacks_total{reason}``: the ``ReplicaStats`` field of each reason."""


@dataclass(slots=True)
class HubStats:
    """Counters the fan-out bumps without locks (one event loop owns them)."""

    frames_in: int = 0
    frames_out: int = 0
    events: int = 0
    deliveries: int = 0
    replayed: int = 0
    replayed_from_memory: int = 0
    sends: int = 0
    send_errors: int = 0
    bad_frames: int = 0
    queue_drops: int = 0
    tokens_expired: int = 0
    sessions_ended: int = 0
    stalled: int = 0
    resumes: int = 0
    gap_repairs: int = 0
    bus_reconnects: int = 0
    head_checks: int = 0
    connections_ws: int = 0
    connections_sse: int = 0
    notifications_out: int = 0


class _StatsCollector(Collector):
    def __init__(self, stats: HubStats) -> None:
        self._stats = stats

    def collect(self) -> Iterator[Metric]:
        stats = self._stats
        connections = GaugeMetricFamily(
            "parley_connections", "Open client connections.", labels=["transport"]
        )
        connections.add_metric(["ws"], stats.connections_ws)
        connections.add_metric(["sse"], stats.connections_sse)
        yield connections
        for field in fields(stats):
            help_text = _COUNTERS.get(field.name)
            if help_text is not None:
                yield CounterMetricFamily(
                    f"parley_{field.name}", help_text, value=getattr(stats, field.name)
                )


class _PresenceCollector(Collector):
    def __init__(self, stats: PresenceStats) -> None:
        self._stats = stats

    def collect(self) -> Iterator[Metric]:
        stats = self._stats
        for name, help_text in PRESENCE_COUNTERS.items():
            yield CounterMetricFamily(
                f"parley_presence_{name}", help_text, value=getattr(stats, name)
            )


class _OutboxCollector(Collector):
    def __init__(self, outbox: Outbox) -> None:
        self._outbox = outbox

    def collect(self) -> Iterator[Metric]:
        stats = self._outbox.stats
        for name, help_text in OUTBOX_COUNTERS.items():
            yield CounterMetricFamily(f"parley_bus_{name}", help_text, value=getattr(stats, name))
        yield GaugeMetricFamily(
            "parley_bus_outbox", "Bus messages waiting for the broker.", value=self._outbox.pending
        )


class _ReplicaCollector(Collector):
    def __init__(self, stats: ReplicaStats) -> None:
        self._stats = stats

    def collect(self) -> Iterator[Metric]:
        stats = self._stats
        yield CounterMetricFamily(
            "parley_replica_reads",
            "History reads (message and event pages) sent to a read replica.",
            value=stats.sent,
        )
        yield CounterMetricFamily(
            "parley_replica_served",
            "History pages a read replica answered (it had caught up with the room, or"
            " the page was a full page of events).",
            value=stats.served,
        )
        fallbacks = CounterMetricFamily(
            "parley_replica_fallbacks",
            "History reads the primary answered instead: the replica lagged behind the"
            " room's head, failed or timed out, or every replica was resting after a failure.",
            labels=["reason"],
        )
        for reason, name in REPLICA_FALLBACKS.items():
            fallbacks.add_metric([reason], getattr(stats, name))
        yield fallbacks
        yield CounterMetricFamily(
            "parley_replica_head_checks",
            "Reads of a room's head on the primary to judge a replica's page (the lag"
            " check: a read never waits for a replica; a lagging one's page is replaced).",
            value=stats.head_checks,
        )


_go_float: Callable[[float], str] = floatToGoString
"""A bucket bound as prometheus-client writes it (``1.0``, ``0.0003``, ``+Inf``)."""


class LoopHistogram(Collector):
    """A Prometheus histogram owned by one event loop: ``observe`` bumps a plain
    list, no lock (only the loop's thread observes; a scrape reads a snapshot that
    may be one observation behind). Buckets are upper bounds, ``le`` as Prometheus
    means it; ``+Inf`` is added."""

    __slots__ = ("_bounds", "_counts", "_name", "_sum", "documentation")

    def __init__(
        self, name: str, documentation: str, buckets: Sequence[float], registry: CollectorRegistry
    ) -> None:
        self._name = name
        self.documentation = documentation
        self._bounds = sorted(float(b) for b in buckets)
        self._counts = [0] * (len(self._bounds) + 1)
        self._sum = 0.0
        registry.register(self)

    def observe(self, value: float) -> None:
        self._counts[bisect_left(self._bounds, value)] += 1
        self._sum += value

    def collect(self) -> Iterator[Metric]:
        cumulative, total = [], 0
        for bound, count in zip([*self._bounds, float("inf")], self._counts, strict=True):
            total += count
            cumulative.append((_go_float(bound), total))
        yield HistogramMetricFamily(
            self._name, self.documentation, buckets=cumulative, sum_value=self._sum
        )


class Metrics:
    """One app's registry: the hub's counters plus latency and batch histograms."""

    def __init__(self, stats: HubStats) -> None:
        self.registry = CollectorRegistry()
        self.registry.register(_StatsCollector(stats))
        self.fanout_seconds = LoopHistogram(
            "parley_fanout_seconds",
            "Time to queue one event for every local subscriber.",
            buckets=(1e-5, 3e-5, 1e-4, 3e-4, 1e-3, 3e-3, 1e-2, 3e-2, 0.1),
            registry=self.registry,
        )
        self.store_commit_seconds = LoopHistogram(
            "parley_store_commit_seconds",
            "Duration of one store transaction (a group commit).",
            buckets=(1e-4, 3e-4, 1e-3, 3e-3, 1e-2, 3e-2, 0.1, 0.3, 1.0),
            registry=self.registry,
        )
        self.store_batch_size = LoopHistogram(
            "parley_store_batch_size",
            "Writes grouped into one store transaction.",
            buckets=(1, 2, 4, 8, 16, 32, 64, 128, 256, 512),
            registry=self.registry,
        )
        self.send_seconds = LoopHistogram(
            "parley_send_seconds",
            "From a WebSocket send frame to its ack: the wait for the group commit and"
            " the commit itself (the server's share of a client's latency).",
            buckets=(5e-4, 1e-3, 2e-3, 5e-3, 1e-2, 2.5e-2, 5e-2, 0.1, 0.25, 1.0),
            registry=self.registry,
        )
        self.loop_lag_seconds = LoopHistogram(
            "parley_loop_lag_seconds",
            "How late the event loop ran a timer (sampled 20 times a second).",
            buckets=(1e-3, 2e-3, 5e-3, 1e-2, 2.5e-2, 5e-2, 0.1, 0.25, 1.0),
            registry=self.registry,
        )
        self.resume_seconds = LoopHistogram(
            "parley_resume_seconds",
            "From a resume frame to its resumed answer: the replay of every room.",
            buckets=(1e-4, 3e-4, 1e-3, 3e-3, 1e-2, 2e-2, 5e-2, 0.1, 0.2, 0.5, 1.0, 3.0),
            registry=self.registry,
        )

    def watch_presence(self, stats: PresenceStats) -> None:
        """Export the presence service's counters (once per registry)."""
        self.registry.register(_PresenceCollector(stats))

    def watch_outbox(self, outbox: Outbox) -> None:
        """Export the bus outbox's counters and backlog (once per registry)."""
        self.registry.register(_OutboxCollector(outbox))

    def watch_replicas(self, stats: ReplicaStats) -> None:
        """Export the read replicas' counters (once per registry)."""
        self.registry.register(_ReplicaCollector(stats))

    def observe_commit(self, seconds: float, batch_size: int) -> None:
        """The store's hook: one call per committed transaction."""
        self.store_commit_seconds.observe(seconds)
        self.store_batch_size.observe(batch_size)

    def render(self) -> bytes:
        return generate_latest(self.registry)


router = APIRouter()


@router.get("/metrics", tags=["health"], response_class=Response)
async def metrics(request: Request) -> Response:
    """Prometheus text format: connections, frames, sends, fan-out and commit latency,
    presence updates and notices, read replica use."""
    body = request.app.state.runtime.hub.metrics.render()
    return Response(body, media_type=CONTENT_TYPE_LATEST)
