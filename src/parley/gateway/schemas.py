"""Request and response models of the REST API (pydantic v2, at the edge only).

Requests forbid unknown fields, so a typo is an error rather than silently ignored.
"""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field

StrictModel = ConfigDict(extra="forbid", str_max_length=65536, strict=True)


class Strict(BaseModel):
    model_config = StrictModel


class RegisterIn(Strict):
    username: Annotated[str, Field(min_length=3, max_length=32, pattern=r"^[a-z0-9_.\-]+$")]
    password: Annotated[str, Field(min_length=8, max_length=256)]
    display_name: Annotated[str | None, Field(min_length=1, max_length=64)] = None


class RevokeIn(Strict):
    token: Annotated[str, Field(min_length=1, max_length=512)]


class PasswordIn(Strict):
    current_password: Annotated[str, Field(min_length=1, max_length=256)]
    new_password: Annotated[str, Field(min_length=1, max_length=256)]


class UserOut(BaseModel):
    id: str
    username: str
    display_name: str


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
    name: Annotated[str, Field(min_length=1, max_length=80)]
    visibility: Literal["public", "private"] = "public"
    topic: Annotated[str, Field(max_length=500)] = ""


class RoomPatch(Strict):
    name: Annotated[str | None, Field(min_length=1, max_length=80)] = None
    topic: Annotated[str | None, Field(max_length=500)] = None


class RoomOut(BaseModel):
    id: str
    name: str
    visibility: Literal["public", "private"]
    topic: str
    kind: Literal["room", "dm"]
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
    user_id: Annotated[str, Field(min_length=1, max_length=64)]


class MessageIn(Strict):
    body: Annotated[str, Field(min_length=1, max_length=65536)]
    client_msg_id: Annotated[str | None, Field(min_length=1, max_length=64)] = None


class MessagePatch(Strict):
    body: Annotated[str, Field(min_length=1, max_length=65536)]
    version: Annotated[int, Field(ge=1, le=2**31)]


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


class MessagesOut(BaseModel):
    messages: list[MessageOut]
    has_more: bool


class EventsOut(BaseModel):
    events: list[dict[str, object]]
    has_more: bool


class ReadIn(Strict):
    seq: Annotated[int, Field(ge=0, le=2**53)]


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
