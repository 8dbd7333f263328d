"""Messages and the room log over REST: sequence numbers, idempotent retries,
paging edges, edits with versions, tombstones, reactions, read cursors, DMs."""

from __future__ import annotations

import asyncio
import uuid

import httpx

from parley.testing.server import ServerThread
from tests.component.conftest import Account, Api, assert_error


def make_room(owner: Account, *members: Account, visibility: str = "private") -> str:
    r = owner.post("/api/v1/rooms", json={"name": "room", "visibility": visibility})
    assert r.status_code == 201, r.text
    room_id = str(r.json()["id"])
    for member in members:
        assert (
            owner.post(f"/api/v1/rooms/{room_id}/members", json={"user_id": member.id}).status_code
            == 201
        )
    return room_id


def send(user: Account, room: str, body: str, cmid: str | None = None) -> httpx.Response:
    payload: dict[str, str] = {"body": body}
    if cmid is not None:
        payload["client_msg_id"] = cmid
    return user.post(f"/api/v1/rooms/{room}/messages", json=payload)


def test_send_and_read_back(api: Api) -> None:
    alice, bob = api.user(), api.user()
    room = make_room(alice, bob)
    r = send(alice, room, "hello *bob*", "c-1")
    assert r.status_code == 201
    message = r.json()
    assert message["body"] == "hello *bob*" and message["version"] == 1
    assert message["sender_id"] == alice.id and not message["deleted"]
    history = bob.get(f"/api/v1/rooms/{room}/messages").json()
    assert history["messages"] == [message] and history["has_more"] is False
    events = bob.get(f"/api/v1/rooms/{room}/events").json()["events"]
    assert [e["seq"] for e in events] == list(range(1, len(events) + 1))
    assert events[-1]["type"] == "message.created"
    assert events[-1]["message"]["id"] == message["id"]
    assert events[-1]["seq"] == message["seq"]


def test_idempotent_retry_stores_once(api: Api) -> None:
    alice = api.user()
    room = make_room(alice)
    first = send(alice, room, "once", "retry-me")
    again = send(alice, room, "once (retried)", "retry-me")
    assert (first.status_code, again.status_code) == (201, 200)
    assert again.json() == first.json()
    messages = alice.get(f"/api/v1/rooms/{room}/messages").json()["messages"]
    assert [m["id"] for m in messages] == [first.json()["id"]]


def test_same_client_msg_id_from_two_senders_is_two_messages(api: Api) -> None:
    alice, bob = api.user(), api.user()
    room = make_room(alice, bob)
    a = send(alice, room, "a", "same")
    b = send(bob, room, "b", "same")
    assert a.status_code == b.status_code == 201
    assert a.json()["id"] != b.json()["id"]


def test_concurrent_senders_get_contiguous_seqs(server: ServerThread, api: Api) -> None:
    users = [api.user() for _ in range(5)]
    room = make_room(users[0], *users[1:])
    base = users[0].get(f"/api/v1/rooms/{room}").json()["last_seq"]

    async def burst(user: Account) -> list[int]:
        headers = dict(user.http.headers)
        async with httpx.AsyncClient(base_url=server.url, headers=headers, timeout=30) as c:
            results = await asyncio.gather(
                *(
                    c.post(f"/api/v1/rooms/{room}/messages", json={"body": f"m{i}"})
                    for i in range(20)
                )
            )
        assert all(r.status_code == 201 for r in results)
        return [r.json()["seq"] for r in results]

    async def everyone() -> list[list[int]]:
        return await asyncio.gather(*(burst(u) for u in users))

    seqs = sorted(s for batch in asyncio.run(everyone()) for s in batch)
    assert seqs == list(range(base + 1, base + 101))
    events = users[0].get(f"/api/v1/rooms/{room}/events", params={"limit": 200}).json()
    assert [e["seq"] for e in events["events"]] == list(range(1, base + 101))


