"""Who may do what in a room: pure functions of roles, tested without I/O."""

from __future__ import annotations

from parley.domain.models import Membership, Role, Room, RoomKind, Visibility
from parley.errors import Forbidden, NotFound


def require_member(room: Room | None, membership: Membership | None) -> tuple[Room, Membership]:
    """The room and membership of a member. Outsiders get 404 for a private room (it
    stays unseen) and 403 for a public one (they can see it, and may join)."""
    if room is None:
        raise NotFound("room not found")
    if membership is not None and membership.is_member:
        return room, membership
    if room.visibility is Visibility.PUBLIC and room.kind is RoomKind.ROOM:
        if membership is not None and membership.banned:
            raise Forbidden("you are banned from this room", code="banned")
        raise Forbidden("join this room first", code="not_a_member")
    raise NotFound("room not found")


def require_visible(room: Room | None, membership: Membership | None) -> Room:
    """A room's metadata: members see any room, others only public ones."""
    if room is None:
        raise NotFound("room not found")
    if membership is not None and membership.is_member:
        return room
    if room.visibility is Visibility.PUBLIC and room.kind is RoomKind.ROOM:
        if membership is not None and membership.banned:
            raise Forbidden("you are banned from this room", code="banned")
        return room
    raise NotFound("room not found")


def check_join(room: Room, membership: Membership | None) -> None:
    """Public rooms are open; a private one only to its members (an admin adds, which
    is the invite); a ban closes both. Joining a room one is in changes nothing."""
    if membership is not None and membership.banned:
        raise Forbidden("you are banned from this room", code="banned")
    if membership is not None and membership.is_member:
        return
    if room.kind.direct:
        raise NotFound("room not found")
    if room.visibility is Visibility.PRIVATE:
        raise Forbidden("this room is private: ask an admin to add you")


def check_manage(actor: Membership, target_role: Role | None) -> None:
    """Admins and owners manage members ranked strictly below them."""
    if actor.role is None or actor.role.rank < Role.ADMIN.rank:
        raise Forbidden("only admins and owners can manage members")
    if target_role is not None and target_role.rank >= actor.role.rank:
        raise Forbidden("you cannot manage a member of equal or higher rank")


def check_grant(actor: Membership, role: Role) -> None:
    """A role may be granted only below the granter's own (owners may name admins)."""
    if actor.role is None or role.rank >= actor.role.rank:
        raise Forbidden(f"you cannot grant the role {role.value}")


def can_delete_message(actor: Membership, sender_id: str) -> bool:
    """Senders delete their own messages; admins and owners delete any."""
    if actor.user_id == sender_id:
        return True
    return actor.role is not None and actor.role.rank >= Role.ADMIN.rank
