"""Server administration's values: the audit log's entries, registration modes and
invites. Plain data; the store keeps them, the service decides who may change them."""

from __future__ import annotations

import enum
from dataclasses import dataclass, field
from typing import Any

from parley.domain.models import MessageId, RoomId, UserId, utc_now


class AuditAction(enum.StrEnum):
    """Every kind of audit entry; the values are part of the API."""

    LOGIN = "auth.login"
    LOGIN_FAILED = "auth.login_failed"
    REFRESH_REUSE = "auth.refresh_reuse"
    ROLE_GRANTED = "room.role_granted"
    KICK = "room.kick"
    BAN = "room.ban"
    MESSAGE_REMOVED = "message.removed"
    DEACTIVATED = "user.deactivated"
    REACTIVATED = "user.reactivated"
    PASSWORD_RESET = "user.password_reset"  # noqa: S105 (an action's name)
    PROMOTED = "user.promoted"
    DEMOTED = "user.demoted"
    ACCOUNT_DELETED = "user.deleted"
    REGISTRATION_CHANGED = "registration.changed"
    INVITE_CREATED = "invite.created"
    KEY_ROTATED = "keys.rotated"


@dataclass(frozen=True, slots=True)
class AuditRecord:
    """An entry to record; the store gives it its id."""

    action: AuditAction
    actor_id: UserId | None = None
    target_user_id: UserId | None = None
    target_room_id: RoomId | None = None
    target_message_id: MessageId | None = None
    ip: str | None = None
    details: dict[str, Any] = field(default_factory=dict)
    at: str = field(default_factory=utc_now)


@dataclass(frozen=True, slots=True)
class AuditEntry:
    """A recorded entry, as ``GET /admin/audit`` shows it."""

    id: int
    record: AuditRecord

    def public(self) -> dict[str, Any]:
        r = self.record
        return {
            "id": self.id,
            "at": r.at,
            "actor_id": r.actor_id,
            "action": r.action.value,
            "target": {
                "user_id": r.target_user_id,
                "room_id": r.target_room_id,
                "message_id": r.target_message_id,
            },
            "ip": r.ip,
            "details": r.details,
        }


class RegistrationMode(enum.StrEnum):
    """Who may create an account with ``POST /auth/register``."""

    OPEN = "open"
    CLOSED = "closed"
    INVITE = "invite"


@dataclass(frozen=True, slots=True)
class Invite:
    """An invite to register; its code is shown only when it is made."""

    id: str
    created_by: UserId | None
    created_at: str
    expires_at: str | None
    max_uses: int | None
    uses: int

    def public(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "created_by": self.created_by,
            "created_at": self.created_at,
            "expires_at": self.expires_at,
            "max_uses": self.max_uses,
            "uses": self.uses,
        }
