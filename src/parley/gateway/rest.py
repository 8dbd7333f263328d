"""The REST API (``docs/protocol.md``): auth, users, rooms, membership, messages, events."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any
from uuid import UUID

from fastapi import APIRouter, Depends, Form, Path, Query, Request, Response
from fastapi.security import OAuth2PasswordBearer

from parley.auth.tokens import AccessClaims
from parley.domain import validation
from parley.domain.mentions import NotificationLevel
from parley.domain.models import MessageId, Role, RoomId, RoomSummary, UserId, Visibility
from parley.domain.search import MAX_QUERY_CHARS
from parley.errors import InvalidInput, NotFound, Unauthorized
from parley.gateway import schemas as s
from parley.gateway.ratelimit import RateLimiter
from parley.gateway.runtime import Runtime
from parley.service import search as search_service
from parley.service.search import MAX_LIMIT

oauth2 = OAuth2PasswordBearer(tokenUrl="/api/v1/auth/token", auto_error=False)

router = APIRouter(prefix="/api/v1")

SeqParam = Annotated[int | None, Query(ge=0, le=2**53)]
LimitParam = Annotated[int, Query(ge=1, le=200)]
Emoji = Annotated[str, Path(json_schema_extra={"pattern": validation.EMOJI_PATTERN})]


# Dependencies are ``async def``: FastAPI runs plain ``def`` ones in a worker thread,
# which cost three thread hops per request.
async def runtime(request: Request) -> Runtime:
    rt: Runtime = request.app.state.runtime
    return rt


async def limiter(request: Request) -> RateLimiter:
    rl: RateLimiter = request.app.state.limiter
    return rl


RT = Annotated[Runtime, Depends(runtime)]
RL = Annotated[RateLimiter, Depends(limiter)]


async def current_user(rt: RT, token: Annotated[str | None, Depends(oauth2)]) -> UserId:
    """The caller, from ``Authorization: Bearer``; 401 without a valid access token."""
    if not token:
        raise Unauthorized("missing bearer token")
    return rt.tokens.verify_access(token)


Me = Annotated[UserId, Depends(current_user)]


async def current_claims(rt: RT, token: Annotated[str | None, Depends(oauth2)]) -> AccessClaims:
    """The caller's access token's claims (its session too); 401 without a valid one."""
    if not token:
        raise Unauthorized("missing bearer token")
    return rt.tokens.verify_claims(token)


Claims = Annotated[AccessClaims, Depends(current_claims)]


def limited(name: str) -> Any:
    """A route dependency: the caller's bucket of rate-limit class ``name``."""

    async def check(rl: RL, me: Me) -> None:
        await rl.check(name, me)

    return Depends(check)


READ = [limited("read")]
EDIT = [limited("edit")]
ROOMS = [limited("rooms")]
MEMBERSHIP = [limited("membership")]
SEND = [limited("send")]


def client_ip(request: Request) -> str:
    return request.client.host if request.client else "unknown"


def summary_out(summary: RoomSummary) -> dict[str, Any]:
    return {
        **summary.room.public(),
        "role": summary.role.value,
        "read_seq": summary.read_seq,
        "unread": summary.unread,
    }


# auth
@router.post("/auth/register", status_code=201, response_model=s.UserEnvelope, tags=["auth"])
async def register(body: s.RegisterIn, rt: RT, rl: RL, request: Request) -> dict[str, Any]:
    """Create an account, as the registration mode allows: ``closed`` is 403
    ``registration_closed``; ``invite`` needs ``invite``, a code an admin made."""
    await rl.check("register", client_ip(request))
    user = await rt.accounts.register(
        body.username, body.password, body.display_name, invite=body.invite
    )
    return {"user": user.public()}


@router.get("/auth/registration", response_model=s.RegistrationModeOut, tags=["auth"])
async def registration(rt: RT, rl: RL, request: Request) -> dict[str, str]:
    """The registration mode, for a sign-up form to show (no token needed)."""
    await rl.check("read", client_ip(request))
    return {"mode": (await rt.admin.registration()).value}


