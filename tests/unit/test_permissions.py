"""Who may do what in a room: ``parley.domain.permissions``, with no I/O."""

from __future__ import annotations

import pytest

from parley.domain import permissions
from parley.domain.models import Membership, Role, Room, RoomId, RoomKind, UserId, Visibility
from parley.errors import Forbidden, NotFound

ROOM = RoomId("r1")


def room(visibility: Visibility = Visibility.PUBLIC, kind: RoomKind = RoomKind.ROOM) -> Room:
    return Room(ROOM, "general", visibility, "", kind, "2025-01-01T00:00:00.000000Z", 3)


def member(role: Role | None, *, user: str = "u1", banned: bool = False) -> Membership:
    return Membership(ROOM, UserId(user), role, banned=banned)


PUBLIC = room()
PRIVATE = room(Visibility.PRIVATE)
DM = room(Visibility.PRIVATE, RoomKind.DM)
MEMBERS = [member(Role.MEMBER), member(Role.ADMIN), member(Role.OWNER)]
OUTSIDERS = [None, member(None), member(None, banned=True)]


class TestRequireMember:
    @pytest.mark.parametrize("target", [PUBLIC, PRIVATE, DM])
    @pytest.mark.parametrize("membership", MEMBERS)
    def test_members_get_the_room_and_membership(
        self, target: Room, membership: Membership
    ) -> None:
        assert permissions.require_member(target, membership) == (target, membership)

    @pytest.mark.parametrize("target", [PRIVATE, DM])
    @pytest.mark.parametrize("membership", OUTSIDERS)
    def test_private_rooms_stay_unseen(self, target: Room, membership: Membership | None) -> None:
        with pytest.raises(NotFound):
            permissions.require_member(target, membership)

    @pytest.mark.parametrize("membership", [None, member(None)])
    def test_outsiders_of_a_public_room_must_join_first(
        self, membership: Membership | None
    ) -> None:
        with pytest.raises(Forbidden) as caught:
            permissions.require_member(PUBLIC, membership)
        assert caught.value.code == "not_a_member"

    def test_the_banned_are_told_so_in_a_public_room(self) -> None:
        with pytest.raises(Forbidden) as caught:
            permissions.require_member(PUBLIC, member(None, banned=True))
        assert caught.value.code == "banned"

    def test_a_missing_room_is_not_found(self) -> None:
        with pytest.raises(NotFound):
            permissions.require_member(None, member(Role.OWNER))


class TestRequireVisible:
    @pytest.mark.parametrize("membership", [None, member(None), *MEMBERS])
    def test_public_rooms_are_visible_to_all(self, membership: Membership | None) -> None:
        assert permissions.require_visible(PUBLIC, membership) is PUBLIC

    def test_the_banned_are_told_so_in_a_public_room(self) -> None:
        with pytest.raises(Forbidden) as caught:
            permissions.require_visible(PUBLIC, member(None, banned=True))
        assert caught.value.code == "banned"

    @pytest.mark.parametrize("target", [PRIVATE, DM])
    @pytest.mark.parametrize("membership", MEMBERS)
    def test_members_see_private_rooms(self, target: Room, membership: Membership) -> None:
        assert permissions.require_visible(target, membership) is target

    @pytest.mark.parametrize("target", [PRIVATE, DM])
    @pytest.mark.parametrize("membership", OUTSIDERS)
    def test_private_rooms_are_hidden_from_others(
        self, target: Room, membership: Membership | None
    ) -> None:
        with pytest.raises(NotFound):
            permissions.require_visible(target, membership)

    def test_a_missing_room_is_not_found(self) -> None:
        with pytest.raises(NotFound):
            permissions.require_visible(None, None)