def test_paging_edges(api: Api) -> None:
    alice = api.user()
    room = make_room(alice)
    empty = alice.get(f"/api/v1/rooms/{room}/messages").json()
    assert empty == {"messages": [], "has_more": False}
    seqs = [send(alice, room, f"m{i}").json()["seq"] for i in range(7)]

    def page(**params: int) -> tuple[list[int], bool]:
        body = alice.get(f"/api/v1/rooms/{room}/messages", params=params).json()
        return [m["seq"] for m in body["messages"]], body["has_more"]

    assert page(limit=3) == (seqs[-3:], True)
    assert page(limit=7) == (seqs, False)
    assert page(limit=3, before_seq=seqs[3]) == (seqs[:3], False)
    assert page(limit=2, before_seq=seqs[3]) == (seqs[1:3], True)
    assert page(limit=3, before_seq=seqs[0]) == ([], False)
    assert page(limit=3, after_seq=seqs[2]) == (seqs[3:6], True)
    assert page(limit=3, after_seq=seqs[-1]) == ([], False)
    assert page(limit=200, after_seq=0) == (seqs, False)
    assert_error(alice.get(f"/api/v1/rooms/{room}/messages", params={"limit": 0}), 422)
    assert_error(alice.get(f"/api/v1/rooms/{room}/messages", params={"limit": 201}), 422)
    # Both: the window between them, oldest first.
    assert page(after_seq=seqs[0], before_seq=seqs[4]) == (seqs[1:4], False)
    assert page(limit=2, after_seq=seqs[0], before_seq=seqs[5]) == (seqs[1:3], True)
    assert page(after_seq=seqs[3], before_seq=seqs[2]) == ([], False)

    events = alice.get(f"/api/v1/rooms/{room}/events", params={"after_seq": 0, "limit": 4})
    assert [e["seq"] for e in events.json()["events"]] == [1, 2, 3, 4]
    assert events.json()["has_more"] is True
    last = seqs[-1]
    tail = alice.get(f"/api/v1/rooms/{room}/events", params={"after_seq": last}).json()
    assert tail == {"events": [], "has_more": False}


def test_edit_with_versions(api: Api) -> None:
    alice, bob = api.user(), api.user()
    room = make_room(alice, bob)
    message = send(alice, room, "draft").json()
    url = f"/api/v1/rooms/{room}/messages/{message['id']}"
    edited = alice.patch(url, json={"body": "final", "version": 1})
    assert edited.status_code == 200
    assert edited.json()["version"] == 2 and edited.json()["body"] == "final"
    assert edited.json()["edited_at"] and edited.json()["seq"] == message["seq"]
    stale = alice.patch(url, json={"body": "stale", "version": 1})
    assert_error(stale, 409, "version_conflict")
    assert_error(bob.patch(url, json={"body": "not mine", "version": 2}), 403)
    current = alice.get(f"/api/v1/rooms/{room}/messages").json()["messages"][-1]
    assert current["body"] == "final" and current["version"] == 2
    types = [e["type"] for e in alice.get(f"/api/v1/rooms/{room}/events").json()["events"]]
    assert types[-2:] == ["message.created", "message.edited"]


def test_delete_is_a_tombstone(api: Api) -> None:
    alice, bob = api.user(), api.user()
    room = make_room(alice, bob)
    message = send(bob, room, "oops").json()
    url = f"/api/v1/rooms/{room}/messages/{message['id']}"
    assert bob.delete(url).status_code == 200
    current = alice.get(f"/api/v1/rooms/{room}/messages").json()["messages"][-1]
    assert current["deleted"] is True and current["body"] == ""
    assert current["seq"] == message["seq"]
    assert_error(bob.patch(url, json={"body": "back", "version": 2}), 409, "message_deleted")
    missing = f"/api/v1/rooms/{room}/messages/{uuid.uuid4()}"
    assert_error(alice.delete(missing), 404)


def test_a_deleted_message_leaves_no_text_in_the_log(api: Api) -> None:
    alice, bob = api.user(), api.user()
    room = make_room(alice, bob)
    marker = f"secret-{uuid.uuid4().hex}"
    message = send(bob, room, f"one {marker}").json()
    url = f"/api/v1/rooms/{room}/messages/{message['id']}"
    assert bob.patch(url, json={"body": f"two {marker}", "version": 1}).status_code == 200
    log = alice.get(f"/api/v1/rooms/{room}/events").text
    assert f"two {marker}" in log and f"one {marker}" not in log  # no earlier version
    assert alice.delete(url).status_code == 200
    late = api.user()
    assert alice.post(f"/api/v1/rooms/{room}/members", json={"user_id": late.id}).status_code == 201
    for reader in (alice, bob, late):
        r = reader.get(f"/api/v1/rooms/{room}/events", params={"after_seq": 0})
        assert r.status_code == 200 and marker not in r.text
    events = late.get(f"/api/v1/rooms/{room}/events").json()["events"]
    carried = [e["message"] for e in events if e["type"].startswith("message.")]
    assert [(m["body"], m["deleted"]) for m in carried] == [("", True)] * 3


