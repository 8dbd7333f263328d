"""The per-connection state machine and the delivery cursor, driven by hand: the
clock is a number, frames are strings, and nothing awaits."""

from __future__ import annotations

import json

from hypothesis import given, settings
from hypothesis import strategies as st

from parley.protocol import frames as f
from parley.protocol.session import (
    CLOSE_POLICY,
    DELIVER,
    GAP,
    SKIP,
    Phase,
    Reply,
    RoomCursor,
    ServerSession,
    TokenBucket,
)


def session(fps: int | None = None, now: float = 0.0) -> ServerSession:
    return ServerSession(max_frame_bytes=1024, frames_per_second=fps, now=now)


def error_of(result: object) -> dict[str, object]:
    assert isinstance(result, Reply), result
    body: dict[str, object] = json.loads(result.frame)
    assert body["type"] == "error"
    return body


def test_only_auth_and_ping_before_authentication() -> None:
    s = session()
    assert isinstance(s.receive('{"type":"ping","id":1}', 0), f.Ping)
    assert isinstance(s.receive('{"type":"auth","token":"t"}', 0), f.Auth)
    err = error_of(s.receive('{"type":"send","id":2,"room_id":"r","body":"x"}', 0))
    assert err["code"] == "unauthorized" and err["id"] == 2
    s.authenticated("u")
    assert s.phase is Phase.OPEN and s.user_id == "u"
    assert isinstance(s.receive('{"type":"send","id":2,"room_id":"r","body":"x"}', 0), f.Send)
    assert isinstance(s.receive('{"type":"auth","token":"t"}', 0), f.Auth)  # re-authentication


def test_auth_deadline_is_ten_seconds() -> None:
    s = session(now=100.0)
    assert s.auth_timed_out(109.9) is None
    close = s.auth_timed_out(110.0)
    assert close is not None and close.code == CLOSE_POLICY
    assert s.phase is Phase.CLOSED


def test_no_deadline_once_authenticated() -> None:
    s = session()
    s.authenticated("u")
    assert s.auth_timed_out(1e9) is None


def test_bad_token_closes_with_policy_violation() -> None:
    s = session()
    reply = s.auth_failed("token_expired", "expired", "a1")
    assert reply.close is not None and reply.close.code == CLOSE_POLICY
    assert reply.close.reason == "token_expired"
    assert json.loads(reply.frame) == {
        "type": "error",
        "code": "token_expired",
        "message": "expired",
        "id": "a1",
    }


def test_binary_and_oversized_frames_are_errors_not_closes() -> None:
    s = session()
    s.authenticated("u")
    reply = s.receive(b'{"type":"ping"}', 0)
    assert error_of(reply)["code"] == "bad_frame"
    assert isinstance(reply, Reply) and reply.close is None
    assert error_of(s.receive('{"type":"ping","pad":"' + "x" * 2000 + '"}', 0))["code"] == (
        "too_large"
    )
    # 300 three-byte characters: 900 bytes of UTF-8 fit; 400 (1200 bytes) do not.
    assert isinstance(s.receive('{"type":"ping","p":"' + "€" * 300 + '"}', 0), f.Ping)
    assert error_of(s.receive('{"type":"ping","p":"' + "€" * 400 + '"}', 0))["code"] == (
        "too_large"
    )


def test_rate_limit_refuses_then_closes_a_flood() -> None:
    s = session(fps=10)
    s.authenticated("u")
    results = [s.receive('{"type":"ping"}', 0.0) for _ in range(10)]
    assert all(isinstance(r, f.Ping) for r in results)
    refused = s.receive('{"type":"ping"}', 0.0)
    body = error_of(refused)
    assert body["code"] == "rate_limited" and float(str(body["retry_after"])) > 0
    assert isinstance(refused, Reply) and refused.close is None
    # A tenth of a second later one token is back.
    assert isinstance(s.receive('{"type":"ping"}', 0.1), f.Ping)
    # Refused frames past a second's worth in a row close the connection.
    replies = [s.receive('{"type":"ping"}', 0.1) for _ in range(11)]
    assert all(isinstance(r, Reply) for r in replies)
    assert [r.close for r in replies[:10] if isinstance(r, Reply)] == [None] * 10
    last = replies[10]
    assert isinstance(last, Reply) and last.close is not None
    assert last.close.code == CLOSE_POLICY
    assert s.phase is Phase.CLOSED
    assert error_of(s.receive('{"type":"ping"}', 5.0))["code"] == "closed"


