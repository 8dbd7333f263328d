"""Search through the public API on a real node, on SQLite and on PostgreSQL: words,
phrases, exclusions, CJK substrings, filters, membership at query time, deletion,
edits, bad input, paging; and that the index keeps no text at rest."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from parley.testing.server import ServerThread
from tests.component.conftest import Account, Api, assert_error, node_on


@pytest.fixture(scope="module", params=["sqlite", "postgres"])
def search_server(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[ServerThread]:
    with node_on(request.param, tmp_path_factory.mktemp("search"), "parley_search") as running:
        yield running


@pytest.fixture
def sapi(search_server: ServerThread) -> Iterator[Api]:
    client = Api(search_server)
    yield client
    client.close()


def room(owner: Account, *others: Account) -> str:
    r = owner.post("/api/v1/rooms", json={"name": "search", "visibility": "private"})
    assert r.status_code == 201, r.text
    room_id: str = r.json()["id"]
    for other in others:
        assert owner.post(
            f"/api/v1/rooms/{room_id}/members", json={"user_id": other.id}
        ).status_code in (200, 201)
    return room_id


def say(user: Account, room_id: str, body: str) -> dict[str, Any]:
    r = user.post(f"/api/v1/rooms/{room_id}/messages", json={"body": body})
    assert r.status_code == 201, r.text
    message: dict[str, Any] = r.json()
    return message


def found(user: Account, q: str, **params: Any) -> list[str]:
    """The bodies of every result, following the cursor to the end."""
    bodies: list[str] = []
    cursor = None
    while True:
        query = {"q": q, **params} | ({"cursor": cursor} if cursor else {})
        r = user.get("/api/v1/search", params=query)
        assert r.status_code == 200, r.text
        page = r.json()
        assert set(page) == {"results", "next_cursor"}
        for result in page["results"]:
            assert result["room_id"] == result["message"]["room_id"]
            assert not result["message"]["deleted"]
            bodies.append(result["message"]["body"])
        cursor = page["next_cursor"]
        if cursor is None:
            return bodies


def tag() -> str:
    """A word no other test uses, so results are this test's alone."""
    return "t" + uuid.uuid4().hex[:10]


def test_words_phrases_and_exclusions(sapi: Api) -> None:
    alice = sapi.user()
    r = room(alice)
    t = tag()
    say(alice, r, f"{t} the quick brown fox")
    say(alice, r, f"{t} the brown quick dog")
    say(alice, r, f"{t} a slow Brown cow!")
    assert sorted(found(alice, f"{t} brown")) == sorted(
        [f"{t} the quick brown fox", f"{t} the brown quick dog", f"{t} a slow Brown cow!"]
    )
    assert sorted(found(alice, f"{t} quick BROWN")) == sorted(
        [f"{t} the quick brown fox", f"{t} the brown quick dog"]
    )
    assert found(alice, f'{t} "quick brown"') == [f"{t} the quick brown fox"]
    assert found(alice, f'"{t} a slow"') == [f"{t} a slow Brown cow!"]
    assert sorted(found(alice, f"{t} brown -fox")) == sorted(
        [f"{t} the brown quick dog", f"{t} a slow Brown cow!"]
    )
    assert found(alice, f'{t} -"quick brown" -cow') == [f"{t} the brown quick dog"]
    assert found(alice, f"{t} zebra") == []


def test_highlight_marks_the_words_and_escapes_the_rest(sapi: Api) -> None:
    alice = sapi.user()
    r = room(alice)
    t = tag()
    say(alice, r, f"<b>{t}</b> & Fox")
    [result] = alice.get("/api/v1/search", params={"q": f"{t} fox"}).json()["results"]
    assert result["highlight"] == f"&lt;b&gt;<mark>{t}</mark>&lt;/b&gt; &amp; <mark>Fox</mark>"


def test_cjk_is_found_by_substring(sapi: Api) -> None:
    alice = sapi.user()
    r = room(alice)
    t = tag()
    say(alice, r, f"{t} 東京都に行きます")
    say(alice, r, f"{t} 京都は美しい")
    say(alice, r, f"{t} 서울특별시")
    assert found(alice, f"{t} 東京") == [f"{t} 東京都に行きます"]
    assert sorted(found(alice, f"{t} 京都")) == sorted(
        [f"{t} 東京都に行きます", f"{t} 京都は美しい"]
    )
    assert found(alice, f"{t} 東京都") == [f"{t} 東京都に行きます"]
    assert sorted(found(alice, f"{t} 京")) == sorted([f"{t} 東京都に行きます", f"{t} 京都は美しい"])
    assert found(alice, f"{t} 특별") == [f"{t} 서울특별시"]
    assert found(alice, f"{t} 京都 -東京") == [f"{t} 京都は美しい"]
    [hit] = alice.get("/api/v1/search", params={"q": f"{t} 東京"}).json()["results"]
    assert "<mark>東京</mark>都" in hit["highlight"]


def test_filters(sapi: Api) -> None:
    alice, bob = sapi.user(), sapi.user()
    one, two = room(alice, bob), room(alice, bob)
    t = tag()
    first = say(alice, one, f"{t} one alice")
    say(bob, one, f"{t} one bob")
    say(alice, two, f"{t} two alice")
    assert sorted(found(alice, t, room_id=two)) == [f"{t} two alice"]
    assert sorted(found(alice, t, sender_id=bob.id)) == [f"{t} one bob"]
    assert found(alice, t, room_id=one, sender_id=alice.id) == [f"{t} one alice"]
    assert found(alice, t, before=first["created_at"]) == []
    assert sorted(found(alice, t, after=first["created_at"])) == sorted(
        [f"{t} one bob", f"{t} two alice"]
    )
    assert len(found(alice, t, after="2000-01-01T00:00:00+02:00")) == 3
    assert found(alice, t, before="2000-01-01T00:00:00Z") == []


