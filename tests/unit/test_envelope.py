"""The bus envelope: one layout for events, typing and presence."""

from __future__ import annotations

import pytest

from parley.protocol import envelope


def test_events_round_trip_with_their_origin() -> None:
    head = envelope.prefix(envelope.EVENTS, b"node-1")
    raws = [b'{"seq":1}', b"", b'{"seq":2,"body":"\xc3\xa9"}']
    data = envelope.pack_events(head, raws)
    assert envelope.origin_of(data) == b"node-1"
    decoded = envelope.unpack(data)
    assert (decoded.kind, decoded.origin) == (envelope.EVENTS, b"node-1")
    assert envelope.unpack_events(decoded.body) == raws


def test_typing_and_presence_share_the_layout() -> None:
    for kind in (envelope.TYPING, envelope.PRESENCE):
        decoded = envelope.unpack(envelope.pack(kind, b"n", b"body"))
        assert (decoded.kind, decoded.origin, decoded.body) == (kind, b"n", b"body")


@pytest.mark.parametrize("data", [b"", b"E", b"X\x00", b"E\x05abc"])
def test_what_is_not_an_envelope_is_refused(data: bytes) -> None:
    with pytest.raises(ValueError, match="not a bus envelope"):
        envelope.unpack(data)


@pytest.mark.parametrize("body", [b"\x00\x00", b"\x00\x00\x00\x05abc"])
def test_a_cut_events_body_is_refused(body: bytes) -> None:
    with pytest.raises(ValueError, match="truncated"):
        envelope.unpack_events(body)


def test_origin_and_kind_are_checked_when_building() -> None:
    with pytest.raises(ValueError, match="unknown envelope kind"):
        envelope.prefix(b"Z", b"n")
    with pytest.raises(ValueError, match="at most 255"):
        envelope.prefix(envelope.EVENTS, b"x" * 256)
