"""Transaction scripts of server administration: accounts' state, server settings,
invites and the audit log.

Each function runs inside one operation of the group-commit writer (or a read), so
an action and its audit entry (``insert_audit``) commit together or not at all.
Ending an account's sessions revokes every refresh family in the database and
returns their ids: the caller ends the live connections of those sessions
(``Hub.end_sessions``) once the change committed.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from sqlalchemy import bindparam, insert, select, update
from sqlalchemy.engine import Connection

from parley.domain.admin import AuditAction, AuditEntry, AuditRecord, Invite
from parley.domain.models import User, UserId, utc_now
from parley.errors import Forbidden, NotFound
from parley.protocol.codec import dumps, loads
from parley.store.rows import _USER_COLUMNS, _user
from parley.store.schema import audit_log, invites, refresh_tokens, server_settings, users

DELETED_NAME = "Deleted user"
DELETED_PASSWORD = "!"  # noqa: S105 (no hash: nothing verifies)
"""Not an argon2 hash: no password verifies against it."""

_a = audit_log
_t = refresh_tokens
_ACTIONS = {a.value: a for a in AuditAction}

_MAX_ID = 2**31 - 1
_INSERT_AUDIT = insert(_a)
_AUDIT_COLUMNS = (
    _a.c.id,
    _a.c.at,
    _a.c.actor_id,
    _a.c.action,
    _a.c.target_user_id,
    _a.c.target_room_id,
    _a.c.target_message_id,
    _a.c.ip,
    _a.c.details,
)
_USER = select(*_USER_COLUMNS).where(users.c.id == bindparam("user"))
_UPDATE_USER = update(users).where(users.c.id == bindparam("user"))
_USER_FAMILIES = (
    select(_t.c.family_id)
    .distinct()
    .where(_t.c.user_id == bindparam("user"), _t.c.expires_at > bindparam("now"))
    .order_by(_t.c.family_id)
)
_REVOKE_USER = update(_t).where(_t.c.user_id == bindparam("user")).values(revoked=True)
_SETTING = select(server_settings.c.value).where(server_settings.c.name == bindparam("key"))
_INVITE_COLUMNS = (
    invites.c.id,
    invites.c.created_by,
    invites.c.created_at,
    invites.c.expires_at,
    invites.c.max_uses,
    invites.c.uses,
)
_INVITE_BY_CODE = select(*_INVITE_COLUMNS).where(invites.c.code_hash == bindparam("code"))
_USE_INVITE = (
    update(invites).where(invites.c.id == bindparam("invite")).values(uses=invites.c.uses + 1)
)
_TOKEN_ACCOUNT = (
    select(users.c.deactivated_at, users.c.deleted_at)
    .select_from(_t.join(users, users.c.id == _t.c.user_id))
    .where(_t.c.token_hash == bindparam("token"))
)


def insert_audit(conn: Connection, record: AuditRecord) -> int:
    """Record one entry in the caller's transaction; its id."""
    result = conn.execute(
        _INSERT_AUDIT,
        {
            "at": record.at,
            "actor_id": record.actor_id,
            "action": record.action.value,
            "target_user_id": record.target_user_id,
            "target_room_id": record.target_room_id,
            "target_message_id": record.target_message_id,
            "ip": record.ip,
            "details": dumps(record.details).decode(),
        },
    )
    key = result.inserted_primary_key
    return int(key[0]) if key is not None else 0


def list_audit(
    conn: Connection,
    *,
    after: int | None,
    before: int | None,
    limit: int,
    actions: Sequence[str] = (),
) -> tuple[list[AuditEntry], bool]:
    """Entries in ascending id: the first ``limit`` after ``after``, or the last
    ``limit`` before ``before``; and whether more lie in that direction."""
    # Ids are 32-bit in PostgreSQL: a cursor past the largest means "the end".
    after = None if after is None else min(after, _MAX_ID)
    before = None if before is None else min(before, _MAX_ID)
    query = select(*_AUDIT_COLUMNS)
    if actions:
        query = query.where(_a.c.action.in_(list(actions)))
    if before is not None:
        query = query.where(_a.c.id < before)
        if after is not None:
            query = query.where(_a.c.id > after)
        query = query.order_by(_a.c.id.desc())
    else:
        query = query.where(_a.c.id > (after or 0)).order_by(_a.c.id)
    rows = list(conn.execute(query.limit(limit + 1)))
    more = len(rows) > limit
    del rows[limit:]
    if before is not None:
        rows.reverse()
    return [_entry(row) for row in rows], more


def _entry(row: Sequence[Any]) -> AuditEntry:
    record = AuditRecord(
        at=row[1],
        actor_id=row[2],
        action=_ACTIONS[row[3]],
        target_user_id=row[4],
        target_room_id=row[5],
        target_message_id=row[6],
        ip=row[7],
        details=loads(row[8]),
    )
    return AuditEntry(int(row[0]), record)


def list_users(
    conn: Connection, *, prefix: str, after: str | None, limit: int
) -> tuple[list[User], bool]:
    """Accounts by username (deactivated ones too, deleted ones not), ``limit`` after
    the username ``after``; and whether more follow."""
    query = select(*_USER_COLUMNS).where(users.c.deleted_at.is_(None))
    if prefix:
        escaped = prefix.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
        query = query.where(users.c.username.like(escaped + "%", escape="\\"))
    if after is not None:
        query = query.where(users.c.username > after)
    rows = conn.execute(query.order_by(users.c.username).limit(limit + 1)).all()
    return [_user(row) for row in rows[:limit]], len(rows) > limit


def load_user(conn: Connection, user_id: str) -> User:
    row = conn.execute(_USER, {"user": user_id}).first()
    if row is None or row[6] is not None:
        raise NotFound("user not found")
    return _user(row)