@router.post("/auth/token", response_model=s.TokenOut, tags=["auth"])
async def token(
    rt: RT,
    rl: RL,
    request: Request,
    response: Response,
    grant_type: Annotated[
        str, Form(max_length=32, json_schema_extra={"enum": ["password", "refresh_token"]})
    ],
    username: Annotated[str | None, Form(max_length=64)] = None,
    password: Annotated[str | None, Form(max_length=256)] = None,
    refresh_token: Annotated[str | None, Form(max_length=512)] = None,
) -> dict[str, object]:
    """OAuth2 token endpoint (RFC 6749): the ``password`` and ``refresh_token`` grants.
    A bad grant is 400 ``invalid_grant``, as RFC 6749 section 5.2 has it. Answers are
    never cached (section 5.1)."""
    response.headers["Cache-Control"] = "no-store"
    response.headers["Pragma"] = "no-cache"
    try:
        if grant_type == "password":
            if not username or not password:
                raise InvalidInput("username and password are required", code="invalid_request")
            ip = client_ip(request)
            await rl.check("login", ip)
            await rl.check("login_user", f"{ip}:{username}")
            pair = await rt.accounts.login(username, password, ip)
        elif grant_type == "refresh_token":
            if not refresh_token:
                raise InvalidInput("refresh_token is required", code="invalid_request")
            await rl.check("refresh", client_ip(request))
            pair = await rt.accounts.refresh(refresh_token, client_ip(request))
        else:
            raise InvalidInput("unsupported grant_type", code="unsupported_grant_type")
    except Unauthorized as exc:
        raise InvalidInput(exc.message, code="invalid_grant") from exc
    return pair.public()


@router.post("/auth/revoke", response_model=s.Ok, tags=["auth"])
async def revoke(body: s.RevokeIn, rt: RT, rl: RL, request: Request) -> dict[str, bool]:
    """Revoke a refresh token and its whole family (RFC 7009: unknown tokens are fine);
    the session's live connections end, on every node."""
    await rl.check("revoke", client_ip(request))
    grant = await rt.accounts.revoke(body.token)
    if grant is not None:
        rt.hub.end_sessions(grant.user_id, [grant.family_id])
    return {"ok": True}


# users
@router.post("/users/me/password", response_model=s.Ok, tags=["users"])
async def change_password(
    body: s.PasswordIn, rt: RT, rl: RL, request: Request, claims: Claims
) -> dict[str, bool]:
    """Change the caller's password; every other session of theirs is logged out
    (refresh tokens revoked, live connections ended). 403 ``wrong_password``."""
    await rl.check("login_user", f"{client_ip(request)}:{claims.user_id}")
    ended = await rt.accounts.change_password(
        claims.user_id, body.current_password, body.new_password, claims.sid
    )
    rt.hub.end_sessions(claims.user_id, ended)
    return {"ok": True}


@router.get("/users/me", response_model=s.MeOut, tags=["users"], dependencies=READ)
async def me(rt: RT, user_id: Me) -> dict[str, Any]:
    """The caller's ``User``, with ``is_admin``: whether they are a server admin."""
    user = await rt.store.get_user(user_id)
    if user is None or user.deleted:
        raise Unauthorized("this account no longer exists", code="invalid_token")
    return {**user.public(), "is_admin": user.is_admin}


@router.patch("/users/me", response_model=s.MeOut, tags=["users"], dependencies=EDIT)
async def update_me(body: s.MePatch, rt: RT, user_id: Me) -> dict[str, Any]:
    """Change the caller's display name."""
    user = await rt.accounts.set_display_name(user_id, body.display_name)
    return {**user.public(), "is_admin": user.is_admin}


@router.delete("/users/me", response_model=s.Ok, tags=["users"])
async def delete_me(
    body: s.DeleteMeIn, rt: RT, rl: RL, request: Request, user_id: Me
) -> dict[str, bool]:
    """Delete the caller's account, confirmed by its password (403
    ``wrong_password``): every session ends; messages stay, from ``Deleted user``;
    the username is free again."""
    await rl.check("login_user", f"{client_ip(request)}:{user_id}")
    ended = await rt.accounts.delete_account(user_id, body.password, client_ip(request))
    rt.hub.end_sessions(user_id, ended)
    return {"ok": True}


@router.get("/users", response_model=s.UsersOut, tags=["users"], dependencies=READ)
async def find_users(
    rt: RT, _: Me, username: Annotated[str, Query(min_length=1, max_length=32)]
) -> dict[str, Any]:
    """Look a user up by exact username (to start a direct message)."""
    credentials = await rt.store.get_credentials(username)
    return {"users": [credentials.user.public()] if credentials else []}


@router.get("/users/{user_id:uuid}", response_model=s.UserOut, tags=["users"], dependencies=READ)
async def get_user(user_id: UUID, rt: RT, _: Me) -> dict[str, Any]:
    user = await rt.store.get_user(UserId(str(user_id)))
    if user is None:
        raise NotFound("user not found")
    return user.public()


