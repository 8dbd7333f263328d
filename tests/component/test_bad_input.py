"""Bad input gets the API's error shape, changes nothing, and never a 500."""

from __future__ import annotations

import json

import httpx
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.component.conftest import Account, Api, assert_error
from tests.component.test_messages import make_room

JSON = {"Content-Type": "application/json"}


def history(user: Account, room: str) -> list[dict[str, object]]:
    return list(user.get(f"/api/v1/rooms/{room}/messages").json()["messages"])


def test_malformed_and_mistyped_bodies(api: Api) -> None:
    alice = api.user()
    room = make_room(alice)
    url = f"/api/v1/rooms/{room}/messages"
    cases = [
        (b"{not json", 400),
        (b"", 422),
        (b"[]", 422),
        (b'"just a string"', 422),
        (b'{"body": 5}', 422),
        (b'{"body": null}', 422),
        (b'{"body": ["a"]}', 422),
        (b'{"body": "ok", "client_msg_id": 7}', 422),
        (b'{"body": "ok", "unexpected": true}', 422),
        (b'{"body": "\\u0000"}', 400),
        (b'{"body": "   "}', 400),
        (b'{"body": "ok", "client_msg_id": "has space"}', 400),
        (b'{"body": "ok", "client_msg_id": "' + b"x" * 65 + b'"}', 422),
        (b'{"body": "\\ud800"}', 422),
    ]
    for raw, status in cases:
        assert_error(alice.post(url, content=raw, headers=JSON), status)
    assert history(alice, room) == []


def test_oversize_bodies(api: Api) -> None:
    alice = api.user()
    room = make_room(alice)
    url = f"/api/v1/rooms/{room}/messages"
    assert_error(alice.post(url, json={"body": "é" * 8193}), 413, "too_large")
    assert alice.post(url, json={"body": "é" * 8192}).status_code == 201
    assert_error(alice.post(url, content=b"x" * (2 << 20), headers=JSON), 413)

    def chunks():  # type: ignore[no-untyped-def]
        for _ in range(40):
            yield b"x" * 65536

    # No Content-Length (chunked): the limit holds while the body streams in.
    assert_error(alice.post(url, content=chunks(), headers=JSON), 413)
    assert len(history(alice, room)) == 1


def test_deep_nesting_and_unicode(api: Api) -> None:
    alice = api.user()
    room = make_room(alice)
    url = f"/api/v1/rooms/{room}/messages"
    deep = b'{"body": ' + b"[" * 5000 + b"]" * 5000 + b"}"
    assert alice.post(url, content=deep, headers=JSON).status_code in (400, 422)
    ok = alice.post(url, json={"body": "emoji 🎉, RTL \u202e, CJK 漢字\nnew line\ttab"})
    assert ok.status_code == 201


def test_bad_paths_and_params(api: Api) -> None:
    alice = api.user()
    room = make_room(alice)
    assert_error(alice.get("/api/v1/rooms/does-not-exist"), 404)
    assert_error(alice.get(f"/api/v1/rooms/{room}/messages", params={"limit": "ten"}), 422)
    assert_error(alice.get(f"/api/v1/rooms/{room}/messages", params={"before_seq": -1}), 422)
    assert_error(alice.get(f"/api/v1/rooms/{room}/events", params={"after_seq": 10**30}), 422)
    assert_error(alice.put(f"/api/v1/rooms/{room}/read", json={"seq": "x"}), 422)
    assert_error(alice.get("/api/v1/nope"), 404)
    assert_error(alice.delete("/api/v1/rooms"), 405)
    long_id = "x" * 5000
    assert alice.get(f"/api/v1/rooms/{long_id}").status_code == 404
    r = alice.post("/api/v1/rooms", json={"name": "", "visibility": "public"})
    assert_error(r, 422)
    r = alice.post("/api/v1/rooms", json={"name": "x", "visibility": "secret"})
    assert_error(r, 422)
    r = alice.post("/api/v1/rooms", json={"name": "bad\x07name"})
    assert_error(r, 400)


def test_token_endpoint_bad_forms(api: Api) -> None:
    anon = api.anon
    assert_error(anon.post("/api/v1/auth/token", data={}), 422)
    assert_error(anon.post("/api/v1/auth/token", data={"grant_type": "password"}), 400)
    r = anon.post("/api/v1/auth/token", content=b"\xff\xfe", headers={
        "Content-Type": "application/x-www-form-urlencoded"})  # fmt: skip
    assert r.status_code in (400, 422)
    assert_error(anon.post("/api/v1/auth/register", content=b"{", headers=JSON), 400)


@settings(max_examples=60, deadline=None, suppress_health_check=list(HealthCheck))
@given(
    payload=st.recursive(
        st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(),
        lambda children: (
            st.lists(children, max_size=4)
            | st.dictionaries(st.sampled_from(["body", "client_msg_id", "x", "version"]), children)
        ),
        max_leaves=10,
    )
)
def test_fuzzed_json_never_500(fuzz_target: tuple[httpx.Client, str], payload: object) -> None:
    client, room = fuzz_target
    r = client.post(
        f"/api/v1/rooms/{room}/messages", content=json.dumps(payload).encode(), headers=JSON
    )
    assert r.status_code < 500, r.text
    if r.status_code >= 400:
        assert set(r.json()) == {"error"}
