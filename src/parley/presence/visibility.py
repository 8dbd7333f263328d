"""Who may see whose presence: users who share a room.

Checked once per subscribe for a whole list of ids, against the viewer's set of
co-members, computed once and reused for a short time (``ttl``), not one query per
id. The relation is symmetric (sharing a room is), which ``revalidate`` relies on.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Collection, Sequence
from typing import Protocol

from parley.domain.models import UserId
from parley.ports import Clock, Store

CoMembersFn = Callable[[UserId], Awaitable[Collection[UserId]]]


class Visibility(Protocol):
    """What the presence service asks; ``forget`` drops what is cached of a user
    (their rooms changed)."""

    async def visible(self, viewer: UserId, targets: Sequence[UserId]) -> Collection[UserId]: ...

    def forget(self, user_id: UserId) -> None: ...


def store_co_members(store: Store) -> CoMembersFn:
    """Co-members from the store: the members of each of the viewer's rooms."""

    async def co_members(viewer: UserId) -> Collection[UserId]:
        members: set[UserId] = {viewer}
        for room_id in await store.user_room_ids(viewer):
            members.update(await store.member_ids(room_id))
        return members

    return co_members


class CoMembers:
    """``Visibility`` as "shares a room", with each viewer's co-members cached."""

    def __init__(
        self, co_members: CoMembersFn, clock: Clock, *, ttl: float = 30.0, max_viewers: int = 10_000
    ) -> None:
        self._co_members = co_members
        self._clock = clock
        self._ttl = ttl
        self._max = max_viewers
        self._cache: dict[UserId, tuple[float, frozenset[UserId]]] = {}

    @classmethod
    def of_store(cls, store: Store, clock: Clock, *, ttl: float = 30.0) -> CoMembers:
        return cls(store_co_members(store), clock, ttl=ttl)

    async def co_members(self, viewer: UserId) -> frozenset[UserId]:
        """The users who share a room with ``viewer`` (the viewer included)."""
        now = self._clock.monotonic()
        cached = self._cache.get(viewer)
        if cached is not None and now - cached[0] < self._ttl:
            return cached[1]
        members = frozenset(await self._co_members(viewer)) | {viewer}
        self._cache.pop(viewer, None)
        self._cache[viewer] = (now, members)
        while len(self._cache) > self._max:  # oldest first: dicts keep insertion order
            del self._cache[next(iter(self._cache))]
        return members

    async def visible(self, viewer: UserId, targets: Sequence[UserId]) -> set[UserId]:
        members = await self.co_members(viewer)
        return {t for t in targets if t in members}

    def forget(self, user_id: UserId) -> None:
        self._cache.pop(user_id, None)