@router.get("/presence", response_model=s.PresenceOut, tags=["users"], dependencies=READ)
async def presence(
    rt: RT,
    me: Me,
    user_ids: Annotated[list[str], Query(min_length=1, max_length=200)],
) -> dict[str, Any]:
    """Current presence of users who share a room with the caller, for clients
    without a socket; ids of others are listed in ``forbidden``, with no status."""
    return await rt.presence.lookup(me, user_ids)


# rooms
@router.post(
    "/rooms", status_code=201, response_model=s.RoomOut, tags=["rooms"], dependencies=ROOMS
)
async def create_room(body: s.RoomIn, rt: RT, me: Me) -> dict[str, Any]:
    room = await rt.chat.create_room(me, body.name, Visibility(body.visibility), body.topic)
    return room.public()


@router.get("/rooms", response_model=s.MyRoomsOut, tags=["rooms"], dependencies=READ)
async def my_rooms(rt: RT, me: Me) -> dict[str, Any]:
    return {"rooms": [summary_out(x) for x in await rt.chat.list_rooms(me)]}


@router.get("/rooms/public", response_model=s.RoomsOut, tags=["rooms"], dependencies=READ)
async def public_rooms(rt: RT, _: Me) -> dict[str, Any]:
    return {"rooms": [room.public() for room in await rt.chat.public_rooms()]}


@router.get("/rooms/{room_id:uuid}", response_model=s.RoomOut, tags=["rooms"], dependencies=READ)
async def get_room(room_id: UUID, rt: RT, me: Me) -> dict[str, Any]:
    return (await rt.chat.get_room(me, RoomId(str(room_id)))).public()


@router.patch("/rooms/{room_id:uuid}", response_model=s.RoomOut, tags=["rooms"], dependencies=ROOMS)
async def update_room(room_id: UUID, body: s.RoomPatch, rt: RT, me: Me) -> dict[str, Any]:
    room = await rt.chat.update_room(me, RoomId(str(room_id)), name=body.name, topic=body.topic)
    return room.public()


@router.post(
    "/rooms/{room_id:uuid}/join", response_model=s.RoomOut, tags=["rooms"], dependencies=MEMBERSHIP
)
async def join(room_id: UUID, rt: RT, me: Me) -> dict[str, Any]:
    return (await rt.chat.join(me, RoomId(str(room_id)))).public()


@router.post(
    "/rooms/{room_id:uuid}/leave", response_model=s.Ok, tags=["rooms"], dependencies=MEMBERSHIP
)
async def leave(room_id: UUID, rt: RT, me: Me) -> dict[str, bool]:
    await rt.chat.leave(me, RoomId(str(room_id)))
    return {"ok": True}


@router.get(
    "/rooms/{room_id:uuid}/members",
    response_model=s.MembersOut,
    tags=["members"],
    dependencies=READ,
)
async def members(room_id: UUID, rt: RT, me: Me) -> dict[str, Any]:
    rows = await rt.chat.members(me, RoomId(str(room_id)))
    return {"members": [{"user": user.public(), "role": role.value} for user, role in rows]}


@router.post(
    "/rooms/{room_id:uuid}/members",
    status_code=201,
    response_model=s.Ok,
    tags=["members"],
    dependencies=MEMBERSHIP,
)
async def add_member(room_id: UUID, body: s.MemberIn, rt: RT, me: Me) -> dict[str, bool]:
    await rt.chat.add_member(me, RoomId(str(room_id)), UserId(body.user_id), Role(body.role))
    return {"ok": True}


@router.delete(
    "/rooms/{room_id:uuid}/members/{user_id:uuid}",
    response_model=s.Ok,
    tags=["members"],
    dependencies=MEMBERSHIP,
)
async def remove_member(
    room_id: UUID, user_id: UUID, rt: RT, me: Me, ban: bool = False
) -> dict[str, bool]:
    await rt.chat.remove_member(me, RoomId(str(room_id)), UserId(str(user_id)), ban=ban)
    return {"ok": True}


@router.post("/dms", response_model=s.RoomOut, tags=["rooms"], dependencies=ROOMS)
async def open_dm(body: s.DmIn | s.GroupDmIn, rt: RT, me: Me, response: Response) -> dict[str, Any]:
    """The one direct room of the caller and ``user_id`` (``kind: dm``), or of the
    caller and ``user_ids``, 2 to 9 others, as a set (``kind: group_dm``): 201 when
    made, 200 after."""
    if isinstance(body, s.GroupDmIn):
        room, created = await rt.chat.open_group_dm(me, body.user_ids)
    else:
        room, created = await rt.chat.open_dm(me, UserId(body.user_id))
    response.status_code = 201 if created else 200
    return room.public()


