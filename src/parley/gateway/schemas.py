"""Request and response models of the REST API (pydantic v2, at the edge only).

Requests forbid unknown fields, so a typo is an error rather than silently ignored,
and types are strict: ``true`` or ``"1"`` is no integer. The domain's rules that
pydantic does not check (``parley.domain.validation``: no control characters, a
name that is not blank) are in the document as ``pattern``s, so a client, or a
fuzzer, can tell a valid request from the schema alone; the domain enforces them,
with its own clearer messages.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field

from parley.domain import validation as v

StrictModel = ConfigDict(extra="forbid", str_max_length=65536, strict=True)


def _integral(value: Any) -> Any:
    """JSON Schema's ``integer`` takes ``2.0`` (a number with no fraction); strict
    pydantic would not. Booleans and strings stay refused."""
    if type(value) is float and value.is_integer():
        return int(value)
    return value


Integral = BeforeValidator(_integral)
"""After the bounds (``Annotated[int, Field(...), Integral]``): placed before them,
pydantic would put ``ge``/``le`` in the document instead of ``minimum``/``maximum``."""


def documented(pattern: str) -> dict[str, Any]:
    """``pattern`` for the document only (the domain checks it)."""
    return {"json_schema_extra": {"pattern": pattern}}


Name = Annotated[str, Field(min_length=1, max_length=v.MAX_ROOM_NAME, **documented(v.NAME_PATTERN))]
Topic = Annotated[str, Field(max_length=v.MAX_TOPIC, **documented(v.TOPIC_PATTERN))]
Body = Annotated[str, Field(min_length=1, max_length=65536, **documented(v.BODY_PATTERN))]


class Strict(BaseModel):
    model_config = StrictModel


class RegisterIn(Strict):
    username: Annotated[str, Field(min_length=3, max_length=32, pattern=r"^[a-z0-9_.\-]+$")]
    password: Annotated[str, Field(min_length=8, max_length=256)]
    display_name: Annotated[
        str | None,
        Field(min_length=1, max_length=v.MAX_DISPLAY_NAME, **documented(v.NAME_PATTERN)),
    ] = None
    invite: Annotated[str | None, Field(min_length=1, max_length=128)] = None


class RevokeIn(Strict):
    token: Annotated[str, Field(min_length=1, max_length=512)]


class PasswordIn(Strict):
    current_password: Annotated[str, Field(min_length=1, max_length=256)]
    new_password: Annotated[str, Field(min_length=1, max_length=256)]


class UserOut(BaseModel):
    id: str
    username: str
    display_name: str


class MeOut(UserOut):
    is_admin: bool


class MePatch(Strict):
    display_name: Annotated[
        str, Field(min_length=1, max_length=v.MAX_DISPLAY_NAME, **documented(v.NAME_PATTERN))
    ]


class DeleteMeIn(Strict):
    password: Annotated[str, Field(min_length=1, max_length=256)]


class RegistrationModeOut(BaseModel):
    mode: Literal["open", "closed", "invite"]


class UserEnvelope(BaseModel):
    user: UserOut


class UsersOut(BaseModel):
    users: list[UserOut]


class TokenOut(BaseModel):
    access_token: str
    token_type: Literal["bearer"]
    expires_in: int
    refresh_token: str


class RoomIn(Strict):
    name: Name
    visibility: Literal["public", "private"] = "public"
    topic: Topic = ""


class RoomPatch(Strict):
    name: Name | None = None
    topic: Topic | None = None


class RoomOut(BaseModel):
    id: str
    name: str
    visibility: Literal["public", "private"]
    topic: str
    kind: Literal["room", "dm", "group_dm"]
    created_at: str
    last_seq: int


class MyRoomOut(RoomOut):
    role: Literal["owner", "admin", "member"]
    read_seq: int
    unread: int


class MyRoomsOut(BaseModel):
    rooms: list[MyRoomOut]


class RoomsOut(BaseModel):
    rooms: list[RoomOut]


class MemberIn(Strict):
    user_id: Annotated[str, Field(min_length=1, max_length=64)]
    role: Literal["admin", "member"] = "member"


class MemberOut(BaseModel):
    user: UserOut
    role: Literal["owner", "admin", "member"]


class MembersOut(BaseModel):
    members: list[MemberOut]


class DmIn(Strict):
    """The 1:1 direct room with ``user_id``."""

    user_id: Annotated[str, Field(min_length=1, max_length=64)]


class GroupDmIn(Strict):
    """The group direct room of the caller and 2 to 9 others, as a set."""

    user_ids: Annotated[
        list[Annotated[str, Field(**documented(v.UUID_PATTERN))]],
        Field(
            min_length=v.MIN_GROUP_OTHERS,
            max_length=v.MAX_GROUP_OTHERS,
            json_schema_extra={"uniqueItems": True},
        ),
    ]


class MessageIn(Strict):
    body: Body
    client_msg_id: Annotated[
        str | None, Field(min_length=1, max_length=64, **documented(v.CLIENT_MSG_ID_PATTERN))
    ] = None
    thread_root_id: Annotated[str | None, Field(max_length=36, **documented(v.UUID_PATTERN))] = None


class MessagePatch(Strict):
    body: Body
    version: Annotated[int, Field(ge=1, le=2**31), Integral]


class ThreadOut(BaseModel):
    """A root's summary of its live replies (``null`` on a message with none)."""

    reply_count: int
    last_reply_at: str | None
    participants: list[str]


