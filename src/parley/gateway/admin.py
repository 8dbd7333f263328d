"""The server admin API, ``/api/v1/admin/…`` (``docs/protocol.md``, "Server
administration"). Every route depends on ``require_admin``: a caller who is not a
server admin gets 403 ``forbidden`` before anything else runs."""

from __future__ import annotations

from typing import Annotated, Any, Literal
from uuid import UUID

from fastapi import APIRouter, Depends, Query, Request
from pydantic import BaseModel, Field

from parley.domain.admin import AuditAction, RegistrationMode
from parley.domain.models import MessageId, RoomId, UserId
from parley.gateway import schemas as s
from parley.gateway.rest import RT, Me, client_ip, limited

Mode = Literal["open", "closed", "invite"]


async def require_admin(rt: RT, me: Me) -> None:
    await rt.admin.require_admin(me)


router = APIRouter(
    prefix="/api/v1/admin",
    tags=["admin"],
    dependencies=[Depends(require_admin)],
)
READ = [limited("read")]
EDIT = [limited("edit")]


class AdminUserOut(BaseModel):
    id: str
    username: str
    display_name: str
    created_at: str
    is_admin: bool
    deactivated: bool
    deactivated_at: str | None
    deleted: bool


class AdminUsersOut(BaseModel):
    users: list[AdminUserOut]
    next_after: str | None = Field(description="Pass as `after` for the next page; null: last")


class AdminUserPatch(s.Strict):
    is_admin: bool


class ResetPasswordIn(s.Strict):
    new_password: Annotated[str, Field(min_length=8, max_length=256)]


class RegistrationOut(BaseModel):
    mode: Mode


class RegistrationIn(s.Strict):
    mode: Mode


class InviteIn(s.Strict):
    expires_in: Annotated[int | None, Field(ge=1, le=365 * 86400), s.Integral] = Field(
        None, description="Seconds until the invite expires; null: never"
    )
    max_uses: Annotated[int | None, Field(ge=1, le=10_000), s.Integral] = Field(
        None, description="Accounts it may create; null: any number"
    )


class InviteOut(BaseModel):
    id: str
    created_by: str | None
    created_at: str
    expires_at: str | None
    max_uses: int | None
    uses: int


class NewInviteOut(BaseModel):
    invite: InviteOut
    code: str = Field(description="The code to register with: shown this once")


class InvitesOut(BaseModel):
    invites: list[InviteOut]


class AuditTarget(BaseModel):
    user_id: str | None
    room_id: str | None
    message_id: str | None


class AuditEntryOut(BaseModel):
    id: int
    at: str
    actor_id: str | None
    action: str
    target: AuditTarget
    ip: str | None
    details: dict[str, Any]


class AuditOut(BaseModel):
    entries: list[AuditEntryOut]
    has_more: bool


@router.get("/users", response_model=AdminUsersOut, dependencies=READ)
async def list_users(
    rt: RT,
    prefix: Annotated[str, Query(max_length=32, pattern=r"^[a-zA-Z0-9_.\-]*$")] = "",
    after: Annotated[str | None, Query(min_length=1, max_length=32)] = None,
    limit: Annotated[int, Query(ge=1, le=200)] = 50,
) -> dict[str, Any]:
    """Accounts by username, deactivated ones included; ``prefix`` filters."""
    users, more = await rt.admin.list_users(prefix, after, limit)
    return {
        "users": [u.admin_view() for u in users],
        "next_after": users[-1].username if more and users else None,
    }


@router.patch("/users/{user_id:uuid}", response_model=AdminUserOut, dependencies=EDIT)
async def patch_user(
    user_id: UUID, body: AdminUserPatch, rt: RT, me: Me, request: Request
) -> dict[str, Any]:
    """Make or unmake a server admin (not oneself: 403 ``cannot_change_self``)."""
    user = await rt.admin.set_admin(me, UserId(str(user_id)), body.is_admin, client_ip(request))
    return user.admin_view()


