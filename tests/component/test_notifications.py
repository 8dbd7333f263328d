"""Mentions and notifications end to end through the public API, on SQLite and on
PostgreSQL: who is mentioned, who is notified (each rule and each room level), the
feed and its unread count, the live ``notification`` frame on every connection of
the user (WebSocket and SSE), and bad input answered in the API's error shape."""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from parley.testing.server import ServerThread
from tests.component.conftest import Account, Api, assert_error, node_on
from tests.realtime_support import TIMEOUT, recv_until, ws_connect


@pytest.fixture(scope="module", params=["sqlite", "postgres"])
def server(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[ServerThread]:
    with node_on(request.param, tmp_path_factory.mktemp("notify"), "parley_notify") as running:
        yield running


def room_with(owner: Account, *members: Account, admins: tuple[Account, ...] = ()) -> str:
    room_id: str = owner.post("/api/v1/rooms", json={"name": "r", "visibility": "private"}).json()[
        "id"
    ]
    for member in members:
        r = owner.post(f"/api/v1/rooms/{room_id}/members", json={"user_id": member.id})
        assert r.status_code == 201, r.text
    for admin in admins:
        r = owner.post(
            f"/api/v1/rooms/{room_id}/members", json={"user_id": admin.id, "role": "admin"}
        )
        assert r.status_code == 201, r.text
    return room_id


def send(sender: Account, room_id: str, body: str) -> dict[str, Any]:
    r = sender.post(f"/api/v1/rooms/{room_id}/messages", json={"body": body})
    assert r.status_code == 201, r.text
    message: dict[str, Any] = r.json()
    return message


def feed(account: Account, **params: Any) -> dict[str, Any]:
    r = account.get("/api/v1/notifications", params=params)
    assert r.status_code == 200, r.text
    body: dict[str, Any] = r.json()
    return body


def kinds(account: Account) -> list[tuple[str, str]]:
    """(kind, body) of the account's notifications, oldest first."""
    return [(n["kind"], n["message"]["body"]) for n in reversed(feed(account)["notifications"])]


def set_level(account: Account, room_id: str, level: str) -> None:
    r = account.put(f"/api/v1/rooms/{room_id}/notifications", json={"level": level})
    assert r.status_code == 200, r.text
    assert r.json() == {"level": level}


def test_a_mention_of_a_member_is_stored_and_notifies_them_only(api: Api) -> None:
    alice, bob, carol = api.user("al"), api.user("bo"), api.user("ca")
    room_id = room_with(alice, bob, carol)
    message = send(alice, room_id, f"hi @{bob.username}, and @{alice.username} too")
    assert message["mentions"] == [bob.id, alice.id]
    assert message["mentions_room"] is False
    assert kinds(bob) == [("mention", message["body"])]
    assert kinds(carol) == []
    assert kinds(alice) == []  # never for one's own message
    got = feed(bob)
    note = got["notifications"][0]
    assert got["unread"] == 1 and got["has_more"] is False
    assert note["room_id"] == room_id and note["read"] is False
    assert note["message"]["id"] == message["id"]
    assert set(note) == {"id", "kind", "room_id", "message", "created_at", "read"}
    page = alice.get(f"/api/v1/rooms/{room_id}/messages").json()["messages"]
    assert page[-1]["mentions"] == [bob.id, alice.id]


def test_grammar_mentions_only_members_and_not_in_code(api: Api) -> None:
    alice, bob, outsider = api.user("al"), api.user("bo"), api.user("ou")
    room_id = room_with(alice, bob)
    plain = [
        f"@{outsider.username} is not here",
        f"mail {bob.username}@example.com or x@{bob.username}",
        f"`@{bob.username}` in code",
        f"```\n@{bob.username}\n```",
        f"https://example.com/@{bob.username}",
        f"@{bob.username}x is another name",
    ]
    for body in plain:
        message = send(alice, room_id, body)
        assert message["mentions"] == [], body
    assert kinds(bob) == []
    assert kinds(outsider) == []
    upper = send(alice, room_id, f"Thanks @{bob.username.upper()}.")
    assert upper["mentions"] == [bob.id]
    assert [k for k, _ in kinds(bob)] == ["mention"]


def test_at_room_counts_from_owners_and_admins_only(api: Api) -> None:
    owner, admin, member, other = api.user("ow"), api.user("ad"), api.user("me"), api.user("ot")
    room_id = room_with(owner, member, other, admins=(admin,))
    by_member = send(member, room_id, "@room lunch?")
    assert by_member["mentions_room"] is False
    assert kinds(other) == [] and kinds(owner) == []
    by_owner = send(owner, room_id, "@room standup now")
    assert by_owner["mentions_room"] is True
    by_admin = send(admin, room_id, f"@room and @{other.username}")
    assert by_admin["mentions_room"] is True
    assert kinds(member) == [
        ("room_mention", "@room standup now"),
        ("room_mention", by_admin["body"]),
    ]
    assert kinds(other) == [("room_mention", "@room standup now"), ("mention", by_admin["body"])]
    assert kinds(owner) == [("room_mention", by_admin["body"])]
    assert kinds(admin) == [("room_mention", "@room standup now")]


def test_every_message_of_a_direct_room_notifies_the_other(api: Api) -> None:
    alice, bob = api.user("al"), api.user("bo")
    r = alice.post("/api/v1/dms", json={"user_id": bob.id})
    dm = r.json()["id"]
    assert alice.get(f"/api/v1/rooms/{dm}/notifications").json() == {"level": "all"}
    send(alice, dm, "psst")
    send(bob, dm, "yes?")
    send(alice, dm, f"@{bob.username} look")
    assert kinds(bob) == [("dm", "psst"), ("mention", f"@{bob.username} look")]
    assert kinds(alice) == [("dm", "yes?")]


def reply(sender: Account, room_id: str, root_id: str, body: str) -> dict[str, Any]:
    r = sender.post(
        f"/api/v1/rooms/{room_id}/messages", json={"body": body, "thread_root_id": root_id}
    )
    assert r.status_code == 201, r.text
    message: dict[str, Any] = r.json()
    return message


def test_a_reply_notifies_those_who_took_part_in_its_thread(api: Api) -> None:
    alice, bob, carol, dave = api.user("al"), api.user("bo"), api.user("ca"), api.user("da")
    room_id = room_with(alice, bob, carol, dave)
    root = send(alice, room_id, "a question")
    first = reply(bob, room_id, root["id"], "an answer")
    assert kinds(alice) == [("reply", "an answer")]  # the root's sender took part
    assert kinds(bob) == []  # never for one's own reply
    second = reply(carol, room_id, first["id"], "another")  # a reply to a reply: same root
    assert kinds(alice)[-1] == ("reply", "another")
    assert kinds(bob) == [("reply", "another")]
    assert kinds(dave) == []  # never took part, not mentioned
    mention = reply(alice, room_id, root["id"], f"@{dave.username} and all of you")
    assert kinds(dave) == [("mention", mention["body"])]
    assert kinds(carol) == [("reply", mention["body"])]
    set_level(bob, room_id, "none")
    reply(carol, room_id, root["id"], "quiet, bob")
    assert kinds(bob) == [("reply", "another"), ("reply", mention["body"])]
    assert second["thread_root_id"] == root["id"]


def test_every_message_of_a_group_room_notifies_the_others(api: Api) -> None:
    alice, bob, carol = api.user("al"), api.user("bo"), api.user("ca")
    r = alice.post("/api/v1/dms", json={"user_ids": [bob.id, carol.id]})
    assert r.status_code == 201, r.text
    group = r.json()["id"]
    assert bob.get(f"/api/v1/rooms/{group}/notifications").json() == {"level": "all"}
    send(alice, group, "hello both")
    assert kinds(bob) == [("dm", "hello both")]
    assert kinds(carol) == [("dm", "hello both")]
    assert kinds(alice) == []


def test_room_levels_none_mentions_all(api: Api) -> None:
    alice, bob = api.user("al"), api.user("bo")
    room_id = room_with(alice, bob)
    assert bob.get(f"/api/v1/rooms/{room_id}/notifications").json() == {"level": "mentions"}
    send(alice, room_id, "plain")
    assert kinds(bob) == []
    set_level(bob, room_id, "all")
    send(alice, room_id, "every message now")
    send(alice, room_id, f"@{bob.username} still a mention")
    set_level(bob, room_id, "none")
    send(alice, room_id, f"@{bob.username} silenced")
    send(alice, room_id, "@room silenced too")
    set_level(bob, room_id, "mentions")
    send(alice, room_id, "plain again")
    send(alice, room_id, f"@{bob.username} heard")
    assert kinds(bob) == [
        ("message", "every message now"),
        ("mention", f"@{bob.username} still a mention"),
        ("mention", f"@{bob.username} heard"),
    ]
    assert bob.get(f"/api/v1/rooms/{room_id}/notifications").json() == {"level": "mentions"}
    dm = alice.post("/api/v1/dms", json={"user_id": bob.id}).json()["id"]
    set_level(bob, dm, "mentions")
    send(alice, dm, "not a mention")
    assert [k for k, _ in kinds(bob)] == ["message", "mention", "mention"]


def test_read_marks_paging_and_unread(api: Api) -> None:
    alice, bob = api.user("al"), api.user("bo")
    room_id = room_with(alice, bob)
    for i in range(5):
        send(alice, room_id, f"@{bob.username} {i}")
    first = feed(bob, limit=2)
    assert [n["message"]["body"] for n in first["notifications"]] == [
        f"@{bob.username} 4",
        f"@{bob.username} 3",
    ]
    assert first["has_more"] is True and first["unread"] == 5
    rest = feed(bob, before=first["notifications"][-1]["id"], limit=10)
    assert [n["message"]["body"][-1] for n in rest["notifications"]] == ["2", "1", "0"]
    assert rest["has_more"] is False
    ids = [first["notifications"][0]["id"], rest["notifications"][0]["id"]]
    r = bob.post("/api/v1/notifications/read", json={"ids": ids})
    assert r.status_code == 200 and r.json() == {"unread": 3}
    unread = feed(bob, unread_only="true")
    assert len(unread["notifications"]) == 3 and not any(n["read"] for n in unread["notifications"])
    # someone else's ids change nothing
    r = alice.post(
        "/api/v1/notifications/read", json={"ids": [n["id"] for n in unread["notifications"]]}
    )
    assert r.json() == {"unread": 0}
    assert feed(bob)["unread"] == 3
    r = bob.post("/api/v1/notifications/read", json={"all": True})
    assert r.json() == {"unread": 0}
    assert feed(bob, unread_only=True)["notifications"] == []


def test_deleted_messages_and_left_rooms_take_their_notifications(api: Api) -> None:
    alice, bob = api.user("al"), api.user("bo")
    room_id = room_with(alice, bob)
    gone = send(alice, room_id, f"@{bob.username} secret")
    send(alice, room_id, f"@{bob.username} kept")
    r = alice.delete(f"/api/v1/rooms/{room_id}/messages/{gone['id']}")
    assert r.status_code == 200
    assert kinds(bob) == [("mention", f"@{bob.username} kept")]
    edited = send(alice, room_id, "nobody yet")
    r = alice.patch(
        f"/api/v1/rooms/{room_id}/messages/{edited['id']}",
        json={"body": f"now @{bob.username}", "version": 1},
    )
    assert r.json()["mentions"] == [bob.id]
    assert len(kinds(bob)) == 1  # an edit makes no new notification
    # The log's copies follow: an edit's mentions, a deletion's none.
    log = alice.get(f"/api/v1/rooms/{room_id}/events").json()["events"]
    created = {e["message"]["id"]: e["message"] for e in log if e["type"] == "message.created"}
    assert created[edited["id"]]["mentions"] == [bob.id]
    assert created[gone["id"]]["mentions"] == [] and created[gone["id"]]["body"] == ""
    assert bob.post(f"/api/v1/rooms/{room_id}/leave").status_code == 200
    assert feed(bob)["notifications"] == []
    send(alice, room_id, f"@{bob.username} after the leave")
    assert feed(bob) == {"notifications": [], "unread": 0, "has_more": False}


def test_bad_input_is_answered_in_the_error_shape(api: Api) -> None:
    alice, outsider = api.user("al"), api.user("ou")
    room_id = room_with(alice)
    path = f"/api/v1/rooms/{room_id}/notifications"
    assert_error(alice.put(path, json={"level": "loud"}), 422)
    assert_error(alice.put(path, json={}), 422)
    assert_error(alice.put(path, json={"level": "all", "extra": 1}), 422)
    assert_error(outsider.put(path, json={"level": "all"}), 404)
    assert_error(outsider.get(path), 404)
    assert_error(
        alice.put(f"/api/v1/rooms/{uuid.uuid4()}/notifications", json={"level": "all"}), 404
    )
    read = "/api/v1/notifications/read"
    assert_error(alice.post(read, json={"ids": ["nope"]}), 422)
    assert_error(alice.post(read, json={"ids": [1]}), 422)
    assert_error(alice.post(read, json={"all": False}), 422)
    assert_error(alice.post(read, json={}), 422)
    assert_error(alice.post(read, json={"ids": [], "all": True}), 422)
    assert_error(alice.post(read, json={"ids": [str(uuid.uuid4())] * 501}), 422)
    assert_error(alice.get("/api/v1/notifications", params={"before": "x"}), 422)
    assert_error(alice.get("/api/v1/notifications", params={"limit": 0}), 422)
    assert_error(alice.get("/api/v1/notifications", params={"unread_only": "maybe"}), 422)
    assert_error(httpx.get(f"{api.server.url}/api/v1/notifications"), 401)
    assert alice.post(read, json={"ids": [str(uuid.uuid4())]}).json() == {"unread": 0}
    assert alice.get(path).json() == {"level": "mentions"}


async def test_the_frame_reaches_every_connection_of_the_user(api: Api) -> None:
    alice, bob, carol = api.user("al"), api.user("bo"), api.user("ca")
    room_id = room_with(alice, bob, carol)
    first = await ws_connect(api.server.url, bob.access_token)
    second = await ws_connect(api.server.url, bob.access_token)
    bystander = await ws_connect(api.server.url, carol.access_token)
    try:
        for ws in (first, second, bystander):
            await recv_until(ws, lambda f: f["type"] == "ready")
        async with httpx.AsyncClient(base_url=api.server.url, timeout=TIMEOUT) as http:
            stream = http.stream(
                "GET", "/api/v1/events/stream", params={"access_token": bob.access_token}
            )
            async with stream as sse:
                lines = sse.aiter_lines()
                message = await asyncio.to_thread(send, alice, room_id, f"@{bob.username} ping")
                frames = [
                    (await recv_until(ws, lambda f: f["type"] == "notification"))[-1]
                    for ws in (first, second)
                ]
                async with asyncio.timeout(TIMEOUT):
                    name = ""
                    async for line in lines:
                        if line.startswith("event: "):
                            name = line[7:]
                        elif line.startswith("data: ") and name == "notification":
                            frames.append(json.loads(line[6:]))
                            break
        assert frames[0] == frames[1] == frames[2]
        note = frames[0]["notification"]
        assert note["kind"] == "mention" and note["message"]["id"] == message["id"]
        assert note["id"] == feed(bob)["notifications"][0]["id"]
        events = await recv_until(bystander, lambda f: f["type"] == "event")
        assert all(f["type"] != "notification" for f in events)
    finally:
        for ws in (first, second, bystander):
            await ws.close()


def test_many_names_in_one_message_are_all_resolved(api: Api) -> None:
    """More names than one lookup takes (16): each is found, in order of mention."""
    owner = api.user("ow")
    others = [api.user("m") for _ in range(20)]
    room_id = room_with(owner, *others)
    message = send(owner, room_id, " ".join(f"@{o.username}" for o in reversed(others)))
    assert message["mentions"] == [o.id for o in reversed(others)]
    assert kinds(others[0]) == [("mention", message["body"])]
