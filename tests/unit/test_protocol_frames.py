"""Client frame decoding and server frame encoding: no sockets, no event loop."""

from __future__ import annotations

import json

import msgspec
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from parley.protocol import codec
from parley.protocol import frames as f


def test_each_client_frame_decodes() -> None:
    samples: list[tuple[dict[str, object], type]] = [
        ({"type": "auth", "token": "t"}, f.Auth),
        ({"type": "send", "id": 1, "room_id": "r", "body": "hi", "client_msg_id": "c"}, f.Send),
        ({"type": "resume", "id": "x", "cursors": {"r": 3}}, f.Resume),
        ({"type": "typing", "room_id": "r"}, f.Typing),
        ({"type": "read", "room_id": "r", "seq": 4}, f.Read),
        ({"type": "ping"}, f.Ping),
        ({"type": "presence.subscribe", "user_ids": ["u"]}, f.PresenceSubscribe),
        ({"type": "presence.unsubscribe", "user_ids": ["u"]}, f.PresenceUnsubscribe),
        ({"type": "presence.set", "status": "idle"}, f.PresenceSet),
    ]
    for raw, cls in samples:
        frame = f.decode_client(json.dumps(raw))
        assert isinstance(frame, cls)
    assert {str(raw["type"]) for raw, _ in samples} == f.CLIENT_FRAME_TYPES


def test_unknown_fields_are_ignored_for_forward_compatibility() -> None:
    frame = f.decode_client('{"type":"ping","id":7,"future":{"a":[1,2]}}')
    assert frame == f.Ping(id=7)


@pytest.mark.parametrize(
    ("data", "code", "frame_id"),
    [
        ("not json", "malformed_json", None),
        ("[1, 2]", "bad_frame", None),
        ('{"id": 3}', "bad_frame", 3),
        ('{"type": "nope", "id": "a"}', "unknown_type", "a"),
        ('{"type": "send", "id": 5, "room_id": 1, "body": "x"}', "bad_frame", 5),
        ('{"type": "read", "room_id": "r", "seq": -1}', "bad_frame", None),
        ('{"type": "send", "id": {"x": 1}, "room_id": "r", "body": "x"}', "bad_frame", None),
        ('{"type": "ping"} trailing', "malformed_json", None),
        ("[" * 100_000 + "]" * 100_000, "bad_frame", None),
        ('{"type": "ping", "x": ' + "[" * 50_000 + "]" * 50_000 + "}", "bad_frame", None),
    ],
)
def test_bad_frames_raise_frame_error_with_the_id_when_usable(
    data: str, code: str, frame_id: object
) -> None:
    with pytest.raises(f.FrameError) as info:
        f.decode_client(data)
    assert info.value.code == code
    assert info.value.frame_id == frame_id


def test_server_frames_encode_as_documented() -> None:
    assert json.loads(f.ready_frame("u", "s", 20000, {"r": 2})) == {
        "type": "ready",
        "user_id": "u",
        "session_id": "s",
        "heartbeat_interval_ms": 20000,
        "rooms": {"r": 2},
    }
    assert json.loads(f.ack_frame("1", {"id": "m"})) == {
        "type": "ack",
        "id": "1",
        "message": {"id": "m"},
    }
    assert json.loads(f.error_frame("bad_frame", "no")) == {
        "type": "error",
        "code": "bad_frame",
        "message": "no",
    }
    assert json.loads(f.error_frame("rate_limited", "slow", 4, retry_after=0.5)) == {
        "type": "error",
        "code": "rate_limited",
        "message": "slow",
        "id": 4,
        "retry_after": 0.5,
        "retry_after_ms": 500,
    }
    assert json.loads(f.pong_frame()) == {"type": "pong"}
    assert json.loads(f.pong_frame("p")) == {"type": "pong", "id": "p"}
    assert json.loads(f.resumed_frame(None)) == {"type": "resumed", "id": None}
    assert json.loads(f.typing_frame("r", "u")) == {
        "type": "typing",
        "room_id": "r",
        "user_id": "u",
        "expires_in_ms": 6000,
    }


def test_event_frame_wraps_the_stored_bytes_unchanged() -> None:
    raw = codec.encode_event("r", 3, "message.created", "t", "u", message={"body": "é"})
    frame = json.loads(codec.event_frame(raw))
    assert frame == {"type": "event", "event": json.loads(raw)}


def test_client_frames_round_trip_through_the_codec() -> None:
    frame = f.Send(room_id="r", body="hello", client_msg_id="c1", id="c7")
    assert f.decode_client(codec.dumps(frame)) == frame
    assert json.loads(codec.dumps(f.Resume(cursors={"a": 1})))["type"] == "resume"


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(), children),
    max_leaves=20,
)


@settings(max_examples=150, deadline=None)
@given(
    st.one_of(
        st.text(max_size=200),
        json_values.map(json.dumps),
        st.dictionaries(
            st.sampled_from(["type", "id", "room_id", "body", "cursors", "seq", "token"]),
            json_values,
        ).map(json.dumps),
        st.builds(
            lambda t, rest: json.dumps({"type": t, **rest}),
            st.sampled_from(sorted(f.CLIENT_FRAME_TYPES)),
            st.dictionaries(st.text(max_size=10), json_values, max_size=4),
        ),
    )
)
def test_any_text_decodes_or_raises_frame_error(data: str) -> None:
    error: f.FrameError | None = None
    try:
        frame = f.decode_client(data)
    except f.FrameError as exc:
        error = exc
    if error is not None:
        assert error.code in {"malformed_json", "bad_frame", "unknown_type"}
        assert error.frame_id is None or isinstance(error.frame_id, str | int)
    else:
        assert isinstance(frame, f.ClientFrame)
        # What decodes is what encodes back (no silent coercion).
        assert f.decode_client(msgspec.json.encode(frame)) == frame
