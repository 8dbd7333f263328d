"""The ports: small abstract interfaces that the domain needs and backends provide.

``Store`` is the source of truth (SQLite or PostgreSQL). ``Bus`` is a doorbell between
nodes: it carries already-encoded events as bytes, at least once, and a node that may
have missed one repairs from the store by ``seq``. ``Cache`` holds what may be lost
(presence, rate-limit counters). Every backend passes one contract suite
(``tests/contract``), the in-memory ones included.
"""

from __future__ import annotations

import abc
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from dataclasses import dataclass

from parley.domain.admin import AuditEntry, AuditRecord, Invite
from parley.domain.mentions import Notification, NotificationLevel
from parley.domain.models import (
    Credentials,
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
from parley.domain.search import Query, SearchFilters, SearchHit


@dataclass(frozen=True, slots=True)
class SendRequest:
    """One message to store; ``client_msg_id`` makes a retry idempotent;
    ``thread_root_id`` makes it a reply (to that message's thread, if it is a reply
    itself)."""

    room_id: RoomId
    sender_id: UserId
    body: str
    client_msg_id: str | None
    thread_root_id: MessageId | None = None


@dataclass(frozen=True, slots=True)
class RefreshGrant:
    """A refresh token that was valid and has just been consumed."""

    user_id: UserId
    family_id: str


class Store(abc.ABC):
    """Durable state. Every method that changes a room appends its events with the
    room's next ``seq`` in the same transaction, and returns them already encoded.

    Writes that produce events are serialised per node by a writer that groups
    concurrent calls into one transaction (group commit); each caller still gets its
    own result or its own error.
    """

    on_events: CommitHook | None = None
    """Called on the event loop after each commit with every event it stored, in
    ``seq`` order per room, before any caller of that commit is answered: delivery
    follows the commit, not the caller. Its failure is logged, never raised."""

    # lifecycle
    @abc.abstractmethod
    async def start(self) -> None:
        """Connect and start the writer; the schema must already be migrated."""

    @abc.abstractmethod
    async def close(self) -> None:
        """Finish queued writes, then disconnect."""

    @abc.abstractmethod
    async def ping(self) -> None:
        """Raise ``Unavailable`` if the database cannot answer."""

    # users
    @abc.abstractmethod
    async def create_user(
        self,
        username: str,
        password_hash: str,
        display_name: str,
        *,
        is_admin: bool = False,
        invite_hash: str | None = None,
    ) -> User:
        """Raise ``UsernameTaken`` for a name already in use. With ``invite_hash``,
        count a use of that invite in the same transaction (``Forbidden`` with code
        ``invalid_invite`` for an unknown, expired or used-up one)."""

    @abc.abstractmethod
    async def get_user(self, user_id: UserId) -> User | None: ...

    @abc.abstractmethod
    async def get_users(self, user_ids: Sequence[UserId]) -> dict[UserId, User]: ...

    @abc.abstractmethod
    async def get_credentials(self, username: str) -> Credentials | None: ...

    # refresh tokens (stored as hashes only)
    @abc.abstractmethod
    async def add_refresh_token(
        self, token_hash: str, user_id: UserId, family_id: str, expires_at: str
    ) -> None: ...

    @abc.abstractmethod
    async def use_refresh_token(
        self, token_hash: str, now: str, *, ip: str | None = None
    ) -> RefreshGrant:
        """Consume a refresh token atomically. A token used before revokes its whole
        family (reuse detection, audited with ``ip``) and raises
        ``Unauthorized(code="invalid_grant")``, as does an unknown, expired or revoked
        one; a revoked token of a deactivated or deleted account raises
        ``Forbidden(code="account_deactivated")``."""

    @abc.abstractmethod
    async def revoke_refresh_family(self, token_hash: str) -> RefreshGrant | None:
        """Revoke the family of this token, and say whose it was; unknown tokens are
        ignored (RFC 7009) and give None."""

    @abc.abstractmethod
    async def set_password(
        self, user_id: UserId, password_hash: str, keep_family: str | None
    ) -> list[str]:
        """Replace the user's password hash and, in the same transaction, revoke
        every refresh family of theirs but ``keep_family`` (the caller's session);
        returns the families revoked."""

    # server administration: each change commits with its audit entry
    @abc.abstractmethod
    async def record_audit(self, record: AuditRecord) -> int:
        """Record an audit entry on its own (for actions the store does not make);
        its id."""

    @abc.abstractmethod
    async def list_audit(
        self,
        *,
        after: int | None = None,
        before: int | None = None,
        limit: int = 100,
        actions: Sequence[str] = (),
    ) -> tuple[list[AuditEntry], bool]:
        """Entries in ascending id: the first ``limit`` after ``after``, or with
        ``before`` the last ``limit`` before it; and whether more lie that way."""

    @abc.abstractmethod
    async def list_users(
        self, *, prefix: str = "", after: str | None = None, limit: int = 100
    ) -> tuple[list[User], bool]:
        """Accounts (deactivated too, deleted not) by username, after ``after``."""

    @abc.abstractmethod
    async def set_user_active(
        self, user_id: UserId, active: bool, record: AuditRecord
    ) -> tuple[User, list[str]]:
        """Deactivate (revoking every refresh family) or reactivate; the user and the
        families whose live sessions must end. No change, no audit entry."""

    @abc.abstractmethod
    async def set_user_admin(self, user_id: UserId, is_admin: bool, record: AuditRecord) -> User:
        """Make or unmake a server admin. No change, no audit entry."""

    @abc.abstractmethod
    async def reset_password(
        self, user_id: UserId, password_hash: str, record: AuditRecord
    ) -> list[str]:
        """Set a password and revoke every refresh family; the families ended."""

    @abc.abstractmethod
    async def set_display_name(self, user_id: UserId, display_name: str) -> User: ...

    @abc.abstractmethod
    async def delete_account(self, user_id: UserId, record: AuditRecord) -> list[str]:
        """Anonymise the account (messages kept, username freed, no password opens
        it) and revoke every refresh family; the families ended."""

    @abc.abstractmethod
    async def get_setting(self, name: str) -> str | None:
        """A server setting admins changed at run time, or None."""

    @abc.abstractmethod
    async def put_setting(self, name: str, value: str, record: AuditRecord) -> None: ...

    @abc.abstractmethod
    async def create_invite(self, invite: Invite, code_hash: str, record: AuditRecord) -> None:
        """Store an invite to register, by the hash of its code."""

    @abc.abstractmethod
    async def list_invites(self, limit: int = 200) -> list[Invite]:
        """The newest invites first."""

    # rooms and membership
    @abc.abstractmethod
    async def create_room(
        self,
        *,
        name: str,
        visibility: Visibility,
        topic: str,
        kind: RoomKind,
        owner_id: UserId,
        other_ids: Sequence[UserId] = (),
    ) -> tuple[Room, list[Event]]:
        """Create a room with its owner (and, for a DM, the other members)."""

    @abc.abstractmethod
    async def get_or_create_dm(self, a: UserId, b: UserId) -> tuple[Room, list[Event], bool]:
        """The one direct room of a pair, created on first call (``True`` if created)."""

    @abc.abstractmethod
    async def get_or_create_group_dm(
        self, creator: UserId, others: Sequence[UserId]
    ) -> tuple[Room, list[Event], bool]:
        """The one group direct room of ``creator`` and ``others`` (as a set), created
        on first call (``True`` if created); a creator who left it joins it again."""

    @abc.abstractmethod
    async def get_room(self, room_id: RoomId) -> Room | None: ...

    @abc.abstractmethod
    async def list_user_rooms(self, user_id: UserId) -> list[RoomSummary]:
        """The user's rooms with read cursors and unread counts, in one query."""

    @abc.abstractmethod
    async def list_public_rooms(self, limit: int = 200) -> list[Room]: ...

    @abc.abstractmethod
    async def get_membership(self, room_id: RoomId, user_id: UserId) -> Membership | None: ...

    @abc.abstractmethod
    async def list_members(self, room_id: RoomId) -> list[tuple[User, Role]]: ...

    @abc.abstractmethod
    async def member_ids(self, room_id: RoomId) -> list[UserId]: ...

    @abc.abstractmethod
    async def user_room_ids(self, user_id: UserId) -> dict[RoomId, int]:
        """The user's rooms and each room's ``last_seq``."""

    @abc.abstractmethod
    async def room_heads(self, room_ids: Sequence[RoomId]) -> dict[RoomId, int]:
        """Each existing room's ``last_seq``, in one query: what a node checks its
        fan-out against."""

    @abc.abstractmethod
    async def shares_room(self, a: UserId, b: UserId) -> bool: ...

    @abc.abstractmethod
    async def join_room(self, room_id: RoomId, user_id: UserId) -> list[Event]:
        """Make a member (idempotent: no event when already one)."""

    @abc.abstractmethod
    async def invite(
        self, room_id: RoomId, user_id: UserId, role: Role, actor_id: UserId
    ) -> list[Event]:
        """Add a user as a member with ``role`` (idempotent for existing members)."""

    @abc.abstractmethod
    async def remove_member(
        self, room_id: RoomId, user_id: UserId, actor_id: UserId, *, ban: bool
    ) -> list[Event]:
        """Leave (actor is the user), kick or ban. A ban stays after the membership."""

    @abc.abstractmethod
    async def update_room(
        self, room_id: RoomId, actor_id: UserId, *, name: str | None, topic: str | None
    ) -> tuple[Room, list[Event]]: ...

    # messages and events
    @abc.abstractmethod
    async def send_message(self, request: SendRequest) -> SendResult:
        """Store one message (grouped with concurrent sends into one commit). Raises
        ``NotFound`` if the sender is not a member at commit time."""

    @abc.abstractmethod
    async def edit_message(
        self, room_id: RoomId, message_id: MessageId, editor_id: UserId, body: str, version: int
    ) -> tuple[Message, list[Event]]:
        """Only the sender edits; ``VersionConflict`` unless ``version`` is current."""

    @abc.abstractmethod
    async def delete_message(
        self, room_id: RoomId, message_id: MessageId, actor_id: UserId, *, any_sender: bool
    ) -> tuple[Message, list[Event]]:
        """Tombstone a message; ``any_sender`` lets admins delete others' messages.
        Deleting a deleted message changes nothing and returns no event."""

    @abc.abstractmethod
    async def set_reaction(
        self, room_id: RoomId, message_id: MessageId, user_id: UserId, emoji: str, *, on: bool
    ) -> tuple[Message, list[Event]]:
        """Add or remove one reaction; no event when nothing changes."""

    @abc.abstractmethod
    async def get_message(self, room_id: RoomId, message_id: MessageId) -> Message | None: ...

    @abc.abstractmethod
    async def list_messages(
        self, room_id: RoomId, *, before_seq: int | None, after_seq: int | None, limit: int
    ) -> tuple[list[Message], bool]:
        """Current state of messages in ascending ``seq``, and whether more exist in
        the direction of travel (older for ``before_seq`` or neither, newer for
        ``after_seq``)."""

    @abc.abstractmethod
    async def list_events(
        self, room_id: RoomId, *, after_seq: int, limit: int
    ) -> tuple[list[Event], bool]: ...

    @abc.abstractmethod
    async def list_thread(
        self, room_id: RoomId, message_id: MessageId, *, after_seq: int, limit: int
    ) -> tuple[Message, list[Message], bool] | None:
        """The thread ``message_id`` belongs to (its own, or its root's if it is a
        reply): the root, its replies after ``after_seq`` ascending, and whether more
        exist. ``None`` for an unknown message."""

    @abc.abstractmethod
    async def set_read(self, room_id: RoomId, user_id: UserId, seq: int) -> int:
        """Move the read cursor forward only (capped at ``last_seq``); return it."""

    @abc.abstractmethod
    def export_room(self, room_id: RoomId) -> AsyncIterator[Event]:
        """Every event of a room in ``seq`` order, streamed."""

    # notifications
    @abc.abstractmethod
    async def list_notifications(
        self, user_id: UserId, *, unread_only: bool, before: str | None, limit: int
    ) -> tuple[list[Notification], int, bool]:
        """The user's notifications newest first (older than the notification id
        ``before``), their unread count, and whether more exist."""

    # search
    @abc.abstractmethod
    async def search(
        self,
        user_id: UserId,
        query: Query,
        filters: SearchFilters,
        *,
        after: tuple[float, int] | None,
        limit: int,
    ) -> list[SearchHit]:
        """The messages ``query`` finds in the rooms ``user_id`` is a member of at
        this moment (checked in the statement that searches), never deleted ones,
        edited ones by their current text only; best first, after the cursor
        ``after`` (a hit's ``(score, doc)``)."""

    @abc.abstractmethod
    async def mark_notifications_read(self, user_id: UserId, ids: Sequence[str] | None) -> int:
        """Mark these of the user's notifications read (None: all); ids of others'
        or of none are ignored. The unread count after."""

    @abc.abstractmethod
    async def set_notification_level(
        self, room_id: RoomId, user_id: UserId, level: NotificationLevel | None
    ) -> None:
        """A member's level for the room (None: the default); ``NotFound`` for a
        non-member."""


NotificationHook = Callable[[Sequence[Notification]], None]
"""Called on the event loop with every notification one committed transaction made."""
BusHandler = Callable[[str, bytes], Awaitable[None] | None]
BusSignal = Callable[[], None]
CommitHook = Callable[[Sequence[Event]], None]
"""Called on the event loop with every event of one committed transaction."""


class Bus(abc.ABC):
    """Fan-out between nodes: publish bytes on a channel, receive what others publish.

    At least once while connected, in publish order per channel from one node; what
    is published while a node is cut off from the broker may be lost. That is why a
    lost and restored connection is signalled (``on_reconnect``): the node then reads
    its rooms' heads from the store, the truth, and repairs what it missed.
    Consumers dedupe by ``(room_id, seq)``.

    ``start`` never waits for a broker that is down: the node keeps serving its local
    clients, ``ping`` raises ``Unavailable`` and ``connected`` is false until the
    connection is made; subscriptions made meanwhile take effect then.
    """

    @abc.abstractmethod
    async def start(self, handler: BusHandler, *, on_reconnect: BusSignal | None = None) -> None:
        """Connect (or keep trying in the background); every message on a subscribed
        channel is passed to ``handler``. ``on_reconnect`` is called each time a lost
        connection is back, after its subscriptions are active again."""

    @abc.abstractmethod
    async def close(self) -> None: ...

    @abc.abstractmethod
    async def publish(self, channel: str, data: bytes) -> None:
        """Publish one message; raise ``Unavailable`` if the broker did not take it."""

    @abc.abstractmethod
    async def publish_batch(self, messages: Sequence[tuple[str, bytes]]) -> None:
        """Publish many messages, in order, at the cost of few round trips; raise
        ``Unavailable`` if the broker did not take them all (some may have gone)."""

    @abc.abstractmethod
    async def subscribe(self, channel: str) -> None:
        """Listen on ``channel``; returns once the broker delivers it to us (or at
        once while disconnected: it is subscribed on connect)."""

    @abc.abstractmethod
    async def unsubscribe(self, channel: str) -> None: ...

    @abc.abstractmethod
    async def ping(self) -> None:
        """Raise ``Unavailable`` unless connected to the broker."""

    @property
    @abc.abstractmethod
    def connected(self) -> bool:
        """Whether the broker connection is up now."""


class Cache(abc.ABC):
    """Loss-tolerant shared state: keys with expiry, counters, sets."""

    @abc.abstractmethod
    async def start(self) -> None: ...

    @abc.abstractmethod
    async def close(self) -> None: ...

    @abc.abstractmethod
    async def ping(self) -> None: ...

    @abc.abstractmethod
    async def get(self, key: str) -> bytes | None: ...

    @abc.abstractmethod
    async def set(self, key: str, value: bytes, *, ttl: float | None = None) -> None: ...

    @abc.abstractmethod
    async def delete(self, key: str) -> None: ...

    @abc.abstractmethod
    async def incr(self, key: str, *, ttl: float) -> int:
        """Increment a counter, starting its expiry when it is created."""

    @abc.abstractmethod
    async def take(self, key: str, *, rate: float, burst: float, cost: float = 1.0) -> float:
        """Take ``cost`` tokens from the token bucket ``key`` (``burst`` tokens when
        full, refilled at ``rate`` a second): 0.0 when taken, else the seconds until
        they would be (nothing is taken then). One round trip on a shared cache."""


class Clock(abc.ABC):
    """Time, so that tests can drive expiry without sleeping."""

    @abc.abstractmethod
    def now(self) -> float:
        """Seconds since the epoch."""

    @abc.abstractmethod
    def monotonic(self) -> float: ...


@dataclass(frozen=True, slots=True)
class ConnectionPresence:
    """One live connection's presence entry; ``node_id`` is the node that refreshes
    it. ``last_active`` is in seconds since the epoch."""

    user_id: UserId
    conn_id: str
    node_id: str
    chosen: str
    last_active: float


class PresenceStore(abc.ABC):
    """Per-connection presence entries with expiry, shared by the nodes.

    Each node writes and refreshes its own connections' entries (one batched call);
    an entry not refreshed within its ``ttl`` is gone, so a node that dies without
    a word takes its users offline within ``ttl`` (plus a reader's poll interval).
    """

    @abc.abstractmethod
    async def put(self, entries: Sequence[ConnectionPresence], ttl: float) -> None:
        """Create or refresh entries, and raise each user's last-active time."""

    @abc.abstractmethod
    async def remove(self, keys: Sequence[tuple[UserId, str]]) -> None:
        """Forget entries of connections that closed, by ``(user_id, conn_id)``."""

    @abc.abstractmethod
    async def get(
        self, user_ids: Sequence[UserId]
    ) -> dict[UserId, tuple[list[ConnectionPresence], float | None]]:
        """Live entries and last-active time of each user, in one call."""

    @abc.abstractmethod
    async def expired(self, limit: int = 1000) -> list[UserId]:
        """Delete entries whose ``ttl`` has run out and return their users (each
        once). Every node calls it periodically; each lapsed entry is reported to
        exactly one caller, which tells the others: that is how a node that died
        without a word takes its users offline."""

    async def start(self) -> None:
        """Connect (backends that need to)."""
        return None

    async def close(self) -> None:
        """Disconnect; entries stay until they expire."""
        return None

    async def ping(self) -> None:
        """Raise if the backend cannot answer."""
        return None
