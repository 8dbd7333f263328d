"""The presence rules, without an event loop."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from parley.domain.presence import (
    COALESCE_INTERVAL,
    ConnState,
    Presence,
    aggregate,
    effective,
    idle_at,
    next_send_at,
)

IDLE_AFTER = 300.0


def test_no_connections_is_offline_with_last_seen() -> None:
    assert aggregate([], 1000.0, IDLE_AFTER) == Presence("offline", None)
    assert aggregate([], 1000.0, IDLE_AFTER, last_seen=900.0) == Presence("offline", 900.0)


def test_best_connection_wins() -> None:
    now = 10_000.0
    phone = ConnState("online", now - 10)
    laptop = ConnState("idle", now - 5)
    stale = ConnState("online", now - IDLE_AFTER - 1)
    assert aggregate([laptop, phone], now, IDLE_AFTER) == Presence("online", now - 5)
    assert aggregate([laptop, stale], now, IDLE_AFTER).status == "idle"


def test_inactivity_makes_idle_and_heartbeats_do_not_count() -> None:
    conn = ConnState("online", 0.0)
    assert effective(conn, IDLE_AFTER - 0.001, IDLE_AFTER) == "online"
    assert effective(conn, IDLE_AFTER, IDLE_AFTER) == "idle"
    assert idle_at(conn, IDLE_AFTER) == IDLE_AFTER
    assert idle_at(ConnState("idle", 0.0), IDLE_AFTER) is None


def test_coalescing_allows_one_update_a_second() -> None:
    assert next_send_at(None, 5.0) == 5.0
    assert next_send_at(5.0, 5.2) == 5.0 + COALESCE_INTERVAL
    assert next_send_at(5.0, 6.5) == 6.5


@given(
    st.lists(
        st.tuples(st.sampled_from(["online", "idle"]), st.floats(0, 1000)), min_size=1, max_size=8
    ),
    st.floats(1000, 2000),
)
def test_aggregate_is_the_maximum_over_connections(
    states: list[tuple[str, float]], now: float
) -> None:
    conns = [ConnState("idle" if c == "idle" else "online", t) for c, t in states]
    result = aggregate(conns, now, IDLE_AFTER)
    ranks = {"offline": 0, "idle": 1, "online": 2}
    assert ranks[result.status] == max(ranks[effective(c, now, IDLE_AFTER)] for c in conns)
    assert result.last_active == max(c.last_active for c in conns)
