"""Threads and group direct rooms end to end through the public API, on SQLite and on
PostgreSQL: replies in the room's log, the root's summary (also under concurrent
replies from two nodes), paging a thread, resume carrying replies, who may read a
thread, and bad input answered in the error shape with nothing changed."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from parley.client import ApiError, ParleyClient
from parley.testing.server import ServerThread
from tests.component.conftest import node_on
from tests.component.test_sse import stream
from tests.realtime_support import closing, events_until, room, uid, user

MASTER_KEY = "ab" * 32


@pytest.fixture(scope="module", params=["sqlite", "postgres"])
def node(
    tmp_path_factory: pytest.TempPathFactory, request: pytest.FixtureRequest
) -> Iterator[ServerThread]:
    # on PostgreSQL, a database of its own: its data keys are sealed by this module's
    # master key, which a second node of the cluster shares
    data_dir = tmp_path_factory.mktemp("threads")
    with node_on(request.param, data_dir, "parley_threads", master_key=MASTER_KEY) as server:
        yield server


async def raw(client: ParleyClient, method: str, path: str, **kw: Any) -> httpx.Response:
    """A request whose answer is checked by the test, errors included."""
    headers = {"Authorization": f"Bearer {client.access_token}"}
    return await client.http.request(method, client.base_url + path, headers=headers, **kw)


def assert_error(response: httpx.Response, status: int, code: str) -> None:
    assert response.status_code == status, response.text
    body = response.json()
    assert set(body) == {"error"} and body["error"]["code"] == code, body
    assert isinstance(body["error"]["message"], str)


async def test_replies_share_the_rooms_log_and_the_root_counts_them(node: ServerThread) -> None:
    alice, bob = await user(node.url, "alice"), await user(node.url, "bob")
    async with closing(alice, bob):
        room_id = await room(alice, bob)
        root = await alice.post_message(room_id, "shall we ship?")
        assert root["thread_root_id"] is None and root["thread"] is None
        first = await bob.post_message(room_id, "yes", thread_root_id=root["id"])
        # a reply to a reply belongs to the same root
        second = await alice.post_message(room_id, "ok", thread_root_id=first["id"])
        assert first["thread_root_id"] == second["thread_root_id"] == root["id"]
        assert (first["seq"], second["seq"]) == (root["seq"] + 1, root["seq"] + 2)

        got_root, replies, more = await bob.thread(room_id, root["id"])
        assert [m["id"] for m in replies] == [first["id"], second["id"]] and not more
        assert got_root["thread"] == {
            "reply_count": 2,
            "last_reply_at": second["created_at"],
            "participants": [uid(alice), uid(bob)],
        }
        # a reply's id gives its root's thread; paging by seq
        page_root, page, more = await bob.thread(room_id, second["id"], limit=1)
        assert page_root["id"] == root["id"] and [m["id"] for m in page] == [first["id"]] and more
        _, page, more = await bob.thread(room_id, root["id"], after_seq=first["seq"])
        assert [m["id"] for m in page] == [second["id"]] and not more

        # the room's history has the replies in its seq stream, and the root's summary
        history, _ = await bob.messages(room_id)
        assert [m["id"] for m in history[-3:]] == [root["id"], first["id"], second["id"]]
        assert history[-3]["thread"]["reply_count"] == 2

        # each reply's message.created carries the root's summary after it
        events, _ = await bob.events(room_id, after_seq=root["seq"])
        assert [e["type"] for e in events] == ["message.created"] * 2
        assert [e["root_thread"]["reply_count"] for e in events] == [1, 2]
        assert events[0]["root_thread"]["participants"] == [uid(alice), uid(bob)]


async def test_live_and_resumed_clients_see_replies(node: ServerThread) -> None:
    alice, bob = await user(node.url, "alice"), await user(node.url, "bob")
    async with closing(alice, bob):
        room_id = await room(alice, bob)
        root = await alice.post_message(room_id, "root")
        async with bob.live() as live:
            reply = await live.send(room_id, "over the socket", thread_root_id=root["id"])
            assert reply["thread_root_id"] == root["id"]
            [event] = await events_until(live, lambda e: e["message"]["id"] == reply["id"])
            assert event["root_thread"]["reply_count"] == 1
            with pytest.raises(ApiError) as refused:
                await live.send(room_id, "to nothing", thread_root_id=str(uuid.uuid4()))
            assert refused.value.code == "not_found"
        # a client that saw only the root resumes and gets the reply, then the rest
        async with alice.live(cursors={room_id: root["seq"]}) as resumed:
            later = await bob.post_message(room_id, "later", thread_root_id=root["id"])
            seen = await events_until(resumed, lambda e: e["seq"] == later["seq"])
            assert [e["message"]["id"] for e in seen] == [reply["id"], later["id"]]
            assert seen[-1]["root_thread"]["reply_count"] == 2


async def test_sse_carries_replies_with_the_roots_summary(node: ServerThread) -> None:
    alice, bob = await user(node.url, "alice"), await user(node.url, "bob")
    async with closing(alice, bob):
        room_id = await room(alice, bob)
        root = await alice.post_message(room_id, "root")
        async with stream(alice) as events:
            assert (await events.next()).event == "ready"
            reply = await bob.post_message(room_id, "via sse", thread_root_id=root["id"])
            got = (await events.next()).data["event"]
            assert got["message"] == reply and got["root_thread"]["reply_count"] == 1


async def test_bad_thread_roots_change_nothing(node: ServerThread) -> None:
    alice, bob = await user(node.url, "alice"), await user(node.url, "bob")
    async with closing(alice, bob):
        room_id, other_room = await room(alice, bob), await room(alice)
        root = await alice.post_message(room_id, "root")
        elsewhere = await alice.post_message(other_room, "elsewhere")
        gone = await alice.post_message(room_id, "soon gone")
        await alice.request("DELETE", f"/api/v1/rooms/{room_id}/messages/{gone['id']}")
        head = (await alice.request("GET", f"/api/v1/rooms/{room_id}"))["last_seq"]
        path = f"/api/v1/rooms/{room_id}/messages"
        for bad in (str(uuid.uuid4()), elsewhere["id"], gone["id"]):
            r = await raw(alice, "POST", path, json={"body": "x", "thread_root_id": bad})
            assert_error(r, 404, "not_found")
        r = await raw(alice, "POST", path, json={"body": "x", "thread_root_id": "not-an-id"})
        assert r.status_code in (400, 422) and set(r.json()) == {"error"}
        assert (await alice.request("GET", f"/api/v1/rooms/{room_id}"))["last_seq"] == head
        got_root, replies, _ = await alice.thread(room_id, root["id"])
        assert got_root["thread"] is None and replies == []
        r = await raw(alice, "GET", f"/api/v1/rooms/{room_id}/messages/{uuid.uuid4()}/thread")
        assert_error(r, 404, "not_found")
        r = await raw(alice, "GET", f"/api/v1/rooms/{room_id}/messages/{root['id']}/thread?limit=0")
        assert r.status_code in (400, 422) and set(r.json()) == {"error"}


async def test_a_non_member_cannot_read_or_reply_to_a_thread(node: ServerThread) -> None:
    alice, eve = await user(node.url, "alice"), await user(node.url, "eve")
    async with closing(alice, eve):
        for visibility in ("private", "public"):
            room_id = await room(alice, visibility=visibility)
            root = await alice.post_message(room_id, "members only")
            thread = f"/api/v1/rooms/{room_id}/messages/{root['id']}/thread"
            r = await raw(eve, "GET", thread)
            assert r.status_code in (403, 404) and set(r.json()) == {"error"}
            r = await raw(
                eve,
                "POST",
                f"/api/v1/rooms/{room_id}/messages",
                json={"body": "let me in", "thread_root_id": root["id"]},
            )
            assert r.status_code in (403, 404) and set(r.json()) == {"error"}
            got_root, replies, _ = await alice.thread(room_id, root["id"])
            assert got_root["thread"] is None and replies == []


async def test_deleting_a_reply_recounts_its_root(node: ServerThread) -> None:
    alice, bob, carol = [await user(node.url, n) for n in ("alice", "bob", "carol")]
    async with closing(alice, bob, carol):
        room_id = await room(alice, bob, carol)
        root = await alice.post_message(room_id, "root")
        by_bob = await bob.post_message(room_id, "bob's", thread_root_id=root["id"])
        by_carol = await carol.post_message(room_id, "carol's", thread_root_id=root["id"])
        await carol.request("DELETE", f"/api/v1/rooms/{room_id}/messages/{by_carol['id']}")
        got_root, replies, _ = await alice.thread(room_id, root["id"])
        assert got_root["thread"] == {
            "reply_count": 1,
            "last_reply_at": by_bob["created_at"],
            "participants": [uid(alice), uid(bob)],
        }
        assert [m["deleted"] for m in replies] == [False, True]  # the tombstone stays
        events, _ = await alice.events(room_id, after_seq=by_carol["seq"])
        assert events[-1]["type"] == "message.deleted"
        assert events[-1]["root_thread"]["reply_count"] == 1
        await bob.request("DELETE", f"/api/v1/rooms/{room_id}/messages/{by_bob['id']}")
        got_root, _, _ = await alice.thread(room_id, root["id"])
        assert got_root["thread"] is None
        events, _ = await alice.events(room_id, after_seq=by_carol["seq"] + 1)
        assert events[-1]["root_thread"] is None
        # a deleted root takes no more replies, but its thread stays readable
        await alice.request("DELETE", f"/api/v1/rooms/{room_id}/messages/{root['id']}")
        r = await raw(
            bob,
            "POST",
            f"/api/v1/rooms/{room_id}/messages",
            json={"body": "late", "thread_root_id": by_bob["id"]},
        )
        assert_error(r, 404, "not_found")
        got_root, replies, _ = await alice.thread(room_id, root["id"])
        assert got_root["deleted"] and len(replies) == 2


async def test_concurrent_replies_keep_the_count(
    node: ServerThread, tmp_path_factory: pytest.TempPathFactory
) -> None:
    """Replies racing on one node, and on PostgreSQL on two nodes of one database:
    no count is lost and each replier is a participant once."""
    nodes = [node]
    second: ServerThread | None = None
    if node.settings.database_url is not None:
        second = ServerThread(
            tmp_path_factory.mktemp("node2"),
            rate_limits="off",
            database_url=node.settings.database_url,
            master_key=MASTER_KEY,
        ).start()
        nodes.append(second)
    try:
        people = [await user(n.url, "p") for n in nodes for _ in range(3)]
        async with closing(*people):
            owner = people[0]
            room_id = await room(owner, *people[1:])
            root = await owner.post_message(room_id, "count us")
            per_person = 10

            async def reply(client: ParleyClient) -> None:
                for i in range(per_person):
                    await client.post_message(room_id, f"r{i}", thread_root_id=root["id"])

            await asyncio.gather(*(reply(p) for p in people))
            got_root, _, _ = await owner.thread(room_id, root["id"], limit=1)
            assert got_root["thread"]["reply_count"] == per_person * len(people)
            assert sorted(got_root["thread"]["participants"]) == sorted(uid(p) for p in people)
            assert got_root["thread"]["participants"][0] == uid(owner)
            events, _ = await owner.events(room_id, after_seq=root["seq"], limit=200)
            counts = [e["root_thread"]["reply_count"] for e in events]
            assert counts == list(range(1, per_person * len(people) + 1))
    finally:
        if second is not None:
            second.stop()


# group direct rooms


async def test_group_direct_rooms_one_per_set(node: ServerThread) -> None:
    alice, bob, carol, dave = [await user(node.url, n) for n in ("alice", "bob", "carol", "dave")]
    async with closing(alice, bob, carol, dave):
        r = await raw(alice, "POST", "/api/v1/dms", json={"user_ids": [uid(bob), uid(carol)]})
        assert r.status_code == 201, r.text
        made = r.json()
        assert made["kind"] == "group_dm" and made["visibility"] == "private"
        # the same set, in any order and from anyone in it: the same room
        r = await raw(carol, "POST", "/api/v1/dms", json={"user_ids": [uid(bob), uid(alice)]})
        assert r.status_code == 200 and r.json()["id"] == made["id"]
        members = {m["user"]["id"] for m in await bob.members(made["id"])}
        assert members == {uid(alice), uid(bob), uid(carol)}
        assert made["id"] in {x["id"] for x in await bob.rooms()}
        # another set is another room; a 1:1 room is still kind dm
        bigger = await alice.open_group_dm([uid(bob), uid(carol), uid(dave)])
        assert bigger["id"] != made["id"] and bigger["kind"] == "group_dm"
        assert (await alice.open_dm(uid(bob)))["kind"] == "dm"
        # people are fixed; leaving is allowed, and opening the set again comes back
        r = await raw(
            alice, "POST", f"/api/v1/rooms/{made['id']}/members", json={"user_id": uid(dave)}
        )
        assert_error(r, 403, "forbidden")
        r = await raw(alice, "DELETE", f"/api/v1/rooms/{made['id']}/members/{uid(bob)}")
        assert_error(r, 403, "forbidden")
        await bob.leave(made["id"])
        assert made["id"] not in {x["id"] for x in await bob.rooms()}
        await alice.post_message(made["id"], "still here")  # the others talk on
        again = await raw(bob, "POST", "/api/v1/dms", json={"user_ids": [uid(carol), uid(alice)]})
        assert again.status_code == 200 and again.json()["id"] == made["id"]
        assert made["id"] in {x["id"] for x in await bob.rooms()}


async def test_bad_group_direct_rooms_change_nothing(node: ServerThread) -> None:
    alice = await user(node.url, "alice")
    others = [await user(node.url, "o") for _ in range(10)]
    async with closing(alice, *others):
        ids = [uid(o) for o in others]
        before = await alice.rooms()
        cases: list[tuple[Any, int, str]] = [
            ({"user_ids": ids[:1]}, 422, "invalid_input"),  # too few: a schema rule
            ({"user_ids": ids}, 422, "invalid_input"),  # ten others: too many
            ({"user_ids": [ids[0], ids[0]]}, 400, "invalid_input"),
            ({"user_ids": [ids[0], uid(alice)]}, 400, "invalid_input"),
            ({"user_ids": [ids[0], str(uuid.uuid4())]}, 404, "not_found"),
            ({"user_ids": [ids[0], "nope"]}, 400, "invalid_input"),
            ({"user_ids": ids[:2], "user_id": ids[3]}, 422, "invalid_input"),
        ]
        for body, status, code in cases:
            r = await raw(alice, "POST", "/api/v1/dms", json=body)
            assert_error(r, status, code)
        assert await alice.rooms() == before
        nine = await alice.open_group_dm(ids[:9])
        assert len(await alice.members(nine["id"])) == 10


async def test_concurrent_opens_of_one_set_make_one_room(node: ServerThread) -> None:
    people = [await user(node.url, "c") for _ in range(4)]
    async with closing(*people):

        async def open_as(me: ParleyClient) -> str:
            others = [uid(p) for p in people if p is not me]
            return str((await me.open_group_dm(others))["id"])

        ids = await asyncio.gather(*(open_as(p) for p in people * 2))
        assert len(set(ids)) == 1