# messages
@router.post(
    "/rooms/{room_id:uuid}/messages",
    status_code=201,
    response_model=s.MessageOut,
    tags=["messages"],
    dependencies=SEND,
)
async def send(
    room_id: UUID, body: s.MessageIn, rt: RT, me: Me, response: Response
) -> dict[str, Any]:
    """Store a message: 201 when new, 200 with the first one for a repeated
    ``client_msg_id`` (a retry stores nothing twice). ``thread_root_id``: a reply in
    that message's thread (its root's, if it is a reply); 404 unless it is a live
    message of this room."""
    result = await rt.chat.send(
        me, RoomId(str(room_id)), body.body, body.client_msg_id, body.thread_root_id
    )
    if not result.created:
        response.status_code = 200
    return result.message.public()


@router.get(
    "/rooms/{room_id:uuid}/messages",
    response_model=s.MessagesOut,
    tags=["messages"],
    dependencies=READ,
)
async def list_messages(
    room_id: UUID,
    rt: RT,
    me: Me,
    before_seq: SeqParam = None,
    after_seq: SeqParam = None,
    limit: LimitParam = 50,
) -> dict[str, Any]:
    messages, has_more = await rt.chat.messages(
        me, RoomId(str(room_id)), before_seq=before_seq, after_seq=after_seq, limit=limit
    )
    return {"messages": [m.public() for m in messages], "has_more": has_more}


@router.get(
    "/rooms/{room_id:uuid}/messages/{message_id:uuid}/thread",
    response_model=s.ThreadPageOut,
    tags=["messages"],
    dependencies=READ,
)
async def thread(
    room_id: UUID,
    message_id: UUID,
    rt: RT,
    me: Me,
    after_seq: Annotated[int, Query(ge=0, le=2**53)] = 0,
    limit: LimitParam = 50,
) -> dict[str, Any]:
    """A thread: its root and its replies after ``after_seq``, ascending by seq
    (deleted ones as tombstones). A message with no replies is a root with none; a
    reply's id gives its root's thread."""
    root, replies, has_more = await rt.chat.thread(
        me, RoomId(str(room_id)), MessageId(str(message_id)), after_seq=after_seq, limit=limit
    )
    return {
        "root": root.public(),
        "messages": [m.public() for m in replies],
        "has_more": has_more,
    }


@router.get(
    "/rooms/{room_id:uuid}/events",
    tags=["messages"],
    responses={200: {"model": s.EventsOut, "description": "The events, ascending by seq"}},
    dependencies=READ,
)
async def list_events(
    room_id: UUID,
    rt: RT,
    me: Me,
    after_seq: Annotated[int, Query(ge=0, le=2**53)] = 0,
    limit: LimitParam = 100,
) -> Response:
    """The room's log after ``after_seq``: the stored event bytes, not re-encoded."""
    events, has_more = await rt.chat.events(
        me, RoomId(str(room_id)), after_seq=after_seq, limit=limit
    )
    body = (
        b'{"events":['
        + b",".join(e.raw for e in events)
        + b'],"has_more":'
        + (b"true" if has_more else b"false")
        + b"}"
    )
    return Response(body, media_type="application/json")


@router.patch(
    "/rooms/{room_id:uuid}/messages/{message_id:uuid}",
    response_model=s.MessageOut,
    tags=["messages"],
    dependencies=EDIT,
)
async def edit(
    room_id: UUID, message_id: UUID, body: s.MessagePatch, rt: RT, me: Me
) -> dict[str, Any]:
    message = await rt.chat.edit(
        me, RoomId(str(room_id)), MessageId(str(message_id)), body.body, body.version
    )
    return message.public()


@router.delete(
    "/rooms/{room_id:uuid}/messages/{message_id:uuid}",
    response_model=s.MessageOut,
    tags=["messages"],
    dependencies=EDIT,
)
async def delete(room_id: UUID, message_id: UUID, rt: RT, me: Me) -> dict[str, Any]:
    return (await rt.chat.delete(me, RoomId(str(room_id)), MessageId(str(message_id)))).public()


@router.put(
    "/rooms/{room_id:uuid}/messages/{message_id:uuid}/reactions/{emoji}",
    response_model=s.MessageOut,
    tags=["messages"],
    dependencies=EDIT,
)
async def add_reaction(
    room_id: UUID, message_id: UUID, emoji: Emoji, rt: RT, me: Me
) -> dict[str, Any]:
    message = await rt.chat.react(
        me, RoomId(str(room_id)), MessageId(str(message_id)), emoji, on=True
    )
    return message.public()


