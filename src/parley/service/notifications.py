"""The notification feed and per-room levels, as the API offers them.

Notifications are made by the store inside each send's transaction (the rules are
``parley.domain.mentions``); this layer reads the caller's own feed, marks it read
and sets a member's level for a room. Only members set a level; a room one may not
see is 404 (``permissions.require_member``).
"""

from __future__ import annotations

from collections.abc import Sequence

from parley.domain import permissions
from parley.domain.mentions import Notification, NotificationLevel, level_of
from parley.domain.models import RoomId, UserId
from parley.errors import InvalidInput
from parley.ports import Store

MAX_PAGE = 200
MAX_IDS = 500


class NotificationService:
    """Each call acts on the caller's own notifications or membership only."""

    def __init__(self, store: Store) -> None:
        self.store = store

    async def feed(
        self,
        actor: UserId,
        *,
        unread_only: bool = False,
        before: str | None = None,
        limit: int = 50,
    ) -> tuple[list[Notification], int, bool]:
        if not 1 <= limit <= MAX_PAGE:
            raise InvalidInput(f"limit: 1 to {MAX_PAGE}")
        return await self.store.list_notifications(
            actor, unread_only=unread_only, before=before, limit=limit
        )

    async def mark_read(self, actor: UserId, ids: Sequence[str] | None) -> int:
        """``ids`` None: all. Ids that are not the caller's are ignored."""
        if ids is not None and len(ids) > MAX_IDS:
            raise InvalidInput(f"ids: at most {MAX_IDS}")
        return await self.store.mark_notifications_read(actor, ids)

    async def level(self, actor: UserId, room_id: RoomId) -> NotificationLevel:
        room = await self.store.get_room(room_id)
        membership = await self.store.get_membership(room_id, actor) if room else None
        room, membership = permissions.require_member(room, membership)
        return level_of(membership.notify_level, room.kind)

    async def set_level(
        self, actor: UserId, room_id: RoomId, level: NotificationLevel
    ) -> NotificationLevel:
        room = await self.store.get_room(room_id)
        membership = await self.store.get_membership(room_id, actor) if room else None
        permissions.require_member(room, membership)
        await self.store.set_notification_level(room_id, actor, level)
        return level