def test_only_rooms_the_caller_is_a_member_of_now(sapi: Api) -> None:
    alice, bob, eve = sapi.user(), sapi.user(), sapi.user()
    r = room(alice, bob)
    t = tag()
    say(alice, r, f"{t} secret plans")
    assert found(bob, t) == [f"{t} secret plans"]
    assert found(eve, t) == []
    assert found(eve, t, room_id=r) == []  # a room of others: nothing, no error
    assert bob.post(f"/api/v1/rooms/{r}/leave").status_code in (200, 204)
    assert found(bob, t) == []
    assert found(bob, t, room_id=r) == []
    assert found(alice, t) == [f"{t} secret plans"]


def test_deleted_never_edited_by_current_text(sapi: Api) -> None:
    alice = sapi.user()
    r = room(alice)
    t = tag()
    gone = say(alice, r, f"{t} doomed words")
    kept = say(alice, r, f"{t} original wording")
    assert alice.delete(f"/api/v1/rooms/{r}/messages/{gone['id']}").status_code in (200, 204)
    edit = alice.patch(
        f"/api/v1/rooms/{r}/messages/{kept['id']}",
        json={"body": f"{t} revised phrasing", "version": 1},
    )
    assert edit.status_code == 200, edit.text
    assert found(alice, f"{t} doomed") == []
    assert found(alice, f"{t} original") == []
    assert found(alice, f"{t} revised") == [f"{t} revised phrasing"]
    assert found(alice, t) == [f"{t} revised phrasing"]


@pytest.mark.parametrize(
    "params",
    [
        {"q": ""},
        {"q": "   "},
        {"q": '"unclosed'},
        {"q": "-only -exclusions"},
        {"q": "!!! ???"},
        {"q": "x" * 501},
        {"q": "fine", "cursor": "not a cursor"},
        {"q": "fine", "cursor": "WzEsMl0x"},
        {"q": "fine", "cursor": "WyJhIiwyXQ"},
    ],
)
def test_a_malformed_query_or_cursor_is_400(sapi: Api, params: dict[str, Any]) -> None:
    alice = sapi.user()
    assert_error(alice.get("/api/v1/search", params=params), 400, "invalid_input")


@pytest.mark.parametrize(
    "params",
    [
        {},
        {"q": "fine", "limit": 0},
        {"q": "fine", "limit": 101},
        {"q": "fine", "room_id": "not-a-uuid"},
        {"q": "fine", "after": "yesterday"},
    ],
)
def test_parameters_of_the_wrong_shape_are_422(sapi: Api, params: dict[str, Any]) -> None:
    alice = sapi.user()
    assert_error(alice.get("/api/v1/search", params=params), 422, "invalid_input")


def test_search_needs_a_token(sapi: Api) -> None:
    assert_error(sapi.anon.get("/api/v1/search", params={"q": "x"}), 401)


def test_paging_covers_every_result_once(sapi: Api) -> None:
    alice = sapi.user()
    r = room(alice)
    t = tag()
    bodies = [f"{t} " + " ".join(["again"] * (i % 5 + 1)) + f" n{i}" for i in range(23)]
    for body in bodies:
        say(alice, r, body)
    pages: list[list[str]] = []
    cursor = None
    while True:
        params = {"q": f"{t} again", "limit": 5} | ({"cursor": cursor} if cursor else {})
        page = alice.get("/api/v1/search", params=params).json()
        pages.append([x["message"]["body"] for x in page["results"]])
        cursor = page["next_cursor"]
        if cursor is None:
            break
    assert [len(p) for p in pages] == [5, 5, 5, 5, 3]
    everything = [b for p in pages for b in p]
    assert sorted(everything) == sorted(bodies)
    # best first: more occurrences of the word rank higher
    assert everything[0].count("again") >= everything[-1].count("again")


def test_the_index_holds_no_text_at_rest(search_server: ServerThread, sapi: Api) -> None:
    """Words sent, edited and searched appear nowhere in the database: the SQLite file
    and its WAL, or any table of the PostgreSQL database."""
    alice = sapi.user()
    r = room(alice)
    marker = "zq" + uuid.uuid4().hex[:12]
    cjk = "秘密の合言葉"
    sent = say(alice, r, f"{marker} {cjk} plaintextword{marker}")
    say(alice, r, f"another {marker}")
    alice.patch(
        f"/api/v1/rooms/{r}/messages/{sent['id']}",
        json={"body": f"{marker} {cjk} edited{marker}", "version": 1},
    )
    assert len(found(alice, marker)) == 2
    assert found(alice, "合言葉") == [f"{marker} {cjk} edited{marker}"]
    needles = [marker.encode(), cjk.encode(), "合言".encode()]
    url = search_server.settings.database_url
    if url is None:
        directory = Path(search_server.settings.data_dir)
        for path in directory.iterdir():
            data = path.read_bytes()
            assert not [n for n in needles if n in data], path.name
        return
    import asyncio

    import asyncpg

    async def dump() -> bytes:
        conn = await asyncpg.connect(url)
        try:
            tables = await conn.fetch("SELECT tablename FROM pg_tables WHERE schemaname = 'public'")
            out = []
            for (name,) in tables:
                for row in await conn.fetch(f'SELECT t::text FROM "{name}" t'):
                    out.append(row[0])
            return "\n".join(out).encode()
        finally:
            await conn.close()

    data = asyncio.run(dump())
    # bytea columns come out as hex
    assert not [n for n in needles if n in data or n.hex().encode() in data]
