"""``ParleyClient``: the REST API with token handling, and the door to ``Live``."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import httpx

from parley.client._errors import ApiError, AuthError

if TYPE_CHECKING:
    from parley.client._live import Live

DEFAULT_TIMEOUT = 15.0


@dataclass(frozen=True, slots=True)
class Tokens:
    """An OAuth2 token pair; ``refresh_token`` rotates on every refresh."""

    access_token: str
    refresh_token: str | None
    expires_in: int | None = None


def _error_of(response: httpx.Response) -> ApiError:
    code, message = "error", response.reason_phrase or "error"
    try:
        body = response.json()
    except ValueError:
        body = None
    if isinstance(body, dict):
        error = body.get("error")
        if isinstance(error, dict):
            code = str(error.get("code", code))
            message = str(error.get("message", message))
        elif isinstance(error, str):  # an OAuth2 error body
            code = error
            message = str(body.get("error_description", message))
    retry_after = None
    if "retry-after" in response.headers:
        try:
            retry_after = float(response.headers["retry-after"])
        except ValueError:
            retry_after = None
    cls = AuthError if response.status_code == 401 else ApiError
    return cls(response.status_code, code, message, retry_after=retry_after)


class ParleyClient:
    """One user's view of a Parley server.

    Calls refresh the access token once on 401 when a refresh token is known, and
    report the new pair to ``on_tokens`` (the CLI saves it). Many clients may share
    one ``httpx.AsyncClient`` (``http=``), as the benchmark does; a client that made
    its own closes it in ``aclose``.
    """

    def __init__(
        self,
        base_url: str,
        *,
        access_token: str | None = None,
        refresh_token: str | None = None,
        http: httpx.AsyncClient | None = None,
        on_tokens: Callable[[Tokens], None] | None = None,
        timeout: float = DEFAULT_TIMEOUT,
    ) -> None:
        self.base_url = base_url.rstrip("/")
        self.access_token = access_token
        self.refresh_token = refresh_token
        self.on_tokens = on_tokens
        self._own_http = http is None
        self.http = http or httpx.AsyncClient(timeout=timeout)
        self._refreshing: asyncio.Lock | None = None

    async def __aenter__(self) -> ParleyClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        if self._own_http:
            await self.http.aclose()

    @property
    def ws_url(self) -> str:
        scheme, _, rest = self.base_url.partition("://")
        return f"{'wss' if scheme == 'https' else 'ws'}://{rest}/api/v1/ws"

    # auth

    def _set_tokens(self, body: dict[str, Any]) -> Tokens:
        tokens = Tokens(
            str(body["access_token"]), body.get("refresh_token"), body.get("expires_in")
        )
        self.access_token = tokens.access_token
        self.refresh_token = tokens.refresh_token
        if self.on_tokens is not None:
            self.on_tokens(tokens)
        return tokens

    async def register(
        self, username: str, password: str, display_name: str | None = None
    ) -> dict[str, Any]:
        """Create an account; the ``User``."""
        body: dict[str, Any] = {"username": username, "password": password}
        if display_name is not None:
            body["display_name"] = display_name
        result = await self.request("POST", "/api/v1/auth/register", json=body, auth=False)
        user: dict[str, Any] = result["user"]
        return user

    async def login(self, username: str, password: str) -> Tokens:
        """The OAuth2 password grant."""
        form = {"grant_type": "password", "username": username, "password": password}
        body = await self.request("POST", "/api/v1/auth/token", data=form, auth=False)
        return self._set_tokens(body)

    async def refresh(self) -> Tokens:
        """Rotate the refresh token for a new pair (one refresh at a time)."""
        if self._refreshing is None:
            self._refreshing = asyncio.Lock()
        used = self.refresh_token
        async with self._refreshing:
            if self.refresh_token != used and self.access_token:
                # Another task refreshed while we waited for the lock.
                return Tokens(self.access_token, self.refresh_token)
            if not used:
                raise AuthError(401, "unauthorized", "no refresh token: log in again")
            form = {"grant_type": "refresh_token", "refresh_token": used}
            try:
                body = await self.request("POST", "/api/v1/auth/token", data=form, auth=False)
            except ApiError as exc:
                raise AuthError(exc.status, exc.code, exc.message) from exc
            return self._set_tokens(body)

    # REST

    async def request(self, method: str, path: str, *, auth: bool = True, **kwargs: Any) -> Any:
        """Call the API; the decoded JSON answer, or ``ApiError``."""
        for attempt in (0, 1):
            headers = dict(kwargs.pop("headers", None) or {})
            if auth:
                if self.access_token is None:
                    raise AuthError(401, "unauthorized", "not logged in")
                headers["Authorization"] = f"Bearer {self.access_token}"
            response = await self.http.request(
                method, self.base_url + path, headers=headers, **kwargs
            )
            if response.status_code == 401 and auth and attempt == 0 and self.refresh_token:
                await self.refresh()
                continue
            if response.status_code >= 400:
                raise _error_of(response)
            return response.json() if response.content else None
        raise AssertionError("unreachable")

    async def me(self) -> dict[str, Any]:
        result: dict[str, Any] = await self.request("GET", "/api/v1/users/me")
        return result

    async def user(self, user_id: str) -> dict[str, Any]:
        """The ``User`` of this id."""
        result: dict[str, Any] = await self.request("GET", f"/api/v1/users/{user_id}")
        return result

    async def find_user(self, username: str) -> dict[str, Any] | None:
        """The ``User`` of exactly this username, or None."""
        result = await self.request("GET", "/api/v1/users", params={"username": username})
        users: list[dict[str, Any]] = result["users"]
        return users[0] if users else None

    async def rooms(self) -> list[dict[str, Any]]:
        """The caller's rooms with ``last_seq``, ``read_seq`` and ``unread``."""
        result = await self.request("GET", "/api/v1/rooms")
        rooms: list[dict[str, Any]] = result["rooms"]
        return rooms

    async def public_rooms(self) -> list[dict[str, Any]]:
        result = await self.request("GET", "/api/v1/rooms/public")
        rooms: list[dict[str, Any]] = result["rooms"]
        return rooms

    async def create_room(
        self, name: str, *, visibility: str = "public", topic: str = ""
    ) -> dict[str, Any]:
        body = {"name": name, "visibility": visibility, "topic": topic}
        result: dict[str, Any] = await self.request("POST", "/api/v1/rooms", json=body)
        return result

    async def join(self, room_id: str) -> dict[str, Any]:
        result: dict[str, Any] = await self.request("POST", f"/api/v1/rooms/{room_id}/join")
        return result

    async def leave(self, room_id: str) -> None:
        await self.request("POST", f"/api/v1/rooms/{room_id}/leave")

    async def add_member(self, room_id: str, user_id: str, role: str = "member") -> None:
        body = {"user_id": user_id, "role": role}
        await self.request("POST", f"/api/v1/rooms/{room_id}/members", json=body)

    async def members(self, room_id: str) -> list[dict[str, Any]]:
        """``[{"user": User, "role"}]`` of a room the caller can see."""
        result = await self.request("GET", f"/api/v1/rooms/{room_id}/members")
        members: list[dict[str, Any]] = result["members"]
        return members

    async def remove_member(self, room_id: str, user_id: str, *, ban: bool = False) -> None:
        params = {"ban": "true"} if ban else None
        await self.request("DELETE", f"/api/v1/rooms/{room_id}/members/{user_id}", params=params)

    async def open_dm(self, user_id: str) -> dict[str, Any]:
        result: dict[str, Any] = await self.request(
            "POST", "/api/v1/dms", json={"user_id": user_id}
        )
        return result

    async def open_group_dm(self, user_ids: list[str]) -> dict[str, Any]:
        """The group direct room of the caller and 2 to 9 others (``kind:
        group_dm``): made on first call, the same room for the same set after."""
        result: dict[str, Any] = await self.request(
            "POST", "/api/v1/dms", json={"user_ids": list(user_ids)}
        )
        return result

    async def post_message(
        self,
        room_id: str,
        body: str,
        client_msg_id: str | None = None,
        *,
        thread_root_id: str | None = None,
    ) -> dict[str, Any]:
        """Send over REST (``Live.send`` is the real-time way); a reply in a thread
        with ``thread_root_id``."""
        payload: dict[str, Any] = {"body": body}
        if client_msg_id is not None:
            payload["client_msg_id"] = client_msg_id
        if thread_root_id is not None:
            payload["thread_root_id"] = thread_root_id
        result: dict[str, Any] = await self.request(
            "POST", f"/api/v1/rooms/{room_id}/messages", json=payload
        )
        return result

    async def messages(
        self,
        room_id: str,
        *,
        before_seq: int | None = None,
        after_seq: int | None = None,
        limit: int = 50,
    ) -> tuple[list[dict[str, Any]], bool]:
        params: dict[str, int] = {"limit": limit}
        if before_seq is not None:
            params["before_seq"] = before_seq
        if after_seq is not None:
            params["after_seq"] = after_seq
        result = await self.request("GET", f"/api/v1/rooms/{room_id}/messages", params=params)
        return result["messages"], bool(result["has_more"])

    async def thread(
        self, room_id: str, message_id: str, *, after_seq: int = 0, limit: int = 50
    ) -> tuple[dict[str, Any], list[dict[str, Any]], bool]:
        """A thread: its root, its replies after ``after_seq`` (ascending), and
        whether more exist. A reply's id gives its root's thread."""
        params = {"after_seq": after_seq, "limit": limit}
        result = await self.request(
            "GET", f"/api/v1/rooms/{room_id}/messages/{message_id}/thread", params=params
        )
        return result["root"], result["messages"], bool(result["has_more"])

    async def events(
        self, room_id: str, *, after_seq: int = 0, limit: int = 200
    ) -> tuple[list[dict[str, Any]], bool]:
        """The room's log after ``after_seq`` (what gap repair reads)."""
        params = {"after_seq": after_seq, "limit": limit}
        result = await self.request("GET", f"/api/v1/rooms/{room_id}/events", params=params)
        return result["events"], bool(result["has_more"])

    async def search(
        self,
        q: str,
        *,
        room_id: str | None = None,
        sender_id: str | None = None,
        after: str | None = None,
        before: str | None = None,
        limit: int = 20,
        cursor: str | None = None,
    ) -> tuple[list[dict[str, Any]], str | None]:
        """One page of messages ``q`` finds in the caller's rooms, best first (each
        ``{"message", "room_id", "highlight"}``), and the cursor of the next page
        (None: the last). ``after``/``before``: RFC 3339 date-times, exclusive."""
        params: dict[str, Any] = {"q": q, "limit": limit}
        optional = {"room_id": room_id, "sender_id": sender_id, "after": after}
        optional |= {"before": before, "cursor": cursor}
        params.update({k: v for k, v in optional.items() if v is not None})
        result = await self.request("GET", "/api/v1/search", params=params)
        return result["results"], result["next_cursor"]

    async def mark_read(self, room_id: str, seq: int) -> int:
        result = await self.request("PUT", f"/api/v1/rooms/{room_id}/read", json={"seq": seq})
        return int(result["read_seq"])

    # mentions and notifications

    async def notifications(
        self, *, unread_only: bool = False, before: str | None = None, limit: int = 50
    ) -> tuple[list[dict[str, Any]], int, bool]:
        """The caller's ``Notification`` objects newest first (older than the
        notification id ``before``), the unread count, and whether more exist."""
        params: dict[str, Any] = {"limit": limit}
        if unread_only:
            params["unread_only"] = "true"
        if before is not None:
            params["before"] = before
        result = await self.request("GET", "/api/v1/notifications", params=params)
        return result["notifications"], int(result["unread"]), bool(result["has_more"])

    async def mark_notifications_read(self, ids: Iterable[str] | None = None) -> int:
        """Mark these notifications read (``None``: all of them); the unread count."""
        body: dict[str, Any] = {"all": True} if ids is None else {"ids": list(ids)}
        result = await self.request("POST", "/api/v1/notifications/read", json=body)
        return int(result["unread"])

    async def notification_level(self, room_id: str) -> str:
        """``all``, ``mentions`` or ``none``: the caller's level for the room."""
        result = await self.request("GET", f"/api/v1/rooms/{room_id}/notifications")
        return str(result["level"])

    async def set_notification_level(self, room_id: str, level: str) -> str:
        result = await self.request(
            "PUT", f"/api/v1/rooms/{room_id}/notifications", json={"level": level}
        )
        return str(result["level"])

    # live

    def live(self, *, cursors: dict[str, int] | None = None, **options: Any) -> Live:
        """A live connection (not started): ``async with client.live() as live``."""
        from parley.client._live import Live

        return Live(self, cursors=cursors, **options)
