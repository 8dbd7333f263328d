"""Rooms, membership and messages as the API offers them.

Each call checks who may do it (``parley.domain.permissions``) and changes state
through the ``Store`` in one transaction. Delivery is not the caller's business: the
store's writer hands every committed event to its commit hook (the hub's
``committed``) before it answers, Zulip's ``send_event_on_commit`` discipline with no
caller in between to forget, cancel or fail it. Role checks
read the membership first; sends re-check membership inside the write transaction,
so a kicked user cannot slip a message in after the kick.
"""

from __future__ import annotations

from parley.domain import permissions, validation
from parley.domain.admin import AuditAction, AuditRecord
from parley.domain.models import (
    Event,
    Membership,
    Message,
    MessageId,
    Role,
    Room,
    RoomId,
    RoomKind,
    RoomSummary,
    SendResult,
    User,
    UserId,
    Visibility,
)
from parley.errors import Forbidden, InvalidInput, NotFound
from parley.ports import SendRequest, Store
from parley.service.admin import removal

MAX_PAGE = 200


class ChatService:
    """The application layer every edge calls: REST, WebSocket, CLI."""

    def __init__(self, store: Store, *, max_body_bytes: int = 16384):
        self.store = store
        self.max_body_bytes = max_body_bytes

    async def _membership(self, room_id: RoomId, user_id: UserId) -> Membership | None:
        return await self.store.get_membership(room_id, user_id)

    async def _member_room(self, actor: UserId, room_id: RoomId) -> tuple[Room, Membership]:
        room = await self.store.get_room(room_id)
        membership = await self._membership(room_id, actor) if room else None
        return permissions.require_member(room, membership)

    # rooms
    async def create_room(
        self, actor: UserId, name: str, visibility: Visibility, topic: str = ""
    ) -> Room:
        room, _ = await self.store.create_room(
            name=validation.check_room_name(name),
            visibility=visibility,
            topic=validation.check_topic(topic),
            kind=RoomKind.ROOM,
            owner_id=actor,
        )
        return room

    async def update_room(
        self, actor: UserId, room_id: RoomId, *, name: str | None, topic: str | None
    ) -> Room:
        room, membership = await self._member_room(actor, room_id)
        if room.kind.direct:
            raise Forbidden("direct rooms have no settings to change")
        permissions.check_manage(membership, None)
        updated, _ = await self.store.update_room(
            room_id,
            actor,
            name=validation.check_room_name(name) if name is not None else None,
            topic=validation.check_topic(topic) if topic is not None else None,
        )
        return updated

    async def list_rooms(self, actor: UserId) -> list[RoomSummary]:
        return await self.store.list_user_rooms(actor)

    async def public_rooms(self) -> list[Room]:
        return await self.store.list_public_rooms()

    async def get_room(self, actor: UserId, room_id: RoomId) -> Room:
        room = await self.store.get_room(room_id)
        membership = await self._membership(room_id, actor) if room else None
        return permissions.require_visible(room, membership)

    async def join(self, actor: UserId, room_id: RoomId) -> Room:
        room = await self.store.get_room(room_id)
        if room is None:
            raise NotFound("room not found")
        membership = await self._membership(room_id, actor)
        permissions.check_join(room, membership)
        await self.store.join_room(room_id, actor)
        return await self.store.get_room(room_id) or room

    async def leave(self, actor: UserId, room_id: RoomId) -> None:
        room, _ = await self._member_room(actor, room_id)
        if room.kind is RoomKind.DM:
            # A group direct room can be left: the others talk on, and opening the
            # same set again brings the one who left back (``open_group_dm``).
            raise Forbidden("direct rooms cannot be left")
        await self.store.remove_member(room_id, actor, actor, ban=False)

    async def members(self, actor: UserId, room_id: RoomId) -> list[tuple[User, Role]]:
        await self._member_room(actor, room_id)
        return await self.store.list_members(room_id)

    async def add_member(
        self, actor: UserId, room_id: RoomId, user_id: UserId, role: Role = Role.MEMBER
    ) -> None:
        room, membership = await self._member_room(actor, room_id)
        if room.kind.direct:
            raise Forbidden("a direct room's people are fixed: open a direct room with them")
        permissions.check_manage(membership, None)
        permissions.check_grant(membership, role)
        if await self.store.get_user(user_id) is None:
            raise NotFound("user not found")
        events = await self.store.invite(room_id, user_id, role, actor)
        if events and role is not Role.MEMBER:
            await self.store.record_audit(
                AuditRecord(
                    AuditAction.ROLE_GRANTED,
                    actor_id=actor,
                    target_user_id=user_id,
                    target_room_id=room_id,
                    details={"role": role.value},
                )
            )

    async def remove_member(
        self, actor: UserId, room_id: RoomId, user_id: UserId, *, ban: bool
    ) -> None:
        room, membership = await self._member_room(actor, room_id)
        if room.kind.direct:
            raise Forbidden("a direct room's people are fixed: nobody can be removed")
        if user_id == actor:
            # Forbidden, not InvalidInput: the request is well formed; who sends it is
            # what makes it refused (a schema cannot say "not yourself").
            raise Forbidden("use leave to leave a room", code="cannot_remove_self")
        target = await self._membership(room_id, user_id)
        target_role = target.role if target else None
        permissions.check_manage(membership, target_role)
        if target_role is None and not ban:
            raise NotFound("not a member of this room")
        if ban and await self.store.get_user(user_id) is None:
            raise NotFound("user not found")
        if await self.store.remove_member(room_id, user_id, actor, ban=ban) or ban:
            action = AuditAction.BAN if ban else AuditAction.KICK
            await self.store.record_audit(
                AuditRecord(action, actor_id=actor, target_user_id=user_id, target_room_id=room_id)
            )

    async def open_dm(self, actor: UserId, other: UserId) -> tuple[Room, bool]:
        if other == actor:
            raise Forbidden("a direct room needs another user", code="dm_with_self")
        if await self.store.get_user(other) is None:
            raise NotFound("user not found")
        room, _, created = await self.store.get_or_create_dm(actor, other)
        return room, created

    async def open_group_dm(self, actor: UserId, others: list[str]) -> tuple[Room, bool]:
        """The one group direct room of the caller and 2 to 9 others (as a set):
        made on first call, the same room after (the caller joins it again if they
        had left). An unknown user is ``NotFound``, as for a 1:1 room."""
        people = [UserId(u) for u in validation.check_group_others(others, actor)]
        if len(await self.store.get_users(people)) != len(people):
            raise NotFound("user not found")
        room, _, created = await self.store.get_or_create_group_dm(actor, people)
        return room, created

    # messages
    async def send(
        self,
        actor: UserId,
        room_id: RoomId,
        body: str,
        client_msg_id: str | None,
        thread_root_id: str | None = None,
    ) -> SendResult:
        """Store a message (a reply, with ``thread_root_id``). Membership and the
        thread's root are checked inside the commit."""
        request = SendRequest(
            room_id=room_id,
            sender_id=actor,
            body=validation.check_body(body, self.max_body_bytes),
            client_msg_id=validation.check_client_msg_id(client_msg_id),
            thread_root_id=(
                MessageId(validation.check_id(thread_root_id, "thread_root_id"))
                if thread_root_id is not None
                else None
            ),
        )
        try:
            result = await self.store.send_message(request)
        except NotFound:
            # Only on this error path: tell an outsider of a public room to join.
            await self._member_room(actor, room_id)
            raise
        return result

    async def messages(
        self,
        actor: UserId,
        room_id: RoomId,
        *,
        before_seq: int | None = None,
        after_seq: int | None = None,
        limit: int = 50,
    ) -> tuple[list[Message], bool]:
        await self._member_room(actor, room_id)
        if before_seq is not None and after_seq is not None:
            # Both: the window between them, oldest first (a schema cannot forbid
            # two optional query parameters together, so they mean something).
            page, more = await self.store.list_messages(
                room_id, before_seq=None, after_seq=after_seq, limit=_page(limit)
            )
            inside = [m for m in page if m.seq < before_seq]
            return inside, more and len(inside) == len(page)
        return await self.store.list_messages(
            room_id, before_seq=before_seq, after_seq=after_seq, limit=_page(limit)
        )

    async def thread(
        self,
        actor: UserId,
        room_id: RoomId,
        message_id: MessageId,
        *,
        after_seq: int = 0,
        limit: int = 50,
    ) -> tuple[Message, list[Message], bool]:
        """The thread a message belongs to: the root and a page of its replies. A
        message with no reply is a root with an empty page; a reply gives its
        root's thread."""
        await self._member_room(actor, room_id)
        if after_seq < 0:
            raise InvalidInput("after_seq must be >= 0")
        found = await self.store.list_thread(
            room_id, message_id, after_seq=after_seq, limit=_page(limit)
        )
        if found is None:
            raise NotFound("message not found")
        return found

    async def events(
        self, actor: UserId, room_id: RoomId, *, after_seq: int = 0, limit: int = 100
    ) -> tuple[list[Event], bool]:
        await self._member_room(actor, room_id)
        return await self.store.list_events(room_id, after_seq=after_seq, limit=_page(limit))

    async def edit(
        self, actor: UserId, room_id: RoomId, message_id: MessageId, body: str, version: int
    ) -> Message:
        await self._member_room(actor, room_id)
        message, _ = await self.store.edit_message(
            room_id, message_id, actor, validation.check_body(body, self.max_body_bytes), version
        )
        return message

    async def delete(self, actor: UserId, room_id: RoomId, message_id: MessageId) -> Message:
        _, membership = await self._member_room(actor, room_id)
        existing = await self.store.get_message(room_id, message_id)
        if existing is None:
            raise NotFound("message not found")
        if not permissions.can_delete_message(membership, existing.sender_id):
            raise Forbidden("only the sender, admins and owners can delete a message")
        any_sender = existing.sender_id != actor
        message, events = await self.store.delete_message(
            room_id, message_id, actor, any_sender=any_sender
        )
        if any_sender and events:
            await self.store.record_audit(
                removal(actor, existing, f"room_{membership.role or Role.MEMBER}")
            )
        return message

    async def react(
        self, actor: UserId, room_id: RoomId, message_id: MessageId, emoji: str, *, on: bool
    ) -> Message:
        await self._member_room(actor, room_id)
        message, _ = await self.store.set_reaction(
            room_id, message_id, actor, validation.check_emoji(emoji), on=on
        )
        return message

    async def mark_read(self, actor: UserId, room_id: RoomId, seq: int) -> int:
        await self._member_room(actor, room_id)
        if seq < 0:
            raise InvalidInput("seq must be >= 0")
        return await self.store.set_read(room_id, actor, seq)


def _page(limit: int) -> int:
    if not 1 <= limit <= MAX_PAGE:
        raise InvalidInput(f"limit: 1 to {MAX_PAGE}")
    return limit
