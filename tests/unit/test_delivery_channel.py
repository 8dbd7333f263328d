"""A room's ordering rule, as plain logic: ``head + 1`` next, repeats dropped, an
event ahead of a gap kept until the gap closes."""

from __future__ import annotations

from parley.delivery.channel import RoomChannel
from parley.delivery.fanout import Fanout


def event(seq: int) -> Fanout:
    return Fanout("r", seq, "message.created", b"{}", None)


def fan_out(channel: RoomChannel, seq: int) -> list[int]:
    out = []
    for ready in channel.take(event(seq)):
        channel.head = ready.seq  # what the hub's fan-out does
        out.append(ready.seq)
    return out


def test_next_in_order_goes_out_and_repeats_are_dropped() -> None:
    channel = RoomChannel("r", 5)
    assert fan_out(channel, 6) == [6]
    assert fan_out(channel, 6) == []
    assert fan_out(channel, 3) == []
    assert not channel.behind


def test_an_event_ahead_of_a_gap_waits_for_it() -> None:
    channel = RoomChannel("r", 5)
    assert fan_out(channel, 8) == []
    assert fan_out(channel, 7) == []
    assert channel.behind
    assert fan_out(channel, 6) == [6, 7, 8]
    assert not channel.behind and channel.pending == {}


def test_a_head_not_read_yet_holds_everything() -> None:
    channel = RoomChannel("r", None)
    assert fan_out(channel, 2) == []
    assert not channel.behind  # nothing to repair before the head is known
    channel.head = 1
    out = []
    for ready in channel.drain():
        channel.head = ready.seq
        out.append(ready.seq)
    assert out == [2]


def test_a_target_beyond_the_head_is_something_to_repair() -> None:
    channel = RoomChannel("r", 5)
    channel.target = 9
    assert channel.behind
    channel.head = 9
    assert not channel.behind


def test_recent_events_serve_a_replay_only_when_they_hold_it_all() -> None:
    channel = RoomChannel("r", 0, recent=3)
    for seq in range(1, 6):
        fan_out(channel, seq)
        channel.recent.append(event(seq))
    assert [f.seq for f in channel.recent_after(3, 10) or []] == [4, 5]
    assert channel.recent_after(1, 10) is None  # 2 is gone from memory
    assert channel.recent_after(5, 10) is None