def test_rate_limit_off() -> None:
    s = session(fps=None)
    s.authenticated("u")
    assert all(isinstance(s.receive('{"type":"ping"}', 0.0), f.Ping) for _ in range(10_000))


def test_token_bucket_refills_at_its_rate() -> None:
    bucket = TokenBucket(rate=2, burst=2, now=0)
    assert bucket.take(0) == 0 and bucket.take(0) == 0
    assert abs(bucket.take(0) - 0.5) < 1e-9
    assert bucket.take(0.5) == 0


def test_resume_waits_for_every_named_room() -> None:
    s = session()
    assert json.loads(s.begin_resume("r0", []) or b"") == {"type": "resumed", "id": "r0"}
    assert s.begin_resume("r1", ["a", "b"]) is None
    assert s.begin_resume("r2", ["b"]) is None
    assert s.caught_up("b") == [f.resumed_frame("r2")]
    assert s.caught_up("c") == []
    assert s.caught_up("a") == [f.resumed_frame("r1")]


# the delivery cursor


def test_cursor_delivers_next_skips_repeats_and_flags_gaps() -> None:
    c = RoomCursor("r", 5)
    assert c.live(5) == SKIP
    assert c.live(6) == DELIVER and c.seq == 6
    assert c.live(8) == GAP and c.replaying and c.seq == 6
    assert c.live(7) == SKIP  # replaying: the store read will bring it


def test_cursor_replays_then_goes_live_at_the_head() -> None:
    c = RoomCursor("r", 2)
    assert c.need_replay(5)
    assert [s for s in (3, 4, 4, 5, 6) if c.replayed(s)] == [3, 4, 5, 6]
    assert not c.catch_up(7)
    assert c.replayed(7) and c.catch_up(7)
    assert not c.replaying
    assert c.live(7) == SKIP and c.live(8) == DELIVER


def test_rewind_during_a_page_never_skips_ahead() -> None:
    c = RoomCursor("r", 10)
    c.rewind(3)
    # A page read before the rewind (11..) is refused: only 4 may come next.
    assert not c.replayed(11)
    assert c.replayed(4)


def test_leave_ends_the_replay_at_the_leave_event() -> None:
    c = RoomCursor("r", 1)
    c.rewind(1)
    c.end_seq = 3
    assert [s for s in range(2, 7) if c.replayed(s)] == [2, 3]
    assert c.ended


LAST = 60


@settings(max_examples=400, deadline=None)
@given(
    start=st.integers(0, 30),
    head=st.integers(0, 30),
    steps=st.lists(st.sampled_from(["commit", "hub", "page"]), max_size=300),
    page=st.integers(1, 10),
)
def test_cursor_switch_has_no_gap_and_no_duplicate(
    start: int, head: int, steps: list[str], page: int
) -> None:
    """Model: events are committed to the store, the hub fans them out in order
    (never ahead of the store), and a connection attached at ``start`` replays
    pages from the store while live events arrive, in any interleaving. It always
    receives start+1 .. LAST exactly once, in order."""
    committed = max(start, head)
    cursor = RoomCursor("r", start)
    cursor.need_replay(head)
    sent: list[int] = []

    def step(kind: str) -> None:
        nonlocal committed, head
        if kind == "commit" and committed < LAST:
            committed += 1
        elif kind == "hub" and head < committed:
            head += 1
            if cursor.live(head) == DELIVER:
                sent.append(head)
        elif kind == "page" and cursor.replaying:
            for seq in range(cursor.seq + 1, min(committed, cursor.seq + page) + 1):
                if cursor.replayed(seq):
                    sent.append(seq)
            cursor.catch_up(head)

    for kind in steps:
        step(kind)
    while committed < LAST or head < committed or cursor.replaying:
        for kind in ("commit", "page", "hub"):
            step(kind)
    assert sent == list(range(start + 1, LAST + 1))