def end_sessions(conn: Connection, user_id: str) -> list[str]:
    """Revoke every refresh family of the user; the families that may still have
    live access tokens."""
    families = [row[0] for row in conn.execute(_USER_FAMILIES, {"user": user_id, "now": utc_now()})]
    conn.execute(_REVOKE_USER, {"user": user_id})
    return families


def set_active(
    conn: Connection, user_id: str, *, active: bool, record: AuditRecord
) -> tuple[User, list[str]]:
    """Deactivate (ending every session) or reactivate an account."""
    user = load_user(conn, user_id)
    ended: list[str] = []
    if active and user.deactivated_at is not None:
        conn.execute(_UPDATE_USER, {"user": user_id, "deactivated_at": None})
        insert_audit(conn, record)
    elif not active and user.deactivated_at is None:
        conn.execute(_UPDATE_USER, {"user": user_id, "deactivated_at": record.at})
        ended = end_sessions(conn, user_id)
        insert_audit(conn, record)
    return load_user(conn, user_id), ended


def set_admin(conn: Connection, user_id: str, *, is_admin: bool, record: AuditRecord) -> User:
    user = load_user(conn, user_id)
    if user.is_admin != is_admin:
        conn.execute(_UPDATE_USER, {"user": user_id, "is_admin": is_admin})
        insert_audit(conn, record)
    return load_user(conn, user_id)


def reset_password(
    conn: Connection, user_id: str, password_hash: str, record: AuditRecord
) -> list[str]:
    """Set a new password and end every session of the account."""
    load_user(conn, user_id)
    conn.execute(_UPDATE_USER, {"user": user_id, "password_hash": password_hash})
    insert_audit(conn, record)
    return end_sessions(conn, user_id)


def set_display_name(conn: Connection, user_id: str, display_name: str) -> User:
    load_user(conn, user_id)
    conn.execute(_UPDATE_USER, {"user": user_id, "display_name": display_name})
    return load_user(conn, user_id)


def delete_account(conn: Connection, user_id: str, record: AuditRecord) -> list[str]:
    """Anonymise the account and end its sessions. The row stays so that the user's
    messages keep a sender (shown as ``Deleted user``); the username is freed."""
    load_user(conn, user_id)
    conn.execute(
        _UPDATE_USER,
        {
            "user": user_id,
            "username": "~" + user_id.replace("-", "")[:31],
            "display_name": DELETED_NAME,
            "password_hash": DELETED_PASSWORD,
            "is_admin": False,
            "deactivated_at": None,
            "deleted_at": record.at,
        },
    )
    insert_audit(conn, record)
    return end_sessions(conn, user_id)


def get_setting(conn: Connection, name: str) -> str | None:
    row = conn.execute(_SETTING, {"key": name}).first()
    return None if row is None else str(row[0])


def put_setting(conn: Connection, name: str, value: str, record: AuditRecord) -> None:
    now = record.at
    updated = conn.execute(
        update(server_settings)
        .where(server_settings.c.name == name)
        .values(value=value, updated_at=now)
    )
    if updated.rowcount == 0:
        conn.execute(insert(server_settings).values(name=name, value=value, updated_at=now))
    insert_audit(conn, record)


def create_invite(conn: Connection, invite: Invite, code_hash: str, record: AuditRecord) -> None:
    conn.execute(
        insert(invites).values(
            id=invite.id,
            code_hash=code_hash,
            created_by=invite.created_by,
            created_at=invite.created_at,
            expires_at=invite.expires_at,
            max_uses=invite.max_uses,
            uses=0,
        )
    )
    insert_audit(conn, record)


def list_invites(conn: Connection, limit: int) -> list[Invite]:
    query = select(*_INVITE_COLUMNS).order_by(invites.c.created_at.desc()).limit(limit)
    return [_invite(row) for row in conn.execute(query)]


def use_invite(conn: Connection, code_hash: str, now: str) -> Invite:
    """Count one use of a valid invite; ``Forbidden(invalid_invite)`` for an unknown,
    expired or used-up one."""
    row = conn.execute(_INVITE_BY_CODE, {"code": code_hash}).first()
    invite = _invite(row) if row is not None else None
    if (
        invite is None
        or (invite.expires_at is not None and invite.expires_at <= now)
        or (invite.max_uses is not None and invite.uses >= invite.max_uses)
    ):
        raise Forbidden("this invite is unknown, expired or used up", code="invalid_invite")
    conn.execute(_USE_INVITE, {"invite": invite.id})
    return invite


def _invite(row: Sequence[Any]) -> Invite:
    return Invite(
        id=row[0],
        created_by=row[1],
        created_at=row[2],
        expires_at=row[3],
        max_uses=row[4],
        uses=int(row[5]),
    )


def token_account_closed(conn: Connection, token_hash: str) -> Forbidden | None:
    """Why a refused refresh token's account cannot refresh, if it is closed."""
    row = conn.execute(_TOKEN_ACCOUNT, {"token": token_hash}).first()
    if row is not None and (row[0] is not None or row[1] is not None):
        return Forbidden("this account is deactivated", code="account_deactivated")
    return None


def record_reuse(conn: Connection, token_hash: str, ip: str | None) -> None:
    """Audit a refresh token presented again (its family was just revoked)."""
    row = conn.execute(
        select(_t.c.user_id, _t.c.family_id).where(_t.c.token_hash == token_hash)
    ).first()
    if row is not None:
        insert_audit(
            conn,
            AuditRecord(
                AuditAction.REFRESH_REUSE,
                target_user_id=UserId(row[0]),
                ip=ip,
                details={"family_id": row[1]},
            ),
        )
