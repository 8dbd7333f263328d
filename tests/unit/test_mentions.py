"""The mention grammar and the notification rules, as plain functions."""

from __future__ import annotations

import pytest

from parley.domain.mentions import (
    MAX_MENTIONS,
    Member,
    NotificationKind,
    NotificationLevel,
    default_level,
    level_of,
    notification_targets,
    parse_mentions,
    resolve_mentions,
)
from parley.domain.models import Role, RoomKind, UserId


@pytest.mark.parametrize(
    ("body", "names", "room"),
    [
        ("hi @bob", ["bob"], False),
        ("@Bob, @carol!", ["bob", "carol"], False),
        ("(@bob) @bob @bob", ["bob"], False),
        ("@bob.", ["bob.", "bob"], False),
        ("@a.b-c_d", ["a.b-c_d"], False),
        ("@ab is too short", [], False),
        ("@" + "x" * 33, [], False),
        ("bob@example.com x@bob /@bob -@bob .@bob", [], False),
        ("`@bob` and ``` @carol ``` @dave", ["dave"], False),
        ("```\n@bob\n```\n@carol", ["carol"], False),
        ("  ```py\n@bob\n", [], False),
        ("@room", [], True),
        ("@ROOM please", [], True),
        ("@roomy", ["roomy"], False),
        ("no at sign", [], False),
    ],
)
def test_grammar(body: str, names: list[str], room: bool) -> None:
    assert parse_mentions(body) == (names, room)


def member(user: str, role: Role = Role.MEMBER, level: str | None = None) -> Member:
    return Member(UserId(user), user, role, level)


def test_resolution_takes_members_only_and_the_longer_name_first() -> None:
    members = {m.username: m for m in (member("bob"), member("bob."), member("carol"))}
    assert resolve_mentions(["bob.", "bob", "dave", "carol"], members) == ["bob.", "carol"]
    assert resolve_mentions(["bob.", "bob"], {"bob": members["bob"]}) == ["bob"]
    many = {f"u{i:03}": member(f"u{i:03}") for i in range(MAX_MENTIONS + 10)}
    assert len(resolve_mentions(list(many), many)) == MAX_MENTIONS


def targets(
    kind: RoomKind, members: list[Member], mentions: tuple[str, ...] = (), room: bool = False
) -> list[tuple[str, NotificationKind]]:
    found = notification_targets(
        UserId("me"),
        kind,
        [member("me", Role.OWNER), *members],
        mentions=frozenset(UserId(m) for m in mentions),
        mentions_room=room,
    )
    return [(str(u), k) for u, k in found]


def test_rules_by_kind_and_level() -> None:
    room, dm = RoomKind.ROOM, RoomKind.DM
    assert default_level(room) is NotificationLevel.MENTIONS
    assert default_level(dm) is default_level("group_dm") is NotificationLevel.ALL
    assert level_of("none", dm) is NotificationLevel.NONE
    plain, loud, mute = member("p"), member("l", level="all"), member("m", level="none")
    assert targets(room, [plain, loud, mute]) == [("l", NotificationKind.MESSAGE)]
    assert targets(room, [plain, loud, mute], mentions=("p", "m", "me")) == [
        ("p", NotificationKind.MENTION),
        ("l", NotificationKind.MESSAGE),
    ]
    assert targets(room, [plain, loud, mute], room=True) == [
        ("p", NotificationKind.ROOM_MENTION),
        ("l", NotificationKind.ROOM_MENTION),
    ]
    quiet = member("q", level="mentions")
    assert targets(dm, [plain, quiet]) == [("p", NotificationKind.DM)]
    assert targets("group_dm", [plain, quiet], mentions=("q",)) == [
        ("p", NotificationKind.DM),
        ("q", NotificationKind.MENTION),
    ]


def test_a_reply_rule_is_one_argument_away() -> None:
    found = notification_targets(
        UserId("me"),
        RoomKind.ROOM,
        [member("p"), member("m", level="none")],
        mentions=frozenset(),
        mentions_room=False,
        thread_participants=frozenset({UserId("p"), UserId("m")}),
    )
    assert found == [(UserId("p"), NotificationKind.REPLY)]