class MessageOut(BaseModel):
    id: str
    room_id: str
    seq: int
    sender_id: str
    body: str
    client_msg_id: str | None
    created_at: str
    edited_at: str | None
    version: int
    deleted: bool
    reactions: dict[str, list[str]]
    thread_root_id: str | None
    thread: ThreadOut | None
    mentions: list[str] = Field(description="The members the body mentions (server-parsed).")
    mentions_room: bool = Field(description="The body said @room, from an admin or owner.")


class MessagesOut(BaseModel):
    messages: list[MessageOut]
    has_more: bool


class ThreadPageOut(BaseModel):
    root: MessageOut
    messages: list[MessageOut]
    has_more: bool


class EventsOut(BaseModel):
    events: list[dict[str, object]]
    has_more: bool


class ReadIn(Strict):
    seq: Annotated[int, Field(ge=0, le=2**53), Integral]


class ReadOut(BaseModel):
    read_seq: int


class Ok(BaseModel):
    ok: bool = True


class Health(BaseModel):
    status: str
    node_id: str | None = None
    checks: dict[str, str] = {}


class PresenceEntry(BaseModel):
    user_id: str
    status: Literal["online", "idle", "offline"]
    last_active_at: str | None


class PresenceOut(BaseModel):
    presence: list[PresenceEntry]
    forbidden: list[str]


UUID_PATTERN = r"^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$"
NotificationId = Annotated[str, Field(pattern=UUID_PATTERN, max_length=36)]


class NotificationOut(BaseModel):
    id: str
    kind: Literal["mention", "room_mention", "reply", "dm", "message"]
    room_id: str
    message: MessageOut
    created_at: str
    read: bool


class NotificationsOut(BaseModel):
    notifications: list[NotificationOut]
    unread: int
    has_more: bool


class ReadIdsIn(Strict):
    """The caller's notifications to mark read; others' and unknown ones are ignored."""

    ids: Annotated[list[NotificationId], Field(max_length=500)]


class ReadAllIn(Strict):
    """Every notification of the caller."""

    all: Literal[True]


class UnreadOut(BaseModel):
    unread: int


class LevelIn(Strict):
    level: Literal["all", "mentions", "none"]


class LevelOut(BaseModel):
    level: Literal["all", "mentions", "none"]


class SearchResultOut(BaseModel):
    message: MessageOut
    room_id: str
    highlight: str = Field(
        description="An excerpt of the message's current text around its first match, "
        "HTML-escaped, each matched word or CJK string in <mark>…</mark>"
    )


class SearchOut(BaseModel):
    results: list[SearchResultOut]
    next_cursor: str | None = Field(description="Pass as cursor for the next page; null: last")