class TestCheckJoin:
    @pytest.mark.parametrize("membership", [None, member(None)])
    def test_anyone_joins_a_public_room(self, membership: Membership | None) -> None:
        permissions.check_join(PUBLIC, membership)

    @pytest.mark.parametrize("target", [PUBLIC, PRIVATE, DM])
    @pytest.mark.parametrize("membership", MEMBERS)
    def test_joining_again_changes_nothing(self, target: Room, membership: Membership) -> None:
        permissions.check_join(target, membership)

    @pytest.mark.parametrize("target", [PUBLIC, PRIVATE])
    def test_a_ban_closes_every_room(self, target: Room) -> None:
        with pytest.raises(Forbidden) as caught:
            permissions.check_join(target, member(None, banned=True))
        assert caught.value.code == "banned"

    def test_a_ban_wins_over_a_role(self) -> None:
        with pytest.raises(Forbidden) as caught:
            permissions.check_join(PUBLIC, member(Role.MEMBER, banned=True))
        assert caught.value.code == "banned"

    @pytest.mark.parametrize("membership", [None, member(None)])
    def test_private_rooms_need_an_invite(self, membership: Membership | None) -> None:
        with pytest.raises(Forbidden) as caught:
            permissions.check_join(PRIVATE, membership)
        assert caught.value.code == "forbidden"

    @pytest.mark.parametrize("membership", [None, member(None)])
    def test_direct_rooms_cannot_be_joined_nor_seen(self, membership: Membership | None) -> None:
        with pytest.raises(NotFound):
            permissions.check_join(DM, membership)


class TestCheckManage:
    @pytest.mark.parametrize(
        ("actor", "target"),
        [
            (Role.ADMIN, None),
            (Role.ADMIN, Role.MEMBER),
            (Role.OWNER, None),
            (Role.OWNER, Role.MEMBER),
            (Role.OWNER, Role.ADMIN),
        ],
    )
    def test_managing_lower_ranks(self, actor: Role, target: Role | None) -> None:
        permissions.check_manage(member(actor), target)

    @pytest.mark.parametrize(
        ("actor", "target"),
        [
            (None, None),
            (Role.MEMBER, None),
            (Role.MEMBER, Role.MEMBER),
            (Role.ADMIN, Role.ADMIN),
            (Role.ADMIN, Role.OWNER),
            (Role.OWNER, Role.OWNER),
        ],
    )
    def test_not_managing_equal_or_higher_ranks(
        self, actor: Role | None, target: Role | None
    ) -> None:
        with pytest.raises(Forbidden):
            permissions.check_manage(member(actor), target)


class TestCheckGrant:
    @pytest.mark.parametrize(
        ("actor", "role"),
        [(Role.ADMIN, Role.MEMBER), (Role.OWNER, Role.MEMBER), (Role.OWNER, Role.ADMIN)],
    )
    def test_granting_below_ones_own_rank(self, actor: Role, role: Role) -> None:
        permissions.check_grant(member(actor), role)

    @pytest.mark.parametrize(
        ("actor", "role"),
        [
            (None, Role.MEMBER),
            (Role.MEMBER, Role.MEMBER),
            (Role.ADMIN, Role.ADMIN),
            (Role.ADMIN, Role.OWNER),
            (Role.OWNER, Role.OWNER),
        ],
    )
    def test_not_granting_ones_own_rank_or_above(self, actor: Role | None, role: Role) -> None:
        with pytest.raises(Forbidden):
            permissions.check_grant(member(actor), role)


class TestCanDeleteMessage:
    @pytest.mark.parametrize("role", [Role.MEMBER, Role.ADMIN, Role.OWNER])
    def test_senders_delete_their_own(self, role: Role) -> None:
        assert permissions.can_delete_message(member(role, user="alice"), "alice")

    @pytest.mark.parametrize(
        ("role", "allowed"), [(Role.MEMBER, False), (Role.ADMIN, True), (Role.OWNER, True)]
    )
    def test_only_admins_and_owners_delete_others(self, role: Role, allowed: bool) -> None:
        assert permissions.can_delete_message(member(role, user="alice"), "bob") is allowed

    def test_a_former_member_deletes_only_their_own(self) -> None:
        assert not permissions.can_delete_message(member(None, user="alice"), "bob")
        assert permissions.can_delete_message(member(None, user="alice"), "alice")