@router.post("/users/{user_id:uuid}/deactivate", response_model=AdminUserOut, dependencies=EDIT)
async def deactivate(user_id: UUID, rt: RT, me: Me, request: Request) -> dict[str, Any]:
    """The account can no longer log in or refresh; its tokens are revoked and its
    live connections end at once, on every node."""
    target = UserId(str(user_id))
    user, ended = await rt.admin.set_active(me, target, False, client_ip(request))
    rt.hub.end_sessions(target, ended)
    return user.admin_view()


@router.post("/users/{user_id:uuid}/reactivate", response_model=AdminUserOut, dependencies=EDIT)
async def reactivate(user_id: UUID, rt: RT, me: Me, request: Request) -> dict[str, Any]:
    user, _ = await rt.admin.set_active(me, UserId(str(user_id)), True, client_ip(request))
    return user.admin_view()


@router.post("/users/{user_id:uuid}/password", response_model=s.Ok, dependencies=EDIT)
async def reset_password(
    user_id: UUID, body: ResetPasswordIn, rt: RT, me: Me, request: Request
) -> dict[str, bool]:
    """Set a user's password; every session of theirs ends."""
    target = UserId(str(user_id))
    ended = await rt.admin.reset_password(me, target, body.new_password, client_ip(request))
    rt.hub.end_sessions(target, ended)
    return {"ok": True}


@router.delete(
    "/rooms/{room_id:uuid}/messages/{message_id:uuid}",
    response_model=s.MessageOut,
    dependencies=EDIT,
)
async def remove_message(
    room_id: UUID, message_id: UUID, rt: RT, me: Me, request: Request
) -> dict[str, Any]:
    """Delete any message in any room: the same erasure as its sender's delete."""
    message = await rt.admin.remove_message(
        me, RoomId(str(room_id)), MessageId(str(message_id)), client_ip(request)
    )
    return message.public()


@router.get("/registration", response_model=RegistrationOut, dependencies=READ)
async def get_registration(rt: RT) -> dict[str, str]:
    return {"mode": (await rt.admin.registration()).value}


@router.put("/registration", response_model=RegistrationOut, dependencies=EDIT)
async def set_registration(
    body: RegistrationIn, rt: RT, me: Me, request: Request
) -> dict[str, str]:
    """Stored in the database: every node follows it at once."""
    mode = await rt.admin.set_registration(me, RegistrationMode(body.mode), client_ip(request))
    return {"mode": mode.value}


@router.post("/invites", status_code=201, response_model=NewInviteOut, dependencies=EDIT)
async def create_invite(body: InviteIn, rt: RT, me: Me, request: Request) -> dict[str, Any]:
    invite, code = await rt.admin.create_invite(
        me, expires_in=body.expires_in, max_uses=body.max_uses, ip=client_ip(request)
    )
    return {"invite": invite.public(), "code": code}


@router.get("/invites", response_model=InvitesOut, dependencies=READ)
async def list_invites(rt: RT) -> dict[str, Any]:
    """The newest 200 invites (their codes are not stored)."""
    return {"invites": [i.public() for i in await rt.admin.list_invites()]}


@router.get("/audit", response_model=AuditOut, dependencies=READ)
async def audit(
    rt: RT,
    after: Annotated[int | None, Query(ge=0, le=2**53)] = None,
    before: Annotated[int | None, Query(ge=1, le=2**53)] = None,
    limit: Annotated[int, Query(ge=1, le=500)] = 100,
    action: Annotated[list[AuditAction] | None, Query(max_length=20)] = None,
) -> dict[str, Any]:
    """Entries in ascending ``id``: the first ``limit`` after ``after`` (from the
    start without it), or, with ``before``, the newest ``limit`` below it."""
    entries, more = await rt.admin.audit(
        after=after, before=before, limit=limit, actions=action or ()
    )
    return {"entries": [e.public() for e in entries], "has_more": more}
