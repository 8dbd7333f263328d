"""Server administration as the API and ``parley admin`` offer it: accounts, the
registration mode, invites, moderation of any message, and the audit log.

``require_admin`` is the one check of the admin API (the gateway runs it before every
``/admin`` route); the CLI works on the database directly as the operator, with no
actor. Every change is recorded in the audit log in its own transaction.
"""

from __future__ import annotations

import hashlib
import secrets
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta

from parley.auth.passwords import Passwords
from parley.domain import validation
from parley.domain.admin import AuditAction, AuditEntry, AuditRecord, Invite, RegistrationMode
from parley.domain.models import Message, MessageId, RoomId, User, UserId, format_ts, new_id
from parley.errors import Forbidden, InvalidInput, NotFound
from parley.ports import Store

REGISTRATION = "registration"
"""The ``server_settings`` row of the registration mode."""

MAX_INVITE_SECONDS = 365 * 86400
MAX_INVITE_USES = 10_000


def hash_invite(code: str) -> str:
    """Invites are stored by hash, like refresh tokens: a database read shows none."""
    return hashlib.sha256(code.encode()).hexdigest()


def removal(actor: UserId, message: Message, by: str, ip: str | None = None) -> AuditRecord:
    """The audit entry of a message deleted by someone other than its sender."""
    return AuditRecord(
        AuditAction.MESSAGE_REMOVED,
        actor_id=actor,
        target_user_id=message.sender_id,
        target_room_id=message.room_id,
        target_message_id=message.id,
        ip=ip,
        details={"by": by},
    )


class AdminService:
    """What server admins (and the operator's CLI) may do."""

    def __init__(
        self,
        store: Store,
        passwords: Passwords,
        *,
        registration: RegistrationMode = RegistrationMode.OPEN,
    ) -> None:
        self.store = store
        self.passwords = passwords
        self.default_registration = registration

    async def require_admin(self, actor: UserId) -> User:
        """The caller, if a server admin with an active account; ``Forbidden``."""
        user = await self.store.get_user(actor)
        if user is None or not user.is_admin or user.deactivated_at is not None:
            raise Forbidden("this needs a server admin")
        return user

    async def _target(self, user_id: UserId) -> User:
        user = await self.store.get_user(user_id)
        if user is None or user.deleted:
            raise NotFound("user not found")
        return user

    # accounts

    async def list_users(
        self, prefix: str = "", after: str | None = None, limit: int = 50
    ) -> tuple[list[User], bool]:
        return await self.store.list_users(prefix=prefix.lower(), after=after, limit=limit)

    async def find_user(self, username: str) -> User:
        credentials = await self.store.get_credentials(username)
        if credentials is None:
            raise NotFound(f"no user {username!r}")
        return credentials.user

    async def set_active(
        self, actor: UserId | None, user_id: UserId, active: bool, ip: str | None = None
    ) -> tuple[User, list[str]]:
        """Deactivate or reactivate; the families whose connections must end now."""
        if actor == user_id:
            raise Forbidden("admins cannot deactivate themselves", code="cannot_change_self")
        await self._target(user_id)
        action = AuditAction.REACTIVATED if active else AuditAction.DEACTIVATED
        record = AuditRecord(action, actor_id=actor, target_user_id=user_id, ip=ip)
        return await self.store.set_user_active(user_id, active, record)

    async def set_admin(
        self, actor: UserId | None, user_id: UserId, is_admin: bool, ip: str | None = None
    ) -> User:
        if actor == user_id and not is_admin:
            raise Forbidden("admins cannot demote themselves", code="cannot_change_self")
        await self._target(user_id)
        action = AuditAction.PROMOTED if is_admin else AuditAction.DEMOTED
        record = AuditRecord(action, actor_id=actor, target_user_id=user_id, ip=ip)
        return await self.store.set_user_admin(user_id, is_admin, record)

    async def reset_password(
        self, actor: UserId | None, user_id: UserId, password: str, ip: str | None = None
    ) -> list[str]:
        """Set the user's password; every session of theirs ends (families returned)."""
        validation.check_password(password)
        await self._target(user_id)
        record = AuditRecord(
            AuditAction.PASSWORD_RESET, actor_id=actor, target_user_id=user_id, ip=ip
        )
        return await self.store.reset_password(user_id, await self.passwords.hash(password), record)

    async def remove_message(
        self, actor: UserId, room_id: RoomId, message_id: MessageId, ip: str | None = None
    ) -> Message:
        """Delete any message, as its sender would: the same erasure."""
        existing = await self.store.get_message(room_id, message_id)
        if existing is None:
            raise NotFound("message not found")
        message, events = await self.store.delete_message(
            room_id, message_id, actor, any_sender=True
        )
        if events:
            await self.store.record_audit(removal(actor, existing, "server_admin", ip))
        return message

    # registration

    async def registration(self) -> RegistrationMode:
        """The mode an admin set (every node reads the same row), else the default."""
        stored = await self.store.get_setting(REGISTRATION)
        try:
            return RegistrationMode(stored) if stored else self.default_registration
        except ValueError:
            return self.default_registration

    async def set_registration(
        self, actor: UserId | None, mode: RegistrationMode, ip: str | None = None
    ) -> RegistrationMode:
        before = await self.registration()
        record = AuditRecord(
            AuditAction.REGISTRATION_CHANGED,
            actor_id=actor,
            ip=ip,
            details={"from": before.value, "to": mode.value},
        )
        await self.store.put_setting(REGISTRATION, mode.value, record)
        return mode

    async def create_invite(
        self,
        actor: UserId | None,
        *,
        expires_in: int | None = None,
        max_uses: int | None = None,
        ip: str | None = None,
    ) -> tuple[Invite, str]:
        """A new invite and its code (shown this once)."""
        if expires_in is not None and not 1 <= expires_in <= MAX_INVITE_SECONDS:
            raise InvalidInput(f"expires_in: 1 to {MAX_INVITE_SECONDS} seconds")
        if max_uses is not None and not 1 <= max_uses <= MAX_INVITE_USES:
            raise InvalidInput(f"max_uses: 1 to {MAX_INVITE_USES}")
        now = datetime.now(UTC)
        invite = Invite(
            id=new_id(),
            created_by=actor,
            created_at=format_ts(now),
            expires_at=(
                format_ts(now + timedelta(seconds=expires_in)) if expires_in is not None else None
            ),
            max_uses=max_uses,
            uses=0,
        )
        code = secrets.token_urlsafe(18)
        record = AuditRecord(
            AuditAction.INVITE_CREATED,
            actor_id=actor,
            ip=ip,
            details={
                "invite_id": invite.id,
                "expires_at": invite.expires_at,
                "max_uses": max_uses,
            },
        )
        await self.store.create_invite(invite, hash_invite(code), record)
        return invite, code

    async def list_invites(self) -> list[Invite]:
        return await self.store.list_invites()

    # the audit log

    async def audit(
        self,
        *,
        after: int | None = None,
        before: int | None = None,
        limit: int = 100,
        actions: Sequence[str] = (),
    ) -> tuple[list[AuditEntry], bool]:
        known = {a.value for a in AuditAction}
        unknown = [a for a in actions if a not in known]
        if unknown:
            raise InvalidInput(f"unknown audit action: {unknown[0]}")
        return await self.store.list_audit(after=after, before=before, limit=limit, actions=actions)