def test_reactions(api: Api) -> None:
    alice, bob = api.user(), api.user()
    room = make_room(alice, bob)
    message = send(alice, room, "react to me").json()
    url = f"/api/v1/rooms/{room}/messages/{message['id']}/reactions/%F0%9F%8E%89"
    assert bob.put(url).status_code == 200
    assert bob.put(url).status_code == 200  # idempotent
    assert alice.put(url).status_code == 200
    current = alice.get(f"/api/v1/rooms/{room}/messages").json()["messages"][-1]
    assert sorted(current["reactions"]["🎉"]) == sorted([alice.id, bob.id])
    assert bob.delete(url).status_code == 200
    current = alice.get(f"/api/v1/rooms/{room}/messages").json()["messages"][-1]
    assert current["reactions"] == {"🎉": [alice.id]}
    events = alice.get(f"/api/v1/rooms/{room}/events").json()["events"]
    assert [e["type"] for e in events[-3:]] == ["reaction.added", "reaction.added",
                                               "reaction.removed"]  # fmt: skip
    bad = f"/api/v1/rooms/{room}/messages/{message['id']}/reactions/a%20b"
    assert_error(alice.put(bad), 400)


def test_read_cursor_and_unread(api: Api) -> None:
    alice, bob = api.user(), api.user()
    room = make_room(alice, bob)
    for i in range(3):
        send(alice, room, f"news {i}")
    mine = {r["id"]: r for r in bob.get("/api/v1/rooms").json()["rooms"]}[room]
    assert mine["unread"] == 3 and mine["role"] == "member"
    assert {r["id"]: r for r in alice.get("/api/v1/rooms").json()["rooms"]}[room]["unread"] == 0
    last = mine["last_seq"]
    assert bob.put(f"/api/v1/rooms/{room}/read", json={"seq": last}).json() == {"read_seq": last}
    # Forward only, and never past the end.
    assert bob.put(f"/api/v1/rooms/{room}/read", json={"seq": 1}).json() == {"read_seq": last}
    assert bob.put(f"/api/v1/rooms/{room}/read", json={"seq": 10**6}).json() == {"read_seq": last}
    mine = {r["id"]: r for r in bob.get("/api/v1/rooms").json()["rooms"]}[room]
    assert mine["unread"] == 0 and mine["read_seq"] == last


def test_direct_rooms(api: Api) -> None:
    alice, bob, carol = api.user(), api.user(), api.user()
    first = alice.post("/api/v1/dms", json={"user_id": bob.id})
    again = bob.post("/api/v1/dms", json={"user_id": alice.id})
    assert (first.status_code, again.status_code) == (201, 200)
    assert first.json()["id"] == again.json()["id"] and first.json()["kind"] == "dm"
    dm = first.json()["id"]
    assert send(bob, dm, "psst").status_code == 201
    assert carol.get(f"/api/v1/rooms/{dm}/messages").status_code == 404
    assert_error(carol.post(f"/api/v1/rooms/{dm}/join"), 404)
    assert_error(alice.post("/api/v1/dms", json={"user_id": alice.id}), 403, "dm_with_self")
    assert_error(alice.post("/api/v1/dms", json={"user_id": str(uuid.uuid4())}), 404)
    assert_error(alice.post(f"/api/v1/rooms/{dm}/leave"), 403)


def test_leave_stops_access_and_kick_too(api: Api) -> None:
    alice, bob = api.user(), api.user()
    room = make_room(alice, bob)
    assert bob.post(f"/api/v1/rooms/{room}/leave").status_code == 200
    assert_error(bob.get(f"/api/v1/rooms/{room}/messages"), 404)
    assert_error(send(bob, room, "still here?"), 404)
    types = [e["type"] for e in alice.get(f"/api/v1/rooms/{room}/events").json()["events"]]
    assert types[-1] == "member.left"


def test_public_directory_and_join(api: Api) -> None:
    alice, bob = api.user(), api.user()
    room = make_room(alice, visibility="public")
    assert room in {r["id"] for r in bob.get("/api/v1/rooms/public").json()["rooms"]}
    joined = bob.post(f"/api/v1/rooms/{room}/join")
    assert joined.status_code == 200 and joined.json()["id"] == room
    members = {m["user"]["id"]: m["role"] for m in bob.get(f"/api/v1/rooms/{room}/members").json()[
        "members"]}  # fmt: skip
    assert members == {alice.id: "owner", bob.id: "member"}
