"""The authorisation matrix: every room and message endpoint, as anonymous,
non-member, member, admin, owner and banned, on a private and a public room."""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import httpx
import pytest

from parley.testing.server import ServerThread
from tests.component.conftest import Account, Api

ROLES = ["anonymous", "outsider", "member", "admin", "owner", "banned"]


@dataclass
class World:
    api: Api
    users: dict[str, Account]
    rooms: dict[str, str]
    messages: dict[str, str]  # visibility -> a message by a plain member, "author"


@pytest.fixture(scope="module")
def world(server: ServerThread) -> Iterator[World]:
    api = Api(server)
    users = {role: api.user(role[:3]) for role in ROLES if role != "anonymous"}
    author = api.user("aut")
    owner = users["owner"]
    rooms, messages = {}, {}
    for visibility in ("private", "public"):
        room = owner.post("/api/v1/rooms", json={"name": visibility, "visibility": visibility})
        assert room.status_code == 201
        room_id = room.json()["id"]
        rooms[visibility] = room_id
        for role in ("member", "admin", "banned"):
            r = owner.post(
                f"/api/v1/rooms/{room_id}/members",
                json={"user_id": users[role].id, "role": "admin" if role == "admin" else "member"},
            )
            assert r.status_code == 201, r.text
        ban = owner.delete(f"/api/v1/rooms/{room_id}/members/{users['banned'].id}?ban=true")
        assert ban.status_code == 200, ban.text
        owner.post(f"/api/v1/rooms/{room_id}/members", json={"user_id": author.id})
        sent = author.post(f"/api/v1/rooms/{room_id}/messages", json={"body": "hello"})
        messages[visibility] = sent.json()["id"]
    yield World(api, users, rooms, messages)
    api.close()


Call = Callable[[httpx.Client, World, str], httpx.Response]


def fresh_user(world: World) -> Account:
    return world.api.user("tgt")


def add_fresh(world: World, vis: str) -> str:
    target = fresh_user(world)
    world.users["owner"].post(
        f"/api/v1/rooms/{world.rooms[vis]}/members", json={"user_id": target.id}
    )
    return target.id


CALLS: dict[str, Call] = {
    "get_room": lambda c, w, v: c.get(f"/api/v1/rooms/{w.rooms[v]}"),
    "members": lambda c, w, v: c.get(f"/api/v1/rooms/{w.rooms[v]}/members"),
    "list_messages": lambda c, w, v: c.get(f"/api/v1/rooms/{w.rooms[v]}/messages"),
    "events": lambda c, w, v: c.get(f"/api/v1/rooms/{w.rooms[v]}/events"),
    "send": lambda c, w, v: c.post(
        f"/api/v1/rooms/{w.rooms[v]}/messages", json={"body": "hi " + uuid.uuid4().hex}
    ),
    "edit_others": lambda c, w, v: c.patch(
        f"/api/v1/rooms/{w.rooms[v]}/messages/{w.messages[v]}", json={"body": "x", "version": 1}
    ),
    "react": lambda c, w, v: c.put(
        f"/api/v1/rooms/{w.rooms[v]}/messages/{w.messages[v]}/reactions/%F0%9F%91%8D"
    ),
    "read": lambda c, w, v: c.put(f"/api/v1/rooms/{w.rooms[v]}/read", json={"seq": 1}),
    "add_member": lambda c, w, v: c.post(
        f"/api/v1/rooms/{w.rooms[v]}/members", json={"user_id": fresh_user(w).id}
    ),
    "kick_member": lambda c, w, v: c.delete(
        f"/api/v1/rooms/{w.rooms[v]}/members/{add_fresh(w, v)}"
    ),
    "ban_member": lambda c, w, v: c.delete(
        f"/api/v1/rooms/{w.rooms[v]}/members/{add_fresh(w, v)}?ban=true"
    ),
    "update_room": lambda c, w, v: c.patch(
        f"/api/v1/rooms/{w.rooms[v]}", json={"topic": "new topic"}
    ),
    "delete_others": lambda c, w, v: c.delete(
        f"/api/v1/rooms/{w.rooms[v]}/messages/{_owner_message(w, v)}"
    ),
}


def _owner_message(world: World, vis: str) -> str:
    owner = world.users["owner"]
    r = owner.post(f"/api/v1/rooms/{world.rooms[vis]}/messages", json={"body": "to delete"})
    return str(r.json()["id"])


MEMBER_OK = {
    "get_room": 200, "members": 200, "list_messages": 200, "events": 200, "send": 201,
    "edit_others": 403, "react": 200, "read": 200, "add_member": 403, "kick_member": 403,
    "ban_member": 403, "update_room": 403, "delete_others": 403,
}  # fmt: skip
ADMIN_OK = MEMBER_OK | {
    "add_member": 201, "kick_member": 200, "ban_member": 200, "update_room": 200,
    "delete_others": 200,
}  # fmt: skip


def expected(role: str, vis: str, call: str) -> int:
    if role == "anonymous":
        return 401
    if role in ("outsider", "banned"):
        if call == "get_room" and vis == "public" and role == "outsider":
            return 200
        return 404 if vis == "private" else 403
    if role == "member":
        return MEMBER_OK[call]
    if role == "admin":
        return ADMIN_OK[call]
    return ADMIN_OK[call]  # owner


@pytest.mark.parametrize("vis", ["private", "public"])
@pytest.mark.parametrize("role", ROLES)
@pytest.mark.parametrize("call", sorted(CALLS))
def test_matrix(world: World, role: str, vis: str, call: str) -> None:
    client = world.api.anon if role == "anonymous" else world.users[role].http
    response = CALLS[call](client, world, vis)
    assert response.status_code == expected(role, vis, call), (role, vis, call, response.text)
    if response.status_code >= 400:
        assert set(response.json()) == {"error"}
        # A refusal never leaks the room's data.
        assert "hello" not in response.text


@pytest.mark.parametrize("role", ["outsider", "banned", "member"])
def test_join(world: World, role: str) -> None:
    client = world.users[role].http
    private = client.post(f"/api/v1/rooms/{world.rooms['private']}/join")
    public = client.post(f"/api/v1/rooms/{world.rooms['public']}/join")
    if role == "member":
        assert (private.status_code, public.status_code) == (200, 200)
    elif role == "banned":
        assert (private.status_code, public.status_code) == (403, 403)
        assert public.json()["error"]["code"] == "banned"
    else:
        assert private.status_code == 403
        assert public.status_code == 200
        client.post(f"/api/v1/rooms/{world.rooms['public']}/leave")


def test_admin_cannot_manage_owner_or_grant_admin(world: World) -> None:
    admin = world.users["admin"]
    room = world.rooms["private"]
    r = admin.delete(f"/api/v1/rooms/{room}/members/{world.users['owner'].id}")
    assert r.status_code == 403
    r = admin.post(f"/api/v1/rooms/{room}/members", json={"user_id": fresh_user(world).id,
                                                           "role": "admin"})  # fmt: skip
    assert r.status_code == 403


def test_outsiders_see_private_rooms_nowhere(world: World) -> None:
    outsider = world.users["outsider"]
    public = outsider.get("/api/v1/rooms/public").json()["rooms"]
    ids = {room["id"] for room in public}
    assert world.rooms["public"] in ids
    assert world.rooms["private"] not in ids
    mine = outsider.get("/api/v1/rooms").json()["rooms"]
    assert world.rooms["private"] not in {room["id"] for room in mine}