@router.delete(
    "/rooms/{room_id:uuid}/messages/{message_id:uuid}/reactions/{emoji}",
    response_model=s.MessageOut,
    tags=["messages"],
    dependencies=EDIT,
)
async def remove_reaction(
    room_id: UUID, message_id: UUID, emoji: Emoji, rt: RT, me: Me
) -> dict[str, Any]:
    message = await rt.chat.react(
        me, RoomId(str(room_id)), MessageId(str(message_id)), emoji, on=False
    )
    return message.public()


@router.put(
    "/rooms/{room_id:uuid}/read", response_model=s.ReadOut, tags=["messages"], dependencies=READ
)
async def read(room_id: UUID, body: s.ReadIn, rt: RT, me: Me) -> dict[str, int]:
    return {"read_seq": await rt.chat.mark_read(me, RoomId(str(room_id)), body.seq)}


# mentions and notifications
@router.get(
    "/notifications", response_model=s.NotificationsOut, tags=["notifications"], dependencies=READ
)
async def notifications(
    rt: RT,
    me: Me,
    unread_only: bool = False,
    before: Annotated[UUID | None, Query(description="A notification id: older ones")] = None,
    limit: LimitParam = 50,
) -> dict[str, Any]:
    """The caller's notifications, newest first, and their unread count."""
    feed, unread, has_more = await rt.notifications.feed(
        me, unread_only=unread_only, before=None if before is None else str(before), limit=limit
    )
    return {"notifications": [n.public() for n in feed], "unread": unread, "has_more": has_more}


@router.post(
    "/notifications/read", response_model=s.UnreadOut, tags=["notifications"], dependencies=READ
)
async def notifications_read(body: s.ReadIdsIn | s.ReadAllIn, rt: RT, me: Me) -> dict[str, int]:
    """``{"ids": [...]}`` (the caller's; others are ignored) or ``{"all": true}``."""
    ids = [str(UUID(i)) for i in body.ids] if isinstance(body, s.ReadIdsIn) else None
    return {"unread": await rt.notifications.mark_read(me, ids)}


@router.get(
    "/rooms/{room_id:uuid}/notifications",
    response_model=s.LevelOut,
    tags=["notifications"],
    dependencies=READ,
)
async def notification_level(room_id: UUID, rt: RT, me: Me) -> dict[str, str]:
    """The caller's level for the room: ``all`` by default in direct rooms,
    ``mentions`` elsewhere."""
    return {"level": (await rt.notifications.level(me, RoomId(str(room_id)))).value}


@router.put(
    "/rooms/{room_id:uuid}/notifications",
    response_model=s.LevelOut,
    tags=["notifications"],
    dependencies=EDIT,
)
async def set_notification_level(room_id: UUID, body: s.LevelIn, rt: RT, me: Me) -> dict[str, str]:
    """``all``: every message notifies; ``mentions``: mentions, ``@room`` and
    replies in one's threads; ``none``: nothing."""
    level = NotificationLevel(body.level)
    return {"level": (await rt.notifications.set_level(me, RoomId(str(room_id)), level)).value}


@router.get("/search", response_model=s.SearchOut, tags=["search"], dependencies=READ)
async def search(
    rt: RT,
    me: Me,
    q: Annotated[
        str,
        Query(
            description='Words (all must match), "a phrase", -word to exclude; at most '
            f"{MAX_QUERY_CHARS} characters. Empty or malformed: 400 invalid_input"
        ),
    ],
    room_id: UUID | None = None,
    sender_id: UUID | None = None,
    after: Annotated[datetime | None, Query(description="Sent after (RFC 3339)")] = None,
    before: Annotated[datetime | None, Query(description="Sent before (RFC 3339)")] = None,
    limit: Annotated[int, Query(ge=1, le=MAX_LIMIT)] = 20,
    cursor: Annotated[str | None, Query(max_length=200)] = None,
) -> dict[str, Any]:
    """Messages in the caller's rooms, best first; a room they are not a member of
    (now) finds nothing. Deleted messages are never found, edited ones by their
    current text only."""
    return await search_service.search(
        rt.chat.store,
        me,
        q,
        room_id=None if room_id is None else str(room_id),
        sender_id=None if sender_id is None else str(sender_id),
        after=after,
        before=before,
        limit=limit,
        cursor=cursor,
    )
