"""The SSE id: per-room cursors in one compact, header-safe string."""

from __future__ import annotations

import uuid

from hypothesis import given
from hypothesis import strategies as st

from parley.protocol.cursors import decode_cursors, encode_cursors, room_key


def test_round_trip_for_the_users_rooms() -> None:
    rooms = {str(uuid.uuid4()): n for n in (1, 35, 36, 10**9)}
    value = encode_cursors(rooms)
    assert value.startswith("1~")
    assert decode_cursors(value, rooms) == rooms


def test_zero_cursors_are_left_out_and_unknown_rooms_ignored() -> None:
    a, b, c = (str(uuid.uuid4()) for _ in range(3))
    value = encode_cursors({a: 0, b: 4})
    assert a[:4] not in value
    assert decode_cursors(value, [a, c]) == {}
    assert decode_cursors(value, [b, c]) == {b: 4}


def test_compact() -> None:
    rooms = {str(uuid.uuid4()): 12345 for _ in range(50)}
    assert len(encode_cursors(rooms)) < 50 * 14 + 2
    assert len(room_key("x")) == 8


@given(st.text(max_size=300))
def test_garbage_never_raises(value: str) -> None:
    rooms = [str(uuid.UUID(int=i)) for i in range(3)]
    result = decode_cursors(value, rooms)
    assert set(result) <= set(rooms)
    assert all(isinstance(v, int) and v >= 0 for v in result.values())


def test_malformed_parts_are_skipped() -> None:
    room = str(uuid.uuid4())
    key = room_key(room)
    assert decode_cursors(f"1~{key}.-5", [room]) == {}
    assert decode_cursors(f"1~{key}.1_0", [room]) == {}
    assert decode_cursors(f"2~{key}.5", [room]) == {}
    assert decode_cursors(f"1~{key}.5~junk", [room]) == {room: 5}


def test_header_safe() -> None:
    value = encode_cursors({str(uuid.uuid4()): 99 for _ in range(10)})
    assert value.isascii() and value.isprintable()
    assert not any(ch in value for ch in "\r\n\0 ,;")
